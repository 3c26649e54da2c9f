"""Saved models of the runner's runs: ``python -m benchmarks.evaluate`` and every algorithm's ``evaluate()``."""

import pytest
from test_runner import TINY_SUITE, write_suite

from benchmarks.evaluate import FRESH_SEED
from benchmarks.evaluate import main as evaluate_main
from benchmarks.run import main as run_main
from rlkit import BC, MDPO, PEBBLE, PMOEPPO, PMOESAC, MDPOOff, make_env
from rlkit.common.evaluation import evaluate_model


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One SAC run and one PPO run with VecNormalize, their models kept."""
    tmp = tmp_path_factory.mktemp("sweep")
    algos = {
        "SAC": TINY_SUITE["algorithms"]["SAC"],
        "PPO": {"default": {**TINY_SUITE["algorithms"]["PPO"]["default"], "normalize": True}},
    }
    suite = write_suite(tmp, {**TINY_SUITE, "seeds": [0], "algorithms": algos})
    assert run_main(["--suite", str(suite), "--out", str(tmp / "out"), "--workers", "1"]) == 0
    return tmp / "out"


@pytest.mark.parametrize(
    "target",
    ["runs/SAC__toy-reach-v0__seed0.json", "models/SAC__toy-reach-v0__seed0", "models/PPO__toy-reach-v0__seed0/model.zip"],
)
def test_evaluate_loads_a_run_from_its_json_folder_or_zip(sweep, capsys, target):
    assert evaluate_main([str(sweep / target), "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert f"over 3 episodes (seeds {FRESH_SEED}-{FRESH_SEED + 2})" in out and "normalised score" in out


@pytest.mark.parametrize("algo", ["SAC", "PPO"])
def test_the_loaded_model_reproduces_the_runs_final_evaluation(sweep, algo):
    """Loaded (with its VecNormalize statistics for PPO), the model acts as it did: the run's last evaluation again."""
    from benchmarks.evaluate import load_run, locate

    record, model_path = locate(sweep / "runs" / f"{algo}__toy-reach-v0__seed0.json")
    model, env = load_run(record, model_path)
    assert (algo == "PPO") == hasattr(env, "obs_rms")
    first_seed = record.get("eval_seeds", [10_000 + record["seed"]])[0]
    result = evaluate_model(model, env, n_episodes=record["eval_episodes"], seed=first_seed)
    # PPO's last evaluation follows its last update; SAC's precedes its last gradient step, which moves it a little
    assert result["return_mean"] == pytest.approx(record["final"]["return_mean"], abs=1e-6 if algo == "PPO" else 0.5)


def test_evaluate_records_a_video(sweep, tmp_path, capsys):
    pytest.importorskip("moviepy")
    run = sweep / "runs" / "SAC__toy-reach-v0__seed0.json"
    assert evaluate_main([str(run), "--episodes", "2", "--video", str(tmp_path)]) == 0
    videos = list(tmp_path.glob("SAC__toy-reach-v0__seed0-episode-*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    assert str(videos[0]) in capsys.readouterr().out


def test_evaluate_bad_input_is_one_line(sweep, tmp_path, capsys):
    assert evaluate_main([str(tmp_path / "nothing.json")]) == 2
    assert "no run record" in capsys.readouterr().err
    (sweep / "runs" / "SAC__toy-reach-v0__seed0.json").rename(tmp_path / "kept.json")
    try:
        assert evaluate_main([str(sweep / "models" / "SAC__toy-reach-v0__seed0")]) == 2
        assert "no run record" in capsys.readouterr().err
    finally:
        (tmp_path / "kept.json").rename(sweep / "runs" / "SAC__toy-reach-v0__seed0.json")


@pytest.mark.parametrize("cls", [MDPO, MDPOOff, PMOESAC, PMOEPPO, PEBBLE])
def test_online_algorithms_evaluate_like_offline_ones(cls):
    """One evaluate() for every algorithm: the return, and the normalised score where the task has reference scores."""
    kwargs = {"n_steps": 64, "batch_size": 64} if cls in (MDPO, PMOEPPO) else {"buffer_size": 100}
    model = cls("MlpPolicy", "toy/reach-v0", seed=0, **kwargs)
    assert cls.evaluate is BC.evaluate
    result = model.evaluate(make_env("toy/reach-v0"), n_episodes=2, seed=5)
    assert result["n_episodes"] == 2 and len(result["episode_returns"]) == 2
    expected = 100 * (result["return_mean"] + 52.6) / (52.6 - 5.1)
    assert result["normalized_score"] == pytest.approx(expected)
    assert model.evaluate("toy/reach-v0", n_episodes=2, seed=5)["return_mean"] == result["return_mean"]
