import csv
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import run as run_module
from benchmarks.plots import write_curves
from benchmarks.run import main
from benchmarks.suite import build_specs

TINY_SUITE = {
    "description": "tiny",
    "seeds": [0, 1],
    "eval_freq": 200,
    "eval_episodes": 2,
    "tasks": {"toy/reach-v0": {"budget": 400}},
    "algorithms": {
        "SAC": {"default": {"learning_starts": 100, "policy_kwargs": {"net_arch": [16, 16]}}},
        "PPO": {"default": {"n_steps": 128, "batch_size": 32, "policy_kwargs": {"net_arch": [16], "activation_fn": "tanh"}}},
    },
}


def write_suite(tmp_path: Path, content: dict | str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_end_to_end_writes_consistent_json_table_and_curves(tmp_path):
    suite = write_suite(tmp_path, TINY_SUITE)
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out), "--workers", "1"]) == 0

    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == 4
    records = [json.loads(p.read_text()) for p in runs]
    for record in records:
        assert record["status"] == "ok"
        assert [p["step"] for p in record["curve"]] == ([200, 400] if record["algo"] == "SAC" else [200, 400, 512])
        assert record["command"].startswith("python -m benchmarks.run --suite")
        assert {"commit", "versions", "seed", "budget", "device", "env_steps_per_s"} <= set(record)
        assert record["ref_scores"] == [-52.6, -5.1]
    table = list(csv.DictReader((out / "table.csv").open()))
    assert {(row["algo"], row["seeds"]) for row in table} == {("SAC", "2"), ("PPO", "2")}
    for row in table:
        # a run's score is the mean of its last 3 evaluations, not its final or best one
        scores = [np.mean([p["return_mean"] for p in r["curve"][-3:]]) for r in records if r["algo"] == row["algo"]]
        assert float(row["return_mean"]) == pytest.approx(np.mean(scores))
        assert float(row["normalized_mean"]) == pytest.approx(100 * (np.mean(scores) + 52.6) / (52.6 - 5.1))
    md = (out / "table.md").read_text()
    assert "| toy/reach-v0 |" in md and "command" in md and "commit" in md
    png = out / "curves" / "toy-reach-v0.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_table_marks_cells_of_another_budget_or_seed_count():
    from benchmarks.tables import _score_table

    def row(algo, task, budget, seeds):
        return {
            "algo": algo,
            "task": task,
            "budget": budget,
            "seeds": seeds,
            "normalized_mean": None,
            "normalized_std": None,
            "return_mean": 1.0,
            "return_std": 0.5,
        }

    rows = [row("PPO", "a", 100, 3), row("SAC", "a", 50, 3), row("TD3", "a", 100, 3)]
    rows += [row("PPO", "b", 100, 5), row("SAC", "b", 100, 3), row("TD3", "b", 100, 3)]
    lines = _score_table(rows)
    assert lines[2] == "| a | 1.0 ± 0.5 | 1.0 ± 0.5 (50) | 1.0 ± 0.5 |"
    assert lines[3] == "| b | 1.0 ± 0.5 (n = 5) | 1.0 ± 0.5 | 1.0 ± 0.5 |"


def test_same_seed_same_result(tmp_path):
    suite = write_suite(tmp_path, {**TINY_SUITE, "seeds": [0], "algorithms": {"SAC": TINY_SUITE["algorithms"]["SAC"]}})
    finals = []
    for name in ("a", "b"):
        assert main(["--suite", str(suite), "--out", str(tmp_path / name), "--workers", "1"]) == 0
        record = json.loads(next((tmp_path / name / "runs").glob("*.json")).read_text())
        finals.append(record["curve"])
    assert finals[0] == finals[1]


