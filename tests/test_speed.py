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


def test_median_run_keeps_every_rate_and_the_flops_of_the_first_round_the_only_one_that_counts_them():
    runs = [
        {"rate": 3.0, "peak_rss_mib": 1, "gflop_per_step": 0.5, "matmul_ms_per_step": 4.0},
        {"rate": 1.0, "peak_rss_mib": 2, "gflop_per_step": None, "matmul_ms_per_step": None},
        {"rate": 2.0, "peak_rss_mib": 3, "gflop_per_step": None, "matmul_ms_per_step": None},
    ]
    median = speed._median_run(runs)
    assert median["rate"] == 2.0 and median["peak_rss_mib"] == 3 and median["rates"] == [3.0, 1.0, 2.0]
    assert median["gflop_per_step"] == 0.5 and median["matmul_ms_per_step"] == 4.0


def test_offline_ratio_with_repeats(tmp_path):
    out = tmp_path / "speed"
    argv = ["--algos", "BC", "--env", "Pendulum-v1", "--steps", "20", "--dataset-size", "2000", "--repeats", "2"]
    assert speed.main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "speed.json").read_text())
    (row,) = result["rows"]
    assert row["algo"] == "BC" and row["peer"] == "TD3 (train step)"
    assert len(row["rates"]) == len(row["peer_rates"]) == 2
    assert row["ratio"] == row["rate"] / row["peer_rate"]
    # both networks do matrix multiplies; the bound is the ratio with BC's multiplies at the measured peak
    assert row["gflop_per_step"] > 0 and row["peer_gflop_per_step"] > row["gflop_per_step"]
    peak = float(result["header"]["GEMM peak"].split()[0])
    assert abs(row["ratio_bound"] - peak / row["gflop_per_step"] / row["peer_rate"]) <= 1e-3 * row["ratio_bound"]
    assert 0 < row["peak_share"] < 1.5
    # the bound from the multiplies' own time: BC's step takes longer than its multiplies alone
    assert row["matmul_ms_per_step"] > 0 and row["peer_matmul_ms_per_step"] > 0
    assert row["matmul_time_bound"] == 1e3 / row["matmul_ms_per_step"] / row["peer_rate"] > row["ratio"]
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


def test_gemm_flop_counter_counts_a_linear_layer_forward_and_backward_by_hand():
    import torch as th

    layer = th.nn.Linear(5, 3)
    inputs = th.randn(7, 5, requires_grad=True)
    counter = speed.GemmFlopCounter()
    with counter:
        layer(inputs).sum().backward()
    # forward 2*7*5*3; backward: the input gradient and the weight gradient, each as large again
    assert counter.flops == 3 * 2 * 7 * 5 * 3 and counter.seconds > 0
    with th.no_grad(), speed.GemmFlopCounter() as no_grad_counter:
        layer(inputs)
        th.tanh(inputs)  # elementwise work is not counted
    assert no_grad_counter.flops == 2 * 7 * 5 * 3
    with speed.GemmFlopCounter() as elementwise_counter:
        th.tanh(inputs).exp().sum().backward()
    assert elementwise_counter.flops == 0 and elementwise_counter.seconds == 0.0  # nor timed


def test_matmul_work_per_step_of_an_update_and_of_an_on_policy_rollout():
    from stable_baselines3 import PPO, SAC

    hidden = 8
    kwargs = {"learning_starts": 10, "batch_size": 4, "policy_kwargs": {"net_arch": [hidden]}, "device": "cpu"}
    model = SAC("MlpPolicy", "Pendulum-v1", **kwargs)
    model.learn(20)
    steps = model._n_updates
    flops, seconds = speed._matmul_work_per_step(model, train_only=True, env_steps=7)
    assert model._n_updates == steps + speed.FLOP_COUNT_STEPS
    # at least the two critics' forward and backward on the batch: 3 * 2 * (4 * (3 + 1) * 8 + 4 * 8 * 1) each
    assert flops >= 2 * 3 * 2 * (4 * 4 * hidden + 4 * hidden) and seconds > 0
    # an online case counts as many env steps as it measured (one gradient step per env step here)
    start = model.num_timesteps
    online_flops, _ = speed._matmul_work_per_step(model, train_only=False, env_steps=30)
    assert model.num_timesteps == start + 30 and online_flops >= flops
    ppo = PPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, n_epochs=1, policy_kwargs={"net_arch": [hidden]})
    ppo.learn(16)
    start = ppo.num_timesteps
    # whole rollouts: 20 env steps asked, two rollouts of 16 collected
    assert speed._matmul_work_per_step(ppo, train_only=False, env_steps=20)[0] > 0 and ppo.num_timesteps == start + 32


def test_gemm_peak_is_a_positive_rate():
    assert speed.gemm_peak("cpu", threads=1, size=64, repeats=2) > 0
