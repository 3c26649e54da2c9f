"""PEBBLE: preference-based SAC with unsupervised pre-training and relabelling (Lee, Smith, Abbeel, 2021)."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from rlkit.common.fast_sac import FastSAC
from rlkit.common.evaluation import EvaluateMixin
from rlkit.common.preference import (
    QUERY_SCHEMES,
    Episode,
    EpisodeStore,
    PreferenceDataset,
    RewardEnsemble,
    ScriptedTeacher,
    Segments,
    sample_segment_pairs,
    select_queries,
)
from rlkit.common.utils import CheckedArguments, check_box_action_space

SelfPEBBLE = TypeVar("SelfPEBBLE", bound="PEBBLE")


class RelabelReplayBuffer(ReplayBuffer):
    """SB3's replay buffer whose sampled rewards can be replaced on the fly (PEBBLE's intrinsic reward phase)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reward_transform: Any = None

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> ReplayBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        if self.reward_transform is None:
            return samples
        return samples._replace(rewards=self.reward_transform(samples))

    def relabel(self, reward_fn: Any, chunk_size: int = 10_000) -> None:
        """Replace every stored reward by ``reward_fn(observations, actions)`` (numpy in, numpy out)."""
        size = self.buffer_size if self.full else self.pos
        for start in range(0, size, chunk_size):
            window = slice(start, min(start + chunk_size, size))
            obs, act = self.observations[window], self.actions[window]
            flat = reward_fn(obs.reshape(-1, obs.shape[-1]), act.reshape(-1, act.shape[-1]))
            self.rewards[window] = flat.reshape(self.rewards[window].shape)


