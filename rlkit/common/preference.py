"""Preference-based RL parts shared by every algorithm that learns from preferences.

- segments: windows of ``H`` consecutive (s, a, r_true) steps cut from stored episodes
  (:class:`EpisodeStore`, :func:`sample_segment_pairs`);
- the B-Pref scripted teacher (Lee et al., 2021, "B-Pref: Benchmarking Preference-Based
  Reinforcement Learning"; code rll-research/BPref ``reward_model.py::get_label``) with its six
  presets (:data:`TEACHER_PRESETS`), deterministic given its seed (:class:`ScriptedTeacher`);
- the Bradley-Terry reward ensemble of PEBBLE (Lee et al., 2021), soft targets 0.5/0.5 for
  "equal" labels (:class:`RewardEnsemble`, :class:`PreferenceDataset`), and PEARL's Gaussian
  reward model for noisy labels (:class:`GaussianRewardModel`);
- query selection: uniform, ensemble disagreement, the members' mean entropy (:func:`select_queries`);
- fixed label pools of offline datasets (:class:`PreferencePool`, :func:`load_or_create_pool`):
  N_q pairs labelled once, cached by dataset, N_q, mode and seed, so that every method of a
  table learns from the same labels.

Label convention (B-Pref): a label is the probability that segment 1 is preferred to
segment 0: 1.0 (segment 1 better), 0.0 (segment 0 better) or 0.5 ("equal").
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

from rlkit.common.sequence import Windows, WindowSampler
from rlkit.data.minari import OfflineDataset

QUERY_SCHEMES = ("uniform", "disagreement", "entropy")


class Segments(NamedTuple):
    """A batch of N segments of H steps."""

    #: shape ``(N, H, obs_dim)``
    observations: np.ndarray
    #: shape ``(N, H, action_dim)``
    actions: np.ndarray
    #: true per-step rewards, shape ``(N, H)`` (seen by the teacher only)
    rewards: np.ndarray

    def take(self, index: np.ndarray) -> Segments:
        """The segments at ``index`` (integer indices or a boolean mask)."""
        return Segments(self.observations[index], self.actions[index], self.rewards[index])


class Episode(NamedTuple):
    """One stored episode: observations, actions and true rewards, aligned step by step."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray


class EpisodeStore:
    """The last ``max_episodes`` finished episodes (B-Pref keeps 100).

    :param max_episodes: how many episodes are kept (older ones are dropped first)
    """

    def __init__(self, max_episodes: int = 100) -> None:
        self.episodes: deque[Episode] = deque(maxlen=max_episodes)
        self.n_added = 0

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Store one finished episode (arrays of equal length)."""
        if not len(observations) == len(actions) == len(rewards):
            raise ValueError("observations, actions and rewards of an episode must have the same length")
        self.episodes.append(
            Episode(np.asarray(observations, np.float32), np.asarray(actions, np.float32), np.asarray(rewards, np.float64))
        )
        self.n_added += 1

    def latest(self, n: int) -> list[Episode]:
        """The ``n`` most recent episodes (all if fewer are stored)."""
        return list(self.episodes)[-n:] if n > 0 else []

    def mean_segment_return(self, segment_length: int, last: int = 10) -> float:
        """B-Pref's threshold scale: mean true return of the last ``last`` episodes times ``H / episode length``."""
        recent = self.latest(last)
        if not recent:
            return 0.0
        return float(np.mean([ep.rewards.sum() * segment_length / len(ep.rewards) for ep in recent]))


def sample_segments(episodes: Sequence[Episode], n: int, segment_length: int, rng: np.random.Generator) -> Segments:
    """``n`` segments: a uniformly random episode (of length >= H), then a uniformly random start inside it.

    :param episodes: the episodes to cut from
    :param n: number of segments
    :param segment_length: H, steps per segment
    :param rng: the random generator
    :return: the segments
    """
    eligible = [ep for ep in episodes if len(ep.rewards) >= segment_length]
    if not eligible:
        raise ValueError(f"No stored episode has at least segment_length={segment_length} steps")
    episode_index = rng.integers(len(eligible), size=n)
    obs, act, rew = [], [], []
    for i in episode_index:
        ep = eligible[i]
        start = rng.integers(len(ep.rewards) - segment_length + 1)
        window = slice(start, start + segment_length)
        obs.append(ep.observations[window])
        act.append(ep.actions[window])
        rew.append(ep.rewards[window])
    return Segments(np.stack(obs), np.stack(act), np.stack(rew))


def sample_segment_pairs(
    episodes: Sequence[Episode], n_pairs: int, segment_length: int, rng: np.random.Generator
) -> tuple[Segments, Segments]:
    """``n_pairs`` independent pairs of segments (see :func:`sample_segments`)."""
    return (
        sample_segments(episodes, n_pairs, segment_length, rng),
        sample_segments(episodes, n_pairs, segment_length, rng),
    )


# --------------------------------------------------------------------------- scripted teacher


@dataclass(frozen=True)
class TeacherConfig:
    """The B-Pref teacher's knobs.

    :param beta: rationality of a stochastic (Bradley-Terry) teacher; ``None`` for a rational one
    :param gamma: myopic discount: step t of H is weighted by ``gamma ** (H - 1 - t)``
    :param eps_mistake: probability of flipping each label
    :param eps_skip: skip a pair when max(S0, S1) <= eps_skip * scale (see :meth:`ScriptedTeacher.set_thresholds`)
    :param eps_equal: label a pair "equal" when |S0 - S1| < eps_equal * scale
    """

    beta: float | None = None
    gamma: float = 1.0
    eps_mistake: float = 0.0
    eps_skip: float = 0.0
    eps_equal: float = 0.0


