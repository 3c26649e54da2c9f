"""Small helpers shared by every algorithm."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.type_aliases import GymEnv


def check_box_action_space(env: GymEnv | str | None, algorithm: str, verbose: int = 0) -> GymEnv | None:
    """Make ``env`` if it is an id and reject any action space other than ``Box``.

    SB3 only asserts the action space; this raises a ``ValueError`` naming the
    space and the algorithm, before any network is built.

    :param env: the environment (or its id) given to the algorithm; ``None`` when loading
    :param algorithm: name of the algorithm, for the message
    :param verbose: verbosity passed to SB3's ``maybe_make_env``
    :return: the environment, made from its id if needed
    """
    if env is None:
        return None
    env = maybe_make_env(env, verbose)
    if not isinstance(env.action_space, spaces.Box):
        raise ValueError(
            f"{algorithm} only supports continuous (gymnasium.spaces.Box) action spaces, "
            f"but the environment has action space {env.action_space}"
        )
    return env


def accepted_arguments(cls: type) -> set[str]:
    """The keyword arguments ``cls(...)`` accepts: its ``__init__``'s and, through ``**kwargs``, its bases'."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}


class CheckedArguments:
    """Reject what an algorithm does not support with a ``ValueError`` that names it, before ``__init__`` runs.

    SB3 answers an unknown policy name with ``Policy X unknown`` and an option the
    subclass does not take (``use_sde=True``) with Python's ``TypeError``; an rlkit
    algorithm says which algorithm, what it supports and what to change instead.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        policy = args[0] if args else kwargs.get("policy")
        aliases = getattr(cls, "policy_aliases", {})
        if isinstance(policy, str) and policy not in aliases:
            raise ValueError(
                f"{cls.__name__} supports the policies {', '.join(sorted(aliases))}, got {policy!r}: its heads take flat Box "
                "observations (flatten dict observations with gymnasium.wrappers.FlattenObservation; images are not supported)"
            )
        unknown = sorted(set(kwargs) - accepted_arguments(cls))
        if unknown:
            hint = " (state-dependent exploration is not implemented for it)" if "use_sde" in unknown else ""
            raise ValueError(
                f"{cls.__name__} does not take {', '.join(unknown)}{hint}; its arguments: "
                f"{', '.join(sorted(accepted_arguments(cls) - {'policy', 'env', '_init_setup_model'}))}"
            )
        return super().__new__(cls)


def fused_adam_kwargs(
    optimizer_class: type[th.optim.Optimizer], optimizer_kwargs: dict[str, Any] | None, **defaults: Any
) -> dict[str, Any] | None:
    """Default optimizer keyword arguments that select Adam's fused implementation.

    The fused kernel updates every parameter tensor in one call on the CPU and on
    CUDA; the default (per-tensor) implementation launches several small operations
    per tensor, which dominates a training step on the small networks of RL. The
    update rule is the same. Arguments given by the user are never changed.

    :param optimizer_class: the policy's optimizer class
    :param optimizer_kwargs: the user's keyword arguments, ``None`` when not given
    :param defaults: other defaults to add, e.g. PPO's ``eps=1e-5``
    :return: ``optimizer_kwargs`` when given or when the class is not Adam, else the defaults with ``fused=True``
    """
    if optimizer_kwargs is not None or optimizer_class is not th.optim.Adam:
        return optimizer_kwargs
    return {**defaults, "fused": True}


#: optimizers whose update of each element depends on that element alone (and on global scalars)
ELEMENTWISE_OPTIMIZERS: tuple[type[th.optim.Optimizer], ...] = (
    th.optim.Adam,
    th.optim.AdamW,
    th.optim.SGD,
    th.optim.RMSprop,
)


class FlatParameters:
    """The parameters and gradients of a module, kept in two contiguous buffers.

    Every parameter becomes a view of one flat tensor and its gradient a view of one flat
    gradient (autograd accumulates into an existing gradient in place). The optimizer is
    then built over the single :attr:`parameter`, and an update costs one optimizer call on
    one tensor, one norm for the gradient clipping and one ``zero_`` instead of work per
    parameter tensor. On the small networks of RL, run on the CPU, those per-tensor costs
    are a large part of a minibatch update. Values, gradients and update rule are those of
    the separate tensors, as long as the optimizer is elementwise (Adam, AdamW, SGD,
    RMSprop: see :data:`ELEMENTWISE_OPTIMIZERS`); the gradient norm is the same global norm
    as ``torch.nn.utils.clip_grad_norm_``'s.

    Moving or casting the module (``.to``) gives its parameters new storage: check
    :meth:`is_intact` and build a new ``FlatParameters`` after it, as
    :class:`~rlkit.pmoe.policies.PMOEActorCriticPolicy` does.

    :param parameters: the parameters, all on one device with one dtype
    """

    def __init__(self, parameters: Iterable[th.nn.Parameter]) -> None:
        self.parameters = list(parameters)
        if not self.parameters:
            raise ValueError("FlatParameters needs at least one parameter")
        kinds = {(param.device, param.dtype) for param in self.parameters}
        if len(kinds) > 1:
            raise ValueError(f"FlatParameters needs one device and one dtype, got {sorted(map(str, kinds))}")
        with th.no_grad():
            flat = th.cat([param.detach().reshape(-1) for param in self.parameters])
            grad = th.cat(
                [th.zeros_like(p).reshape(-1) if p.grad is None else p.grad.detach().reshape(-1) for p in self.parameters]
            )
        self.parameter = th.nn.Parameter(flat)
        self.grad = grad
        self._grads = []
        offset = 0
        for param in self.parameters:
            size = param.numel()
            param.data = flat[offset : offset + size].view_as(param)
            self._grads.append(grad[offset : offset + size].view_as(param))
            offset += size
        self._data_ptrs = [param.data_ptr() for param in self.parameters]
        self.zero_grad()

    def is_intact(self) -> bool:
        """Whether every parameter is still a view of the flat buffer (false after ``.to`` moved or cast it)."""
        return [param.data_ptr() for param in self.parameters] == self._data_ptrs

    def zero_grad(self) -> None:
        """Zero the flat gradient, and make every gradient a view of it again.

        A ``zero_grad(set_to_none=True)`` of the module or of the optimizer replaces the views;
        this puts them back, so that the next ``backward`` accumulates into the flat gradient.
        """
        for param, grad in zip(self.parameters, self._grads, strict=True):
            if param.grad is not grad:
                param.grad = grad
        self.parameter.grad = self.grad
        self.grad.zero_()

    def clip_grad_norm_(self, max_norm: float) -> th.Tensor:
        """Scale the gradient in place to a global L2 norm of at most ``max_norm``, as
        ``torch.nn.utils.clip_grad_norm_`` does.

        :param max_norm: the largest norm
        :return: the norm before clipping
        """
        norm = th.linalg.vector_norm(self.grad)
        self.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
        return norm


def relu_in_place(network: th.nn.Module) -> int:
    """Make every ``nn.ReLU`` that directly follows an ``nn.Linear`` in an ``nn.Sequential`` of ``network`` compute in place.

    Such a ReLU overwrites the Linear layer's output, which nothing else reads: a Linear
    layer's backward needs its input and weight, not its output, and ReLU's backward needs
    only its own output. The values and gradients are those of the out-of-place ReLU, bit
    for bit. A ReLU module is left alone wherever one of its uses is not of that kind: after
    another module (after a Tanh it would overwrite the output that Tanh's backward reads),
    outside a Sequential, or after a Linear layer with forward hooks (which may keep its output).

    :param network: the network, changed in place
    :return: how many ReLU modules compute in place
    """
    safe: dict[int, bool] = {}
    relus: dict[int, th.nn.ReLU] = {}
    for parent in network.modules():
        # ``_modules`` lists a module used twice in one Sequential twice (``named_children`` does not)
        children = list(parent._modules.values())
        for position, child in enumerate(children):
            if type(child) is not th.nn.ReLU:
                continue
            previous = children[position - 1] if position > 0 else None
            follows_linear = isinstance(previous, th.nn.Linear) and not previous._forward_hooks
            safe[id(child)] = safe.get(id(child), True) and isinstance(parent, th.nn.Sequential) and follows_linear
            relus[id(child)] = child
    for key, relu in relus.items():
        if safe[key]:
            relu.inplace = True
    return sum(safe.values())


class FastPath:
    """The fast path of an update: its networks' parameter lists, read once, and the operations that use them.

    On the small networks of RL, run on the CPU, a gradient step spends much of its
    time outside the matrix products: in Python loops over parameter tensors, and in
    gradients that are computed and then thrown away. The off-policy family (MDPOOff,
    PMOE-SAC, SAC's inner loop of PEBBLE and PARL, the offline critics) shares these
    remedies, none of which changes a number of the update:

    * :meth:`backward` computes the gradient of a loss for the named network's
      parameters only: an actor loss differentiates through the critic, but the
      critic's weight gradients (which SB3 computes and then zeroes before the critic's
      next step) are never formed;
    * :meth:`soft_update` is SB3's ``polyak_update`` as two multi-tensor operations
      (the same multiplication and addition per element, in one call each);
    * the optimizers are fused Adam (:func:`fused_adam_kwargs`; SAC's temperature too,
      :func:`fused_like`);
    * every ReLU that follows a Linear layer computes in place (:func:`relu_in_place`):
      the same values and gradients, one activation buffer less per hidden layer. On the
      CPU these elementwise passes are bound by memory bandwidth once the step's
      activations no longer fit in the cache.

    The parameter lists are read at construction. Moving the networks (``.to``),
    loading a state dict or re-initialising layers in place keeps the parameter
    objects, and so the lists; an algorithm that replaces a network builds a new
    ``FastPath``.

    :param networks: the networks by name, e.g. ``actor=policy.actor, critic=policy.critic``
    """

    def __init__(self, **networks: th.nn.Module) -> None:
        if not networks:
            raise ValueError("FastPath needs at least one network, e.g. FastPath(actor=policy.actor)")
        self.parameters: dict[str, list[th.Tensor]] = {name: list(network.parameters()) for name, network in networks.items()}
        for network in networks.values():
            relu_in_place(network)

    def backward(self, loss: th.Tensor, network: str) -> None:
        """Accumulate the gradient of ``loss`` into the parameters of ``network`` only (other leaves keep their ``.grad``).

        :param loss: a scalar loss
        :param network: the name of the network whose parameters get the gradient
        """
        loss.backward(inputs=self.parameters[network])

    def soft_update(self, network: str, target: str, tau: float) -> None:
        """theta_target <- (1 - tau) theta_target + tau theta, for every parameter: SB3's ``polyak_update``.

        :param network: the name of the online network
        :param target: the name of its target network
        :param tau: the soft update coefficient, in [0, 1]
        """
        with th.no_grad():
            targets = self.parameters[target]
            th._foreach_mul_(targets, 1 - tau)
            th._foreach_add_(targets, self.parameters[network], alpha=tau)


def fused_like(optimizer: th.optim.Adam, optimizer_kwargs: dict[str, Any] | None) -> th.optim.Adam:
    """``optimizer`` (a plain Adam, as SB3 builds SAC's temperature optimizer) rebuilt as fused Adam when the policy's
    optimizer is fused; otherwise it is returned unchanged.

    :param optimizer: an optimizer with empty state (as just built)
    :param optimizer_kwargs: the policy's optimizer keyword arguments
    :return: the fused optimizer over the same parameters and learning rate, or ``optimizer``
    """
    if type(optimizer) is not th.optim.Adam or not (optimizer_kwargs or {}).get("fused", False):
        return optimizer
    group = optimizer.param_groups[0]
    return th.optim.Adam(group["params"], lr=group["lr"], fused=True)
