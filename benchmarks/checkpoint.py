"""Checkpoints of a run in progress, so that a restarted run continues instead of starting over.

Every ``every`` steps (on-policy algorithms: at the first rollout boundary after)
a run saves, in ``<dir>/step_<n>/``: the model zip, the
replay buffer (off-policy algorithms), the ``VecNormalize`` statistics, the
random-number generators (python, numpy, torch, the action space) and the
evaluations made so far. The folder is written under a temporary name and
renamed, then ``<dir>/latest`` is replaced atomically, so a process killed at
any moment leaves the previous checkpoint usable. A restarted run resumes from
``latest`` if its configuration hash matches; the episode in progress at the
checkpoint restarts from a reset.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from benchmarks.store import write_atomic


def rng_state(model: BaseAlgorithm) -> dict[str, Any]:
    """Every generator a training step draws from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state(),
        "action_space": model.action_space.np_random.bit_generator.state,
    }
    if th.cuda.is_available():
        state["cuda"] = th.cuda.get_rng_state_all()
    return state


def set_rng_state(model: BaseAlgorithm, state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    model.action_space.np_random.bit_generator.state = state["action_space"]
    if "cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["cuda"])


class Checkpointer(BaseCallback):
    """Save a checkpoint every ``every`` steps (see the module docstring).

    :param directory: the run's checkpoint folder
    :param every: steps between checkpoints (env steps online, gradient steps offline)
    :param config_hash: the run's configuration hash; a checkpoint of another configuration is ignored
    :param extra_state: called at save time; returns JSON-able state of the caller (e.g. the learning curve)
    """

    def __init__(self, directory: Path, every: int, config_hash: str, extra_state: Any) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.every = every
        self.config_hash = config_hash
        self.extra_state = extra_state
        self._last_save = 0

    def _on_training_start(self) -> None:
        self._last_save = self.num_timesteps

    def _due(self) -> bool:
        return self.num_timesteps - self._last_save >= self.every

    def _on_step(self) -> bool:
        # on-policy algorithms save between rollouts (their rollout buffer is not saved)
        if self._due() and not isinstance(self.model, OnPolicyAlgorithm):
            self.save(self.model)
        return True

    def _on_rollout_start(self) -> None:
        if self._due() and isinstance(self.model, OnPolicyAlgorithm):
            self.save(self.model)

    def save(self, model: BaseAlgorithm) -> Path:
        """Write a checkpoint of ``model`` at its current step and point ``latest`` to it."""
        step = model.num_timesteps
        final = self.directory / f"step_{step}"
        tmp = self.directory / f".step_{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save(tmp / "model.zip")
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            model.save_replay_buffer(tmp / "replay_buffer.pkl")
        vec_normalize = model.get_vec_normalize_env()
        if vec_normalize is not None:
            vec_normalize.save(str(tmp / "vecnormalize.pkl"))
        with open(tmp / "rng.pkl", "wb") as handle:
            pickle.dump(rng_state(model), handle)
        state = {"step": step, "config_hash": self.config_hash, **self.extra_state()}
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        write_atomic(self.directory / "latest", final.name)
        for old in self.directory.glob("step_*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        self._last_save = step
        return final

    def latest(self) -> Path | None:
        """The newest complete checkpoint of this configuration, or ``None``."""
        try:
            path = self.directory / (self.directory / "latest").read_text().strip()
            state = json.loads((path / "state.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return path if state.get("config_hash") == self.config_hash else None

    def restore(
        self, path: Path, model_cls: type[BaseAlgorithm], env: VecEnv, **load_kwargs: Any
    ) -> tuple[BaseAlgorithm, dict]:
        """Load the model of checkpoint ``path`` on ``env`` with its buffer, normalisation and RNG state.

        :return: the model and the extra state saved with it
        """
        if (path / "vecnormalize.pkl").exists():
            env = VecNormalize.load(str(path / "vecnormalize.pkl"), env.venv if isinstance(env, VecNormalize) else env)
        model = model_cls.load(path / "model.zip", env=env, **load_kwargs)
        if (path / "replay_buffer.pkl").exists():
            model.load_replay_buffer(path / "replay_buffer.pkl")
        with open(path / "rng.pkl", "rb") as handle:
            set_rng_state(model, pickle.load(handle))
        state = json.loads((path / "state.json").read_text())
        self._last_save = state["step"]
        return model, state

    def clear(self) -> None:
        """Remove every checkpoint of the run (after it finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)
