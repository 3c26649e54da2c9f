"""``benchmarks.speed``: argument checks and the median of interleaved repeats."""

from __future__ import annotations

import json

from benchmarks import speed


def test_bad_arguments_are_refused_before_measuring(tmp_path, capsys):
    assert speed.main(["--algos", "NoSuchAlgo", "--out", str(tmp_path)]) == 2
    assert "no speed case for NoSuchAlgo" in capsys.readouterr().err
    assert speed.main(["--algos", "PPO", "--repeats", "0", "--out", str(tmp_path)]) == 2
    assert "--repeats must be > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_median_run_keeps_every_rate():
    runs = [{"rate": 3.0, "peak_rss_mib": 1}, {"rate": 1.0, "peak_rss_mib": 2}, {"rate": 2.0, "peak_rss_mib": 3}]
    median = speed._median_run(runs)
    assert median["rate"] == 2.0 and median["peak_rss_mib"] == 3 and median["rates"] == [3.0, 1.0, 2.0]


def test_offline_ratio_with_repeats(tmp_path):
    out = tmp_path / "speed"
    argv = ["--algos", "BC", "--env", "Pendulum-v1", "--steps", "20", "--dataset-size", "2000", "--repeats", "2"]
    assert speed.main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "speed.json").read_text())
    (row,) = result["rows"]
    assert row["algo"] == "BC" and row["peer"] == "TD3 (train step)"
    assert len(row["rates"]) == len(row["peer_rates"]) == 2
    assert row["ratio"] == row["rate"] / row["peer_rate"]
    assert "repeats: 2" in (out / "table.md").read_text()
