"""SB3's constructor signature on rlkit's online algorithms: supported policies, options passed through, clear errors."""

import pytest

from rlkit import MDPO, PARL, PEBBLE, PMOEPPO, PMOESAC, MDPOOff

OFF_POLICY = [MDPOOff, PMOESAC, PEBBLE, PARL]
ALL = [MDPO, MDPOOff, PMOESAC, PMOEPPO, PEBBLE, PARL]


@pytest.mark.parametrize("cls", [MDPOOff, PMOESAC, PMOEPPO, PEBBLE, PARL])
@pytest.mark.parametrize("policy", ["CnnPolicy", "MultiInputPolicy"])
def test_unsupported_policy_names_what_is_supported(cls, policy):
    with pytest.raises(ValueError, match=rf"^{cls.__name__} supports the policies MlpPolicy, got '{policy}'"):
        cls(policy, "toy/reach-v0")


@pytest.mark.parametrize("cls", [MDPOOff, PMOESAC, PMOEPPO, PEBBLE, PARL])
def test_unsupported_sb3_option_is_a_value_error_naming_the_algorithm(cls):
    with pytest.raises(ValueError, match=rf"^{cls.__name__} does not take use_sde \(state-dependent exploration"):
        cls("MlpPolicy", "toy/reach-v0", use_sde=True)
    with pytest.raises(ValueError, match=rf"^{cls.__name__} does not take learning_rte; its arguments: .*learning_rate"):
        cls("MlpPolicy", "toy/reach-v0", learning_rte=1e-3)


@pytest.mark.parametrize("cls", [PEBBLE, PARL])
def test_preference_learners_pass_sacs_replay_buffer_options_through(cls):
    kwargs = {"handle_timeout_termination": False}  # SB3 asks for it with optimize_memory_usage
    model = cls("MlpPolicy", "toy/reach-v0", buffer_size=200, optimize_memory_usage=True, replay_buffer_kwargs=kwargs)
    assert model.optimize_memory_usage and model.replay_buffer.optimize_memory_usage
    assert model.replay_buffer.handle_timeout_termination is False


@pytest.mark.parametrize("cls", ALL)
def test_loading_and_copying_still_work(cls, tmp_path):
    """The checks run on construction by name only: SB3's load (a policy class, no env) passes them."""
    import copy

    kwargs = {"n_steps": 64, "batch_size": 64} if cls in (MDPO, PMOEPPO) else {"buffer_size": 100}
    model = cls("MlpPolicy", "toy/reach-v0", seed=0, **kwargs)
    model.save(tmp_path / "model.zip")
    assert type(cls.load(tmp_path / "model.zip", device="cpu")) is cls
    assert type(copy.deepcopy(model.policy)) is type(model.policy)


@pytest.mark.parametrize("cls", ["PMOESAC", "MDPO", "BC"])
def test_tensorboard_log_works_online_and_offline(cls, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import rlkit
    from rlkit.data.generate import generate

    algo = getattr(rlkit, cls)
    kwargs = {"n_steps": 64, "batch_size": 64} if cls == "MDPO" else {"learning_starts": 10, "buffer_size": 100}
    if cls == "BC":
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
        kwargs = {"dataset": generate("toy/reach-v0", ["random"], size=200, progress_bar=False)["random"]}
    model = algo("MlpPolicy", "toy/reach-v0", tensorboard_log=str(tmp_path / "tb"), seed=0, **kwargs)
    model.learn(128, log_interval=1)
    assert list((tmp_path / "tb").glob("*_1/events.out.tfevents.*"))
