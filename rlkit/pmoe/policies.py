"""Policies of PMOE (Ren et al., 2021): K Gaussian experts and their mixing weights.

pi(a|s) = sum_k alpha_k(s) pi_k(a|s), a Gaussian mixture model (GMM) with K experts
("primitives") pi_k and mixing weights alpha(s) on the simplex.

* :class:`PMOEActor` / :class:`PMOESACPolicy` (PMOE-SAC): K tanh-Gaussian experts on a
  shared trunk h(s), with state-dependent means and log-stds, and mixing weights
  alpha(s) = softmax(W h(s).detach() + b) from the *detached* trunk, as in the official
  code (``PMOEMlp``); SB3's twin critics.
* :class:`GaussianMixtureDistribution` / :class:`PMOEActorCriticPolicy` (PMOE-PPO): K
  Gaussian experts with state-independent log-stds on SB3's policy MLP, mixing weights
  from the detached policy latent, SB3's value network and the extra Q-network that
  scores the experts for the routing loss.

In both, ``deterministic_expert`` chooses the expert of a deterministic action:
``"argmax"`` (default) the most probable expert argmax_k alpha_k(s), so that
``predict(obs, deterministic=True)`` is reproducible (a deviation from the official
code); ``"sample"`` draws it from alpha(s), as the official evaluation policy
(``MakeDeterministic``) does, and then returns that expert's mean action. Switch it on
a trained model with ``model.deterministic_expert = "sample"`` (``save`` keeps it).
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy, ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, FlattenExtractor, create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, SACPolicy
from torch import nn
from torch.distributions import Normal

from rlkit.common.utils import ELEMENTWISE_OPTIMIZERS, FlatParameters, fused_adam_kwargs, relu_in_place

#: the choices of ``deterministic_expert``
DETERMINISTIC_EXPERTS = ("argmax", "sample")

SelfGaussianMixtureDistribution = TypeVar("SelfGaussianMixtureDistribution", bound="GaussianMixtureDistribution")


def check_mixture_args(n_experts: int, deterministic_expert: str) -> None:
    """Raise a ``ValueError`` for a bad number of experts or deterministic mode.

    :param n_experts: number K of experts, an integer >= 1
    :param deterministic_expert: one of :data:`DETERMINISTIC_EXPERTS`
    """
    if isinstance(n_experts, bool) or not isinstance(n_experts, int) or n_experts < 1:
        raise ValueError(f"n_experts (K) must be an integer >= 1, got {n_experts!r}")
    check_deterministic_expert(deterministic_expert)


def check_deterministic_expert(deterministic_expert: str) -> None:
    """Raise a ``ValueError`` unless ``deterministic_expert`` is one of :data:`DETERMINISTIC_EXPERTS`.

    :param deterministic_expert: the expert choice of deterministic actions
    """
    if deterministic_expert not in DETERMINISTIC_EXPERTS:
        raise ValueError(f"deterministic_expert must be one of {DETERMINISTIC_EXPERTS}, got {deterministic_expert!r}")


def merge_mixture_kwargs(policy_kwargs: dict[str, Any] | None, **mixture_kwargs: Any) -> dict[str, Any]:
    """Policy kwargs with the algorithm's mixture arguments (``n_experts``, ...) added.

    :param policy_kwargs: the user's policy kwargs
    :param mixture_kwargs: the algorithm's constructor arguments that belong to the policy
    :return: the merged policy kwargs; a ``ValueError`` if both give a key different values
    """
    merged = dict(policy_kwargs or {})
    for key, value in mixture_kwargs.items():
        if key in merged and merged[key] != value:
            raise ValueError(
                f"{key}={value!r} (the algorithm's argument, default included) and policy_kwargs[{key!r}]={merged[key]!r} "
                f"differ: pass {key} to the algorithm only"
            )
        merged[key] = value
    return merged


def select_expert(weights: th.Tensor, mode: str) -> th.Tensor:
    """Index of one expert per state: ``"argmax"`` of the mixing weights or ``"sample"`` from them.

    With a single expert the index is 0 and no random number is drawn, so that
    K = 1 consumes the random stream exactly as a unimodal policy does.

    :param weights: mixing weights alpha(s), shape ``(batch, K)``
    :param mode: ``"argmax"`` or ``"sample"``
    :return: expert indices, shape ``(batch,)``
    """
    if weights.shape[-1] == 1:
        return th.zeros(weights.shape[:-1], dtype=th.long, device=weights.device)
    if mode == "argmax":
        return weights.argmax(dim=-1)
    # Inverse-CDF sampling: cheaper than a torch Categorical for one draw per state
    uniform = th.rand((*weights.shape[:-1], 1), dtype=weights.dtype, device=weights.device)
    return (weights.cumsum(dim=-1) < uniform).sum(dim=-1).clamp(max=weights.shape[-1] - 1)


def gather_expert(values: th.Tensor, index: th.Tensor) -> th.Tensor:
    """``values[b, index[b]]`` for every batch element b.

    :param values: per-expert values, shape ``(batch, K, ...)``
    :param index: expert indices, shape ``(batch,)``
    :return: the selected values, shape ``(batch, ...)``
    """
    return values[th.arange(values.shape[0], device=values.device), index]


class PMOEActor(BasePolicy):
    """
    PMOE-SAC actor: K tanh-Gaussian experts on a shared trunk, mixing weights from the detached trunk.

    For a state s with trunk features h = h(s):

    * expert k: u_k ~ N(mu_k(h), sigma_k(h)^2), a_k = tanh(u_k), with log sigma_k clamped to
      [LOG_STD_MIN, LOG_STD_MAX] as in SB3's SAC actor; its log-density
      log pi_k(a_k|s) includes the tanh Jacobian (SB3's ``SquashedDiagGaussianDistribution``);
    * mixing weights: alpha(s) = softmax(W h.detach() + b), so that the routing (frequency)
      loss never changes the trunk.

    Behaviour action: j ~ Categorical(alpha(s)), then a sample of expert j. Deterministic
    action: tanh(mu_j(h)) with j chosen by ``deterministic_expert`` (see the module docstring).

    The heads have SB3's default initialisation; with K = 1 the actor is SB3's SAC
    ``Actor`` plus an unused mixing layer (its weights load from a SAC actor's state dict).

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layers of the shared trunk
    :param features_extractor: Network to extract features (a nn.Flatten() layer for MlpPolicy)
    :param features_dim: Number of features
    :param activation_fn: Activation function of the trunk
    :param normalize_images: Whether to normalize images or not, dividing by 255.0
    :param n_experts: Number K of experts
    :param deterministic_expert: Expert of a deterministic action, ``"argmax"`` or ``"sample"``
    """

    action_space: spaces.Box

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_experts: int = 4,
        deterministic_expert: str = "argmax",
    ):
        check_mixture_args(n_experts, deterministic_expert)
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.n_experts = n_experts
        self.deterministic_expert = deterministic_expert
        # Same epsilon as SB3's squashed Gaussian, in the tanh Jacobian log(1 - tanh(u)^2 + eps)
        self.epsilon = 1e-6

        self.action_dim = get_action_dim(self.action_space)
        self.latent_pi = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
        last_layer_dim = net_arch[-1] if len(net_arch) > 0 else features_dim
        self.mu = nn.Linear(last_layer_dim, n_experts * self.action_dim)
        self.log_std = nn.Linear(last_layer_dim, n_experts * self.action_dim)
        self.mixing = nn.Linear(last_layer_dim, n_experts)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
                n_experts=self.n_experts,
                deterministic_expert=self.deterministic_expert,
            )
        )
        return data

    def mixture_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Parameters of the K experts and the mixing weights.

        :param obs: Observations, batch of size B
        :return: means mu_k(s) and clamped log-stds, shape ``(B, K, action_dim)``,
            and mixing weights alpha(s), shape ``(B, K)``
        """
        features = self.extract_features(obs, self.features_extractor)
        latent_pi = self.latent_pi(features)
        shape = (latent_pi.shape[0], self.n_experts, self.action_dim)
        mean_actions = self.mu(latent_pi).reshape(shape)
        log_std = th.clamp(self.log_std(latent_pi).reshape(shape), LOG_STD_MIN, LOG_STD_MAX)
        weights = th.softmax(self.mixing(latent_pi.detach()), dim=-1)
        return mean_actions, log_std, weights

    def squashed_sample(self, mean_actions: th.Tensor, log_std: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-density, for any leading shape.

        :param mean_actions: Gaussian means, shape ``(..., action_dim)``
        :param log_std: Gaussian log-stds, same shape
        :return: a = tanh(mu + sigma * eps), shape ``(..., action_dim)``, and log pi(a) with
            the tanh correction, shape ``(...)``
        """
        gaussian = Normal(mean_actions, log_std.exp(), validate_args=False)
        gaussian_actions = gaussian.rsample()
        actions = th.tanh(gaussian_actions)
        log_prob = gaussian.log_prob(gaussian_actions).sum(dim=-1)
        log_prob = log_prob - th.log(1 - actions**2 + self.epsilon).sum(dim=-1)
        return actions, log_prob

    def expert_actions_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """One reparameterised sample from every expert (step 1 of the PMOE-SAC actor update).

        :param obs: Observations, batch of size B
        :return: actions a_k, shape ``(B, K, action_dim)``, their component log-densities
            log pi_k(a_k|s), shape ``(B, K)``, and the mixing weights alpha(s), shape ``(B, K)``
        """
        mean_actions, log_std, weights = self.mixture_params(obs)
        actions, log_prob = self.squashed_sample(mean_actions, log_std)
        return actions, log_prob, weights

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Behaviour sample: expert j ~ Categorical(alpha(s)), then a ~ pi_j(.|s).

        This is the next action of the PMOE-SAC critic target.

        :param obs: Observations, batch of size B
        :return: actions, shape ``(B, action_dim)``, and the *component* log-density
            log pi_j(a|s) of the chosen expert (not the mixture density), shape ``(B,)``
        """
        mean_actions, log_std, weights = self.mixture_params(obs)
        index = select_expert(weights, "sample")
        return self.squashed_sample(gather_expert(mean_actions, index), gather_expert(log_std, index))

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        mean_actions, log_std, weights = self.mixture_params(obs)
        index = select_expert(weights, self.deterministic_expert if deterministic else "sample")
        mean_actions = gather_expert(mean_actions, index)
        if deterministic:
            return th.tanh(mean_actions)
        return th.tanh(Normal(mean_actions, gather_expert(log_std, index).exp(), validate_args=False).rsample())

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class PMOESACPolicy(SACPolicy):
    """
    Policy class for PMOE-SAC: the :class:`PMOEActor` and SB3's twin critics and their targets.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the policy and value networks (default [256, 256], as in the paper's code)
    :param activation_fn: Activation function
    :param use_sde: Must be False: the experts are plain tanh-Gaussians
    :param log_std_init: Unused without gSDE (kept for SB3's ``SACPolicy`` signature)
    :param use_expln: Unused without gSDE
    :param clip_mean: Unused without gSDE
    :param features_extractor_class: Features extractor to use.
    :param features_extractor_kwargs: Keyword arguments
        to pass to the features extractor.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use,
        ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments,
        excluding the learning rate, to pass to the optimizer (default for Adam: ``fused=True``,
        see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    :param n_critics: Number of critic networks to create.
    :param share_features_extractor: Whether to share or not the features extractor
        between the actor and the critic (this saves computation time)
    :param n_experts: Number K of experts
    :param deterministic_expert: Expert of a deterministic action, ``"argmax"`` (most probable)
        or ``"sample"`` (drawn from the mixing weights, as the official code)
    """

    actor: PMOEActor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        n_experts: int = 4,
        deterministic_expert: str = "argmax",
    ):
        if use_sde:
            raise ValueError("PMOESACPolicy does not support gSDE (use_sde=True): the experts are plain tanh-Gaussians")
        check_mixture_args(n_experts, deterministic_expert)
        self.n_experts = n_experts
        # Initial mode only: the actor holds the current one
        self._deterministic_expert = deterministic_expert
        optimizer_kwargs = fused_adam_kwargs(optimizer_class, optimizer_kwargs)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            use_sde=False,
            log_std_init=log_std_init,
            use_expln=use_expln,
            clip_mean=clip_mean,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> PMOEActor:  # type: ignore[override]
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        for gsde_key in ("use_sde", "log_std_init", "use_expln", "clip_mean"):
            actor_kwargs.pop(gsde_key)
        return PMOEActor(**actor_kwargs, n_experts=self.n_experts, deterministic_expert=self._deterministic_expert).to(
            self.device
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(dict(n_experts=self.n_experts, deterministic_expert=self.actor.deterministic_expert))
        return data


class MixtureHead(nn.Module):
    """Output layer of the PMOE-PPO policy: K expert means and K mixing logits.

    The logits come from the *detached* latent, so that only the mixing layer learns
    from them (the trunk is trained by the experts' likelihood alone).

    :param latent_dim: Dimension of the policy latent
    :param action_dim: Dimension of the action space
    :param n_experts: Number K of experts
    """

    def __init__(self, latent_dim: int, action_dim: int, n_experts: int):
        super().__init__()
        self.mu = nn.Linear(latent_dim, n_experts * action_dim)
        self.mixing = nn.Linear(latent_dim, n_experts)

    def forward(self, latent_pi: th.Tensor) -> th.Tensor:
        return th.cat([self.mu(latent_pi), self.mixing(latent_pi.detach())], dim=-1)


class GaussianMixtureDistribution(DiagGaussianDistribution):
    """
    Mixture of K diagonal Gaussians, pi(a|s) = sum_k alpha_k(s) N(a; mu_k(s), diag(sigma_k^2)).

    The log-density is computed stably as
    log pi(a|s) = logsumexp_k [log alpha_k(s) + sum_d log N(a_d; mu_kd, sigma_kd)],
    never as the log of a sum of exponentials. The entropy has no closed form (``None``:
    SB3's PPO then uses -log pi of the batch actions).

    It subclasses ``DiagGaussianDistribution`` so that SB3's ``ActorCriticPolicy`` builds it
    (one output layer and one log-std parameter) and feeds it ``(action_net(latent), log_std)``
    unchanged; the output layer gives the K means and the K mixing logits side by side.

    :param action_dim: Dimension of the action space
    :param n_experts: Number K of experts
    :param deterministic_expert: Expert of :meth:`mode`, ``"argmax"`` or ``"sample"``
    """

    def __init__(self, action_dim: int, n_experts: int, deterministic_expert: str = "argmax"):
        check_mixture_args(n_experts, deterministic_expert)
        super().__init__(action_dim)
        self.n_experts = n_experts
        self.deterministic_expert = deterministic_expert
        self.log_weights: th.Tensor | None = None

    def proba_distribution_net(self, latent_dim: int, log_std_init: float = 0.0) -> tuple[nn.Module, nn.Parameter]:
        """The output layer (:class:`MixtureHead`) and the K * action_dim state-independent log-stds.

        :param latent_dim: Dimension of the policy latent
        :param log_std_init: Initial value of the log-stds
        :return: the output layer and the log-std parameter
        """
        head = MixtureHead(latent_dim, self.action_dim, self.n_experts)
        log_std = nn.Parameter(th.ones(self.n_experts * self.action_dim) * log_std_init, requires_grad=True)
        return head, log_std

    def proba_distribution(
        self: SelfGaussianMixtureDistribution, mean_actions: th.Tensor, log_std: th.Tensor
    ) -> SelfGaussianMixtureDistribution:
        """Set the parameters from the output of :class:`MixtureHead` and the log-std parameter.

        The parameters are kept as plain tensors (no ``torch.distributions`` object): this
        runs once per environment step during collection.

        :param mean_actions: K * action_dim means followed by K mixing logits, shape ``(B, K * action_dim + K)``
        :param log_std: log-stds, shape ``(K * action_dim,)``
        :return: self
        """
        n_means = self.n_experts * self.action_dim
        return self.mixture(mean_actions[:, :n_means], mean_actions[:, n_means:], log_std)

    def mixture(
        self: SelfGaussianMixtureDistribution, means: th.Tensor, mixing_logits: th.Tensor, log_std: th.Tensor
    ) -> SelfGaussianMixtureDistribution:
        """Set the parameters from the experts' means, the mixing logits and the log-stds.

        :param means: K * action_dim means, shape ``(B, K * action_dim)``
        :param mixing_logits: K mixing logits, shape ``(B, K)``
        :param log_std: log-stds, shape ``(K * action_dim,)``
        :return: self
        """
        self.means = means.reshape(-1, self.n_experts, self.action_dim)
        self.log_stds = log_std.reshape(self.n_experts, self.action_dim)
        self.log_weights = th.log_softmax(mixing_logits, dim=-1)
        return self

    @property
    def weights(self) -> th.Tensor:
        """Mixing weights alpha(s), shape ``(B, K)``."""
        assert self.log_weights is not None, "call proba_distribution() first"
        return self.log_weights.exp()

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        assert self.log_weights is not None, "call proba_distribution() first"
        z = (actions.unsqueeze(1) - self.means) * th.exp(-self.log_stds)
        component_log_prob = (-0.5 * z.pow(2) - self.log_stds).sum(dim=-1) - 0.5 * self.action_dim * math.log(2 * math.pi)
        return th.logsumexp(self.log_weights + component_log_prob, dim=-1)

    def entropy(self) -> th.Tensor | None:
        return None

    def expert_samples(self) -> th.Tensor:
        """One sample per expert, without gradient (the candidates scored by the Q-network).

        :return: actions, shape ``(B, K, action_dim)``
        """
        with th.no_grad():
            return self.means + self.log_stds.exp() * th.randn_like(self.means)

    def _expert(self, mode: str) -> tuple[th.Tensor, th.Tensor]:
        index = select_expert(self.weights, mode)
        return gather_expert(self.means, index), self.log_stds.exp()[index]

    def sample(self) -> th.Tensor:
        mean_actions, std = self._expert("sample")
        return mean_actions + std * th.randn_like(mean_actions)

    def mode(self) -> th.Tensor:
        return self._expert(self.deterministic_expert)[0]


class PMOEActorCriticPolicy(ActorCriticPolicy):
    """
    Policy class for PMOE-PPO: SB3's actor-critic with a :class:`GaussianMixtureDistribution`
    and the extra Q-network ``q_net`` (a ``ContinuousCritic`` with one Q) of the routing loss.

    All networks, the Q-network included, share the one optimizer, as in the reference code.
    With an elementwise optimizer (Adam by default) the parameters and gradients are views of
    two flat buffers (:class:`~rlkit.common.utils.FlatParameters`, attribute
    ``flat_parameters``), and the optimizer holds the one flat parameter: the update is the
    same, and its step, the gradient clipping and the zeroing are one operation each.

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the policy and value networks (default pi=[64, 64], vf=[64, 64])
    :param activation_fn: Activation function of the policy and value networks
    :param ortho_init: Whether to use or not orthogonal initialization
    :param use_sde: Must be False
    :param log_std_init: Initial value for the log standard deviation of every expert
    :param full_std: Unused without gSDE
    :param use_expln: Unused without gSDE
    :param squash_output: Must be False (the experts are unbounded Gaussians; SB3 clips the actions)
    :param features_extractor_class: Features extractor to use.
    :param features_extractor_kwargs: Keyword arguments
        to pass to the features extractor.
    :param share_features_extractor: If True, the features extractor is shared between the policy and value networks.
    :param normalize_images: Whether to normalize images or not,
         dividing by 255.0 (True by default)
    :param optimizer_class: The optimizer to use,
        ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments,
        excluding the learning rate, to pass to the optimizer (default for Adam: ``eps=1e-5`` as
        SB3's PPO, and ``fused=True``: see :func:`~rlkit.common.utils.fused_adam_kwargs`)
    :param n_experts: Number K of experts
    :param deterministic_expert: Expert of a deterministic action, ``"argmax"`` or ``"sample"``
    :param q_net_arch: Hidden layers of the Q-network (default [64, 64, 64], ReLU, as in the reference code)
    """

    action_dist: GaussianMixtureDistribution
    q_net: ContinuousCritic

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_experts: int = 4,
        deterministic_expert: str = "argmax",
        q_net_arch: list[int] | None = None,
    ):
        if use_sde or squash_output:
            raise ValueError("PMOEActorCriticPolicy supports neither gSDE (use_sde) nor squash_output")
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"PMOEActorCriticPolicy needs a Box action space, got {action_space}")
        check_mixture_args(n_experts, deterministic_expert)
        self.n_experts = n_experts
        # Initial mode only: the action distribution holds the current one
        self._deterministic_expert = deterministic_expert
        self.q_net_arch = [64, 64, 64] if q_net_arch is None else list(q_net_arch)
        # PPO's eps, and one fused Adam step over the policy, value, mixing and Q parameters
        optimizer_kwargs = fused_adam_kwargs(optimizer_class, optimizer_kwargs, eps=1e-5)
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=False,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            squash_output=False,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )

    def _build(self, lr_schedule: Schedule) -> None:
        self.action_dist = GaussianMixtureDistribution(
            get_action_dim(self.action_space), self.n_experts, self._deterministic_expert
        )
        self.q_net = ContinuousCritic(
            self.observation_space,
            self.action_space,  # type: ignore[arg-type]
            net_arch=self.q_net_arch,
            features_extractor=self.make_features_extractor(),
            features_dim=self.features_dim,
            activation_fn=nn.ReLU,
            normalize_images=self.normalize_images,
            n_critics=1,
            share_features_extractor=False,
        )
        # Its ReLUs overwrite the Linear outputs that nothing else reads: the same numbers, fewer allocations
        relu_in_place(self.q_net)
        # The parent builds the policy and value networks and one optimizer over all parameters
        super()._build(lr_schedule)
        self._flatten_parameters()

    def _flatten_parameters(self) -> None:
        """Keep the parameters and gradients in flat buffers (:class:`~rlkit.common.utils.FlatParameters`)
        and rebuild the optimizer over the flat parameter, carrying its state over.

        Only for the elementwise optimizers (``ELEMENTWISE_OPTIMIZERS``), whose update is
        the same on the flat buffer; any other optimizer keeps the separate parameters.
        """
        self.flat_parameters: FlatParameters | None = None
        if not issubclass(self.optimizer_class, ELEMENTWISE_OPTIMIZERS):
            return
        state = self.optimizer.state_dict()
        self.flat_parameters = FlatParameters(self.parameters())
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.optimizer = self.optimizer_class([self.flat_parameters.parameter], lr=learning_rate, **self.optimizer_kwargs)
        if state["state"] and len(state["param_groups"][0]["params"]) == 1:
            self.optimizer.load_state_dict(state)

    def refresh_flat_parameters(self) -> None:
        """Flatten the parameters again if they were moved, cast or replaced since they were flattened.

        ``.to(device)`` and casts do this by themselves; PMOE-PPO's ``train`` calls it for the
        rest (e.g. ``load_state_dict(..., assign=True)``, which replaces the parameters).
        """
        flat_parameters = getattr(self, "flat_parameters", None)
        if flat_parameters is None:
            return
        current = list(self.parameters())
        replaced = len(current) != len(flat_parameters.parameters) or any(
            param is not flat for param, flat in zip(current, flat_parameters.parameters, strict=False)
        )
        if replaced or not flat_parameters.is_intact():
            self._flatten_parameters()

    def _apply(self, fn: Any, recurse: bool = True) -> PMOEActorCriticPolicy:
        # ``.to(device)`` or a cast gives the parameters new storage: flatten them again
        # (as torch's RNNs flatten their weights again after ``_apply``)
        super()._apply(fn, recurse)
        self.refresh_flat_parameters()
        return self

    def backward_and_clip(self, loss: th.Tensor, max_grad_norm: float) -> None:
        """Backpropagate ``loss`` from zeroed gradients and clip their global norm to ``max_grad_norm``.

        :param loss: the loss of the minibatch
        :param max_grad_norm: the largest gradient norm
        """
        if self.flat_parameters is None:
            self.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.parameters(), max_grad_norm, foreach=True)
        else:
            self.flat_parameters.zero_grad()
            loss.backward()
            self.flat_parameters.clip_grad_norm_(max_grad_norm)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                n_experts=self.n_experts,
                deterministic_expert=self.action_dist.deterministic_expert,
                q_net_arch=self.q_net_arch,
            )
        )
        return data

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions, values and log-likelihoods of the actions; without gradient (collection) in inference mode.

        :param obs: Observations
        :param deterministic: Whether to use the most probable expert's mean or a sample
        :return: actions, V(s) and log pi(a|s)
        """
        if th.is_grad_enabled():
            return super().forward(obs, deterministic)
        # The same numbers, without the autograd bookkeeping that no_grad still does per operation
        with th.inference_mode():
            return super().forward(obs, deterministic)

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> GaussianMixtureDistribution:  # type: ignore[override]
        # The two layers of the head straight into the distribution (no concatenation and split)
        head = self.action_net
        return self.action_dist.mixture(head.mu(latent_pi), head.mixing(latent_pi.detach()), self.log_std)

    def evaluate_mixture(
        self, obs: PyTorchObs, actions: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, GaussianMixtureDistribution]:
        """Values, mixture log-likelihood of ``actions`` and the mixture itself, in one forward pass.

        :param obs: Observations
        :param actions: Actions of the rollout
        :return: V(s), log pi(a|s) and the distribution (with its mixing weights and experts)
        """
        values, log_prob, _ = self.evaluate_actions(obs, actions)
        return values, log_prob, self.action_dist

    def expert_q_values(self, obs: th.Tensor, expert_actions: th.Tensor) -> th.Tensor:
        """Q(s, a_k) of one action per expert, in one batched call of the Q-network.

        :param obs: Observations, batch of size B
        :param expert_actions: actions, shape ``(B, K, action_dim)``
        :return: Q-values, shape ``(B, K)``
        """
        batch_size, n_experts = expert_actions.shape[:2]
        repeated_obs = obs.repeat_interleave(n_experts, dim=0)
        q_values = self.q_net(repeated_obs, expert_actions.reshape(batch_size * n_experts, -1))[0]
        return q_values.reshape(batch_size, n_experts)
