"""AlignDiff's attributes: a scripted multi-attribute annotator, the attribute strength model, bins and the area metric.

Dong et al., "AlignDiff: Aligning Diverse Human Preferences via Behavior-Customisable
Diffusion Model" (ICLR 2024, https://arxiv.org/abs/2309.14207); official code
ZibinDong/AlignDiff-ICLR2024 (``utils/attrfunc_utils.py``, ``train_attr_func.py``, ``plot.py``).

- :class:`AttributeAnnotator` replaces the paper's crowd annotators: each attribute is a
  function of a window of raw observations (MuJoCo state), and each pair of windows gets one
  label per attribute in {-1, 0, 1} from B-Pref's scripted teacher
  (:class:`~rlkit.common.preference.ScriptedTeacher`) with an "equal" band. The paper's
  "humanness" attribute is a human judgement and cannot be scripted: it is left out.
- :class:`AttributeStrengthModel` is the ASM: an ensemble of transformer encoders over state
  windows, one relative strength per attribute, trained with a per-attribute Bradley-Terry loss.
- :func:`strength_bins` discretises normalised strengths into V bins per attribute, with attribute
  i's indices in ``[i V, (i + 1) V)``.
- :func:`area_over_thresholds` is the paper's matching metric as ``plot.py`` computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
from torch import nn
from torch.nn import functional as F

from rlkit.common.preference import ScriptedTeacher, TeacherConfig

#: an attribute: raw observation windows ``(N, H, obs_dim)`` -> one value per window ``(N,)``
AttributeFunction = Callable[[np.ndarray], np.ndarray]


def _mean_of(index: int) -> AttributeFunction:
    def attribute(observations: np.ndarray) -> np.ndarray:
        return observations[..., index].mean(axis=-1)

    return attribute


def _walker_stride(observations: np.ndarray) -> np.ndarray:
    """Range over the window of the right thigh angle minus the left one (obs[2] - obs[5]): a stride proxy."""
    spread = observations[..., 2] - observations[..., 5]
    return spread.max(axis=-1) - spread.min(axis=-1)


def _toy_speed(observations: np.ndarray) -> np.ndarray:
    """Mean speed of the toy point mass: the norm of its observed velocity obs[2:4]."""
    return np.linalg.norm(observations[..., 2:4], axis=-1).mean(axis=-1)


@dataclass(frozen=True)
class Attribute:
    """One scripted attribute.

    :param name: its name
    :param function: raw observation windows ``(N, H, obs_dim)`` -> values ``(N,)``
    :param description: how it is computed
    """

    name: str
    function: AttributeFunction
    description: str


#: The scripted attributes of each task, from gymnasium v5 observations (positions excluded by default).
#: Hopper: speed and jump (torso) height, as the paper's synthetic labels; Walker2d: speed, torso
#: height and a stride proxy (the paper's left/right leg preference and "humanness" are left out: the
#: first is not asked for here, the second cannot be scripted); HalfCheetah (not in the paper): speed and
#: height, for the speed benchmark; the toy point mass of ``toy/run-v0``: speed and
#: x position, for tests.
ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {
    "Hopper-v5": (
        Attribute("speed", _mean_of(5), "mean forward velocity of the torso, obs[5]"),
        Attribute("height", _mean_of(0), "mean torso height, obs[0] (the paper's jump height)"),
    ),
    "Walker2d-v5": (
        Attribute("speed", _mean_of(8), "mean forward velocity of the torso, obs[8]"),
        Attribute("height", _mean_of(0), "mean torso height, obs[0]"),
        Attribute("stride", _walker_stride, "range of obs[2] - obs[5] (thigh angle difference) over the window"),
    ),
    "HalfCheetah-v5": (
        Attribute("speed", _mean_of(8), "mean forward velocity of the torso, obs[8]"),
        Attribute("height", _mean_of(0), "mean height of the torso root, obs[0]"),
    ),
    "toy/run-v0": (
        Attribute("speed", _toy_speed, "mean norm of the observed velocity, obs[2:4]"),
        Attribute("east", _mean_of(0), "mean x position, obs[0]"),
    ),
}


def attributes_of(env_id: str) -> tuple[Attribute, ...]:
    """The scripted attributes of ``env_id``; a ``ValueError`` names the tasks that have some."""
    if env_id not in ATTRIBUTES:
        raise ValueError(
            f"No scripted attributes for {env_id!r}; known tasks: {', '.join(ATTRIBUTES)} "
            "(add an entry to rlkit.aligndiff.attributes.ATTRIBUTES)"
        )
    return ATTRIBUTES[env_id]


class AttributeAnnotator:
    """Scripted multi-attribute annotator: per attribute, which of two windows shows more of it.

    For each attribute the values ``a(tau0)``, ``a(tau1)`` go to B-Pref's scripted teacher as
    one-step "returns", with the equal band ``eps_equal`` times the attribute's spread (its
    standard deviation over windows, set by :meth:`set_scales`): label 1 if the second window
    shows more, -1 if the first does, 0 within the band. AlignDiff's code maps a label y to
    the target ``(y + 1) / 2``, the probability that the second window has more.

    :param attributes: the attributes (see :data:`ATTRIBUTES`)
    :param eps_equal: width of the equal band, in attribute standard deviations
    :param eps_mistake: probability of flipping each label (0: a rational annotator)
    :param seed: seed of the teachers' random generators
    """

    def __init__(
        self, attributes: Sequence[Attribute], eps_equal: float = 0.1, eps_mistake: float = 0.0, seed: int | None = None
    ) -> None:
        if not attributes:
            raise ValueError("AttributeAnnotator needs at least one attribute")
        if eps_equal < 0 or not 0 <= eps_mistake <= 1:
            raise ValueError(f"eps_equal must be >= 0 and eps_mistake in [0, 1], got {eps_equal}, {eps_mistake}")
        self.attributes = tuple(attributes)
        config = TeacherConfig(eps_equal=eps_equal, eps_mistake=eps_mistake)
        seeds = np.random.SeedSequence(seed).spawn(len(self.attributes))
        self.teachers = [ScriptedTeacher(config, seed=int(s.generate_state(1)[0])) for s in seeds]

    @property
    def n_attributes(self) -> int:
        return len(self.attributes)

    def values(self, observations: np.ndarray) -> np.ndarray:
        """The attributes of raw observation windows ``(N, H, obs_dim)``: ``(N, k)``."""
        return np.stack([attribute.function(observations) for attribute in self.attributes], axis=-1)

    def set_scales(self, observations: np.ndarray) -> None:
        """Set each equal band from the attribute's standard deviation over these windows ``(N, H, obs_dim)``."""
        for teacher, spread in zip(self.teachers, self.values(observations).std(axis=0), strict=True):
            teacher.set_thresholds(float(spread))

    def label(self, observations0: np.ndarray, observations1: np.ndarray) -> np.ndarray:
        """Labels in {-1, 0, 1} of N pairs of windows, one per attribute: ``(N, k)`` int8."""
        values0, values1 = self.values(observations0), self.values(observations1)
        labels = np.empty(values0.shape, dtype=np.int8)
        for i, teacher in enumerate(self.teachers):
            targets = teacher.label(values0[:, i : i + 1], values1[:, i : i + 1]).targets
            labels[:, i] = np.rint(2 * targets - 1).astype(np.int8)
        return labels


