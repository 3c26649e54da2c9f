"""Policy of FISOR: a diffusion actor (+ EMA copy), reward critics and value, feasibility critics and value."""

from __future__ import annotations

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim, get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, get_actor_critic_arch
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from rlkit.common.diffusion import Denoiser, DiffusionSchedule, ddpm_sample
from rlkit.common.networks import ValueNetwork
from rlkit.common.utils import fused_adam_kwargs


class FISORPolicy(BasePolicy):
    """Networks of FISOR (Zheng et al., ICLR 2024).

    - ``actor`` / ``actor_target``: the diffusion noise predictor ``eps_theta(s, a_t, t)`` and its EMA copy
      (used for acting);
    - ``critic`` / ``critic_target`` and ``value``: IQL's reward ``Q_1, Q_2`` and ``V``;
    - ``cost_critic`` / ``cost_critic_target`` and ``cost_value``: the feasibility ``Q_h`` (two nets) and ``V_h``.

    Acting (Sec. 4.4): ``n_candidates`` actions are sampled from the EMA actor and
    the one with the least ``max_j Q'_{h,j}(s, a)`` is executed. The sampler is
    stochastic; with ``deterministic=True`` its noise comes by default from a generator
    seeded with ``sample_seed`` at every call, so the action is a fixed function
    of the observation (what SB3's contract asks of a deterministic ``predict``: a
    saved and reloaded model acts the same). The official code instead draws fresh
    noise at every env step from a key seeded once: ``fresh_noise=True`` does that,
    with one generator seeded with ``sample_seed`` when the policy is built or loaded.

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning rate schedule
    :param net_arch: hidden sizes, a list or ``dict(pi=[...], qf=[...])``; ``pi`` is the denoiser's,
        ``qf`` the critics' and value networks'
    :param activation_fn: activation of the critics and value networks
    :param n_timesteps: diffusion steps ``T``
    :param beta_min: ``b_min`` of the VP schedule
    :param beta_max: ``b_max`` of the VP schedule
    :param time_embed_dim: Fourier features of the timestep
    :param n_candidates: actions sampled at each decision (``N``)
    :param sample_seed: seed of the sampler's noise when acting deterministically
    :param residual_blocks: the denoiser's residual blocks (0: an MLP of ``net_arch["pi"]``); the official
        denoiser is ``net_arch=dict(pi=[1024], ...)``, ``residual_blocks=3``, ``dropout=0.1``
    :param dropout: dropout rate of the residual blocks (the EMA actor that acts never drops)
    :param fresh_noise: with ``deterministic=True``, draw new noise at every call from one generator
        (the official code's acting) instead of the same noise at every call
    :param features_extractor_class: features extractor of the critics
    :param features_extractor_kwargs: keyword arguments of the features extractor
    :param normalize_images: whether to divide image observations by 255
    :param optimizer_class: optimizer (FISOR: Adam; its AdamW has no weight decay)
    :param optimizer_kwargs: keyword arguments of the optimizer, excluding the learning rate
        (default for Adam: ``fused=True``, see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    :param n_critics: number of Q networks of each critic
    """

    actor: Denoiser
    actor_target: Denoiser
    critic: ContinuousCritic
    critic_target: ContinuousCritic
    value: ValueNetwork
    cost_critic: ContinuousCritic
    cost_critic_target: ContinuousCritic
    cost_value: ValueNetwork

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        n_timesteps: int = 5,
        beta_min: float = 0.1,
        beta_max: float = 10.0,
        time_embed_dim: int = 64,
        n_candidates: int = 16,
        sample_seed: int = 0,
        residual_blocks: int = 0,
        dropout: float = 0.0,
        fresh_noise: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=fused_adam_kwargs(optimizer_class, optimizer_kwargs),
            squash_output=True,
            normalize_images=normalize_images,
        )
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        self.net_arch = [256, 256] if net_arch is None else net_arch
        self.activation_fn = activation_fn
        self.n_timesteps = n_timesteps
        self.beta_min = beta_min
        self.beta_max = beta_max
        self.time_embed_dim = time_embed_dim
        self.n_candidates = n_candidates
        self.sample_seed = sample_seed
        self.fresh_noise = fresh_noise
        self.residual_blocks = residual_blocks
        self.dropout = dropout
        self._noise: th.Generator | None = None
        self.n_critics = n_critics
        actor_arch, critic_arch = get_actor_critic_arch(self.net_arch)
        obs_dim, action_dim = get_flattened_obs_dim(self.observation_space), get_action_dim(self.action_space)
        self.schedule = DiffusionSchedule(n_timesteps, beta_min, beta_max)
        denoiser = (obs_dim, action_dim, actor_arch, time_embed_dim, 2 * time_embed_dim, residual_blocks, dropout)
        self.actor = Denoiser(*denoiser)
        self.actor_target = Denoiser(*denoiser)
        self.actor_target.train(False)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.actor_target.requires_grad_(False)
        common = {
            "observation_space": self.observation_space,
            "action_space": self.action_space,
            "activation_fn": activation_fn,
            "normalize_images": normalize_images,
        }
        critic_kwargs = {**common, "net_arch": critic_arch, "n_critics": n_critics, "share_features_extractor": False}
        self.critic = ContinuousCritic(**self._update_features_extractor(critic_kwargs))
        self.critic_target = ContinuousCritic(**self._update_features_extractor(critic_kwargs))
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.cost_critic = ContinuousCritic(**self._update_features_extractor(critic_kwargs))
        self.cost_critic_target = ContinuousCritic(**self._update_features_extractor(critic_kwargs))
        self.cost_critic_target.load_state_dict(self.cost_critic.state_dict())
        for target in (self.critic_target, self.cost_critic_target):
            target.set_training_mode(False)
        self.value = ValueNetwork(**self._update_features_extractor({**common, "net_arch": critic_arch}))
        self.cost_value = ValueNetwork(**self._update_features_extractor({**common, "net_arch": critic_arch}))
        for module in (self.actor, self.critic, self.value, self.cost_critic, self.cost_value):
            module.optimizer = self.optimizer_class(  # type: ignore[assignment]
                module.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_timesteps=self.n_timesteps,
                beta_min=self.beta_min,
                beta_max=self.beta_max,
                time_embed_dim=self.time_embed_dim,
                n_candidates=self.n_candidates,
                sample_seed=self.sample_seed,
                fresh_noise=self.fresh_noise,
                residual_blocks=self.residual_blocks,
                dropout=self.dropout,
                n_critics=self.n_critics,
                lr_schedule=self._dummy_schedule,
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def feasibility_q(self, obs: th.Tensor, actions: th.Tensor, target: bool = True) -> th.Tensor:
        """Pessimistic feasibility ``max_j Q_{h,j}(s, a)``, shape ``(batch, 1)`` (positive: a violation is reached).

        :param obs: observations
        :param actions: actions in ``[-1, 1]``
        :param target: use the target networks
        """
        critic = self.cost_critic_target if target else self.cost_critic
        return th.max(th.cat(critic(obs, actions), dim=1), dim=1, keepdim=True)[0]

    def reward_q(self, obs: th.Tensor, actions: th.Tensor, target: bool = True) -> th.Tensor:
        """Pessimistic reward value ``min_j Q_j(s, a)``, shape ``(batch, 1)``.

        :param obs: observations
        :param actions: actions in ``[-1, 1]``
        :param target: use the target networks
        """
        critic = self.critic_target if target else self.critic
        return th.min(th.cat(critic(obs, actions), dim=1), dim=1, keepdim=True)[0]

    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(observation, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        obs = th.flatten(observation.float(), start_dim=1)  # type: ignore[union-attr]
        batch = obs.shape[0]
        repeated = obs.repeat_interleave(self.n_candidates, dim=0)
        generator = None
        if deterministic and self.fresh_noise:
            if self._noise is None or self._noise.device != obs.device:
                self._noise = th.Generator(device=obs.device).manual_seed(self.sample_seed)
            generator = self._noise
        elif deterministic:
            generator = th.Generator(device=obs.device).manual_seed(self.sample_seed)
        candidates = ddpm_sample(self.actor_target, self.schedule, repeated, generator=generator)
        q_h = self.feasibility_q(repeated, candidates).view(batch, self.n_candidates)
        best = q_h.argmin(dim=1)
        return candidates.view(batch, self.n_candidates, -1)[th.arange(batch, device=obs.device), best]

    def set_training_mode(self, mode: bool) -> None:
        for module in (self.actor, self.critic, self.value, self.cost_critic, self.cost_value):
            module.train(mode)
        self.training = mode


MlpPolicy = FISORPolicy