class PEBBLE(CheckedArguments, EvaluateMixin, FastSAC):
    """
    PEBBLE: SAC on a reward learned from a scripted teacher's preferences, with unsupervised
    pre-training and relabelling.

    Paper: https://arxiv.org/abs/2106.05091 (Lee, Smith, Abbeel, "PEBBLE: Feedback-Efficient
    Interactive Reinforcement Learning via Relabeling Experience and Unsupervised Pre-training", ICML 2021)
    Code: https://github.com/rll-research/BPref (``train_PEBBLE.py``, ``reward_model.py``, ``agent/sac.py``),
    followed for the details the paper leaves open.

    The loop, in env steps t:

    1. t < ``learning_starts``: uniformly random actions (PEBBLE's seed steps, 1000);
    2. the next ``unsup_steps`` steps: SAC on the state-entropy intrinsic reward
       r_int(s) = ||s - s^k||, the distance to the k-th nearest neighbour (k = ``topk``) of s among
       all states in the replay buffer, divided by its running standard deviation (paper Eq. 5);
    3. at t = learning_starts + unsup_steps, the first reward learning: ``reward_batch`` queries
       sampled uniformly, the ensemble trained (Bradley-Terry, paper Eq. 3-4), the whole replay
       buffer relabelled with r_hat, the critic re-initialised and ``reset_update`` SAC updates;
    4. afterwards every ``num_interact`` steps, while the feedback given is below ``max_feedback``:
       ``reward_batch`` queries chosen by ``query_scheme`` among ``large_batch * reward_batch``
       candidates (the last batch trimmed to the feedback left, so ``max_feedback`` is never
       exceeded), reward learning, relabelling;
    5. SAC updates on r_hat (each new transition is stored with r_hat of its (s, a)).

    Queries are pairs of ``segment_length``-step segments from the last ``max_episodes`` finished
    episodes, labelled by a :class:`~rlkit.common.preference.ScriptedTeacher` from the env's true
    reward, whose thresholds are rescaled before each round by the mean return of the last 10
    episodes times H / episode length. The agent never trains on the true reward.
    :meth:`progress_info` reports the feedback used (``queries``: pairs asked, ``labelled``:
    pairs answered, i.e. not skipped).

    Settings of the paper's scripts: DMC walker-walk: lr 5e-4, 2 x 1024 networks, batch 1024,
    init temperature 0.1, ``num_interact`` 20000, ``max_feedback`` 500 or 1000 with
    ``reward_batch`` 50 or 100, ``reward_update`` 50; Meta-World: 3 x 256, batch 512, lr 3e-4,
    ``num_interact`` 5000, ``max_feedback`` 10000 or 20000 (``reward_batch`` 50 or 100),
    ``reward_update`` 10; all: segment 50, ensemble 3, ``large_batch`` 10, 1000 seed steps,
    9000 unsupervised steps (``benchmarks/suites/pbrl.yaml``).

    Deviations from the code: SB3's SAC update (one critic target update per step, ``tau`` as set), run on the
    off-policy family's fast path (:class:`~rlkit.common.fast_sac.FastSAC`: the same numbers, fused Adam);
    the teacher thresholds are scale * eps after every round (the code uses scale * eps^2 after
    the first); feedback is counted in pairs asked, as the code's ``total_feedback``.

    :param policy: The policy model to use (MlpPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: learning rate for adam optimizer of the actor, critics and temperature
    :param buffer_size: size of the replay buffer
    :param learning_starts: seed steps of uniformly random actions before any update (paper: 1000)
    :param batch_size: Minibatch size for each gradient update
    :param tau: the soft update coefficient ("Polyak update", between 0 and 1)
    :param gamma: the discount factor
    :param train_freq: Update the model every ``train_freq`` steps.
    :param gradient_steps: How many gradient steps to do after each rollout
    :param action_noise: the action noise type (None by default)
    :param ent_coef: Entropy regularization coefficient (``"auto_0.1"``: learned from 0.1, as the paper's DMC setting)
    :param target_update_interval: update the target network every ``target_update_interval`` gradient steps
    :param target_entropy: target entropy when learning ``ent_coef``
    :param replay_buffer_kwargs: keyword arguments of the replay buffer (SAC's)
    :param optimize_memory_usage: SAC's memory-efficient replay buffer (next observations not stored twice)
    :param unsup_steps: steps of unsupervised state-entropy pre-training after the seed steps (paper: 9000)
    :param topk: k of the k-nearest-neighbour state entropy (paper: 5)
    :param num_interact: env steps between query rounds (DMC 20000, Meta-World 5000)
    :param max_feedback: total number of queries (pairs asked)
    :param reward_batch: queries per round
    :param segment_length: steps H per segment (paper: 50)
    :param query_scheme: ``"uniform"``, ``"disagreement"`` or ``"entropy"`` (B-Pref's: the members' mean entropy
        of their preference probabilities); the first round is always uniform
    :param large_batch: candidates per query for disagreement/entropy, as a multiple of ``reward_batch`` (paper: 10)
    :param reward_update: maximum epochs of reward learning per round (DMC 50, Meta-World 10)
    :param reward_learning_rate: Adam learning rate of the reward ensemble (paper: 3e-4)
    :param reward_batch_size: labelled pairs per reward gradient step (paper: 128)
    :param reward_ensemble_size: number of reward networks (paper: 3)
    :param reward_net_arch: hidden layers of each reward network (paper: 3 x 256)
    :param teacher: a B-Pref preset name (oracle, mistake, noisy, skip, myopic, equal) or a dict
        ``{"preset": name, **TeacherConfig fields}``
    :param max_episodes: finished episodes kept for sampling segments (paper: 100)
    :param reset_update: SAC updates right after the critic reset (paper: 100)
    :param stats_window_size: Window size for the rollout logging
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators (networks, segment sampling and the teacher)
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": SACPolicy}
    replay_buffer: RelabelReplayBuffer

    def __init__(
        self,
        policy: str | type[SACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1000,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        unsup_steps: int = 9000,
        topk: int = 5,
        num_interact: int = 20_000,
        max_feedback: int = 1000,
        reward_batch: int = 100,
        segment_length: int = 50,
        query_scheme: str = "disagreement",
        large_batch: int = 10,
        reward_update: int = 50,
        reward_learning_rate: float = 3e-4,
        reward_batch_size: int = 128,
        reward_ensemble_size: int = 3,
        reward_net_arch: list[int] | None = None,
        teacher: str | dict[str, Any] = "oracle",
        max_episodes: int = 100,
        reset_update: int = 100,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        env = check_box_action_space(env, type(self).__name__, verbose)
        if query_scheme not in QUERY_SCHEMES:
            raise ValueError(f"query_scheme must be one of {', '.join(QUERY_SCHEMES)}, got {query_scheme!r}")
        self.unsup_steps = unsup_steps
        self.topk = topk
        self.num_interact = num_interact
        self.max_feedback = max_feedback
        self.reward_batch = reward_batch
        self.segment_length = segment_length
        self.query_scheme = query_scheme
        self.large_batch = large_batch
        self.reward_update = reward_update
        self.reward_learning_rate = reward_learning_rate
        self.reward_batch_size = reward_batch_size
        self.reward_ensemble_size = reward_ensemble_size
        self.reward_net_arch = [256, 256, 256] if reward_net_arch is None else list(reward_net_arch)
        self.teacher_spec = teacher
        self.max_episodes = max_episodes
        self.reset_update = reset_update
        super().__init__(
            policy,
            env,  # type: ignore[arg-type]
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=RelabelReplayBuffer,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            ent_coef=ent_coef,
            target_update_interval=target_update_interval,
            target_entropy=target_entropy,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )
        self.teacher = ScriptedTeacher.from_spec(teacher, seed=seed)
        self.preference_rng = np.random.default_rng(None if seed is None else seed + 1)
        self.episode_store = EpisodeStore(max_episodes)
        self.preference_data = PreferenceDataset()
        self.state_entropy_stats = RunningMeanStd(shape=())
        self.total_feedback = 0
        self.labelled_feedback = 0
        self.reward_learned = False
        self.steps_since_query = 0
        self._open_episodes: list[list[tuple[np.ndarray, np.ndarray, float]]] = []

    def _setup_model(self) -> None:
        super()._setup_model()
        assert isinstance(self.observation_space, spaces.Box) and isinstance(self.action_space, spaces.Box)
        self.reward_model = RewardEnsemble(
            int(np.prod(self.observation_space.shape)),
            int(np.prod(self.action_space.shape)),
            n_members=self.reward_ensemble_size,
            net_arch=self.reward_net_arch,
            learning_rate=self.reward_learning_rate,
        ).to(self.device)

    # ------------------------------------------------------------------ reward model and teacher

    def learned_reward(self, observations: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """r_hat(s, a), the ensemble mean, for flat batches of observations and (normalised) actions."""
        with th.no_grad():
            obs = th.as_tensor(observations, dtype=th.float32, device=self.device)
            act = th.as_tensor(actions, dtype=th.float32, device=self.device)
            return self.reward_model.reward(obs, act).cpu().numpy()

    def progress_info(self) -> dict[str, float]:
        """Feedback used so far: pairs asked (``queries``) and pairs answered (``labelled``)."""
        return {"queries": float(self.total_feedback), "labelled": float(self.labelled_feedback)}

    def _query_episodes(self) -> list[Episode]:
        """The episodes that queries are cut from: every stored one."""
        return list(self.episode_store.episodes)

    def _can_query(self) -> bool:
        return any(len(ep.rewards) >= self.segment_length for ep in self._query_episodes())

    def _ask_teacher(self, scheme: str) -> tuple[Segments, Segments, np.ndarray]:
        """Choose ``reward_batch`` pairs, have them labelled, store the answered ones; return those.

        The last round is trimmed to the feedback left, so that ``max_feedback`` is never exceeded
        (B-Pref's ``train_PEBBLE.py`` trims the batch the same way).
        """
        n_queries = max(0, min(self.reward_batch, self.max_feedback - self.total_feedback))
        n_candidates = n_queries if scheme == "uniform" else n_queries * self.large_batch
        candidates0, candidates1 = sample_segment_pairs(
            self._query_episodes(), n_candidates, self.segment_length, self.preference_rng
        )
        index = select_queries(self.reward_model, candidates0, candidates1, n_queries, scheme)
        segments0, segments1 = candidates0.take(index), candidates1.take(index)
        self.teacher.set_thresholds(self.episode_store.mean_segment_return(self.segment_length))
        labels = self.teacher.label(segments0.rewards, segments1.rewards)
        segments0, segments1 = segments0.take(labels.keep), segments1.take(labels.keep)
        self.total_feedback += len(index)
        self.labelled_feedback += len(labels.targets)
        if len(labels.targets):
            self.preference_data.add(segments0, segments1, labels.targets)
        return segments0, segments1, labels.targets

    def _fit_reward(self, segments0: Segments, segments1: Segments, targets: np.ndarray) -> dict[str, float]:
        """Train the ensemble on every labelled pair (the arguments are this round's new pairs)."""
        return self.reward_model.fit(self.preference_data, self.reward_update, self.reward_batch_size, self.preference_rng)

    def _learn_reward(self, scheme: str) -> None:
        """One query round: ask, train the reward model, relabel the replay buffer."""
        segments0, segments1, targets = self._ask_teacher(scheme)
        if len(self.preference_data) == 0:
            return
        stats = self._fit_reward(segments0, segments1, targets)
        self.replay_buffer.relabel(self.learned_reward)
        self.reward_learned = True
        for key, value in stats.items():
            self.logger.record(f"reward/{key}", value)
        self.logger.record("reward/queries", self.total_feedback)
        self.logger.record("reward/labelled", self.labelled_feedback)

    def _reset_critic(self) -> None:
        """Re-initialise Q and Q-target and the critic's optimizer (PEBBLE after the first reward learning)."""
        for module in self.critic.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic.optimizer = self.policy.optimizer_class(
            self.critic.parameters(),
            lr=self.lr_schedule(self._current_progress_remaining),
            **self.policy.optimizer_kwargs,
        )

    def _on_step(self) -> None:
        super()._on_step()
        self.steps_since_query += self.n_envs
        unsup_end = self.learning_starts + self.unsup_steps
        if self.num_timesteps < unsup_end or not self._can_query():
            return
        if not self.reward_learned:
            if self.total_feedback >= self.max_feedback:
                return
            self._learn_reward("uniform")
            if self.reward_learned:
                self._reset_critic()
                self.train(gradient_steps=self.reset_update, batch_size=self.batch_size)
            self.steps_since_query = 0
        elif self.total_feedback < self.max_feedback and self.steps_since_query >= self.num_interact:
            self._learn_reward(self.query_scheme)
            self.steps_since_query = 0

    # ------------------------------------------------------------------ transitions and updates

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        obs = self._last_obs if self._vec_normalize_env is None else self._last_original_obs
        assert isinstance(obs, np.ndarray)
        if not self._open_episodes:
            self._open_episodes = [[] for _ in range(len(dones))]
        for i, done in enumerate(dones):
            self._open_episodes[i].append((obs[i].copy(), buffer_action[i].copy(), float(reward[i])))
            if done:
                steps = self._open_episodes[i]
                self.episode_store.add(
                    np.stack([s[0] for s in steps]), np.stack([s[1] for s in steps]), np.array([s[2] for s in steps])
                )
                self._open_episodes[i] = []
        stored_reward = (
            self.learned_reward(obs.reshape(len(dones), -1), buffer_action.reshape(len(dones), -1))
            if self.reward_learned
            else np.zeros_like(reward, dtype=np.float32)
        )
        super()._store_transition(replay_buffer, buffer_action, new_obs, stored_reward, dones, infos)

    def _intrinsic_reward(self, samples: ReplayBufferSamples) -> th.Tensor:
        """k-NN state entropy of the batch states against every state in the buffer, over its running std."""
        size = self.replay_buffer.buffer_size if self.replay_buffer.full else self.replay_buffer.pos
        states = th.as_tensor(self.replay_buffer.observations[:size], device=self.device).reshape(
            -1, samples.observations.shape[-1]
        )
        batch = samples.observations.reshape(len(samples.observations), -1)
        k = min(self.topk + 1, len(states))
        distances = th.cat([th.cdist(batch, chunk) for chunk in states.split(10_000)], dim=1)
        knn = distances.kthvalue(k, dim=1).values
        self.state_entropy_stats.update(knn.cpu().numpy())
        return (knn / max(float(np.sqrt(self.state_entropy_stats.var)), 1e-8)).reshape(-1, 1)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        if not self.reward_learned:
            self.replay_buffer.reward_transform = self._intrinsic_reward
        try:
            super().train(gradient_steps, batch_size)
        finally:
            self.replay_buffer.reward_transform = None

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "reward_model", "reward_model.optimizer"], variables

    def learn(
        self: SelfPEBBLE,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PEBBLE",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPEBBLE:
        if reset_num_timesteps:
            self._open_episodes = []  # the env is reset: unfinished episodes are dropped
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