def labels_to_targets(labels: np.ndarray) -> np.ndarray:
    """AlignDiff's ``(y + 1) / 2``: labels in {-1, 0, 1} -> P(second window has more) in {0, 0.5, 1}."""
    return ((np.asarray(labels, dtype=np.float32) + 1.0) / 2.0).astype(np.float32)


# --------------------------------------------------------------------------- attribute strength model


def sinusoidal_embedding(positions: th.Tensor, dim: int) -> th.Tensor:
    """Transformer sine / cosine features ``(..., dim)`` of integer or real positions."""
    half = dim // 2
    frequencies = th.exp(-math.log(10_000.0) * th.arange(half, device=positions.device, dtype=th.float32) / max(half, 1))
    angles = positions.float().unsqueeze(-1) * frequencies
    embedding = th.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(embedding, (0, dim - 2 * half))


class _StrengthTransformer(nn.Module):
    """One ASM member: Linear + LayerNorm state embedding, positions, an attribute token last, an encoder, Linear."""

    def __init__(
        self, obs_dim: int, n_attributes: int, d_model: int, n_heads: int, n_layers: int, ffn_size: int, dropout: float
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(obs_dim, d_model), nn.LayerNorm(d_model))
        self.attribute_token = nn.Parameter(th.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, ffn_size, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_attributes)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        tokens = self.embed(observations)
        positions = th.arange(tokens.shape[1], device=tokens.device)
        tokens = tokens + sinusoidal_embedding(positions, tokens.shape[-1])
        tokens = th.cat([tokens, self.attribute_token.expand(len(tokens), -1, -1)], dim=1)
        return self.head(self.encoder(tokens)[:, -1])


