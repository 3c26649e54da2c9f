"""OPPO: Offline Preference-guided Policy Optimization."""

from __future__ import annotations

import os
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import update_learning_rate
from torch.nn import functional as F

from rlkit.common.offline import OfflineAlgorithm
from rlkit.common.preference import PreferencePool, heldout_pool, preference_accuracy, resolve_pool
from rlkit.common.sequence import RollingHistory, Windows, WindowSampler
from rlkit.data.minari import OfflineDataset
from rlkit.oppo.policies import NETWORK_SIZES, OPPOPolicy

SelfOPPO = TypeVar("SelfOPPO", bound="OPPO")


class WindowTensors(NamedTuple):
    """Windows on the model's device: observations, actions (in [-1, 1]), timesteps and masks."""

    observations: th.Tensor
    actions: th.Tensor
    timesteps: th.Tensor
    mask: th.Tensor

    @classmethod
    def from_windows(cls, windows: Windows, device: th.device) -> WindowTensors:
        """The observations, actions, timesteps and masks of ``windows`` as tensors on ``device``."""
        return cls(
            th.as_tensor(windows.observations, device=device),
            th.as_tensor(windows.actions, device=device),
            th.as_tensor(windows.timesteps, device=device),
            th.as_tensor(windows.mask, device=device),
        )

    def select(self, index: th.Tensor | slice) -> WindowTensors:
        """The windows at ``index``."""
        return WindowTensors(*(field[index] for field in self))

    @staticmethod
    def cat(parts: list[WindowTensors]) -> WindowTensors:
        """The windows of ``parts``, one after the other."""
        return WindowTensors(*(th.cat(fields) for fields in zip(*parts, strict=True)))


class OPPOBatch(NamedTuple):
    """The windows of one gradient step.

    The first ``n_him`` windows (two halves, OPPO's B1 and B2) are reconstructed (HIM);
    pair ``i`` compares windows ``first[i]`` and ``second[i]`` with label ``targets[i]`` =
    P(second preferred).
    """

    windows: WindowTensors
    n_him: int
    first: th.Tensor
    second: th.Tensor
    targets: th.Tensor


