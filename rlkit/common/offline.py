"""OfflineAlgorithm: an SB3 ``BaseAlgorithm`` trained from a fixed dataset."""

from __future__ import annotations

import sys
import time
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common import utils
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback, ProgressBarCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from rlkit.common.buffers import DatasetReplayBuffer
from rlkit.common import evaluation
from rlkit.data.minari import OfflineDataset, load_dataset

SelfOfflineAlgorithm = TypeVar("SelfOfflineAlgorithm", bound="OfflineAlgorithm")


class GradientStepProgressBar(ProgressBarCallback):
    """SB3's progress bar, advanced by one per gradient step (works without an env)."""

    def _on_step(self) -> bool:
        self.pbar.update(1)
        return True


class OfflineAlgorithm(evaluation.EvaluateMixin, BaseAlgorithm):
    """Base class of algorithms trained from an offline dataset.

    ``learn(n)`` runs ``n`` gradient steps: ``num_timesteps`` counts gradient
    steps and callbacks (``EvalCallback``, ``CheckpointCallback``, ...) get
    ``on_step()`` after each one. The env, if given, only provides the spaces and
    evaluation; without one the spaces come from the dataset. Observations are
    normalised with the dataset's mean and standard deviation, which are saved
    with the model and applied by :meth:`predict`, so a loaded model acts without
    its dataset. Subclasses implement ``_setup_model()`` (calling this one first)
    and ``train(gradient_steps, batch_size)``.

    :param policy: the policy model (an alias of ``policy_aliases`` or a class)
    :param env: the environment (a gymnasium env, a ``VecEnv`` with one env, an id for
        :func:`rlkit.envs.make_env`, or ``None``)
    :param dataset: an :class:`~rlkit.data.minari.OfflineDataset`, or a Minari id or path for
        :func:`~rlkit.data.minari.load_dataset`
    :param learning_rate: learning rate, constant or a schedule of the remaining progress (1 to 0)
    :param batch_size: minibatch size of each gradient step
    :param gamma: discount factor
    :param normalize_obs: normalise observations with the dataset's mean and std (+ ``obs_norm_eps``)
    :param obs_norm_eps: added to the observation std
    :param reward_scale: rewards are ``reward_scale * r + reward_shift`` in training
    :param reward_shift: see ``reward_scale``
    :param schedule_horizon: gradient steps over which learning-rate schedules anneal: the progress
        remaining is ``1 - num_timesteps / schedule_horizon`` (floored at 0), whatever the ``learn`` calls'
        budgets; ``None`` anneals over each ``learn`` call, as SB3 does
    :param policy_kwargs: keyword arguments of the policy
    :param tensorboard_log: tensorboard log folder (``None``: no logging)
    :param verbose: 0 no output, 1 info (logger dumps every ``log_interval`` steps), 2 debug
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, ..., or auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {}
    replay_buffer: DatasetReplayBuffer | None

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        batch_size: int = 256,
        gamma: float = 0.99,
        normalize_obs: bool = True,
        obs_norm_eps: float = 1e-3,
        reward_scale: float = 1.0,
        reward_shift: float = 0.0,
        schedule_horizon: int | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if schedule_horizon is not None and schedule_horizon <= 0:
            raise ValueError(f"schedule_horizon must be a positive number of gradient steps (or None), got {schedule_horizon}")
        if isinstance(env, str):
            from rlkit.envs import make_env

            env = make_env(env)
        super().__init__(
            policy=policy,
            env=env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=False,
            seed=seed,
        )
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.gamma = gamma
        self.normalize_obs = normalize_obs
        self.obs_norm_eps = obs_norm_eps
        self.reward_scale = reward_scale
        self.reward_shift = reward_shift
        self.schedule_horizon = schedule_horizon
        self.obs_mean: np.ndarray | None = None
        self.obs_std: np.ndarray | None = None
        self.ref_min_score: float | None = None
        self.ref_max_score: float | None = None
        self.dataset_id: str | None = None
        self.replay_buffer = None
        if self.env is None:
            self.n_envs = 1
        if _init_setup_model:
            if dataset is None:
                raise ValueError(
                    f"{type(self).__name__} needs dataset= (an OfflineDataset, a Minari id or a path); "
                    "generate one with `python -m rlkit.data.generate --env <env id> --kinds medium`"
                )
            self._setup_model()

    def _setup_model(self) -> None:
        """Attach the dataset (if any), check the spaces, seed, and build the policy."""
        if self.dataset is not None:
            self._attach_dataset(load_dataset(self.dataset))
        elif getattr(self, "observation_space", None) is None:
            raise ValueError(f"{type(self).__name__} needs an env or a dataset to know its spaces")
        if not isinstance(self.action_space, spaces.Box):
            raise ValueError(f"{type(self).__name__} needs a continuous Box action space, got {self.action_space}")
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs)
        self.policy = self.policy.to(self.device)

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        """Check ``dataset`` against the spaces, compute its statistics and build the replay buffer."""
        if self.env is not None:
            dataset.check_compatible(self.observation_space, self.action_space, where="the env")
        elif getattr(self, "observation_space", None) is not None:
            dataset.check_compatible(self.observation_space, self.action_space, where="the model")
        else:
            self.observation_space, self.action_space = dataset.observation_space, dataset.action_space
        self.dataset = dataset
        self.dataset_id = dataset.dataset_id
        if self.ref_min_score is None and self.ref_max_score is None:
            self.ref_min_score, self.ref_max_score = dataset.ref_min_score, dataset.ref_max_score
        if self.normalize_obs and self.obs_mean is None:
            self.obs_mean, self.obs_std = dataset.observation_statistics(self.obs_norm_eps)
        reward_scale, reward_shift = self._reward_transform(dataset)
        self.replay_buffer = DatasetReplayBuffer(
            dataset,
            device=self.device,
            action_space=self.action_space,
            obs_mean=self.obs_mean,
            obs_std=self.obs_std,
            reward_scale=reward_scale,
            reward_shift=reward_shift,
        )

    def _reward_transform(self, dataset: OfflineDataset) -> tuple[float, float]:
        """``(scale, shift)`` of the training rewards; subclasses may derive them from the dataset."""
        return self.reward_scale, self.reward_shift

    def _setup_learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        reset_num_timesteps: bool = True,
        tb_log_name: str = "run",
        progress_bar: bool = False,
    ) -> tuple[int, BaseCallback]:
        """Reset the counters, configure the logger and the callbacks (no env reset: there is no rollout)."""
        self.start_time = time.time_ns()
        if reset_num_timesteps:
            self.num_timesteps = 0
        else:
            total_timesteps += self.num_timesteps
        self._total_timesteps = total_timesteps
        self._num_timesteps_at_start = self.num_timesteps
        if not self._custom_logger:
            self._logger = utils.configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        return total_timesteps, self._init_callback(callback, progress_bar)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool = False) -> BaseCallback:
        """SB3's callback set-up with a progress bar over gradient steps."""
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        if progress_bar:
            callback = CallbackList([callback, GradientStepProgressBar()])
        callback.init_callback(self)
        return callback

    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        """SB3's progress over this ``learn`` call, or over ``schedule_horizon`` gradient steps when it is set."""
        if self.schedule_horizon is None:
            super()._update_current_progress_remaining(num_timesteps, total_timesteps)
        else:
            self._current_progress_remaining = max(0.0, 1.0 - num_timesteps / self.schedule_horizon)

    def episode_horizon(self, dataset: OfflineDataset) -> float:
        """The env's time limit (1000 for D4RL and DSRL locomotion), else the dataset's longest episode.

        Reward scales and cost budgets that the papers state per episode use this length: the
        longest episode of a dataset of short, failed episodes would shrink them.
        """
        if self.env is not None:
            spec = self.env.get_attr("spec")[0]
            # a TimeLimit's (MuJoCo, DMC, Meta-World), else the env's own (rlkit's toy tasks)
            limit = getattr(spec, "max_episode_steps", None) or getattr(
                self.env.get_attr("unwrapped")[0], "max_episode_steps", None
            )
            if limit:
                return float(limit)
        return float(dataset.episode_lengths.max())

    def learn(
        self: SelfOfflineAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOfflineAlgorithm:
        """Run ``total_timesteps`` gradient steps on the dataset.

        :param total_timesteps: number of gradient steps
        :param callback: callback(s) called after every gradient step
        :param log_interval: dump the logger every ``log_interval`` gradient steps
        :param tb_log_name: name of the run for tensorboard
        :param reset_num_timesteps: restart the gradient-step counter (``False`` continues it)
        :param progress_bar: show a progress bar over gradient steps
        :return: the trained model
        """
        if self.replay_buffer is None:
            raise ValueError(
                f"{type(self).__name__} has no dataset to learn from: pass dataset= at construction "
                f"or to {type(self).__name__}.load(path, dataset=...)"
            )
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(gradient_steps=1, batch_size=self.batch_size)
            self.num_timesteps += 1
            callback.update_locals(locals())
            if not callback.on_step():
                break
            if log_interval > 0 and self.num_timesteps % log_interval == 0:
                self.dump_logs()
        callback.on_training_end()
        return self

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """Run ``gradient_steps`` updates on minibatches of ``batch_size`` transitions."""
        raise NotImplementedError

    def dump_logs(self) -> None:
        """Record the timing keys (``time/fps`` is gradient steps per second) and dump the logger."""
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        self.logger.record("time/fps", int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed))
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def normalize_observation(self, observation: np.ndarray) -> np.ndarray:
        """Apply the saved observation normalisation to raw observations."""
        if self.obs_mean is None or self.obs_std is None:
            return observation
        return ((np.asarray(observation, dtype=np.float32) - self.obs_mean) / self.obs_std).astype(np.float32)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Action(s) for raw observation(s): the dataset normalisation is applied first.

        :param observation: the observation(s), as the env returns them
        :param state: unused (no recurrent policy), kept for SB3's signature
        :param episode_start: unused, kept for SB3's signature
        :param deterministic: return the deterministic action
        :return: the action(s) in the env's bounds and ``None``
        """
        if isinstance(observation, dict):
            raise ValueError(f"{type(self).__name__} needs Box observations, got a dict observation")
        return self.policy.predict(self.normalize_observation(observation), state, episode_start, deterministic)

    def normalized_score(self, episode_return: float | np.ndarray) -> float | np.ndarray:
        """D4RL normalised score (x100) with the dataset's reference scores (saved with the model).

        :param episode_return: undiscounted episode return(s)
        """
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(
                f"{type(self).__name__} has no ref_min_score / ref_max_score: its dataset had none; set model.ref_min_score "
                "and model.ref_max_score (D4RL's: rlkit.data.scores.d4rl_ref_scores)"
            )
        return evaluation.normalized_score(episode_return, self.ref_min_score, self.ref_max_score)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "dataset"]