def test_interrupted_sweep_resumes_without_redoing(tmp_path, monkeypatch):
    suite = write_suite(tmp_path, TINY_SUITE)
    out = tmp_path / "out"
    real_run_one = run_module.run_one
    calls = []

    def interrupt_after_first(spec, threads, progress=None):
        if calls:
            raise KeyboardInterrupt
        calls.append(spec.run_id)
        return real_run_one(spec, threads, progress)

    monkeypatch.setattr(run_module, "run_one", interrupt_after_first)
    with pytest.raises(KeyboardInterrupt):
        main(["--suite", str(suite), "--out", str(out), "--workers", "1"])
    first = out / "runs" / f"{calls[0]}.json"
    assert [p.name for p in (out / "runs").iterdir()] == [first.name]
    stamp = first.stat().st_mtime_ns

    resumed = []
    monkeypatch.setattr(run_module, "run_one", lambda spec, *args: resumed.append(spec.run_id) or real_run_one(spec, *args))
    assert main(["--suite", str(suite), "--out", str(out), "--workers", "1"]) == 0
    assert calls[0] not in resumed and len(resumed) == 3
    assert first.stat().st_mtime_ns == stamp
    # a different budget is a different run: it is redone
    specs = build_specs(str(suite), budget=600)
    assert all(spec.config_hash() != s.config_hash() for spec, s in zip(specs, build_specs(str(suite)), strict=True))


def test_a_record_of_other_settings_is_left_out_of_tables_and_claims(tmp_path):
    from benchmarks.store import load_results, run_path, write_result

    suite = write_suite(tmp_path, TINY_SUITE)
    out = tmp_path / "out"
    specs = build_specs(str(suite))
    for spec in specs:
        write_result(out, spec, {"status": "ok", "config_hash": spec.config_hash(), "curve": []})
    assert len(load_results(out, specs)) == len(specs)
    # the suite changed since: the same run ids, other settings; their old records count nowhere
    changed = build_specs(str(suite), budget=600)
    assert [run_path(out, s) for s in changed] == [run_path(out, s) for s in specs]
    assert load_results(out, changed) == []
    assert len(load_results(out)) == len(specs)  # the folder still holds them, to be rerun


def test_process_pool_matches_in_process(tmp_path):
    suite = write_suite(tmp_path, {**TINY_SUITE, "algorithms": {"PPO": TINY_SUITE["algorithms"]["PPO"]}})
    curves = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["--suite", str(suite), "--out", str(out), "--workers", workers]) == 0
        curves[workers] = {p.name: json.loads(p.read_text())["curve"] for p in (out / "runs").glob("*.json")}
    assert curves["1"] == curves["2"]


def test_failed_run_is_recorded_and_counted(tmp_path):
    bad = {**TINY_SUITE, "seeds": [0], "algorithms": {"SAC": {"default": {"learning_rate": -1.0, "learning_starts": 10}}}}
    out = tmp_path / "out"
    assert main(["--suite", str(write_suite(tmp_path, bad)), "--out", str(out), "--workers", "1", "--budget", "50"]) == 101
    record = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert record["status"] == "failed" and "Traceback" in record["traceback"]


BAD_INPUTS = [
    (["--algos", "NOPE"], "'NOPE' is not in suite"),
    (["--envs", "Hopper-v9"], "'Hopper-v9' is not in suite"),
    (["--budget", "0"], "--budget must be positive"),
    (["--suite", "no-such-suite"], "not found; known suites: a2pr-bimodal, aligndiff-local, d4rl, "),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS)
def test_bad_command_line(tmp_path, capsys, extra, message):
    suite = write_suite(tmp_path, TINY_SUITE)
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


