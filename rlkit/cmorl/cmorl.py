"""C-MORL: Pareto initialisation, crowding-distance selection and constrained Pareto extension (Liu et al., 2025)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.type_aliases import MaybeCallback, Schedule
from stable_baselines3.common.utils import configure_logger, get_device

from rlkit.cmorl.mo_ppo import MODummyVecEnv, MOPPO, MOVecNormalize, n_objectives_of
from rlkit.cmorl.policies import MOActorCriticPolicy
from rlkit.common.mo_metrics import crowding_distance, hypervolume, pareto_mask, simplex_grid
from rlkit.envs import make_env

#: how ``total_timesteps`` counts (see :class:`CMORL`)
STEP_ACCOUNTING = ("total", "per_process")
#: observation normalisation of :class:`~rlkit.cmorl.mo_ppo.MOVecNormalize` (SB3's defaults, C-MORL's clip)
OBS_CLIP, OBS_EPSILON = 10.0, 1e-8


@dataclass
class ArchiveMember:
    """One evaluated policy of the Pareto archive, with what it needs to act on its own.

    :param returns: evaluated (discounted) return vector ``G^pi``
    :param state_dict: the policy's parameters (on CPU)
    :param obs_rms: its observation normalisation statistics (``None``: raw observations)
    :param ret_rms: its per-objective return statistics (reward normalisation)
    :param preference: weight ``w`` of the initialisation policy it descends from
    :param objective: objective it was last extended on (``None`` for an initialisation policy)
    """

    returns: np.ndarray
    state_dict: dict[str, th.Tensor]
    obs_rms: RunningMeanStd | None
    ret_rms: RunningMeanStd | None
    preference: np.ndarray
    objective: int | None = None

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """Observations as the policy saw them in training (normalised and clipped like ``VecNormalize``)."""
        if self.obs_rms is None:
            return np.asarray(obs, dtype=np.float32)
        scaled = (np.asarray(obs) - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + OBS_EPSILON)
        return np.clip(scaled, -OBS_CLIP, OBS_CLIP).astype(np.float32)


@dataclass
class ParetoArchive:
    """The external Pareto archive of C-MORL (§5.2).

    It keeps evaluated policies whose returns are non-dominated and weakly dominate the reference
    point (if one is given), at most ``max_size`` of them (the ones with the largest crowding
    distance). :meth:`select` returns the policies in the sparsest regions, extremes first, never
    one whose return vector was selected before.

    :param max_size: archive bound (paper code: 200)
    :param ref_point: reference point; points that do not weakly dominate it are dropped
    """

    max_size: int = 200
    ref_point: np.ndarray | None = None
    members: list[ArchiveMember] = field(default_factory=list)
    selected: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def returns(self) -> np.ndarray:
        """``(n_members, n_objectives)`` return vectors."""
        return np.array([m.returns for m in self.members]).reshape(len(self.members), -1)

    def update(self, candidates: Sequence[ArchiveMember]) -> None:
        """Merge ``candidates``, keep the non-dominated ones above the reference point, prune by crowding distance."""
        pool = self.members + list(candidates)
        if self.ref_point is not None:
            pool = [m for m in pool if np.all(m.returns >= self.ref_point)]
        if not pool:
            self.members = []
            return
        returns = np.array([m.returns for m in pool])
        pool = [m for m, keep in zip(pool, pareto_mask(returns), strict=True) if keep]
        if len(pool) > self.max_size:
            order = np.argsort(-crowding_distance(np.array([m.returns for m in pool])), kind="stable")
            pool = [pool[i] for i in sorted(order[: self.max_size])]
        self.members = pool

    def select(self, n: int) -> list[ArchiveMember]:
        """The ``n`` members of largest crowding distance (ends of the front first) not selected before.

        :param n: how many to select (``N_select``)
        :return: the selected members, which are remembered so that they are not selected again
        """
        if not self.members:
            return []
        order = np.argsort(-crowding_distance(self.returns), kind="stable")
        chosen: list[ArchiveMember] = []
        for i in order:
            member = self.members[i]
            if any(np.array_equal(member.returns, s) for s in self.selected):
                continue
            chosen.append(member)
            self.selected.append(member.returns.copy())
            if len(chosen) == n:
                break
        return chosen

    def best_for(self, preference: np.ndarray) -> int:
        """Index of the member maximising ``w^T G`` (the paper's policy assignment, Def. 3.1)."""
        if not self.members:
            raise ValueError("the archive is empty: call learn() first (or no policy weakly dominates ref_point)")
        return int(np.argmax(self.returns @ np.asarray(preference, dtype=np.float64)))


def evaluate_returns(
    predict: Callable[[np.ndarray], np.ndarray],
    env: gym.Env,
    n_episodes: int,
    gamma: float = 1.0,
    seed: int | None = None,
) -> np.ndarray:
    """Mean (discounted) vector return of a deterministic controller over ``n_episodes`` episodes.

    :param predict: maps a raw observation to an action
    :param env: a vector-reward env (episodes end at its termination or truncation)
    :param n_episodes: episodes to average
    :param gamma: discount of the return (C-MORL's code: 0.99; 1 for the undiscounted return)
    :param seed: seed of the first episode's reset (episode ``i`` uses ``seed + i``)
    :return: ``(n_objectives,)`` mean return
    """
    totals = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + episode)
        total, discount, done = 0.0, 1.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(predict(obs))
            total = total + discount * np.asarray(reward, dtype=np.float64)
            discount *= gamma
            done = terminated or truncated
        totals.append(total)
    return np.mean(totals, axis=0)