#: The six teachers of the B-Pref README
TEACHER_PRESETS: dict[str, TeacherConfig] = {
    "oracle": TeacherConfig(),
    "mistake": TeacherConfig(eps_mistake=0.1),
    "noisy": TeacherConfig(beta=1.0),
    "skip": TeacherConfig(eps_skip=0.1),
    "myopic": TeacherConfig(gamma=0.9),
    "equal": TeacherConfig(eps_equal=0.1),
}


class PreferenceLabels(NamedTuple):
    """The teacher's answers to N queries."""

    #: which of the N pairs got a label (the others were skipped), shape ``(N,)``
    keep: np.ndarray
    #: P(segment 1 preferred) of the kept pairs: 0.0, 0.5 ("equal") or 1.0, shape ``(keep.sum(),)``
    targets: np.ndarray


class ScriptedTeacher:
    """B-Pref's scripted teacher, labelling segment pairs from their true rewards.

    For pairs with true per-step rewards r0, r1 of H steps (``reward_model.py::get_label``):

    1. skip: drop every pair with max(sum r0, sum r1) <= theta_skip (only when eps_skip > 0);
    2. equal: flag the pairs with |sum r0 - sum r1| < theta_equal (undiscounted sums);
    3. myopic: S_i = sum_t gamma^(H-1-t) r_i[t], so the last steps count most;
    4. label: ``beta`` set: 1 with probability sigmoid(beta (S1 - S0)); rational: 1 if S0 < S1 else 0 (ties: 0);
    5. mistake: flip each label with probability eps_mistake;
    6. the equal-flagged pairs get the soft target 0.5.

    The thresholds are theta = eps * scale with the scale set by :meth:`set_thresholds`
    (B-Pref: the mean true return of the last 10 episodes times H / episode length). B-Pref
    multiplies by eps twice after its first query round (scale * eps^2); rlkit uses the
    intended scale * eps throughout.

    :param config: a preset name of :data:`TEACHER_PRESETS` or a :class:`TeacherConfig`
    :param seed: seed of the teacher's own random generator (noisy and mistake labels)
    """

    def __init__(self, config: str | TeacherConfig = "oracle", seed: int | None = None) -> None:
        if isinstance(config, str):
            if config not in TEACHER_PRESETS:
                raise ValueError(f"Unknown teacher {config!r}; presets: {', '.join(TEACHER_PRESETS)}")
            config = TEACHER_PRESETS[config]
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.threshold_skip = 0.0
        self.threshold_equal = 0.0

    @classmethod
    def from_spec(cls, spec: str | dict, seed: int | None = None) -> ScriptedTeacher:
        """A teacher from a preset name, or a dict ``{"preset": name, **overrides}`` / of :class:`TeacherConfig` fields."""
        if isinstance(spec, str):
            return cls(spec, seed)
        spec = dict(spec)
        base = TEACHER_PRESETS[spec.pop("preset", "oracle")]
        return cls(replace(base, **spec), seed)

    def set_thresholds(self, scale: float) -> None:
        """theta_skip = scale * eps_skip and theta_equal = scale * eps_equal."""
        self.threshold_skip = scale * self.config.eps_skip
        self.threshold_equal = scale * self.config.eps_equal

    @staticmethod
    def myopic_weights(segment_length: int, gamma: float) -> np.ndarray:
        """gamma^(H-1-t) for t = 0..H-1."""
        return gamma ** np.arange(segment_length - 1, -1, -1, dtype=np.float64)

    def label(self, rewards0: np.ndarray, rewards1: np.ndarray) -> PreferenceLabels:
        """Label the pairs (rewards0[i], rewards1[i]), each of shape ``(N, H)``."""
        cfg = self.config
        rewards0, rewards1 = np.asarray(rewards0, np.float64), np.asarray(rewards1, np.float64)
        sum0, sum1 = rewards0.sum(axis=1), rewards1.sum(axis=1)
        keep = np.ones(len(sum0), dtype=bool)
        if cfg.eps_skip > 0:
            keep = np.maximum(sum0, sum1) > self.threshold_skip
        equal = np.abs(sum0 - sum1)[keep] < self.threshold_equal
        weights = self.myopic_weights(rewards0.shape[1], cfg.gamma)
        score0, score1 = rewards0[keep] @ weights, rewards1[keep] @ weights
        if cfg.beta is not None:
            prob = 1.0 / (1.0 + np.exp(-cfg.beta * (score1 - score0)))
            targets = (self.rng.random(len(prob)) < prob).astype(np.float64)
        else:
            targets = (score0 < score1).astype(np.float64)
        if cfg.eps_mistake > 0:
            flip = self.rng.random(len(targets)) < cfg.eps_mistake
            targets = np.where(flip, 1.0 - targets, targets)
        targets[equal] = 0.5
        return PreferenceLabels(keep, targets)


# --------------------------------------------------------------------------- reward model