def triplet_roles(z_first: th.Tensor, z_second: th.Tensor, targets: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Positive (preferred) and negative contexts of the strict pairs; ties (0.5) are left out.

    Labels are P(second preferred): 0 means the first segment is better (``lb`` of the
    official code), 1 the second (``rb``).

    :param z_first: contexts of the first segments, ``(N, z_dim)``
    :param z_second: contexts of the second segments, ``(N, z_dim)``
    :param targets: P(second preferred), ``(N,)``
    :return: ``(positive, negative)``, each ``(n_strict, z_dim)``
    """
    first_better, second_better = targets < 0.5, targets > 0.5
    positive = th.cat([z_first[first_better], z_second[second_better]])
    negative = th.cat([z_second[first_better], z_first[second_better]])
    return positive, negative


def preference_loss(z_star: th.Tensor, positive: th.Tensor, negative: th.Tensor, margin: float) -> th.Tensor:
    """L_PM = mean over strict pairs of max(0, ||z* - z+|| - ||z* - z-|| + m) (PyTorch's TripletMarginLoss, eps 1e-6).

    Zero (not NaN, unlike the official code's mean over an empty set) when there is no strict pair.

    :param z_star: the anchor z*, ``(z_dim,)``
    :param positive: contexts of the preferred segments, ``(n, z_dim)``
    :param negative: contexts of the dispreferred segments, ``(n, z_dim)``
    :param margin: the triplet margin m (1)
    """
    if len(positive) == 0:
        return z_star.sum() * 0.0
    anchor = z_star.expand_as(positive)
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=2, eps=1e-6)


class OPPO(OfflineAlgorithm):
    """Offline Preference-guided Policy Optimization (Kang, Shi, Liu, He & Wang, ICML 2023).

    Paper: https://arxiv.org/abs/2305.16217; official code bkkgbkjb/OPPO (scripted variant).

    OPPO learns no reward. An encoder I_theta maps a window tau of K steps to a context
    ``z = I_theta(tau)``; a contextual causal transformer pi_phi(a | s, z) reconstructs the
    window's actions from z (hindsight information matching); a free vector z*, the optimal
    context, is pulled toward the contexts of preferred segments and pushed away from the
    dispreferred ones by a triplet loss, which also shapes the encoder. At test time the
    policy acts with z*. Each gradient step (Algorithm 1, alternating):

    1. (theta, phi): ``L = L_HIM(B1) + L_HIM(B2) + lambda_PM L_PM(sg(z*), theta) + lambda_N L_N(theta)``, with
       ``L_HIM`` the mean squared error of the reconstructed actions over the real steps,
       ``L_PM`` the triplet loss ``max(0, ||z* - z+|| - ||z* - z-|| + m)`` over the strictly
       labelled pairs and ``L_N = sum_B mean (||z|| - 1)^2`` (here twice the mean over the step's windows,
       the official sum over B1 and B2 when the pairs are those windows); gradients clipped to norm 0.25
       separately for encoder and policy, AdamW steps on both, linear warm-up of the policy's
       learning rate;
    2. z*: ``L_PM(z*, sg(theta))`` with the contexts recomputed by the updated encoder, an AdamW
       step on z* only (skipped when the batch has no strict pair, so weight decay does not move
       z* on a step without labels).

    Labels. With ``n_labels=None`` (and no ``preference_pool``) every sampled pair of windows is
    labelled on the fly from its 200-step future return (``foresee``), as in the official code:
    an unlimited label budget. With ``n_labels=N_q`` a fixed pool of N_q labelled pairs
    (:func:`~rlkit.common.preference.load_or_create_pool`, segments of K steps; each step draws
    ``batch_size`` of its strict pairs) gives the triplet term, and the HIM term uses 2 x ``batch_size`` fresh
    windows of the whole dataset.
    rlkit's labels are P(second preferred); :func:`triplet_roles` turns them into OPPO's
    roles.

    Deviations from the official code, each documented where it is made: the encoder averages
    the outputs of the real tokens (the code sums all of them, padding included); at
    evaluation z* fills the context of every position of the history, as in training (the
    code puts z* at the last position only and zeros before it: ``zero_context_eval=True``);
    near the end of a time-limited episode the foresee return is extrapolated
    (:meth:`~rlkit.common.sequence.WindowSampler.foresee_returns`); an all-tied batch gives a
    zero triplet loss, not NaN. The paper's body (its equations and its description of the
    scripted teacher) could not be checked; the losses follow the official code.

    :param policy: the policy model ("TransformerPolicy" or its alias "MlpPolicy")
    :param env: the environment, its id, or ``None`` (spaces from the dataset)
    :param dataset: an ``OfflineDataset``, a Minari id or a path
    :param preference_pool: a :class:`~rlkit.common.preference.PreferencePool` to learn from (segments of K steps)
    :param n_labels: N_q of the cached pool to use; ``None`` (and no pool): label every sampled pair (official)
    :param label_mode: score of the pool's teacher: ``foresee`` (OPPO) or ``window``
    :param foresee: steps of the foresee return (200)
    :param pool_seed: seed of the label pool (the same pool for every training seed and method)
    :param teacher: the scripted teacher of the pool (a preset of :data:`~rlkit.common.preference.TEACHER_PRESETS`)
    :param pool_dir: cache folder of pools (default ``$RLKIT_PREFERENCE_POOLS`` or ``~/.cache/rlkit/preference-pools``)
    :param heldout_labels: size of a held-out pool of the same settings (another seed) whose preference accuracy
        :meth:`progress_info` reports; 0: none
    :param context_length: K, steps of each window and of the policy's history (20)
    :param z_dim: size of the context z (8)
    :param network_size: transformer sizes, ``"paper"`` (3 layers, width 128) or ``"cpu"`` (1 layer, width 64);
        ``policy_kwargs`` override single entries
    :param learning_rate: AdamW learning rate of the encoder and the policy (1e-4)
    :param weight_decay: AdamW weight decay of the encoder and the policy (1e-4)
    :param context_learning_rate: AdamW learning rate of z* (``w_lr``: 1e-3)
    :param context_weight_decay: AdamW weight decay of z* (1e-4)
    :param warmup_steps: linear warm-up of the policy's learning rate, ``min((n + 1) / warmup, 1)`` (10,000)
    :param pref_loss_coef: lambda_PM (``pref_loss_ratio``: 0.1)
    :param norm_loss_coef: lambda_N (``phi_norm_loss_ratio``: 0.1)
    :param margin: triplet margin m of the strict preferences, > 0 (1)
    :param max_grad_norm: gradient-norm clip of the encoder and of the policy, each (0.25)
    :param batch_size: pairs per step; the HIM term reconstructs 2 x ``batch_size`` windows (64)
    :param zero_context_eval: act as the official evaluation code: z* at the last position, zero context before
    :param normalize_obs: normalise observations with the dataset's mean and std
    :param policy_kwargs: keyword arguments of :class:`~rlkit.oppo.policies.OPPOPolicy`
    :param tensorboard_log: tensorboard log folder
    :param verbose: verbosity level
    :param seed: seed of the pseudo random generators
    :param device: device (cpu, cuda, auto)
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"TransformerPolicy": OPPOPolicy, "MlpPolicy": OPPOPolicy}
    policy: OPPOPolicy

    def __init__(
        self,
        policy: str | type[OPPOPolicy],
        env: GymEnv | str | None,
        dataset: OfflineDataset | str | None = None,
        preference_pool: PreferencePool | None = None,
        n_labels: int | None = None,
        label_mode: str = "foresee",
        foresee: int = 200,
        pool_seed: int = 0,
        teacher: str | dict = "oracle",
        pool_dir: str | os.PathLike | None = None,
        heldout_labels: int = 0,
        context_length: int = 20,
        z_dim: int = 8,
        network_size: str = "paper",
        learning_rate: float | Schedule = 1e-4,
        weight_decay: float = 1e-4,
        context_learning_rate: float = 1e-3,
        context_weight_decay: float = 1e-4,
        warmup_steps: int = 10_000,
        pref_loss_coef: float = 0.1,
        norm_loss_coef: float = 0.1,
        margin: float = 1.0,
        max_grad_norm: float = 0.25,
        batch_size: int = 64,
        zero_context_eval: bool = False,
        normalize_obs: bool = True,
        policy_kwargs: dict[str, Any] | None = None,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if network_size not in NETWORK_SIZES:
            raise ValueError(f"Unknown network_size {network_size!r}; known: {', '.join(NETWORK_SIZES)}")
        if context_length <= 0 or z_dim <= 0 or warmup_steps <= 0:
            raise ValueError(
                f"context_length, z_dim and warmup_steps must be positive, got {context_length}, {z_dim}, {warmup_steps}"
            )
        if n_labels is not None and n_labels <= 0:
            raise ValueError(f"n_labels must be positive or None (label every sampled pair), got {n_labels}")
        if margin <= 0:
            # the triplet loss of strict preferences (ties are dropped, so the paper's margin-0 tie loss never applies)
            raise ValueError(f"margin must be positive (the paper's triplet margin is 1), got {margin}")
        self.preference_pool = preference_pool
        self.n_labels = n_labels
        self.label_mode = label_mode
        self.foresee = foresee
        self.pool_seed = pool_seed
        self.teacher = teacher
        self.pool_dir = None if pool_dir is None else str(pool_dir)
        self.heldout_labels = heldout_labels
        self.context_length = context_length
        self.z_dim = z_dim
        self.network_size = network_size
        self.weight_decay = weight_decay
        self.context_learning_rate = context_learning_rate
        self.context_weight_decay = context_weight_decay
        self.warmup_steps = warmup_steps
        self.pref_loss_coef = pref_loss_coef
        self.norm_loss_coef = norm_loss_coef
        self.margin = margin
        self.max_grad_norm = max_grad_norm
        self.zero_context_eval = zero_context_eval
        self._sampler: WindowSampler | None = None
        self._pool: PreferencePool | None = None
        self._heldout_pool: PreferencePool | None = None
        self._pool_windows: tuple[WindowTensors, WindowTensors] | None = None
        self._context_override: th.Tensor | None = None
        policy_kwargs = {
            **NETWORK_SIZES[network_size],
            "context_length": context_length,
            "z_dim": z_dim,
            **(policy_kwargs or {}),
        }
        super().__init__(
            policy,
            env,
            dataset=dataset,
            learning_rate=learning_rate,
            batch_size=batch_size,
            normalize_obs=normalize_obs,
            policy_kwargs=policy_kwargs,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=_init_setup_model,
        )

    # ------------------------------------------------------------------ set-up

    def _setup_model(self) -> None:
        super()._setup_model()
        self.encoder_optimizer = th.optim.AdamW(
            self.policy.encoder.parameters(), lr=self.lr_schedule(1), weight_decay=self.weight_decay, fused=True
        )
        self.actor_optimizer = th.optim.AdamW(
            self.policy.actor.parameters(), lr=self.lr_schedule(1), weight_decay=self.weight_decay, fused=True
        )
        self.context_optimizer = th.optim.AdamW(
            [self.policy.z_star], lr=self.context_learning_rate, weight_decay=self.context_weight_decay, fused=True
        )
        self._rng = np.random.default_rng(self.seed)
        if self._pool is not None:
            assert self._sampler is not None
            first, second = self._pool.windows(self._sampler)
            self._pool_windows = (
                WindowTensors.from_windows(first, self.device),
                WindowTensors.from_windows(second, self.device),
            )

    def _attach_dataset(self, dataset: OfflineDataset) -> None:
        super()._attach_dataset(dataset)
        longest = int(dataset.episode_lengths.max())
        max_timestep = self.policy_kwargs.setdefault("max_timestep", max(1000, longest))
        if longest > max_timestep:
            raise ValueError(
                f"The dataset has an episode of {longest} steps but the timestep embedding has {max_timestep} entries: "
                f"pass policy_kwargs=dict(max_timestep={longest}) or more"
            )
        assert isinstance(self.action_space, spaces.Box)
        low, high = self.action_space.low, self.action_space.high
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ValueError(f"OPPO needs a bounded Box action space (its policy ends in tanh), got {self.action_space}")
        self._sampler = WindowSampler(dataset, self.context_length, self.obs_mean, self.obs_std, low, high, pad_action=-10.0)
        self._pool = resolve_pool(
            dataset,
            self.preference_pool,
            self.n_labels,
            self.label_mode,
            self.context_length,
            self.foresee,
            self.pool_seed,
            self.teacher,
            self.pool_dir,
        )
        if self._pool is not None:
            if self._pool.segment_length != self.context_length:
                raise ValueError(
                    f"OPPO encodes the labelled segments with its context window: the pool's segments have "
                    f"{self._pool.segment_length} steps but context_length is {self.context_length}; use a pool with "
                    f"segment_length={self.context_length}"
                )
            if not self._pool.strict.any():
                raise ValueError("Every pair of the label pool is a tie (0.5): OPPO's triplet loss needs strict preferences")
        self._heldout_pool = heldout_pool(
            dataset,
            self.heldout_labels,
            self.label_mode,
            self.pool_seed,
            self.context_length,
            self.foresee,
            self.teacher,
            self.pool_dir,
        )

    # ------------------------------------------------------------------ batches and updates

    def _sample_batch(self, batch_size: int) -> OPPOBatch:
        """2 x ``batch_size`` fresh windows for HIM, and ``batch_size`` labelled pairs (fresh or from the pool)."""
        assert self._sampler is not None
        fresh = self._sampler.sample(2 * batch_size, self._rng)
        windows = WindowTensors.from_windows(fresh, self.device)
        if self._pool_windows is None:
            # The official scripted labels: the two halves compared by their foresee return (ties: 0.5, dropped)
            score = self._sampler.foresee_returns(fresh.episodes, fresh.starts, self.foresee)
            first_score, second_score = score[:batch_size], score[batch_size:]
            labels = np.where(second_score > first_score, 1.0, np.where(second_score < first_score, 0.0, 0.5))
            first = th.arange(batch_size, device=self.device)
            return OPPOBatch(
                windows, 2 * batch_size, first, first + batch_size, th.as_tensor(labels, dtype=th.float32, device=self.device)
            )
        assert self._pool is not None
        strict = np.flatnonzero(self._pool.strict)
        pick = th.as_tensor(strict[self._rng.integers(len(strict), size=batch_size)], device=self.device)
        pool_first, pool_second = self._pool_windows
        windows = WindowTensors.cat([windows, pool_first.select(pick), pool_second.select(pick)])
        first = th.arange(2 * batch_size, 3 * batch_size, device=self.device)
        targets = th.as_tensor(self._pool.targets, device=self.device)[pick]
        return OPPOBatch(windows, 2 * batch_size, first, first + batch_size, targets)

    def _him_loss(self, z: th.Tensor, windows: WindowTensors, n_him: int) -> th.Tensor:
        """L_HIM(B1) + L_HIM(B2): mean squared action error over the real steps of each half."""
        him = windows.select(slice(0, n_him))
        predicted = self.policy.actor(z[:n_him], him.observations, him.actions, him.timesteps, him.mask)
        error = (predicted - him.actions).pow(2).mean(dim=-1)
        mask = him.mask.to(error.dtype)
        half = n_him // 2
        return sum(
            (error[part] * mask[part]).sum() / mask[part].sum().clamp(min=1.0) for part in (slice(0, half), slice(half, n_him))
        )  # type: ignore[return-value]

    def update_encoder_policy(self, batch: OPPOBatch) -> dict[str, float]:
        """Step 1 of Algorithm 1: one AdamW step of theta and phi on HIM + lambda_PM L_PM(sg(z*)) + lambda_N L_N.

        :param batch: the windows and pairs of the step
        :return: the losses
        """
        windows = batch.windows
        z = self.policy.encoder(windows.observations, windows.actions, windows.timesteps, windows.mask)
        him_loss = self._him_loss(z, windows, batch.n_him)
        positive, negative = triplet_roles(z[batch.first], z[batch.second], batch.targets)
        pref_loss = preference_loss(self.policy.z_star.detach(), positive, negative, self.margin)
        norm_loss = 2.0 * (z.norm(dim=1) - 1.0).pow(2).mean()
        loss = him_loss + self.pref_loss_coef * pref_loss + self.norm_loss_coef * norm_loss
        self.encoder_optimizer.zero_grad()
        self.actor_optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.policy.encoder.parameters(), self.max_grad_norm)
        th.nn.utils.clip_grad_norm_(self.policy.actor.parameters(), self.max_grad_norm)
        self.encoder_optimizer.step()
        self.actor_optimizer.step()
        return {"him_loss": him_loss.item(), "preference_loss": pref_loss.item(), "norm_loss": norm_loss.item()}

    def update_optimal_context(self, batch: OPPOBatch) -> dict[str, float]:
        """Step 2 of Algorithm 1: one AdamW step of z* on L_PM(z*, sg(theta)), contexts from the updated encoder.

        :param batch: the windows and pairs of the step
        :return: the triplet loss and the number of strict pairs (no step without one)
        """
        pairs = th.cat([batch.first, batch.second])
        windows = batch.windows.select(pairs)
        with th.no_grad():
            z = self.policy.encoder(windows.observations, windows.actions, windows.timesteps, windows.mask)
        n = len(batch.first)
        positive, negative = triplet_roles(z[:n], z[n:], batch.targets)
        loss = preference_loss(self.policy.z_star, positive, negative, self.margin)
        if len(positive) > 0:
            self.context_optimizer.zero_grad()
            loss.backward()
            self.context_optimizer.step()
        return {"context_loss": loss.item(), "strict_pairs": float(len(positive))}

    def _update_learning_rates(self) -> float:
        """The encoder's rate from the schedule, the policy's with the linear warm-up; returns the policy's."""
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        warmup = min((self._n_updates + 1) / self.warmup_steps, 1.0)
        update_learning_rate(self.encoder_optimizer, learning_rate)
        update_learning_rate(self.actor_optimizer, learning_rate * warmup)
        return learning_rate * warmup

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        stats: dict[str, list[float]] = {}
        actor_learning_rate = 0.0
        for _ in range(gradient_steps):
            actor_learning_rate = self._update_learning_rates()
            batch = self._sample_batch(batch_size)
            step = self.update_encoder_policy(batch)
            step.update(self.update_optimal_context(batch))
            self._n_updates += 1
            for key, value in step.items():
                stats.setdefault(key, []).append(value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/actor_learning_rate", actor_learning_rate)
        self.logger.record("train/z_star_norm", self.policy.z_star.norm().item())
        for key, values in stats.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))

    def learn(
        self: SelfOPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1000,
        tb_log_name: str = "OPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOPPO:
        return super().learn(total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar)

    # ------------------------------------------------------------------ contexts and preferences

    def encode(self, windows: Windows) -> np.ndarray:
        """Contexts z = I_theta(tau) of windows cut by this model's sampler (normalised), shape ``(N, z_dim)``."""
        self.policy.set_training_mode(False)
        tensors = WindowTensors.from_windows(windows, self.device)
        with th.no_grad():
            return self.policy.encoder(*tensors).cpu().numpy()

    def preference_probabilities(self, first: Windows, second: Windows) -> np.ndarray:
        """P(second preferred) as ``sigmoid(||z* - z1|| - ||z* - z2||)``: the segment closer to z* is preferred.

        :param first: the first segments (windows of this model's sampler)
        :param second: the second segments
        """
        z_star = self.policy.z_star.detach().cpu().numpy()
        d_first = np.linalg.norm(self.encode(first) - z_star, axis=1)
        d_second = np.linalg.norm(self.encode(second) - z_star, axis=1)
        return 1.0 / (1.0 + np.exp(d_second - d_first))

    def preference_accuracy(self, pool: PreferencePool) -> float:
        """Fraction of the strict pairs of ``pool`` (e.g. held-out labels) ordered correctly by the z*-distance."""
        if self._sampler is None:
            raise ValueError("OPPO.preference_accuracy needs the model's dataset: load it with dataset=")
        first, second = pool.windows(self._sampler)
        return preference_accuracy(self.preference_probabilities(first, second), pool.targets)

    @property
    def labels_used(self) -> int:
        """Labelled pairs learned from: the pool's size, or every pair sampled so far without a pool."""
        if self._pool is not None:
            return self._pool.n_pairs
        if self.n_labels is not None:
            return self.n_labels
        return self._n_updates * self.batch_size

    def progress_info(self) -> dict[str, float]:
        """Labels used and, with ``heldout_labels``, the held-out preference accuracy of the z*-distance."""
        info: dict[str, float] = {"labels": float(self.labels_used)}
        if self._heldout_pool is not None:
            info["preference_accuracy"] = self.preference_accuracy(self._heldout_pool)
        return info

    def window_sampler(self) -> WindowSampler:
        """The sampler of the model's dataset (normalised observations, actions in [-1, 1])."""
        if self._sampler is None:
            raise ValueError("This OPPO model has no dataset: pass dataset= to OPPO or OPPO.load")
        return self._sampler

    def set_context(self, z: np.ndarray | None) -> None:
        """Act with context ``z`` (shape ``(z_dim,)``) instead of z*; ``None`` goes back to z*."""
        if z is None:
            self._context_override = None
            return
        z = np.asarray(z, dtype=np.float32).reshape(-1)
        if z.shape != (self.z_dim,):
            raise ValueError(f"The context must have z_dim={self.z_dim} entries, got {z.shape}")
        self._context_override = th.as_tensor(z, device=self.device)

    # ------------------------------------------------------------------ acting

    def _context(self, n: int) -> th.Tensor:
        """The context of each position of the history, ``(n, K, z_dim)``."""
        z = self.policy.z_star.detach() if self._context_override is None else self._context_override
        context = z.expand(n, self.context_length, -1)
        if self.zero_context_eval:
            context = th.cat([th.zeros_like(context[:, :-1]), context[:, -1:]], dim=1)
        return context

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """The action for the newest observation given the last K steps, carried in SB3's ``state``.

        Pass back the returned ``state`` at the next step and ``episode_start=True`` (per env) at
        the first step of an episode: the history is emptied and the timestep restarts at 0.
        ``state=None`` starts a new episode in every env.

        :param observation: the observation(s), as the env returns them
        :param state: the history returned by the previous call, or ``None``
        :param episode_start: per env, whether this observation starts an episode
        :param deterministic: unused (the policy is deterministic), kept for SB3's signature
        :return: the action(s) in the env's bounds and the new history
        """
        if isinstance(observation, dict):
            raise ValueError("OPPO needs Box observations, got a dict observation")
        obs = np.asarray(observation, dtype=np.float32)
        single = obs.shape == self.observation_space.shape
        obs = self.normalize_observation(obs.reshape(-1, spaces.flatdim(self.observation_space)))
        n, action_dim = len(obs), spaces.flatdim(self.action_space)
        if state is None:
            history = RollingHistory(n, self.context_length, obs.shape[1], action_dim)
        else:
            history = RollingHistory.from_state(state)
            if history.observations.shape[0] != n:
                raise ValueError(f"state holds the history of {history.observations.shape[0]} envs but {n} observations came")
        if episode_start is not None:
            history.reset(np.asarray(episode_start, dtype=bool).reshape(-1))
        history.push(obs)
        self.policy.set_training_mode(False)
        with th.no_grad():
            tensors = WindowTensors(
                *(
                    th.as_tensor(x, device=self.device)
                    for x in (history.observations, history.actions, history.timesteps, history.mask)
                )
            )
            scaled = self.policy.act(self._context(n), *tensors).cpu().numpy()
        history.set_last_action(scaled)
        action = self.policy.unscale_action(scaled)
        return (action[0] if single else action), history.as_state()

    # ------------------------------------------------------------------ saving

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "preference_pool",
            "encoder_optimizer",
            "actor_optimizer",
            "context_optimizer",
            "_sampler",
            "_pool",
            "_heldout_pool",
            "_pool_windows",
            "_context_override",
            "_rng",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "encoder_optimizer", "actor_optimizer", "context_optimizer"], []