BAD_SUITES = [
    (
        {"tasks": {"toy/reach-v0": {"budget": 10}}, "algorithms": {"SAC": {}}, "sedes": [0]},
        "unknown key 'sedes'; allowed keys",
    ),
    ({"tasks": {"toy/reach-v0": {"budget": "ten"}}, "algorithms": {"SAC": {}}}, "'tasks.toy/reach-v0.budget' must be int"),
    ({"tasks": {"toy/reach-v0": {"budget": 10}}, "algorithms": {"SAC": {"default": {"lr": 1}}}}, "unknown hyperparameter"),
    ({"tasks": {"toy/reach-v0": {"budget": 10}}, "algorithms": {"XYZ": {}}}, "unknown algorithm 'algorithms.XYZ'"),
    ({"tasks": {"Hoper-v5": {"budget": 10}}, "algorithms": {"SAC": {}}}, "Closest known ids: Hopper-v5"),
    ({"tasks": {"toy/reach-v0": {"budget": -5}}, "algorithms": {"SAC": {}}}, "must be positive"),
    ({"tasks": {"toy/reach-v0": {"budget": 10}}, "algorithms": {"SAC": {"default": {"n_envs": "2"}}}}, "n_envs' must be int"),
    ({"tasks": {"toy/reach-v0": {"budget": 10, "seeds": ["0"]}}, "algorithms": {"SAC": {}}}, "seeds[0]' must be int"),
    ({"tasks": {"toy/reach-v0": {"budget": 10, "seeds": 3}}, "algorithms": {"SAC": {}}}, "seeds' must be list"),
    ("tasks: [unclosed", "not valid YAML"),
]


@pytest.mark.parametrize(("content", "message"), BAD_SUITES)
def test_bad_suite_file_names_file_key_and_allowed_values(tmp_path, capsys, content, message):
    suite = write_suite(tmp_path, content)
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(suite) in err and message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_task_with_its_own_seeds_gets_them_and_the_command_line_overrides_both(tmp_path):
    suite = {**TINY_SUITE, "tasks": {"toy/reach-v0": {"budget": 400}, "Pendulum-v1": {"budget": 400, "seeds": [0, 1, 2, 3]}}}
    path = write_suite(tmp_path, suite)
    runs = {(s.algo, s.task, s.seed) for s in build_specs(str(path))}
    assert runs == {(a, "toy/reach-v0", s) for a in ("SAC", "PPO") for s in (0, 1)} | {
        (a, "Pendulum-v1", s) for a in ("SAC", "PPO") for s in (0, 1, 2, 3)
    }
    # a task's own seeds do not change the records of the seeds it shares with the suite
    shared = {s.config_hash() for s in build_specs(str(path)) if s.seed < 2}
    (tmp_path / "plain").mkdir()
    plain = write_suite(tmp_path / "plain", {**suite, "tasks": {**suite["tasks"], "Pendulum-v1": {"budget": 400}}})
    assert shared == {s.config_hash() for s in build_specs(str(plain))}
    assert {s.seed for s in build_specs(str(path), seeds=[7])} == {7}


def test_unwritable_output_dir(tmp_path, capsys):
    # /proc refuses new files even to root
    assert main(["--suite", str(write_suite(tmp_path, TINY_SUITE)), "--out", "/proc/rlkit-results"]) == 2
    assert "/proc is not writable" in capsys.readouterr().err