class PreferenceDataset:
    """All labelled pairs so far: the (s, a) of both segments and the target P(segment 1 preferred)."""

    def __init__(self) -> None:
        self.observations0: list[np.ndarray] = []
        self.actions0: list[np.ndarray] = []
        self.observations1: list[np.ndarray] = []
        self.actions1: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def __len__(self) -> int:
        return int(sum(len(t) for t in self.targets))

    def add(self, segments0: Segments, segments1: Segments, targets: np.ndarray) -> None:
        """Append labelled pairs (segments already restricted to the kept ones)."""
        self.observations0.append(segments0.observations)
        self.actions0.append(segments0.actions)
        self.observations1.append(segments1.observations)
        self.actions1.append(segments1.actions)
        self.targets.append(np.asarray(targets, np.float32))

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(obs0, act0, obs1, act1, targets)`` concatenated over every batch added."""
        parts = (self.observations0, self.actions0, self.observations1, self.actions1, self.targets)
        return tuple(np.concatenate(part) for part in parts)


def bradley_terry_log_likelihood(logits: th.Tensor, targets: th.Tensor) -> th.Tensor:
    """y log sigma(R1 - R0) + (1 - y) log sigma(R0 - R1), elementwise, with logits = R1 - R0 and soft y."""
    return -F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), reduction="none")


class RewardEnsemble(nn.Module):
    """PEBBLE's reward model: an ensemble of MLPs r_m(s, a) with a tanh output, trained with Bradley-Terry.

    P_m(sigma1 > sigma0) = sigmoid(sum_t r_m(s1_t, a1_t) - sum_t r_m(s0_t, a0_t)) (the softmax of the
    two segment returns); the reward used for RL is the ensemble mean. Each member is trained
    on its own permutation of the labelled pairs, with the (soft-label) cross-entropy.

    :param obs_dim: observation size
    :param action_dim: action size
    :param n_members: ensemble size (PEBBLE: 3)
    :param net_arch: hidden layer sizes (PEBBLE: 3 x 256)
    :param learning_rate: Adam learning rate (PEBBLE: 3e-4)
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        n_members: int = 3,
        net_arch: Sequence[int] = (256, 256, 256),
        learning_rate: float = 3e-4,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList()
        for _ in range(n_members):
            layers: list[nn.Module] = []
            last = obs_dim + action_dim
            for width in net_arch:
                layers += [nn.Linear(last, width), nn.LeakyReLU()]
                last = width
            layers += [nn.Linear(last, 1), nn.Tanh()]
            self.members.append(nn.Sequential(*layers))
        self.optimizer = th.optim.Adam(self.parameters(), lr=learning_rate)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def forward(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Per-member rewards, shape ``(n_members, *batch_shape)``."""
        inputs = th.cat([observations, actions], dim=-1)
        return th.stack([member(inputs).squeeze(-1) for member in self.members])

    def reward(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The ensemble-mean reward, shape ``batch_shape``."""
        return self(observations, actions).mean(dim=0)

    def logits(self, obs0: th.Tensor, act0: th.Tensor, obs1: th.Tensor, act1: th.Tensor) -> th.Tensor:
        """R1 - R0 per member, shape ``(n_members, N)``, for segments of shape ``(N, H, dim)``."""
        return self(obs1, act1).sum(dim=-1) - self(obs0, act0).sum(dim=-1)

    def preference_probs(self, segments0: Segments, segments1: Segments) -> np.ndarray:
        """P_m(segment 1 preferred), shape ``(n_members, N)``."""
        device = next(self.parameters()).device
        tensors = [
            th.as_tensor(x, dtype=th.float32, device=device)
            for x in (segments0.observations, segments0.actions, segments1.observations, segments1.actions)
        ]
        with th.no_grad():
            return th.sigmoid(self.logits(*tensors)).cpu().numpy()

    def fit(
        self,
        data: PreferenceDataset,
        n_epochs: int,
        batch_size: int,
        rng: np.random.Generator,
        stop_accuracy: float = 0.97,
    ) -> dict[str, float]:
        """Train every member for up to ``n_epochs`` epochs; stop early when the ensemble's accuracy > ``stop_accuracy``.

        :param data: the labelled pairs
        :param n_epochs: epochs over the data (B-Pref: ``reward_update``)
        :param batch_size: pairs per step (B-Pref: 128)
        :param rng: the generator of the members' permutations
        :param stop_accuracy: B-Pref stops when the mean training accuracy exceeds 0.97
        :return: last epoch's mean loss and accuracy, and the number of epochs run
        """
        device = next(self.parameters()).device
        obs0, act0, obs1, act1, targets = (th.as_tensor(x, device=device) for x in data.arrays())
        n = len(targets)
        loss_mean, accuracy, epoch = float("nan"), 0.0, 0
        for epoch in range(1, n_epochs + 1):  # noqa: B007 (the epochs run are returned)
            perms = th.as_tensor(np.stack([rng.permutation(n) for _ in self.members]), device=device)
            loss_sum, correct, decided = 0.0, 0.0, 0.0
            for start in range(0, n, batch_size):
                index = perms[:, start : start + batch_size]  # (M, b): each member its own minibatch
                member_logits = th.stack(
                    [
                        self._member_returns(m, obs1[idx], act1[idx]) - self._member_returns(m, obs0[idx], act0[idx])
                        for m, idx in enumerate(index)
                    ]
                )
                batch_targets = targets[index]
                loss = -bradley_terry_log_likelihood(member_logits, batch_targets).mean(dim=1).sum()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.item() * index.shape[1]
                hard = batch_targets != 0.5
                correct += ((member_logits > 0).float() == batch_targets)[hard].float().sum().item()
                decided += hard.sum().item()
            loss_mean = loss_sum / (n * self.n_members)
            accuracy = correct / max(decided, 1.0)
            if accuracy > stop_accuracy:
                break
        return {"loss": loss_mean, "accuracy": accuracy, "epochs": float(epoch)}

    def _member_returns(self, member: int, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        return self.members[member](th.cat([observations, actions], dim=-1)).squeeze(-1).sum(dim=-1)


def select_queries(
    model: RewardEnsemble,
    segments0: Segments,
    segments1: Segments,
    n_queries: int,
    scheme: str,
) -> np.ndarray:
    """Indices of the ``n_queries`` candidate pairs to ask the teacher about.

    ``uniform``: the first ``n_queries`` (the candidates are drawn uniformly already);
    ``disagreement``: the largest standard deviation across members of P_m(segment 1 preferred);
    ``entropy``: the largest mean over the members of the entropy of each member's preference
    probability P_m, as B-Pref computes it (``reward_model.py::get_entropy``, the mean of the members'
    entropies, not the entropy of the ensemble mean: a pair on which confident members disagree scores low).

    :param model: the reward ensemble
    :param segments0: candidate first segments
    :param segments1: candidate second segments
    :param n_queries: how many pairs to select
    :param scheme: one of :data:`QUERY_SCHEMES`
    :return: indices into the candidates, most informative first
    """
    if scheme not in QUERY_SCHEMES:
        raise ValueError(f"Unknown query scheme {scheme!r}; known: {', '.join(QUERY_SCHEMES)}")
    if scheme == "uniform":
        return np.arange(min(n_queries, len(segments0.rewards)))
    probs = model.preference_probs(segments0, segments1)
    if scheme == "disagreement":
        score = probs.std(axis=0)
    else:
        clipped = np.clip(probs, 1e-12, 1 - 1e-12)
        score = -(clipped * np.log(clipped) + (1 - clipped) * np.log(1 - clipped)).mean(axis=0)
    return np.argsort(-score, kind="stable")[:n_queries]


def uncertainty_regularizer(log_sigma: th.Tensor, eta: float) -> th.Tensor:
    """mean_t KL(N(mu_t, sigma_t^2) || N(mu_t, eta^2)) = mean_t [log(eta / sigma_t) + sigma_t^2 / (2 eta^2) - 1/2].

    Its minimum is at sigma = eta: it pulls every sigma toward the predefined ``eta``
    (PEARL's "the uncertainty should approach a predefined value during training").

    :param log_sigma: log sigma_t of any shape
    :param eta: the predefined standard deviation
    """
    return (math.log(eta) - log_sigma + th.exp(2.0 * log_sigma) / (2.0 * eta**2) - 0.5).mean()


class GaussianRewardModel(nn.Module):
    """Robust reward learning (RRL, Liu et al., 2024, PEARL): a reward r(s, a) ~ N(mu(s, a), sigma(s, a)^2).

    One MLP on concat(s, a) with a Gaussian head: ``mu = tanh(h_0)`` (bounded as PEBBLE's rewards) and
    ``log sigma = lo + (hi - lo) sigmoid(h_1)``, a smooth clamp into ``log_sigma_bounds`` (the gradient
    never vanishes at the bounds). A segment's score sums reparameterised samples
    ``r_t = mu_t + sigma_t eps_t``, ``eps_t ~ N(0, 1)``; P(sigma1 > sigma0) = sigmoid(S1 - S0) and

        L_RRL = -E[y log P + (1 - y) log(1 - P)] + lambda_u * mean_t KL(N(mu_t, sigma_t^2) || N(mu_t, eta^2)),

    so noisy (e.g. transferred) labels are absorbed by the sampled noise rather than by extreme
    rewards. The paper's exact regulariser, lambda_u and eta are not public: this KL toward a
    predefined eta, lambda_u = 1, eta = 0.5 and bounds [-5, 2] are this implementation's choice.
    The reward used for RL is mu (deterministic); preference probabilities for accuracy use mu too.
    It has the interface of :class:`RewardEnsemble` (one member).

    :param obs_dim: observation size
    :param action_dim: action size
    :param net_arch: hidden layer sizes
    :param learning_rate: Adam learning rate
    :param eta: the predefined standard deviation sigma is pulled toward
    :param lambda_u: weight of the uncertainty regulariser
    :param log_sigma_bounds: (lo, hi) of log sigma
    """

    n_members = 1

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: Sequence[int] = (256, 256, 256),
        learning_rate: float = 3e-4,
        eta: float = 0.5,
        lambda_u: float = 1.0,
        log_sigma_bounds: tuple[float, float] = (-5.0, 2.0),
    ) -> None:
        super().__init__()
        low, high = log_sigma_bounds
        if not low < high:
            raise ValueError(f"log_sigma_bounds must be (lo, hi) with lo < hi, got {log_sigma_bounds}")
        if eta <= 0 or lambda_u < 0:
            raise ValueError(f"eta must be positive and lambda_u non-negative, got eta={eta}, lambda_u={lambda_u}")
        self.eta, self.lambda_u = float(eta), float(lambda_u)
        self.log_sigma_bounds = (float(low), float(high))
        layers: list[nn.Module] = []
        last = obs_dim + action_dim
        for width in net_arch:
            layers += [nn.Linear(last, width), nn.LeakyReLU()]
            last = width
        layers.append(nn.Linear(last, 2))
        self.net = nn.Sequential(*layers)
        self.optimizer = th.optim.Adam(self.parameters(), lr=learning_rate)

    def forward(self, observations: th.Tensor, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """``(mu, log_sigma)``, each of shape ``batch_shape``."""
        out = self.net(th.cat([observations, actions], dim=-1))
        low, high = self.log_sigma_bounds
        return th.tanh(out[..., 0]), low + (high - low) * th.sigmoid(out[..., 1])

    def reward(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The reward for RL: mu(s, a), shape ``batch_shape``."""
        return self(observations, actions)[0]

    def loss(
        self, obs0: th.Tensor, act0: th.Tensor, obs1: th.Tensor, act1: th.Tensor, targets: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """L_RRL of segment pairs of shape ``(N, H, dim)``: the total, the cross-entropy on sampled scores, and the
        uncertainty regulariser."""
        mu0, log_sigma0 = self(obs0, act0)
        mu1, log_sigma1 = self(obs1, act1)
        sample0 = mu0 + th.exp(log_sigma0) * th.randn_like(mu0)
        sample1 = mu1 + th.exp(log_sigma1) * th.randn_like(mu1)
        logits = sample1.sum(dim=-1) - sample0.sum(dim=-1)
        cross_entropy = -bradley_terry_log_likelihood(logits, targets).mean()
        regularizer = uncertainty_regularizer(th.cat([log_sigma0, log_sigma1]), self.eta)
        return cross_entropy + self.lambda_u * regularizer, cross_entropy, regularizer

    def preference_probs(self, segments0: Segments, segments1: Segments) -> np.ndarray:
        """P(segment 1 preferred) from the mean rewards, shape ``(1, N)``."""
        device = next(self.parameters()).device
        obs0, act0, obs1, act1 = (
            th.as_tensor(x, dtype=th.float32, device=device)
            for x in (segments0.observations, segments0.actions, segments1.observations, segments1.actions)
        )
        with th.no_grad():
            logits = self.reward(obs1, act1).sum(dim=-1) - self.reward(obs0, act0).sum(dim=-1)
        return th.sigmoid(logits).cpu().numpy()[None]

    def fit(
        self,
        data: PreferenceDataset,
        n_epochs: int,
        batch_size: int,
        rng: np.random.Generator,
        stop_accuracy: float = 0.97,
    ) -> dict[str, float]:
        """Minimise L_RRL for up to ``n_epochs`` epochs; stop early when the mean-reward accuracy > ``stop_accuracy``.

        :param data: the labelled pairs (soft labels allowed)
        :param n_epochs: epochs over the data
        :param batch_size: pairs per step
        :param rng: the generator of the permutations (the noise comes from torch's generator)
        :param stop_accuracy: as :meth:`RewardEnsemble.fit`
        :return: last epoch's mean loss, regulariser, accuracy (of mu) and mean sigma, and the number of epochs run
        """
        device = next(self.parameters()).device
        obs0, act0, obs1, act1, targets = (th.as_tensor(x, device=device) for x in data.arrays())
        n = len(targets)
        stats = {"loss": float("nan"), "regularizer": float("nan"), "accuracy": 0.0, "sigma": float("nan"), "epochs": 0.0}
        for epoch in range(1, n_epochs + 1):
            perm = th.as_tensor(rng.permutation(n), device=device)
            loss_sum, reg_sum, correct, decided, sigma_sum = 0.0, 0.0, 0.0, 0.0, 0.0
            for start in range(0, n, batch_size):
                idx = perm[start : start + batch_size]
                loss, _, regularizer = self.loss(obs0[idx], act0[idx], obs1[idx], act1[idx], targets[idx])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                with th.no_grad():
                    mu0, log_sigma0 = self(obs0[idx], act0[idx])
                    margin = self.reward(obs1[idx], act1[idx]).sum(dim=-1) - mu0.sum(dim=-1)
                hard = targets[idx] != 0.5
                correct += ((margin > 0).float() == targets[idx])[hard].float().sum().item()
                decided += hard.sum().item()
                loss_sum += loss.item() * len(idx)
                reg_sum += regularizer.item() * len(idx)
                sigma_sum += th.exp(log_sigma0).mean().item() * len(idx)
            stats = {
                "loss": loss_sum / n,
                "regularizer": reg_sum / n,
                "accuracy": correct / max(decided, 1.0),
                "sigma": sigma_sum / n,
                "epochs": float(epoch),
            }
            if stats["accuracy"] > stop_accuracy:
                break
        return stats


#: reward models of :class:`~rlkit.iql.IQLBT` by ``reward_type``: PEBBLE's ensemble, PEARL's Gaussian model
REWARD_TYPES = ("bt", "gaussian")


def build_reward_model(
    reward_type: str,
    obs_dim: int,
    action_dim: int,
    net_arch: Sequence[int],
    learning_rate: float,
    n_members: int = 3,
    **kwargs: float | tuple[float, float],
) -> RewardEnsemble | GaussianRewardModel:
    """The reward model of one of :data:`REWARD_TYPES`.

    :param reward_type: ``bt`` (:class:`RewardEnsemble`) or ``gaussian`` (:class:`GaussianRewardModel`)
    :param obs_dim: observation size
    :param action_dim: action size
    :param net_arch: hidden layers
    :param learning_rate: Adam learning rate
    :param n_members: ensemble size (``bt`` only)
    :param kwargs: ``eta``, ``lambda_u``, ``log_sigma_bounds`` (``gaussian`` only)
    """
    if reward_type == "bt":
        if kwargs:
            raise ValueError(f"The Bradley-Terry ensemble takes no {', '.join(kwargs)}: those are for reward_type='gaussian'")
        return RewardEnsemble(obs_dim, action_dim, n_members, net_arch, learning_rate)
    if reward_type == "gaussian":
        return GaussianRewardModel(obs_dim, action_dim, net_arch, learning_rate, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"Unknown reward_type {reward_type!r}; known: {', '.join(REWARD_TYPES)}")


def pool_label_accuracy(pool: PreferencePool) -> float:
    """Fraction of the pool's pairs with a strict oracle preference (from its scores) whose label agrees with it.

    The pool's ``scores`` are the true scores of its teacher's score mode, so this measures the
    labels (noisy, random or transferred) against the rational teacher they hide.

    :param pool: the labelled pairs
    """
    scores = np.asarray(pool.scores, np.float64)
    oracle = np.where(scores[:, 1] > scores[:, 0], 1.0, np.where(scores[:, 1] < scores[:, 0], 0.0, 0.5))
    return preference_accuracy(pool.targets, oracle)


# --------------------------------------------------------------------------- fixed label pools

#: how a pool's teacher scores a segment: its own return, or OPPO's 200-step future return
LABEL_MODES = ("window", "foresee")
#: environment variable naming the folder of cached pools (default ``~/.cache/rlkit/preference-pools``)
POOL_DIR_ENV = "RLKIT_PREFERENCE_POOLS"


def default_pool_dir() -> Path:
    """Folder of cached label pools: ``$RLKIT_PREFERENCE_POOLS`` or ``~/.cache/rlkit/preference-pools``."""
    return Path(os.environ.get(POOL_DIR_ENV, Path.home() / ".cache" / "rlkit" / "preference-pools"))


def dataset_fingerprint(dataset: OfflineDataset) -> str:
    """A short hash of a dataset's episode boundaries and rewards: two datasets that share an id but not their
    data (generated with other settings, another store) get different pools."""
    digest = hashlib.sha256(dataset.episode_ends.astype(np.int64).tobytes())
    digest.update(dataset.rewards.astype(np.float32).tobytes())
    return digest.hexdigest()[:10]


def _teacher_key(teacher: str | dict) -> str:
    if isinstance(teacher, str):
        return teacher
    return "t" + hashlib.sha256(json.dumps(teacher, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class PreferencePool:
    """A fixed set of N_q labelled segment pairs of an offline dataset, the same for every method that uses it.

    A pair is two windows of ``segment_length`` steps (inside their episodes, no padding),
    stored as (episode, start) indices into the dataset; the scripted teacher
    (:class:`ScriptedTeacher`) labels it from a score per segment:

    - ``window``: the true return of the segment itself (the PbRL convention, B-Pref);
    - ``foresee``: the true return of the ``horizon`` steps from the segment's start (OPPO's
      scripted labels, ``--foresee 200``), with the truncation rule of
      :meth:`~rlkit.common.sequence.WindowSampler.foresee_returns`: near the end of an episode
      cut by a time limit the remaining steps' mean reward is extrapolated to the full horizon,
      so late windows are not systematically dispreferred; after a true termination the
      missing steps count 0.

    ``targets`` is P(second segment preferred) (the convention of this module): 1, 0, or 0.5
    for an "equal" label; exact score ties are labelled 0.5 too.

    :param dataset_id: id of the dataset the indices refer to
    :param mode: one of :data:`LABEL_MODES`
    :param seed: seed of the pair sampling and of the teacher
    :param segment_length: steps per segment
    :param horizon: steps of the ``foresee`` score
    :param teacher: the teacher preset name or dict (see :meth:`ScriptedTeacher.from_spec`)
    :param episodes: episode index of both segments of each pair, shape ``(N, 2)``
    :param starts: start step of both segments, shape ``(N, 2)``
    :param scores: the teacher's score of both segments, shape ``(N, 2)``
    :param targets: P(second segment preferred), shape ``(N,)``
    :param n_transitions: number of transitions of the dataset (checked when the pool is used)
    :param fingerprint: :func:`dataset_fingerprint` of the dataset (checked when the pool is used)
    """

    dataset_id: str
    mode: str
    seed: int
    segment_length: int
    horizon: int
    teacher: str | dict
    episodes: np.ndarray
    starts: np.ndarray
    scores: np.ndarray
    targets: np.ndarray
    n_transitions: int
    fingerprint: str = ""

    @property
    def n_pairs(self) -> int:
        return len(self.targets)

    @property
    def strict(self) -> np.ndarray:
        """Which pairs have a strict preference (target 0 or 1)."""
        return self.targets != 0.5

    @classmethod
    def create(
        cls,
        dataset: OfflineDataset,
        n_pairs: int,
        mode: str = "foresee",
        seed: int = 0,
        segment_length: int = 20,
        horizon: int = 200,
        teacher: str | dict = "oracle",
    ) -> PreferencePool:
        """Sample and label ``n_pairs`` pairs (pairs the teacher skips are replaced by new draws).

        :param dataset: the offline dataset
        :param n_pairs: N_q, the number of labelled pairs
        :param mode: ``window`` or ``foresee`` (see the class docstring)
        :param seed: seed of the sampling and the teacher
        :param segment_length: steps per segment
        :param horizon: steps of the ``foresee`` score (OPPO: 200)
        :param teacher: a :data:`TEACHER_PRESETS` name or a dict for :meth:`ScriptedTeacher.from_spec`
        """
        if mode not in LABEL_MODES:
            raise ValueError(f"Unknown label mode {mode!r}; known: {', '.join(LABEL_MODES)}")
        if n_pairs <= 0:
            raise ValueError(f"n_pairs must be positive, got {n_pairs}")
        sampler = WindowSampler(dataset, segment_length)
        rng = np.random.default_rng(seed)
        # the teacher's noise must not reuse the sampling stream (its draws would follow the segments' positions)
        teacher_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        label_teacher = ScriptedTeacher.from_spec(teacher, seed=teacher_seed)
        score_length = segment_length if mode == "window" else horizon
        lengths = dataset.episode_lengths
        label_teacher.set_thresholds(float(dataset.episode_returns.mean()) * score_length / float(lengths.mean()))
        episodes, starts, scores, targets = [], [], [], []
        kept = 0
        for _ in range(100):
            ep, st = sampler.sample_starts(2 * (n_pairs - kept), rng, full=True)
            ep, st = ep.reshape(2, -1).T, st.reshape(2, -1).T
            if mode == "window":
                score = sampler.window_returns(ep.reshape(-1), st.reshape(-1)).reshape(-1, 2)
                rewards = [sampler.windows(ep[:, i], st[:, i]).rewards for i in range(2)]
            else:
                score = sampler.foresee_returns(ep.reshape(-1), st.reshape(-1), horizon).reshape(-1, 2)
                rewards = [score[:, :1], score[:, 1:]]
            labels = label_teacher.label(*rewards)
            target = labels.targets.copy()
            target[score[labels.keep, 0] == score[labels.keep, 1]] = 0.5
            episodes.append(ep[labels.keep])
            starts.append(st[labels.keep])
            scores.append(score[labels.keep])
            targets.append(target)
            kept += int(labels.keep.sum())
            if kept >= n_pairs:
                break
        else:
            raise ValueError(
                f"The teacher {teacher!r} skipped almost every pair ({kept} of {n_pairs} labelled): lower its eps_skip"
            )
        return cls(
            dataset_id=dataset.dataset_id or "dataset",
            mode=mode,
            seed=seed,
            segment_length=segment_length,
            horizon=horizon,
            teacher=teacher,
            episodes=np.concatenate(episodes)[:n_pairs].astype(np.int64),
            starts=np.concatenate(starts)[:n_pairs].astype(np.int64),
            scores=np.concatenate(scores)[:n_pairs].astype(np.float64),
            targets=np.concatenate(targets)[:n_pairs].astype(np.float32),
            n_transitions=len(dataset),
            fingerprint=dataset_fingerprint(dataset),
        )

    def check_dataset(self, dataset: OfflineDataset) -> None:
        """Raise a ``ValueError`` if ``dataset`` is not the one the pool's indices refer to."""
        if (
            len(dataset) != self.n_transitions
            or int(self.episodes.max()) >= len(dataset.episode_ends)
            or (self.fingerprint and self.fingerprint != dataset_fingerprint(dataset))
        ):
            raise ValueError(
                f"This label pool was drawn from {self.dataset_id!r} with {self.n_transitions} transitions (fingerprint "
                f"{self.fingerprint}), but the dataset given has {len(dataset)} (fingerprint {dataset_fingerprint(dataset)}): "
                "use the pool's dataset, or delete the cached pool to draw a new one"
            )

    def windows(self, sampler: WindowSampler) -> tuple[Windows, Windows]:
        """Both segments of every pair as :class:`~rlkit.common.sequence.Windows` of ``sampler`` (its normalisation).

        :param sampler: a sampler over the pool's dataset with ``window == segment_length``
        """
        if sampler.window != self.segment_length:
            raise ValueError(
                f"The pool's segments have {self.segment_length} steps but the sampler cuts windows of {sampler.window}: "
                "build the sampler with window=pool.segment_length"
            )
        return sampler.windows(self.episodes[:, 0], self.starts[:, 0]), sampler.windows(self.episodes[:, 1], self.starts[:, 1])

    def preference_dataset(self, sampler: WindowSampler) -> PreferenceDataset:
        """The pairs as a :class:`PreferenceDataset` for :meth:`RewardEnsemble.fit`.

        :param sampler: a sampler over the pool's dataset (the observations as it normalises them)
        """
        first, second = self.windows(sampler)
        data = PreferenceDataset()
        data.add(
            Segments(first.observations, first.actions, first.rewards),
            Segments(second.observations, second.actions, second.rewards),
            self.targets,
        )
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write the pool to an ``.npz`` file (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "dataset_id": self.dataset_id,
            "mode": self.mode,
            "seed": self.seed,
            "segment_length": self.segment_length,
            "horizon": self.horizon,
            "teacher": self.teacher,
            "n_transitions": self.n_transitions,
            "fingerprint": self.fingerprint,
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            episodes=self.episodes,
            starts=self.starts,
            scores=self.scores,
            targets=self.targets,
            meta=np.asarray(json.dumps(meta)),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreferencePool:
        """Read a pool written by :meth:`save`."""
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return cls(
                **meta, episodes=data["episodes"], starts=data["starts"], scores=data["scores"], targets=data["targets"]
            )


def pool_path(
    dataset_id: str,
    n_pairs: int,
    mode: str,
    seed: int,
    segment_length: int,
    horizon: int,
    teacher: str | dict,
    pool_dir: str | os.PathLike | None = None,
    fingerprint: str = "",
) -> Path:
    """Cache file of the pool with these settings (see :func:`load_or_create_pool`).

    :param dataset_id: the dataset's id
    :param n_pairs: N_q
    :param mode: ``window`` or ``foresee``
    :param seed: seed of the pool
    :param segment_length: steps per segment
    :param horizon: steps of the ``foresee`` score
    :param teacher: the scripted teacher (preset name or dict)
    :param pool_dir: cache folder (default :func:`default_pool_dir`)
    :param fingerprint: :func:`dataset_fingerprint` of the dataset
    """
    name = dataset_id.replace("/", "-") + (f"-{fingerprint}" if fingerprint else "")
    horizon_part = f"-h{horizon}" if mode == "foresee" else ""
    stem = f"{name}__n{n_pairs}__{mode}{horizon_part}__len{segment_length}__{_teacher_key(teacher)}__seed{seed}"
    return Path(pool_dir if pool_dir is not None else default_pool_dir()) / f"{stem}.npz"


def load_or_create_pool(
    dataset: OfflineDataset,
    n_pairs: int,
    mode: str = "foresee",
    seed: int = 0,
    segment_length: int = 20,
    horizon: int = 200,
    teacher: str | dict = "oracle",
    pool_dir: str | os.PathLike | None = None,
) -> PreferencePool:
    """The pool of (dataset id, N_q, mode, seed, ...) from the cache, drawn and saved on first use.

    Every method (and every training seed) that asks for the same settings gets the same
    labelled pairs, so a table compares methods on identical feedback. A dataset without a
    ``dataset_id`` gets a pool drawn afresh (the same for the same seed) and nothing is cached.

    :param dataset: the offline dataset (its ``dataset_id`` names the pool)
    :param n_pairs: N_q, the number of labelled pairs
    :param mode: ``window`` or ``foresee``
    :param seed: seed of the pool (not of the methods trained on it)
    :param segment_length: steps per segment
    :param horizon: steps of the ``foresee`` score
    :param teacher: a :data:`TEACHER_PRESETS` name or a dict for :meth:`ScriptedTeacher.from_spec`
    :param pool_dir: cache folder (default :func:`default_pool_dir`)
    """
    if dataset.dataset_id is None:  # nothing names the dataset: draw the pool, cache nothing
        return PreferencePool.create(dataset, n_pairs, mode, seed, segment_length, horizon, teacher)
    fingerprint = dataset_fingerprint(dataset)
    path = pool_path(dataset.dataset_id, n_pairs, mode, seed, segment_length, horizon, teacher, pool_dir, fingerprint)
    if path.is_file():
        pool = PreferencePool.load(path)
    else:
        pool = PreferencePool.create(dataset, n_pairs, mode, seed, segment_length, horizon, teacher)
        pool.save(path)
    pool.check_dataset(dataset)
    return pool


def preference_accuracy(prob_second: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of the strict pairs (target 0 or 1) whose preferred segment gets P > 0.5.

    :param prob_second: a model's P(second segment preferred), shape ``(N,)``
    :param targets: the labels, P(second segment preferred), shape ``(N,)``
    """
    strict = np.asarray(targets) != 0.5
    if not strict.any():
        return float("nan")
    predicted = np.asarray(prob_second)[strict] > 0.5
    return float(np.mean(predicted == (np.asarray(targets)[strict] == 1.0)))


def resolve_pool(
    dataset: OfflineDataset,
    preference_pool: PreferencePool | None,
    n_labels: int | None,
    label_mode: str,
    segment_length: int,
    horizon: int,
    pool_seed: int,
    teacher: str | dict,
    pool_dir: str | os.PathLike | None,
) -> PreferencePool | None:
    """The label pool a method trains on: the one given, the cached one of these settings, or ``None`` (no budget).

    :param dataset: the offline dataset
    :param preference_pool: a pool to use as is (checked against ``dataset``)
    :param n_labels: N_q; ``None`` without ``preference_pool`` means no fixed pool
    :param label_mode: ``window`` or ``foresee``
    :param segment_length: steps per segment
    :param horizon: steps of the ``foresee`` score
    :param pool_seed: seed of the pool
    :param teacher: the scripted teacher (preset name or dict)
    :param pool_dir: cache folder of pools
    """
    if preference_pool is not None:
        preference_pool.check_dataset(dataset)
        return preference_pool
    if n_labels is None:
        return None
    return load_or_create_pool(dataset, n_labels, label_mode, pool_seed, segment_length, horizon, teacher, pool_dir)


#: a held-out pool uses the seed ``pool_seed + HELDOUT_SEED_OFFSET`` (never a training pool's seed in practice)
HELDOUT_SEED_OFFSET = 1_000_003


def heldout_pool(
    dataset: OfflineDataset,
    n_pairs: int,
    mode: str,
    pool_seed: int,
    segment_length: int,
    horizon: int,
    teacher: str | dict,
    pool_dir: str | os.PathLike | None,
) -> PreferencePool | None:
    """The held-out pool of a training pool's settings: seed ``pool_seed + HELDOUT_SEED_OFFSET``; ``None`` for 0 pairs.

    :param dataset: the offline dataset
    :param n_pairs: size of the held-out pool (0: none)
    :param mode: ``window`` or ``foresee``
    :param pool_seed: seed of the training pool
    :param segment_length: steps per segment
    :param horizon: steps of the ``foresee`` score
    :param teacher: the scripted teacher
    :param pool_dir: cache folder of pools
    """
    if n_pairs <= 0:
        return None
    return load_or_create_pool(
        dataset, n_pairs, mode, pool_seed + HELDOUT_SEED_OFFSET, segment_length, horizon, teacher, pool_dir
    )
