"""Preference-based RL parts shared by every algorithm that learns from preferences.

- segments: windows of ``H`` consecutive (s, a, r_true) steps cut from stored episodes
  (:class:`EpisodeStore`, :func:`sample_segment_pairs`);
- the B-Pref scripted teacher (Lee et al., 2021, "B-Pref: Benchmarking Preference-Based
  Reinforcement Learning"; code rll-research/BPref ``reward_model.py::get_label``) with its six
  presets (:data:`TEACHER_PRESETS`), deterministic given its seed (:class:`ScriptedTeacher`);
- the Bradley-Terry reward ensemble of PEBBLE (Lee et al., 2021), soft targets 0.5/0.5 for
  "equal" labels (:class:`RewardEnsemble`, :class:`PreferenceDataset`);
- query selection: uniform, ensemble disagreement, predictive entropy (:func:`select_queries`).

Label convention (B-Pref): a label is the probability that segment 1 is preferred to
segment 0: 1.0 (segment 1 better), 0.0 (segment 0 better) or 0.5 ("equal").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

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
        for epoch in range(1, n_epochs + 1):
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
    ``entropy``: the largest entropy of the ensemble-mean preference probability.

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
        mean = np.clip(probs.mean(axis=0), 1e-12, 1 - 1e-12)
        score = -(mean * np.log(mean) + (1 - mean) * np.log(1 - mean))
    return np.argsort(-score, kind="stable")[:n_queries]