class CMORL:
    """
    C-MORL: constrained multi-objective RL that finds a Pareto front of policies.

    Paper: https://arxiv.org/abs/2410.02236 (Liu, Pan, Xu, Song, You, Chen, "C-MORL: Multi-Objective
    Reinforcement Learning through Efficient Discovery of Pareto Front", ICLR 2025)
    Code: https://github.com/RuohLiuq/C-MORL

    1. **Pareto initialisation** (§5.1): one :class:`~rlkit.cmorl.mo_ppo.MOPPO` per weight of the grid
       :func:`~rlkit.common.mo_metrics.simplex_grid` (``weight_step``, ``weight_bounds``), trained
       with the scalarised actor loss on ``init_fraction`` of the budget; every ``eval_interval``
       updates (and at the end) the deterministic policy is evaluated and becomes a candidate.
    2. **Archive** (§5.2): :class:`ParetoArchive`, non-dominated candidates above ``ref_point``,
       at most ``archive_size``, pruned by crowding distance.
    3. **Pareto extension** (§5.3), until the budget is spent: select the ``n_select`` sparsest
       members (crowding distance, extremes first, never twice) and, for each selected ``pi_r`` and
       each objective ``l``, continue a copy of ``pi_r`` (with its normalisation statistics) for up to
       ``update_iter`` updates of the log-barrier loss, i.e. ``max G_l`` subject to
       ``G_j - r_j >= beta * (G_j^{pi_r} - r_j)`` for every ``j != l`` (``r`` = ``ref_point``, so
       the constraint keeps a share of each objective's margin above the reference point and is
       slack for negative returns; the paper writes it with ``r = 0``); its evaluations every
       ``extension_eval_interval`` updates are candidates. The archive is updated after each round.
    4. **Assignment** (Def. 3.1): :meth:`predict` with ``preference=w`` acts with the archive member
       maximising ``w^T G``.

    Budget (``step_accounting``): ``"total"`` counts the environment steps of all policies and all
    their envs, so a PPO update costs ``n_steps * n_envs``; ``"per_process"`` counts as the released
    code does (``num_updates = steps / num_steps``), one env process's steps, so an update costs
    ``n_steps`` whatever ``n_envs`` is and the real interaction is ``n_envs`` times the budget. With
    ``"per_process"`` the paper's budgets give the paper's numbers of updates (Hopper-2d, 1.5M steps,
    8 envs, 512 steps: 325 initialisation updates per policy, then 97 per selected policy and
    objective in rounds of 20/20/20/20/17). :attr:`num_timesteps` is in the budget's unit,
    :attr:`env_steps` counts interactions. Stage 2 gives every (policy, objective) pair the same
    number of updates per round, so a few steps may remain unused.

    Behaviours of the released code that are not reproduced: the linear learning-rate decay of the
    initialisation is not carried into the extension (each extension starts at ``learning_rate``;
    the released code reloads the decayed optimiser, so late snapshots are extended at nearly zero
    learning rate); every objective ``l`` is extended from ``pi_r`` itself (the released code
    extends objective ``l + 1`` from the end of objective ``l``'s extension); each extension starts
    with a fresh Adam state (the released code inherits the parent's); the value loss is unclipped
    (the released code clips it); and the barrier is the paper's form unless ``legacy_ipo=True``.

    CMORL is not an SB3 ``BaseAlgorithm``: it trains and keeps many policies, each a
    :class:`~rlkit.cmorl.mo_ppo.MOPPO` (an SB3 ``PPO``) with its own env copies and normalisation,
    so there is no single policy, env or rollout for ``BaseAlgorithm`` to own. It keeps the SB3
    surface: ``learn(total_timesteps, callback, progress_bar)`` (the callbacks run inside every
    policy's ``learn``), ``predict(obs, state, episode_start, deterministic)`` (plus ``preference``),
    ``save(path)`` / ``CMORL.load(path, env=None)`` with identical predictions, and SB3's logger.

    :param policy: The policy model to use (MlpPolicy)
    :param env: A vector-reward environment (MO-Gymnasium style, with ``reward_space``) or an id for
        :func:`rlkit.make_env` (copies for every policy are built from the id or from ``env.spec``)
    :param weight_step: Step ``Delta`` of the initialisation weight grid (paper, Hopper-2d: 0.2 -> 6 policies)
    :param weight_bounds: ``(min, max)`` of the enumerated weights (paper: (0, 1); 3-objective tasks: (0.2, 0.8))
    :param init_fraction: Fraction of the budget spent on initialisation (paper code: 1.0M of 1.5M)
    :param n_select: Policies selected per extension round (``N_select``, paper: 5 or 6)
    :param beta: Fraction of each other objective that an extension must keep (paper: 0.9)
    :param barrier_t: Barrier parameter ``t`` (paper code: 20)
    :param update_iter: Extension updates per selected policy and objective per round (paper code: 20)
    :param legacy_ipo: Use the released code's barrier instead of the paper's (see :class:`~rlkit.cmorl.mo_ppo.MOPPO`)
    :param constrained: Extend with the barrier (C-MORL); ``False`` maximises objective ``l`` alone,
        without the constraint (an ablation)
    :param archive_size: Bound of the Pareto archive (paper code: 200)
    :param ref_point: Reference point of the archive, of the logged hypervolume and of the
        constraint margins ``(G_j - r_j) >= beta (G_j^{pi_r} - r_j)``; ``None``: none (margins from 0)
    :param step_accounting: ``"total"`` (env steps of all envs) or ``"per_process"`` (the released
        code's: steps of one env process), see above
    :param eval_episodes: Episodes per evaluation of a candidate (paper: 5 or 10)
    :param eval_gamma: Discount of the evaluated returns (paper code: 0.99)
    :param eval_interval: Initialisation updates between evaluations (paper code: 10)
    :param extension_eval_interval: Extension updates between evaluations (paper code: 1)
    :param n_envs: Parallel envs per policy (paper code: 8)
    :param normalize: Normalise observations and per-objective rewards (paper code: yes)
    :param learning_rate: PPO learning rate (paper: 3e-4)
    :param n_steps: Steps per env per PPO update (paper code: 512)
    :param batch_size: PPO minibatch size (paper code: 512 * 8 / 32 = 128)
    :param n_epochs: PPO epochs per update (paper: 10)
    :param gamma: Discount factor (paper code: 0.995)
    :param gae_lambda: GAE lambda (paper: 0.95)
    :param clip_range: PPO clip range (paper: 0.2)
    :param ent_coef: Entropy coefficient (paper: 0)
    :param vf_coef: Value loss coefficient (paper: 0.5)
    :param max_grad_norm: Gradient-norm clip (paper: 0.5)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages (archive updates)
    :param seed: Seed for the pseudo random generators (policy ``i`` uses ``seed + i``)
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    """

    def __init__(
        self,
        policy: str | type[MOActorCriticPolicy],
        env: gym.Env | str | None,
        weight_step: float = 0.2,
        weight_bounds: Sequence[float] = (0.0, 1.0),
        init_fraction: float = 2 / 3,
        n_select: int = 5,
        beta: float = 0.9,
        barrier_t: float = 20.0,
        update_iter: int = 20,
        legacy_ipo: bool = False,
        constrained: bool = True,
        archive_size: int = 200,
        ref_point: Sequence[float] | None = None,
        step_accounting: str = "total",
        eval_episodes: int = 5,
        eval_gamma: float = 0.99,
        eval_interval: int = 10,
        extension_eval_interval: int = 1,
        n_envs: int = 1,
        normalize: bool = True,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 512,
        batch_size: int = 128,
        n_epochs: int = 10,
        gamma: float = 0.995,
        gae_lambda: float = 0.95,
        clip_range: float = 0.2,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
    ):
        if not 0 < init_fraction <= 1:
            raise ValueError(f"init_fraction must be in (0, 1], got {init_fraction}")
        if step_accounting not in STEP_ACCOUNTING:
            raise ValueError(f"step_accounting must be one of {', '.join(STEP_ACCOUNTING)}, got {step_accounting!r}")
        self.policy = policy
        self.weight_step = weight_step
        self.weight_bounds = tuple(weight_bounds)
        self.init_fraction = init_fraction
        self.n_select = n_select
        self.beta = beta
        self.barrier_t = barrier_t
        self.update_iter = update_iter
        self.legacy_ipo = legacy_ipo
        self.constrained = constrained
        self.step_accounting = step_accounting
        self.eval_episodes = eval_episodes
        self.eval_gamma = eval_gamma
        self.eval_interval = eval_interval
        self.extension_eval_interval = extension_eval_interval
        self.n_envs = n_envs
        self.normalize = normalize
        self.ppo_kwargs: dict[str, Any] = {
            "learning_rate": learning_rate,
            "n_steps": n_steps,
            "batch_size": batch_size,
            "n_epochs": n_epochs,
            "gamma": gamma,
            "gae_lambda": gae_lambda,
            "clip_range": clip_range,
            "ent_coef": ent_coef,
            "vf_coef": vf_coef,
            "max_grad_norm": max_grad_norm,
            "policy_kwargs": policy_kwargs,
        }
        self.verbose = verbose
        self.seed = seed
        self.device = get_device(device)
        #: steps spent, in the unit of the budget (see ``step_accounting``)
        self.num_timesteps = 0
        #: environment interactions of all policies and envs
        self.env_steps = 0
        #: (steps, archive size, hypervolume of the archive or None) after every archive update
        self.history: list[dict[str, float | None]] = []
        self._policies: dict[int, MOActorCriticPolicy] = {}
        self._logger: Logger | None = None
        self.env_factory: Callable[[], gym.Env] | None = None
        self.env: gym.Env | None = None
        if env is not None:
            self._set_env(env)
        self.archive = ParetoArchive(archive_size, None if ref_point is None else np.asarray(ref_point, dtype=np.float64))

    def _set_env(self, env: gym.Env | str) -> None:
        if isinstance(env, str):
            env_id = env
            self.env_factory = lambda: make_env(env_id)
            env = self.env_factory()
        elif env.spec is not None:
            spec = env.spec
            self.env_factory = lambda: gym.make(spec, disable_env_checker=True)
        else:
            raise ValueError(f"{type(self).__name__} needs an env id or an env with a spec (to build copies), got {env}")
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(
                f"{type(self).__name__} only supports continuous (gymnasium.spaces.Box) action spaces, "
                f"but the environment has action space {env.action_space}"
            )
        self.n_objectives = n_objectives_of(env)
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    @property
    def logger(self) -> Logger:
        """SB3's logger shared by every policy's training."""
        if self._logger is None:
            self._logger = configure_logger(self.verbose, None, type(self).__name__, True)
        return self._logger

    def set_logger(self, logger: Logger) -> None:
        """Use ``logger`` for C-MORL's and every policy's records (as SB3's ``set_logger``)."""
        self._logger = logger

    def initial_weights(self) -> np.ndarray:
        """The preference grid of the initialisation stage."""
        return simplex_grid(self.n_objectives, self.weight_step, *self.weight_bounds)

    def _steps_per_update(self) -> int:
        """Budget cost of one PPO update (see ``step_accounting``)."""
        return self.ppo_kwargs["n_steps"] * (self.n_envs if self.step_accounting == "total" else 1)

    def _new_model(self, seed: int, **kwargs: Any) -> MOPPO:
        assert self.env_factory is not None
        venv = MODummyVecEnv([self.env_factory for _ in range(self.n_envs)])
        model = MOPPO(
            self.policy,
            venv,
            normalize=self.normalize,
            beta=self.beta,
            barrier_t=self.barrier_t,
            legacy_ipo=self.legacy_ipo,
            seed=seed,
            device=self.device,
            **self.ppo_kwargs,
            **kwargs,
        )
        model.set_logger(self.logger)
        return model

    def _snapshot(self, model: MOPPO, returns: np.ndarray, preference: np.ndarray, objective: int | None) -> ArchiveMember:
        venv = model.get_vec_normalize_env()
        return ArchiveMember(
            returns=np.asarray(returns, dtype=np.float64),
            state_dict={k: v.detach().cpu().clone() for k, v in model.policy.state_dict().items()},
            obs_rms=copy.deepcopy(venv.obs_rms) if venv is not None and venv.norm_obs else None,
            ret_rms=copy.deepcopy(venv.ret_rms) if venv is not None else None,
            preference=np.asarray(preference, dtype=np.float64),
            objective=objective,
        )

    def _evaluate(self, model: MOPPO) -> np.ndarray:
        venv = model.get_vec_normalize_env()
        assert self.env is not None

        def predict(obs: np.ndarray) -> np.ndarray:
            obs = venv.normalize_obs(obs) if venv is not None else obs
            return model.predict(obs, deterministic=True)[0]

        seed = None if self.seed is None else 10_000 + self.seed
        return evaluate_returns(predict, self.env, self.eval_episodes, self.eval_gamma, seed)

    def _train(
        self, model: MOPPO, n_updates: int, interval: int, callback: MaybeCallback, progress_bar: bool
    ) -> list[np.ndarray]:
        """Train ``model`` for ``n_updates`` PPO updates, evaluating every ``interval`` and at the end."""
        evaluations = []
        done = 0
        while done < n_updates:
            chunk = min(interval, n_updates - done)
            model.learn(
                chunk * self.ppo_kwargs["n_steps"] * self.n_envs,
                callback=callback,
                reset_num_timesteps=False,
                progress_bar=progress_bar,
            )
            self.num_timesteps += chunk * self._steps_per_update()
            self.env_steps += chunk * self.ppo_kwargs["n_steps"] * self.n_envs
            done += chunk
            returns = self._evaluate(model)
            model.current_return = returns
            evaluations.append(returns)
        return evaluations

    def _update_archive(self, candidates: list[ArchiveMember], stage: int) -> None:
        self.archive.update(candidates)
        self._policies.clear()
        ref = self.archive.ref_point
        hv = hypervolume(self.archive.returns, ref) if ref is not None and len(self.archive) else None
        self.history.append({"step": self.num_timesteps, "archive_size": len(self.archive), "hypervolume": hv})
        self.logger.record("cmorl/stage", stage)
        self.logger.record("cmorl/archive_size", len(self.archive))
        if hv is not None:
            self.logger.record("cmorl/hypervolume", hv)
        self.logger.dump(self.num_timesteps)

    def learn(self, total_timesteps: int, callback: MaybeCallback = None, progress_bar: bool = False) -> ParetoArchive:
        """Run both stages on ``total_timesteps`` environment steps and return the Pareto archive.

        :param total_timesteps: the budget, in the unit of ``step_accounting``
        :param callback: SB3 callback(s) passed to every policy's ``learn``
        :param progress_bar: show SB3's progress bar in every policy's ``learn``
        :return: the archive (also :attr:`archive`)
        """
        if self.env_factory is None:
            raise ValueError("learn() needs an environment: construct the model with env= (or load it with env=)")
        base_seed = 0 if self.seed is None else self.seed
        weights = self.initial_weights()
        per_policy = int(self.init_fraction * total_timesteps) // len(weights)
        init_updates = max(1, per_policy // self._steps_per_update())
        candidates = []
        for i, w in enumerate(weights):
            model = self._new_model(base_seed + i, weights=w, actor_loss="scalarized")
            for returns in self._train(model, init_updates, self.eval_interval, callback, progress_bar):
                candidates.append(self._snapshot(model, returns, w, None))
        self._update_archive(candidates, stage=1)

        job = 0
        while self.init_fraction < 1:
            remaining = (total_timesteps - self.num_timesteps) // self._steps_per_update()
            selected = self.archive.select(self.n_select) if remaining > 0 else []
            n_updates = min(self.update_iter, remaining // max(1, len(selected) * self.n_objectives))
            if not selected or n_updates < 1:
                break
            candidates = []
            for parent in selected:
                for objective in range(self.n_objectives):
                    job += 1
                    model = self._new_model(
                        base_seed + 1_000 + job,
                        weights=parent.preference,
                        actor_loss="barrier" if self.constrained else "objective",
                        objective=objective,
                        constraint_reference=parent.returns,
                        ref_point=self.archive.ref_point,
                    )
                    self._load_member(model, parent)
                    for returns in self._train(model, n_updates, self.extension_eval_interval, callback, progress_bar):
                        candidates.append(self._snapshot(model, returns, parent.preference, objective))
            self._update_archive(candidates, stage=2)
        return self.archive

    @staticmethod
    def _load_member(model: MOPPO, member: ArchiveMember) -> None:
        model.policy.load_state_dict(member.state_dict)
        venv = model.get_vec_normalize_env()
        if isinstance(venv, MOVecNormalize):
            if member.obs_rms is not None:
                venv.obs_rms = copy.deepcopy(member.obs_rms)
            if member.ret_rms is not None:
                venv.ret_rms = copy.deepcopy(member.ret_rms)

    def _member_policy(self, index: int) -> MOActorCriticPolicy:
        if index not in self._policies:
            kwargs = {**(self.ppo_kwargs["policy_kwargs"] or {}), "n_objectives": self.n_objectives}
            policy_cls = MOPPO.policy_aliases[self.policy] if isinstance(self.policy, str) else self.policy
            policy = policy_cls(self.observation_space, self.action_space, lambda _: 0.0, **kwargs).to(self.device)
            policy.load_state_dict(self.archive.members[index].state_dict)
            policy.set_training_mode(False)
            self._policies[index] = policy
        return self._policies[index]

    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        preference: Sequence[float] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Act with the archive member that is best for ``preference`` (``argmax_pi w^T G^pi``).

        :param observation: raw observation(s) of the env (each member normalises with its own statistics)
        :param state: unused (no recurrent policy), as in SB3
        :param episode_start: unused, as in SB3
        :param deterministic: the mean action (default) or a sample
        :param preference: weight ``w`` over the objectives (default: uniform)
        :return: the action(s) and ``None``
        """
        w = np.full(self.n_objectives, 1.0 / self.n_objectives) if preference is None else np.asarray(preference, float)
        index = self.archive.best_for(w)
        member = self.archive.members[index]
        return self._member_policy(index).predict(member.normalize_obs(observation), state, episode_start, deterministic)

    def member_predictor(self, index: int) -> Callable[[np.ndarray], np.ndarray]:
        """A deterministic controller (raw observation -> action) of archive member ``index``."""
        member, policy = self.archive.members[index], self._member_policy(index)
        return lambda obs: policy.predict(member.normalize_obs(obs), deterministic=True)[0]

    def _constructor_params(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "weight_step": self.weight_step,
            "weight_bounds": self.weight_bounds,
            "init_fraction": self.init_fraction,
            "n_select": self.n_select,
            "beta": self.beta,
            "barrier_t": self.barrier_t,
            "update_iter": self.update_iter,
            "legacy_ipo": self.legacy_ipo,
            "constrained": self.constrained,
            "archive_size": self.archive.max_size,
            "ref_point": None if self.archive.ref_point is None else self.archive.ref_point.tolist(),
            "step_accounting": self.step_accounting,
            "eval_episodes": self.eval_episodes,
            "eval_gamma": self.eval_gamma,
            "eval_interval": self.eval_interval,
            "extension_eval_interval": self.extension_eval_interval,
            "n_envs": self.n_envs,
            "normalize": self.normalize,
            **self.ppo_kwargs,
            "verbose": self.verbose,
            "seed": self.seed,
        }

    def save(self, path: str | Path) -> None:
        """Save the settings, the spaces and the archive (each member's parameters and normalisation statistics).

        :param path: file to write (``torch.save`` format)
        """
        th.save(
            {
                "class": type(self).__name__,
                "params": self._constructor_params(),
                "spaces": (self.observation_space, self.action_space, self.n_objectives),
                "archive": {"members": self.archive.members, "selected": self.archive.selected},
                "history": self.history,
                "num_timesteps": self.num_timesteps,
                "env_steps": self.env_steps,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, env: gym.Env | str | None = None, device: th.device | str = "auto") -> CMORL:
        """Load a model saved by :meth:`save`; ``env`` is only needed to continue training.

        :param path: the saved file
        :param env: the environment (or its id), optional
        :param device: device of the loaded policies
        :return: the model, its archive restored
        """
        data = th.load(path, map_location="cpu", weights_only=False)
        params = dict(data["params"])
        policy = params.pop("policy")
        if data["class"] != cls.__name__:
            raise ValueError(f"{path} holds a {data['class']}, not a {cls.__name__}")
        if cls is not CMORL:
            params = {k: v for k, v in params.items() if k in cls._own_params}
        model = cls(policy, env, device=device, **params)
        model.observation_space, model.action_space, model.n_objectives = data["spaces"]
        model.archive.members = data["archive"]["members"]
        model.archive.selected = data["archive"]["selected"]
        model.history = data["history"]
        model.num_timesteps = data["num_timesteps"]
        model.env_steps = data.get("env_steps", data["num_timesteps"])
        return model


class LinearScalarizationPPO(CMORL):
    """
    Linear-scalarisation baseline: PPO with a vector critic on evenly spaced preference weights.

    It is C-MORL's initialisation stage given the whole budget (``init_fraction=1``, no extension):
    one :class:`~rlkit.cmorl.mo_ppo.MOPPO` per weight of the grid of step ``weight_step``, each
    evaluated every ``eval_interval`` updates, the evaluations kept in the same Pareto archive. With
    equal ``total_timesteps`` it spends the same environment steps as :class:`CMORL`.

    :param policy: The policy model to use (MlpPolicy)
    :param env: A vector-reward environment or an id for :func:`rlkit.make_env`
    :param weight_step: Step of the evenly spaced weights
    :param weight_bounds: ``(min, max)`` of the enumerated weights
    :param archive_size: Bound of the Pareto archive
    :param ref_point: Reference point of the archive, ``None`` for none
    :param step_accounting: ``"total"`` or ``"per_process"`` (as :class:`CMORL`)
    :param eval_episodes: Episodes per evaluation
    :param eval_gamma: Discount of the evaluated returns
    :param eval_interval: PPO updates between evaluations
    :param n_envs: Parallel envs per policy
    :param normalize: Normalise observations and per-objective rewards
    :param learning_rate: PPO learning rate
    :param n_steps: Steps per env per PPO update
    :param batch_size: PPO minibatch size
    :param n_epochs: PPO epochs per update
    :param gamma: Discount factor
    :param gae_lambda: GAE lambda
    :param clip_range: PPO clip range
    :param ent_coef: Entropy coefficient
    :param vf_coef: Value loss coefficient
    :param max_grad_norm: Gradient-norm clip
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run.
    """

    _own_params = (
        "weight_step",
        "weight_bounds",
        "archive_size",
        "ref_point",
        "step_accounting",
        "eval_episodes",
        "eval_gamma",
        "eval_interval",
        "n_envs",
        "normalize",
        "learning_rate",
        "n_steps",
        "batch_size",
        "n_epochs",
        "gamma",
        "gae_lambda",
        "clip_range",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
        "policy_kwargs",
        "verbose",
        "seed",
    )

    def __init__(
        self,
        policy: str | type[MOActorCriticPolicy],
        env: gym.Env | str | None,
        weight_step: float = 0.2,
        weight_bounds: Sequence[float] = (0.0, 1.0),
        archive_size: int = 200,
        ref_point: Sequence[float] | None = None,
        step_accounting: str = "total",
        eval_episodes: int = 5,
        eval_gamma: float = 0.99,
        eval_interval: int = 10,
        n_envs: int = 1,
        normalize: bool = True,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 512,
        batch_size: int = 128,
        n_epochs: int = 10,
        gamma: float = 0.995,
        gae_lambda: float = 0.95,
        clip_range: float = 0.2,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
    ):
        super().__init__(
            policy,
            env,
            weight_step=weight_step,
            weight_bounds=weight_bounds,
            init_fraction=1.0,
            archive_size=archive_size,
            ref_point=ref_point,
            step_accounting=step_accounting,
            eval_episodes=eval_episodes,
            eval_gamma=eval_gamma,
            eval_interval=eval_interval,
            n_envs=n_envs,
            normalize=normalize,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
        )