class AttributeStrengthModel(nn.Module):
    """AlignDiff's attribute strength model (ASM): zeta(tau) in R^k from a window of (normalised) states.

    Each of ``n_members`` transformers embeds the states (Linear + LayerNorm, sinusoidal
    positions), appends a learnable attribute token, runs ``n_layers`` encoder layers and maps
    the token's output to k values, squashed as ``c tanh(out / c)`` (c = 20). The strength is the
    ensemble mean. Training (:meth:`fit`): per attribute ``P_i(tau1 > tau0) = sigmoid(zeta_i(tau1)
    - zeta_i(tau0))``, the cross-entropy against the soft targets averaged over the batch **and the
    attributes** (``attrfunc_utils.py`` l.113; the spec's sum over attributes is corrected there),
    each member on its own minibatch, AdamW.

    The dataset statistics of the relabelled strengths (:meth:`set_statistics`) are buffers, so
    they are saved with the model and :meth:`normalize` works after loading.

    :param obs_dim: observation size
    :param n_attributes: k
    :param n_members: ensemble size (3)
    :param d_model: token width (128)
    :param n_heads: attention heads (4)
    :param n_layers: encoder layers (2)
    :param ffn_size: feed-forward width (512)
    :param dropout: dropout of the encoder layers
    :param squash: c of ``c tanh(out / c)`` (20)
    """

    strength_min: th.Tensor
    strength_max: th.Tensor

    def __init__(
        self,
        obs_dim: int,
        n_attributes: int,
        n_members: int = 3,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        ffn_size: int = 512,
        dropout: float = 0.1,
        squash: float = 20.0,
    ) -> None:
        super().__init__()
        if n_members < 1 or n_attributes < 1 or squash <= 0:
            raise ValueError(f"need n_members >= 1, n_attributes >= 1, squash > 0; got {n_members}, {n_attributes}, {squash}")
        self.n_attributes = n_attributes
        self.squash = squash
        self.members = nn.ModuleList(
            _StrengthTransformer(obs_dim, n_attributes, d_model, n_heads, n_layers, ffn_size, dropout)
            for _ in range(n_members)
        )
        self.register_buffer("strength_min", th.zeros(n_attributes))
        self.register_buffer("strength_max", th.ones(n_attributes))

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_strengths(self, observations: th.Tensor) -> th.Tensor:
        """``(n_members, N, k)`` squashed strengths of windows ``(N, H, obs_dim)``."""
        return th.stack([self.squash * th.tanh(member(observations) / self.squash) for member in self.members])

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """The ensemble-mean raw strengths ``(N, k)``."""
        return self.member_strengths(observations).mean(dim=0)

    def loss(self, member: int, observations0: th.Tensor, observations1: th.Tensor, targets: th.Tensor) -> th.Tensor:
        """Bradley-Terry cross-entropy of one member, mean over batch and attributes.

        :param member: the member's index
        :param observations0: first windows ``(N, H, obs_dim)``
        :param observations1: second windows
        :param targets: P(second has more) per attribute ``(N, k)``
        """
        net = self.members[member]
        zeta0 = self.squash * th.tanh(net(observations0) / self.squash)
        zeta1 = self.squash * th.tanh(net(observations1) / self.squash)
        return F.binary_cross_entropy_with_logits(zeta1 - zeta0, targets)

    def fit(
        self,
        observations0: np.ndarray,
        observations1: np.ndarray,
        targets: np.ndarray,
        n_steps: int = 3000,
        batch_size: int = 256,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-4,
        seed: int | None = None,
    ) -> list[float]:
        """Train every member for ``n_steps`` AdamW steps, each on its own minibatches of the labelled pairs.

        :param observations0: first windows ``(N, H, obs_dim)`` (normalised states)
        :param observations1: second windows
        :param targets: P(second has more) ``(N, k)``
        :param n_steps: steps per member (3,000)
        :param batch_size: pairs per step (256)
        :param learning_rate: AdamW learning rate (1e-4)
        :param weight_decay: AdamW weight decay (1e-4)
        :param seed: seed of the minibatch draws
        :return: the mean loss over members of each step
        """
        device = self.strength_min.device
        obs0, obs1 = (th.as_tensor(x, dtype=th.float32, device=device) for x in (observations0, observations1))
        y = th.as_tensor(targets, dtype=th.float32, device=device)
        if y.shape != (len(obs0), self.n_attributes):
            raise ValueError(f"targets must have shape (n_pairs, {self.n_attributes}), got {tuple(y.shape)}")
        optimizers = [
            th.optim.AdamW(member.parameters(), lr=learning_rate, weight_decay=weight_decay) for member in self.members
        ]
        rng = np.random.default_rng(seed)
        self.train()
        history = []
        for _ in range(n_steps):
            losses = []
            for m, optimizer in enumerate(optimizers):
                index = th.as_tensor(rng.integers(len(obs0), size=min(batch_size, len(obs0))), device=device)
                loss = self.loss(m, obs0[index], obs1[index], y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            history.append(float(np.mean(losses)))
        self.eval()
        return history

    @th.no_grad()
    def strengths(self, observations: np.ndarray | th.Tensor, batch_size: int = 256) -> np.ndarray:
        """Raw ensemble-mean strengths ``(N, k)`` of windows ``(N, H, obs_dim)``, in chunks."""
        device = self.strength_min.device
        obs = th.as_tensor(observations, dtype=th.float32, device=device)
        was_training = self.training
        self.eval()
        out = [self(obs[i : i + batch_size]).cpu() for i in range(0, len(obs), batch_size)]
        self.train(was_training)
        return th.cat(out).numpy() if out else np.zeros((0, self.n_attributes), dtype=np.float32)

    def set_statistics(self, strengths: np.ndarray) -> None:
        """Store the per-attribute min and max of the dataset's relabelled raw strengths ``(N, k)``."""
        strengths = np.asarray(strengths, dtype=np.float32)
        self.strength_min.copy_(th.as_tensor(strengths.min(axis=0)))
        self.strength_max.copy_(th.as_tensor(strengths.max(axis=0)))

    def normalize(self, strengths: np.ndarray | th.Tensor) -> np.ndarray:
        """Min-max normalised strengths in [0, 1] with the stored dataset statistics (clipped)."""
        low, high = self.strength_min.cpu().numpy(), self.strength_max.cpu().numpy()
        value = np.asarray(strengths, dtype=np.float32)
        return np.clip((value - low) / np.maximum(high - low, 1e-8), 0.0, 1.0).astype(np.float32)

    def normalized_strengths(self, observations: np.ndarray | th.Tensor) -> np.ndarray:
        """:meth:`strengths` min-max normalised: the attribute strengths in [0, 1] of windows."""
        return self.normalize(self.strengths(observations))


def strength_bins(strengths: np.ndarray | th.Tensor, n_bins: int = 100) -> th.Tensor:
    """Bin indices of normalised strengths ``(..., k)``: ``i V + clip(floor(v_i V), 0, V - 1)`` for attribute i.

    Strength 0 goes to the first bin of its attribute and 1 to the last one; attribute i's
    indices lie in ``[i V, (i + 1) V)`` (the offsets that AlignDiff's code adds inside its
    embedding layer, the paper's ``+ (i - 1) V``).

    :param strengths: normalised strengths in [0, 1]
    :param n_bins: V (100)
    :return: int64 indices, the shape of ``strengths``
    """
    value = th.as_tensor(strengths, dtype=th.float32)
    index = th.clamp(th.floor(value * n_bins), 0, n_bins - 1).long()
    return index + n_bins * th.arange(value.shape[-1], device=index.device)


def masked_errors(strengths: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``||(v - zeta) * m||^2`` of each candidate: AlignDiff's selection criterion (Eq. 5; ``planner.py``).

    :param strengths: normalised strengths of the candidates ``(n, k)``
    :param target: target strengths ``(k,)``
    :param mask: attributes the user cares about ``(k,)`` (0 or 1)
    """
    return (((np.asarray(strengths) - np.asarray(target)) * np.asarray(mask)) ** 2).sum(axis=-1)


def masked_mae(strengths: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The evaluation's ``MAE = sum_i m_i / sum_j m_j |v_hat_i - v_i|`` (``eval.py``), over leading axes.

    :param strengths: realised normalised strengths ``(..., k)``
    :param target: targets ``(..., k)``
    :param mask: masks ``(..., k)``, at least one attribute set
    """
    mask = np.asarray(mask, dtype=np.float64)
    return (mask * np.abs(np.asarray(strengths) - np.asarray(target))).sum(axis=-1) / mask.sum(axis=-1)


def mae_thresholds() -> np.ndarray:
    """The 100 thresholds of ``plot.py``: 90 log-spaced from 1 down to exp(-4.6), then 10 linear down to 0."""
    logs = np.exp(np.linspace(0.0, -4.6, 90))
    return np.concatenate([logs, np.linspace(logs[-1], 0.0, 10)])


def area_over_thresholds(mae: np.ndarray) -> float:
    """The paper's "area": mean over the 100 thresholds eta of the share of tests with best MAE < eta.

    As the official ``plot.py`` computes it: the best MAE of a test is the minimum over its
    segments (``mae[:, :t+1].min(-1)`` at the last segment), the inequality is strict and the last
    threshold is 0, so a perfect match (MAE 0 everywhere) scores 0.99 and MAE >= 1 scores 0.

    :param mae: ``(n_tests,)`` or ``(n_tests, n_segments)``
    """
    mae = np.asarray(mae, dtype=np.float64)
    best = mae.min(axis=-1) if mae.ndim == 2 else mae
    return float(np.mean([(best < eta).mean() for eta in mae_thresholds()]))
