"""The Ray backend: same results as the local one, retries of dead workers, driver restarts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_checkpoint import die_once_suite
from test_runner import TINY_SUITE, write_suite

from benchmarks import algorithms
from benchmarks.run import main

ray = pytest.importorskip("ray", reason="the Ray backend is the optional extra 'distributed'")

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance for the module; its workers can import the tests' helper modules."""
    pythonpath = os.pathsep.join([str(TESTS_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def records(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def test_ray_sweep_gives_the_same_tables_as_local(tmp_path, ray_cluster):
    suite = write_suite(tmp_path, TINY_SUITE)
    assert main(["--suite", str(suite), "--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    assert main(["--suite", str(suite), "--out", str(tmp_path / "ray"), "--backend", "ray"]) == 0
    local, remote = records(tmp_path / "local"), records(tmp_path / "ray")
    assert len(remote) == 4 and local.keys() == remote.keys()
    for name in local:
        assert remote[name]["curve"] == local[name]["curve"]
    table = {k: (tmp_path / k / "table.csv").read_text().splitlines() for k in ("local", "ray")}
    # the columns that do not depend on timing are equal
    drop_timing = lambda lines: [",".join(line.split(",")[:12]) for line in lines]  # noqa: E731
    assert drop_timing(table["local"]) == drop_timing(table["ray"])


def test_killed_worker_is_retried_and_resumes_from_checkpoint(tmp_path, ray_cluster, monkeypatch):
    monkeypatch.setitem(
        algorithms.ALGORITHMS, "DieOnceSAC", algorithms.AlgoEntry("DieOnceSAC", "faulty:DieOnceSAC", "online", "SAC")
    )
    suite = die_once_suite(tmp_path, "exit")
    out = tmp_path / "out"
    assert main(["--suite", suite, "--out", str(out), "--backend", "ray", "--checkpoint-every", "100"]) == 0
    (record,) = records(out).values()
    assert (tmp_path / "died").read_text() == "250", "the worker process died once"
    assert record["status"] == "ok" and record["resumed_from_step"] == 200
    assert [p["step"] for p in record["curve"]] == [100, 200, 300, 400]


def test_restarted_driver_redoes_only_unfinished_runs(tmp_path, ray_cluster):
    suite = {**TINY_SUITE, "seeds": [0, 1, 2], "algorithms": {"SAC": TINY_SUITE["algorithms"]["SAC"]}}
    suite["tasks"] = {"toy/reach-v0": {"budget": 1500}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--suite",
        str(path),
        "--out",
        str(out),
        "--backend",
        "ray",
        "--address",
        ray_cluster,
        "--cpus-per-run",
        "2",
        "--checkpoint-every",
        "300",
    ]  # one run at a time
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((out / "runs").glob("*.json")) and time.time() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = {name: (out / "runs" / name).stat().st_mtime_ns for name in records(out)}
    assert len(finished) == 1, "killed after the first run finished"

    assert subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    after = records(out)
    assert len(after) == 3 and all(r["status"] == "ok" for r in after.values())
    for name, mtime in finished.items():
        assert (out / "runs" / name).stat().st_mtime_ns == mtime, "a finished run was redone"


def test_ray_backend_without_ray_says_how_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    assert main(["--suite", str(write_suite(tmp_path, TINY_SUITE)), "--out", str(tmp_path / "o"), "--backend", "ray"]) == 2
    assert 'pip install -e ".[distributed]"' in capsys.readouterr().err
