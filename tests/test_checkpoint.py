"""Runs checkpoint every K steps and a restarted run continues from the last checkpoint."""

import json

import pytest
from faulty import DieOnceSAC  # noqa: F401  (imported by target string below)

from benchmarks import algorithms
from benchmarks.run import main
from benchmarks.suite import build_specs
from benchmarks.worker import run_one


@pytest.fixture
def die_once_registered(monkeypatch):
    for name in ("DieOnceSAC", "DieOncePPO", "DieOnceBC"):
        kind = "offline" if name == "DieOnceBC" else "online"
        monkeypatch.setitem(algorithms.ALGORITHMS, name, algorithms.AlgoEntry(name, f"faulty:{name}", kind, name[7:]))


def die_once_suite(tmp_path, mode: str, seeds=(0,)) -> str:
    """A suite whose one algorithm dies (``mode``: "raise" or "exit") at step 250 of 400 the first time."""
    suite = {
        "seeds": list(seeds),
        "eval_freq": 100,
        "eval_episodes": 2,
        "tasks": {"toy/reach-v0": {"budget": 400}},
        "algorithms": {
            "DieOnceSAC": {
                "default": {
                    "learning_starts": 50,
                    "policy_kwargs": {"net_arch": [16]},
                    "die_marker": str(tmp_path / "died"),
                    "die_at_step": 250,
                    "die_mode": mode,
                }
            }
        },
    }
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(suite))  # JSON is YAML
    return str(path)


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, die_once_registered):
    (spec,) = build_specs(die_once_suite(tmp_path, "raise"))
    spec.checkpoint_every, spec.checkpoint_dir = 100, str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        run_one(spec)
    assert (tmp_path / "died").read_text() == "250"
    assert (tmp_path / "ckpt" / "latest").read_text() == "step_200"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["latest", "step_200"]

    record = run_one(spec)
    assert record["status"] == "ok", record.get("traceback")
    assert record["resumed_from_step"] == 200
    assert [p["step"] for p in record["curve"]] == [100, 200, 300, 400]
    assert not (tmp_path / "ckpt").exists(), "checkpoints are removed once the run finished"


def test_checkpoint_of_another_configuration_is_ignored(tmp_path, die_once_registered):
    (spec,) = build_specs(die_once_suite(tmp_path, "raise"))
    spec.checkpoint_every, spec.checkpoint_dir = 100, str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        run_one(spec)
    (other,) = build_specs(die_once_suite(tmp_path, "raise"), budget=300)
    other.checkpoint_every, other.checkpoint_dir = 100, spec.checkpoint_dir
    record = run_one(other)
    assert record["status"] == "ok" and record["resumed_from_step"] is None


def test_runner_resumes_an_interrupted_run_from_its_checkpoint(tmp_path, die_once_registered):
    suite = die_once_suite(tmp_path, "raise")
    args = ["--suite", suite, "--out", str(tmp_path / "out"), "--workers", "1", "--checkpoint-every", "100"]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert main(args) == 0
    (path,) = (tmp_path / "out" / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["resumed_from_step"] == 200 and record["final"]["step"] == 400


def test_resume_restores_vecnormalize_statistics(tmp_path, die_once_registered):
    path = tmp_path / "ppo.yaml"
    suite = {
        "eval_freq": 128,
        "eval_episodes": 2,
        "tasks": {"toy/reach-v0": {"budget": 384}},
        "algorithms": {
            "DieOncePPO": {
                "default": {
                    "n_steps": 64,
                    "batch_size": 32,
                    "normalize": True,
                    "die_marker": str(tmp_path / "died"),
                    "die_at_step": 200,
                    "die_mode": "raise",
                }
            }
        },
    }
    path.write_text(json.dumps(suite))
    (spec,) = build_specs(str(path))
    spec.checkpoint_every, spec.checkpoint_dir = 128, str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        run_one(spec)
    # on-policy runs save between rollouts: the rollout boundary at 128 (not 192: only 64 steps later)
    assert (tmp_path / "ckpt" / "step_128" / "vecnormalize.pkl").exists()
    record = run_one(spec)
    assert record["status"] == "ok", record.get("traceback")
    assert record["resumed_from_step"] == 128 and record["final"]["step"] == 384
    assert [p["step"] for p in record["curve"]] == [128, 256, 384]


def test_offline_run_resumes_from_its_checkpoint(tmp_path, die_once_registered, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    generate = {"kind": "medium", "size": 400, "train_steps": 300, "learning_starts": 50, "eval_freq": 50}
    suite = {
        "eval_freq": 100,
        "eval_episodes": 2,
        "tasks": {"toy-medium": {"env": "toy/reach-v0", "generate": generate, "budget": 300}},
        "algorithms": {
            "DieOnceBC": {
                "default": {
                    "policy_kwargs": {"net_arch": [16]},
                    "die_marker": str(tmp_path / "died"),
                    "die_at_step": 150,
                    "die_mode": "raise",
                }
            }
        },
    }
    path = tmp_path / "offline.yaml"
    path.write_text(json.dumps(suite))
    (spec,) = build_specs(str(path))
    spec.checkpoint_every, spec.checkpoint_dir = 100, str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        run_one(spec)
    record = run_one(spec)
    assert record["status"] == "ok", record.get("traceback")
    assert record["resumed_from_step"] == 100 and [p["step"] for p in record["curve"]] == [100, 200, 300]
