"""Progress bars of runs on the Ray backend: each run's steps reach the driver through a Ray queue."""

import os
from pathlib import Path

import pytest
from test_runner import TINY_SUITE, write_suite

from benchmarks import run as run_module

ray = pytest.importorskip("ray", reason="the Ray backend is the optional extra 'distributed'")

TESTS_DIR = Path(__file__).resolve().parent


def test_ray_runs_report_progress_to_the_driver(tmp_path, monkeypatch):
    pythonpath = os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    try:
        messages = []
        real_update = run_module.ProgressBoard.update
        monkeypatch.setattr(
            run_module.ProgressBoard, "update", lambda self, *message: messages.append(message) or real_update(self, *message)
        )
        suite = write_suite(tmp_path, {**TINY_SUITE, "seeds": [0], "algorithms": {"SAC": TINY_SUITE["algorithms"]["SAC"]}})
        assert run_module.main(["--suite", str(suite), "--out", str(tmp_path / "out"), "--backend", "ray"]) == 0
    finally:
        ray.shutdown()
    assert messages and {m[0] for m in messages} == {"SAC__toy-reach-v0__seed0"}
    assert messages[-1][1:3] == (400, 400) and messages[-1][3] is not None
