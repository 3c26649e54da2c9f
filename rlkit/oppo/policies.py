"""Networks of OPPO: the hindsight-information encoder I_theta, the contextual policy pi_phi and the optimal context z*."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

#: sizes of the official code (``args.py`` of the scripted variant): 3 layers, hidden 128, FFN 512, dropout 0.1
PAPER_SIZE: dict[str, Any] = dict(hidden_size=128, n_layers=3, encoder_heads=2, policy_heads=1, ffn_size=512, dropout=0.1)
#: a configuration for CPU runs: one layer of width 64
CPU_SIZE: dict[str, Any] = dict(hidden_size=64, n_layers=1, encoder_heads=2, policy_heads=1, ffn_size=128, dropout=0.1)
#: network sizes by name (``OPPO(network_size=...)``)
NETWORK_SIZES: dict[str, dict[str, Any]] = {"paper": PAPER_SIZE, "cpu": CPU_SIZE}


def attention_mask(token_mask: th.Tensor, causal: bool, n_heads: int) -> th.Tensor:
    """Boolean attention mask (True: may not attend) of ``nn.MultiheadAttention``, shape ``(N * n_heads, L, L)``.

    A real token attends to the real tokens (earlier ones only if ``causal``); a padded token
    attends to itself only, so that every row has a key and the padded rows stay finite
    without being read by a real one.

    :param token_mask: True at real tokens, shape ``(N, L)``
    :param causal: forbid attention to later tokens
    :param n_heads: attention heads (the mask is repeated per head)
    """
    length = token_mask.shape[1]
    allowed = token_mask[:, None, :].expand(-1, length, -1)
    if causal:
        allowed = allowed & th.ones(length, length, dtype=th.bool, device=token_mask.device).tril()
    allowed = allowed | th.eye(length, dtype=th.bool, device=token_mask.device)
    return (~allowed).repeat_interleave(n_heads, dim=0)


class _TokenTransformer(nn.Module):
    """A stack of ``nn.TransformerEncoderLayer`` over a token sequence with a per-sample attention mask.

    :param hidden_size: token width
    :param n_layers: number of layers
    :param n_heads: attention heads
    :param ffn_size: width of the feed-forward layers
    :param dropout: dropout probability
    :param pre_norm: GPT-2's pre-LayerNorm blocks with a final LayerNorm (else BERT's post-LayerNorm)
    """

    def __init__(self, hidden_size: int, n_layers: int, n_heads: int, ffn_size: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of the number of heads ({n_heads})")
        self.n_heads = n_heads
        layer = nn.TransformerEncoderLayer(
            hidden_size, n_heads, ffn_size, dropout, activation="relu", batch_first=True, norm_first=pre_norm
        )
        final_norm = nn.LayerNorm(hidden_size) if pre_norm else None
        self.layers = nn.TransformerEncoder(layer, n_layers, norm=final_norm, enable_nested_tensor=False)

    def forward(self, tokens: th.Tensor, token_mask: th.Tensor, causal: bool) -> th.Tensor:
        return self.layers(tokens, mask=attention_mask(token_mask, causal, self.n_heads))


class HindsightEncoder(nn.Module):
    """I_theta(tau) -> z: a bidirectional (BERT-style) transformer over the tokens (s_t, a_t) of a window.

    Tokens ``e_s(s_t) + e_t(t)`` and ``e_a(a_t) + e_t(t)`` are interleaved, LayerNorm-ed and
    encoded; the outputs of the real tokens are averaged and mapped linearly to z. The
    official code sums all 2K outputs, the attention-masked padding included; the masked
    mean makes z independent of the padding and of the window's length.

    :param obs_dim: observation size
    :param action_dim: action size
    :param z_dim: size of the context z
    :param hidden_size: token width
    :param n_layers: transformer layers
    :param n_heads: attention heads
    :param ffn_size: feed-forward width
    :param dropout: dropout probability
    :param max_timestep: size of the timestep embedding (longest episode)
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        z_dim: int,
        hidden_size: int,
        n_layers: int,
        n_heads: int,
        ffn_size: int,
        dropout: float,
        max_timestep: int,
    ) -> None:
        super().__init__()
        self.max_timestep = max_timestep
        self.embed_state = nn.Linear(obs_dim, hidden_size)
        self.embed_action = nn.Linear(action_dim, hidden_size)
        self.embed_timestep = nn.Embedding(max_timestep, hidden_size)
        self.embed_ln = nn.LayerNorm(hidden_size)
        self.transformer = _TokenTransformer(hidden_size, n_layers, n_heads, ffn_size, dropout, pre_norm=False)
        self.head = nn.Linear(hidden_size, z_dim)

    def forward(self, observations: th.Tensor, actions: th.Tensor, timesteps: th.Tensor, mask: th.Tensor) -> th.Tensor:
        """z of each window, shape ``(N, z_dim)``, from windows of shape ``(N, K, dim)`` and masks ``(N, K)``."""
        n, k = mask.shape
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
        tokens = th.stack([self.embed_state(observations) + time, self.embed_action(actions) + time], dim=2)
        tokens = self.embed_ln(tokens.reshape(n, 2 * k, -1))
        token_mask = mask.repeat_interleave(2, dim=1)
        hidden = self.transformer(tokens, token_mask, causal=False)
        weights = token_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class ContextTransformerActor(nn.Module):
    """pi_phi(a_t | z, s_<=t, a_<t): a causal (GPT-2-style) transformer over the token triplets (z, s_t, a_t).

    Each step contributes ``e_z(z_t) + e_t(t)``, ``e_s(s_t) + e_t(t)``, ``e_a(a_t) + e_t(t)``;
    the action of step t is read from the output at the s_t token through Linear + tanh, so it
    sees the contexts and states up to t and the actions before t.

    :param obs_dim: observation size
    :param action_dim: action size
    :param z_dim: size of the context z
    :param hidden_size: token width
    :param n_layers: transformer layers
    :param n_heads: attention heads
    :param ffn_size: feed-forward width
    :param dropout: dropout probability
    :param max_timestep: size of the timestep embedding (longest episode)
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        z_dim: int,
        hidden_size: int,
        n_layers: int,
        n_heads: int,
        ffn_size: int,
        dropout: float,
        max_timestep: int,
    ) -> None:
        super().__init__()
        self.max_timestep = max_timestep
        self.embed_context = nn.Linear(z_dim, hidden_size)
        self.embed_state = nn.Linear(obs_dim, hidden_size)
        self.embed_action = nn.Linear(action_dim, hidden_size)
        self.embed_timestep = nn.Embedding(max_timestep, hidden_size)
        self.embed_ln = nn.LayerNorm(hidden_size)
        self.transformer = _TokenTransformer(hidden_size, n_layers, n_heads, ffn_size, dropout, pre_norm=True)
        self.head = nn.Sequential(nn.Linear(hidden_size, action_dim), nn.Tanh())

    def forward(
        self, context: th.Tensor, observations: th.Tensor, actions: th.Tensor, timesteps: th.Tensor, mask: th.Tensor
    ) -> th.Tensor:
        """Actions in [-1, 1] at every step, shape ``(N, K, action_dim)``.

        :param context: z per window ``(N, z_dim)`` (the same at every step) or per step ``(N, K, z_dim)``
        :param observations: ``(N, K, obs_dim)``
        :param actions: ``(N, K, action_dim)`` (the action of step t is only seen from step t + 1 on)
        :param timesteps: ``(N, K)`` absolute steps
        :param mask: ``(N, K)``, True at real steps
        """
        n, k = mask.shape
        if context.dim() == 2:
            context = context.unsqueeze(1).expand(-1, k, -1)
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
        tokens = th.stack(
            [self.embed_context(context) + time, self.embed_state(observations) + time, self.embed_action(actions) + time],
            dim=2,
        )
        tokens = self.embed_ln(tokens.reshape(n, 3 * k, -1))
        hidden = self.transformer(tokens, mask.repeat_interleave(3, dim=1), causal=True)
        return self.head(hidden[:, 1::3])


class OPPOPolicy(BasePolicy):
    """OPPO's networks (Kang et al., 2023): encoder I_theta, contextual policy pi_phi and the free optimal context z*.

    ``z*`` (``z_star``, called ``w`` in the official code) starts at ``z_init_std * N(0, I)``
    (2 in the scripted variant). The optimizers are built by :class:`~rlkit.oppo.OPPO`.

    :param observation_space: observation space
    :param action_space: action space (Box)
    :param lr_schedule: learning rate schedule (unused here, SB3's signature)
    :param context_length: K, steps the policy sees
    :param z_dim: size of z (8 scripted, 16 with human labels)
    :param hidden_size: token width of both transformers
    :param n_layers: layers of both transformers
    :param encoder_heads: attention heads of the encoder (2)
    :param policy_heads: attention heads of the policy (1)
    :param ffn_size: feed-forward width (512)
    :param dropout: dropout probability (0.1)
    :param max_timestep: size of the timestep embeddings (the longest episode; D4RL: 1000)
    :param z_init_std: standard deviation of the initial z*
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        context_length: int = 20,
        z_dim: int = 8,
        hidden_size: int = 128,
        n_layers: int = 3,
        encoder_heads: int = 2,
        policy_heads: int = 1,
        ffn_size: int = 512,
        dropout: float = 0.1,
        max_timestep: int = 1000,
        z_init_std: float = 2.0,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=True)
        obs_dim, action_dim = spaces.flatdim(observation_space), spaces.flatdim(action_space)
        self.context_length = context_length
        self.z_dim = z_dim
        self.hidden_size, self.n_layers, self.ffn_size, self.dropout = hidden_size, n_layers, ffn_size, dropout
        self.encoder_heads, self.policy_heads = encoder_heads, policy_heads
        self.max_timestep = max_timestep
        self.z_init_std = z_init_std
        sizes: dict[str, Any] = dict(
            hidden_size=hidden_size, n_layers=n_layers, ffn_size=ffn_size, dropout=dropout, max_timestep=max_timestep
        )
        self.encoder = HindsightEncoder(obs_dim, action_dim, z_dim, n_heads=encoder_heads, **sizes)
        self.actor = ContextTransformerActor(obs_dim, action_dim, z_dim, n_heads=policy_heads, **sizes)
        self.z_star = nn.Parameter(th.randn(z_dim) * z_init_std)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                lr_schedule=self._dummy_schedule,
                context_length=self.context_length,
                z_dim=self.z_dim,
                hidden_size=self.hidden_size,
                n_layers=self.n_layers,
                encoder_heads=self.encoder_heads,
                policy_heads=self.policy_heads,
                ffn_size=self.ffn_size,
                dropout=self.dropout,
                max_timestep=self.max_timestep,
                z_init_std=self.z_init_std,
            )
        )
        return data

    def act(
        self, context: th.Tensor, observations: th.Tensor, actions: th.Tensor, timesteps: th.Tensor, mask: th.Tensor
    ) -> th.Tensor:
        """The action in [-1, 1] at the last position of each history window, shape ``(N, action_dim)``."""
        return self.actor(context, observations, actions, timesteps, mask)[:, -1]

    def forward(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        return self._predict(observation, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = True) -> th.Tensor:
        """The action from the observation alone (a one-step history at timestep 0, context z*).

        :class:`~rlkit.oppo.OPPO`'s ``predict`` keeps the K-step history; this is SB3's
        history-free entry point.
        """
        assert isinstance(observation, th.Tensor)
        obs = observation.reshape(len(observation), 1, -1).float()
        n = len(obs)
        actions = th.zeros(n, 1, self.actor.embed_action.in_features, device=obs.device)
        timesteps = th.zeros(n, 1, dtype=th.long, device=obs.device)
        mask = th.ones(n, 1, dtype=th.bool, device=obs.device)
        return self.act(self.z_star.expand(n, -1), obs, actions, timesteps, mask)

    def set_training_mode(self, mode: bool) -> None:
        self.encoder.train(mode)
        self.actor.train(mode)
        self.training = mode


MlpPolicy = OPPOPolicy
TransformerPolicy = OPPOPolicy