def test_output_path_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["--suite", str(write_suite(tmp_path, TINY_SUITE)), "--out", str(blocker / "out")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_quick_suite_is_valid_and_covers_every_registered_algorithm():
    """Every registered class runs under every benchmark kind it is registered for (ablation arms of one class
    and kind, such as IQL+BT-50 beside IQL+BT-10, are left to their claim suites)."""
    from benchmarks.algorithms import ALGORITHMS

    specs = build_specs("quick")
    covered = {(ALGORITHMS[s.algo].target, ALGORITHMS[s.algo].kind) for s in specs}
    assert covered == {(entry.target, entry.kind) for entry in ALGORITHMS.values()}
    assert all(s.task.startswith("toy/") for s in specs)


TOY_GENERATE = {"kind": "medium", "size": 400, "train_steps": 300, "learning_starts": 50, "eval_freq": 50}


def test_offline_task_generates_its_dataset_once_and_reports_normalised_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    suite = {
        "seeds": [0, 1],
        "eval_freq": 100,
        "eval_episodes": 2,
        "tasks": {"toy-medium": {"env": "toy/reach-v0", "generate": TOY_GENERATE, "budget": 200}},
        "algorithms": {"BC": {"default": {"policy_kwargs": {"net_arch": [16]}}}, "SAC": {}},
    }
    out = tmp_path / "out"
    assert main(["--suite", str(write_suite(tmp_path, suite)), "--out", str(out), "--workers", "2"]) == 0
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert {r["algo"] for r in records} == {"BC"}, "online algorithms do not run on offline tasks"
    assert {r["dataset_id"] for r in records} == {"rlkit/toy-reach-v0/medium-v0"}
    assert all(r["grad_steps_per_s"] > 0 and "normalized" in r["final"] for r in records)
    assert [p.name for p in (tmp_path / "datasets" / "rlkit" / "toy-reach-v0").iterdir() if p.is_dir()] == ["medium-v0"]


def test_a_long_generation_says_so_and_a_cached_dataset_says_nothing(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from benchmarks.worker import dataset_id

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    spec = SimpleNamespace(generate=TOY_GENERATE, dataset=None, run_id="BC__toy__seed0", env="toy/reach-v0")
    assert dataset_id(spec, notice_after=0.0) == "rlkit/toy-reach-v0/medium-v0"
    err = capsys.readouterr().err
    assert "BC__toy__seed0: generating the medium dataset of toy/reach-v0" in err and "ready after" in err
    assert dataset_id(spec, notice_after=5.0) == "rlkit/toy-reach-v0/medium-v0"
    assert capsys.readouterr().err == ""


ONE_PPO_TWO_SEEDS = {**TINY_SUITE, "algorithms": {"PPO": TINY_SUITE["algorithms"]["PPO"]}}


@pytest.mark.parametrize("workers", [1, 2])
def test_runners_sharing_a_folder_never_run_a_run_twice(tmp_path, capsys, workers):
    from benchmarks.store import RunClaim

    suite = write_suite(tmp_path, ONE_PPO_TWO_SEEDS)
    out = tmp_path / "out"
    first, second = build_specs(str(suite))
    other_runner = RunClaim(out, first)  # another process's claim: a separate open file, as flock sees it
    assert other_runner.acquire() and not RunClaim(out, first).acquire()
    assert main(["--suite", str(suite), "--out", str(out), "--workers", str(workers)]) == 0
    assert [p.name for p in (out / "runs").glob("*.json")] == [f"{second.run_id}.json"]
    assert f"{first.run_id}: run by another runner" in capsys.readouterr().err
    assert "1 left to another runner" in (out / "table.md").read_text()
    other_runner.release()
    # the claim is given back: a later runner does the run, and nothing else
    before = (out / "runs" / f"{second.run_id}.json").read_text()
    assert main(["--suite", str(suite), "--out", str(out), "--workers", "1"]) == 0
    assert len(list((out / "runs").glob("*.json"))) == 2
    assert (out / "runs" / f"{second.run_id}.json").read_text() == before


def test_a_run_finished_elsewhere_is_not_claimed(tmp_path):
    from benchmarks.run import _claim
    from benchmarks.store import write_result

    first, _ = build_specs(str(write_suite(tmp_path, ONE_PPO_TWO_SEEDS)))
    held = _claim(first, tmp_path)
    assert held is not None and _claim(first, tmp_path) is None, "held: not claimable twice"
    held.release()
    write_result(tmp_path, first, {"status": "ok", "config_hash": first.config_hash()})
    assert _claim(first, tmp_path) is None, "finished by another runner since this one started"
    write_result(tmp_path, first, {"status": "ok", "config_hash": "other settings"})
    assert _claim(first, tmp_path) is not None


def test_curves_against_queries_where_runs_record_feedback(tmp_path):
    def record(algo, seed, with_queries):
        curve = [
            {"step": s, "return_mean": -s / 100 + seed, **({"queries": s / 10} if with_queries else {})} for s in (0, 100, 200)
        ]
        return {"status": "ok", "task": "toy/reach-v0", "algo": algo, "seed": seed, "curve": curve}

    records = [record("PEBBLE", 0, True), record("PEBBLE", 1, True), record("SAC", 0, False), record("SAC", 1, False)]
    paths = write_curves(tmp_path, records)
    assert [p.name for p in paths] == ["toy-reach-v0.png", "toy-reach-v0-queries.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    # no run records queries: only the curve against steps
    assert [p.name for p in write_curves(tmp_path / "plain", records[2:])] == ["toy-reach-v0.png"]


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_umask_mode(tmp_path, umask, expected):
    from benchmarks.store import write_atomic

    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "table.md", "x")
        write_atomic(tmp_path / "curve.png", b"\x89PNG")
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {expected}


ONE_SAC_RUN = {**TINY_SUITE, "seeds": [0], "algorithms": {"SAC": TINY_SUITE["algorithms"]["SAC"]}}


def test_default_output_is_runs_and_the_summary_compares_with_the_reference(tmp_path, monkeypatch, capsys):
    """Without --out a sweep goes to runs/<suite>/; the printed table sits beside results/<suite>/ when it exists."""
    monkeypatch.chdir(tmp_path)
    suite = write_suite(tmp_path, ONE_SAC_RUN)
    assert main(["--suite", str(suite), "--workers", "1"]) == 0
    assert (tmp_path / "runs" / "suite" / "table.csv").is_file() and not (tmp_path / "results").exists()
    err = capsys.readouterr().err
    assert "toy/reach-v0" in err and "SAC" in err and f"Files in {Path('runs') / 'suite'}/" in err
    assert "No committed reference for suite" in err

    # a committed reference with a lower score: the summary shows it and the difference
    reference = tmp_path / "results" / "suite"
    reference.mkdir(parents=True)
    rows = list(csv.DictReader((tmp_path / "runs" / "suite" / "table.csv").open()))
    rows[0]["normalized_mean"] = str(float(rows[0]["normalized_mean"]) - 10.0)
    with (reference / "table.csv").open("w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["--suite", str(suite), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert f"reference: the committed {Path('results') / 'suite'}/table.csv" in err and "+10.0" in err
    # republishing into results/ is explicit, and then there is nothing to compare with
    assert main(["--suite", str(suite), "--workers", "1", "--out", "results/suite"]) == 0
    assert (reference / "runs" / "SAC__toy-reach-v0__seed0.json").is_file()
    assert "reference: the committed" not in capsys.readouterr().err


def test_runs_keep_their_models(tmp_path):
    suite = write_suite(
        tmp_path,
        {
            **TINY_SUITE,
            "seeds": [0],
            "algorithms": {
                "SAC": TINY_SUITE["algorithms"]["SAC"],
                "PPO": {"default": {**TINY_SUITE["algorithms"]["PPO"]["default"], "normalize": True}},
            },
        },
    )
    out = tmp_path / "out"
    assert main(["--suite", str(suite), "--out", str(out), "--workers", "1"]) == 0
    for algo in ("SAC", "PPO"):
        record = json.loads((out / "runs" / f"{algo}__toy-reach-v0__seed0.json").read_text())
        assert record["model"] == f"models/{algo}__toy-reach-v0__seed0/model.zip" and "model_dir" not in record
        assert (out / record["model"]).is_file()
    assert (out / "models" / "PPO__toy-reach-v0__seed0" / "vecnormalize.pkl").is_file()
    assert not (out / "models" / "SAC__toy-reach-v0__seed0" / "vecnormalize.pkl").exists()


def test_adhoc_run_without_a_suite_uses_the_algorithms_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--algo", "SAC", "--env", "toy/reach-v0", "--budget", "300", "--seeds", "0", "--workers", "1"]
    assert main([*argv, "--hyperparams", "learning_starts:100", "policy_kwargs:{net_arch: [16]}"]) == 0
    record = json.loads((tmp_path / "runs" / "adhoc" / "runs" / "SAC__toy-reach-v0__seed0.json").read_text())
    assert record["hyperparams"] == {"learning_starts": 100, "policy_kwargs": {"net_arch": [16]}}
    assert record["budget"] == 300 and [p["step"] for p in record["curve"]] == list(range(30, 301, 30))
    assert record["suite"] == "adhoc" and record["command"].startswith("python -m benchmarks.run --algo SAC")


ADHOC_ERRORS = [
    (["--algo", "NOPE", "--env", "toy/reach-v0"], "--algo: unknown algorithm 'NOPE'; registered: A2PR"),
    (["--algo", "SAC"], "needs both --algo and --env"),
    (["--algo", "SAC", "--env", "Hoper-v5"], "Closest known ids: Hopper-v5"),
    (["--algo", "BC", "--env", "toy/reach-v0"], "--algo BC learns from a dataset: add --dataset ID"),
    (["--algo", "CMORL", "--env", "mo/mo-hopper-2obj-v5"], "--algo CMORL needs the task keys ref_point"),
    (["--algo", "SAC", "--env", "toy/reach-v0", "--hyperparams", "lr:1"], "unknown hyperparameter 'algorithms.SAC.default.lr"),
    (["--algo", "SAC", "--env", "toy/reach-v0", "--hyperparams", "gamma"], "write KEY:VALUE"),
    (["--algo", "SAC", "--env", "toy/reach-v0", "--suite", "quick"], "drop --suite"),
]


@pytest.mark.parametrize(("argv", "message"), ADHOC_ERRORS)
def test_adhoc_bad_input_is_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_progress_bars_follow_each_run(tmp_path, monkeypatch, workers):
    """Every run reports its steps and last evaluation to a bar of its own, in-process and from a process pool."""
    messages = []
    real_update = run_module.ProgressBoard.update
    monkeypatch.setattr(
        run_module.ProgressBoard, "update", lambda self, *message: messages.append(message) or real_update(self, *message)
    )
    suite = write_suite(tmp_path, {**ONE_SAC_RUN, "seeds": [0, 1]})
    assert main(["--suite", str(suite), "--out", str(tmp_path / "out"), "--workers", workers]) == 0
    assert {m[0] for m in messages} == {"SAC__toy-reach-v0__seed0", "SAC__toy-reach-v0__seed1"}
    for run_id in ("SAC__toy-reach-v0__seed0", "SAC__toy-reach-v0__seed1"):
        last = [m for m in messages if m[0] == run_id][-1]
        assert last[1:3] == (400, 400) and last[3] is not None, "the final message: all steps, with the last evaluation"


def test_tensorboard_logs_every_run(tmp_path):
    pytest.importorskip("tensorboard")
    suite = write_suite(tmp_path, ONE_SAC_RUN)
    argv = ["--suite", str(suite), "--out", str(tmp_path / "out"), "--workers", "1"]
    assert main([*argv, "--tensorboard", str(tmp_path / "tb")]) == 0
    assert list((tmp_path / "tb" / "SAC__toy-reach-v0__seed0_1").glob("events.out.tfevents.*"))


def test_run_records_keep_each_updates_diagnostics(tmp_path):
    """MDPO's record holds one entry per iteration with its KL and step size t_k (annealed over the official
    10M-step horizon, so still about 1), from the logger's train/* scalars."""
    suite = {
        "seeds": [0],
        "eval_freq": 256,
        "eval_episodes": 1,
        "tasks": {"toy/reach-v0": {"budget": 512}},
        "algorithms": {"MDPO": {"default": {"n_steps": 128, "batch_size": 64, "policy_kwargs": {"net_arch": [16]}}}},
    }
    out = tmp_path / "out"
    assert main(["--suite", str(write_suite(tmp_path, suite)), "--out", str(out), "--workers", "1"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    log = record["train_log"]
    assert [entry["step"] for entry in log] == [128, 256, 384, 512]
    assert all(entry["kl"] >= 0 and entry["step_size"] == pytest.approx(1.0, abs=1e-3) for entry in log)


def test_o2o_runs_record_the_online_gain_and_the_no_new_data_control(tmp_path, monkeypatch):
    """The o2o kind: offline phase, evaluation at online step 0, online phase; each point's gain is its normalised
    score minus the one after the offline phase; the control arm (online_data false) adds no transition."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    small = {"policy_kwargs": {"net_arch": [16]}, "batch_size": 32}
    suite = {
        "seeds": [0],
        "eval_freq": 50,
        "eval_episodes": 2,
        "tasks": {"toy-mr": {"env": "toy/reach-v0", "generate": TOY_GENERATE, "budget": 30, "online_budget": 100}},
        "algorithms": {"IQLO2O": {"default": small}, "IQLO2O-NoData": {"default": {**small, "online_data": False}}},
    }
    out = tmp_path / "out"
    assert main(["--suite", str(write_suite(tmp_path, suite)), "--out", str(out), "--workers", "1"]) == 0
    records = {r["algo"]: r for r in (json.loads(p.read_text()) for p in (out / "runs").glob("*.json"))}
    for record in records.values():
        curve = record["curve"]
        assert [p["step"] for p in curve] == [0, 50, 100] and record["online_env_steps"] == 100
        start = curve[0]["normalized"]
        assert [p["gain"] for p in curve] == pytest.approx([p["normalized"] - start for p in curve])
    assert records["IQLO2O-NoData"]["hyperparams"]["online_data"] is False
    assert "change (gain)" in (out / "table.md").read_text()


def test_famo2o_toy_suite_pairs_each_arm_with_its_no_data_control_and_gives_online_data_a_real_share():
    """famo2o-toy: FamO2O and IQLO2O (fixed beta at the midpoint of FamO2O's beta_range), each with a control that
    differs only by online_data false; at least 5 seeds, none of the sizing seeds (>= 90); the online steps are at
    least 40% of the final buffer; both claims parse, the second net of the controls."""
    from benchmarks.claims import suite_claims

    specs = build_specs("famo2o-toy")
    arms = {spec.algo: spec for spec in specs}
    assert set(arms) == {"FamO2O", "FamO2O-NoData", "IQLO2O", "IQLO2O-NoData"}
    seeds = sorted({spec.seed for spec in specs})
    assert len(seeds) >= 5 and max(seeds) < 90
    for arm in ("FamO2O", "IQLO2O"):
        control = arms[f"{arm}-NoData"].hyperparams
        assert control["online_data"] is False and {k: v for k, v in control.items() if k != "online_data"} == (
            arms[arm].hyperparams
        )
    assert arms["IQLO2O"].hyperparams["beta"] == np.mean(arms["FamO2O"].hyperparams["beta_range"])
    spec = arms["FamO2O"]
    assert spec.generate == {"kind": "scripted", "size": spec.generate["size"]}
    online = spec.options["online_budget"]
    assert online / (spec.generate["size"] + online) >= 0.4
    claims, _ = suite_claims("famo2o-toy")
    assert [c.metric for c in claims] == ["normalized", "gain"]
    assert claims[1].arms() == ["FamO2O", "IQLO2O", "FamO2O-NoData", "IQLO2O-NoData"]


def test_recorded_command_names_project_paths_relative_to_the_root():
    from benchmarks.store import command_line

    root = Path(run_module.__file__).resolve().parent.parent
    argv = [
        "--suite",
        "quick",
        "--out",
        str(root / "results" / "x"),
        f"--hyperparams={root / 'h.yaml'}",
        "/elsewhere/y",
        "a b",
    ]
    assert command_line("benchmarks.run", argv) == (
        "python -m benchmarks.run --suite quick --out results/x --hyperparams=h.yaml /elsewhere/y 'a b'"
    )
    assert command_line("benchmarks.speed", []) == "python -m benchmarks.speed"
