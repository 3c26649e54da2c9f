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
    table = (out / "table.md").read_text()
    assert "repeats: 2" in table
    assert all(f"- {key}: " in table for key in ("command", "commit", "seeds", "device"))  # what every results table names


def test_every_case_has_its_peer_in_the_same_mode():
    for name in speed.SPEED_CASES:
        assert speed.case_peer(name) in speed.SPEED_CASES, name
    assert speed.case_peer("PEBBLE/update") == "SAC/update" and speed.case_algorithm("PARL/update") == "PARL"
    assert speed.case_peer("OPPO") == "IQL" and speed.case_peer("PEARL") == "IQL"


def test_update_rate_times_train_alone():
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=10, batch_size=8, policy_kwargs={"net_arch": [8]}, device="cpu")
    model.learn(30)
    updates = model._n_updates
    assert speed._update_rate(model, steps=5) > 0
    assert model._n_updates == updates + 55 and model.num_timesteps == 30
