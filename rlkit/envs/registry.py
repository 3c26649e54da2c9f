"""One entry point for every environment family: :func:`make_env`.

Ids by family:

- gymnasium ids as registered (MuJoCo v5 such as ``HalfCheetah-v5``, classic control such as ``Pendulum-v1``);
- ``dmc/<domain>-<task>``: DeepMind Control through shimmy, observations flattened to one float32 vector;
- ``metaworld/<task>-v3``: a Meta-World MT1 task (seeded), ``info["success"]``, float32 observations;
- ``mo/<mo-gymnasium id>``: multi-objective tasks, the vector reward kept;
- ``toy/<name>``: tiny built-in tasks for tests (:mod:`rlkit.envs.toy`, :mod:`rlkit.envs.toy_safe`, :mod:`rlkit.envs.toy_mo`,
  :mod:`rlkit.envs.toy_run`, :mod:`rlkit.envs.toy_balance`);
- ``safe/<Robot>Velocity-v5``: DSRL's velocity-constrained MuJoCo tasks, cost in ``info["cost"]`` (:mod:`rlkit.envs.safety`).

:func:`scripted_policy` gives the hand-written expert of the tasks that have one (Meta-World's).
"""

from __future__ import annotations

import difflib
import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlkit.envs.safety import VELOCITY_TASKS, make_velocity_env
from rlkit.envs.toy import TOY_ENVS
from rlkit.envs.toy_balance import TOY_BALANCE_ENVS
from rlkit.envs.toy_mo import TOY_MO_ENVS
from rlkit.envs.toy_run import TOY_RUN_ENVS
from rlkit.envs.toy_safe import TOY_SAFE_ENVS

#: every ``toy/`` task: the point mass, its safe variant, the vector-reward tasks, the run task and the two-regions task
TOY_TASKS = {**TOY_ENVS, **TOY_SAFE_ENVS, **TOY_MO_ENVS, **TOY_RUN_ENVS, **TOY_BALANCE_ENVS}

FAMILIES = {
    "gymnasium": "any registered gymnasium id, e.g. HalfCheetah-v5, Hopper-v5, Pendulum-v1",
    "dmc/": "DeepMind Control, e.g. dmc/cheetah-run, dmc/walker-walk",
    "metaworld/": "Meta-World MT1 tasks, e.g. metaworld/reach-v3, metaworld/button-press-v3",
    "mo/": "MO-Gymnasium (vector reward), e.g. mo/mo-halfcheetah-v5, mo/mo-hopper-2obj-v5",
    "toy/": "built-in tiny tasks, e.g. toy/reach-v0",
    "safe/": "velocity-constrained MuJoCo (DSRL), e.g. safe/HalfCheetahVelocity-v5",
}


class Float32Observation(gym.ObservationWrapper):
    """Cast observations to float32 (and the Box space with them)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, spaces.Box), f"Float32Observation needs a Box observation space, got {space}"
        low = np.full(space.shape, -np.inf, dtype=np.float32)
        self.observation_space = spaces.Box(low, -low, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)


def _make_dmc(name: str, **kwargs: Any) -> gym.Env:
    import shimmy  # noqa: F401  registers the dm_control/ ids

    env = gym.make(f"dm_control/{name}-v0", **kwargs)
    return Float32Observation(gym.wrappers.FlattenObservation(env))


class MetaWorldSeeding(gym.Wrapper):
    """Make ``reset(seed=s)`` reproducible on Meta-World.

    Meta-World's env ignores the ``seed`` of ``reset`` and draws the task of the
    next episode from its own generator; this wrapper reseeds that generator
    (``env.unwrapped.seed``) so that the task and the initial state follow ``s``.
    """

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self.unwrapped.seed(seed)
        return self.env.reset(options=options)


def _make_metaworld(name: str, seed: int | None = 0, **kwargs: Any) -> gym.Env:
    import metaworld  # noqa: F401  registers the Meta-World/ ids

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make("Meta-World/MT1", env_name=name, seed=seed, disable_env_checker=True, **kwargs)
    return Float32Observation(MetaWorldSeeding(env))


def _make_mo(name: str, **kwargs: Any) -> gym.Env:
    import mo_gymnasium

    return mo_gymnasium.make(name, **kwargs)


def _make_toy(name: str, **kwargs: Any) -> gym.Env:
    env_cls, defaults = TOY_TASKS[name]
    env = env_cls(**{**defaults, **kwargs})
    # Give toy tasks an EnvSpec so that wrappers and SB3 see an id.
    env.spec = gym.envs.registration.EnvSpec(id=f"toy/{name}", entry_point=f"{env_cls.__module__}:{env_cls.__name__}")
    return gym.wrappers.OrderEnforcing(env)


def _dmc_ids() -> list[str]:
    import shimmy  # noqa: F401

    return [k.removeprefix("dm_control/").removesuffix("-v0") for k in gym.registry if k.startswith("dm_control/")]


def _metaworld_ids() -> list[str]:
    import metaworld

    return sorted(metaworld.ALL_V3_ENVIRONMENTS)


def _mo_ids() -> list[str]:
    import mo_gymnasium  # noqa: F401

    return [k for k in gym.registry if k.startswith("mo-")]


#: prefix -> (factory, function listing the known names after the prefix)
_PREFIXED: dict[str, tuple[Callable[..., gym.Env], Callable[[], list[str]]]] = {
    "dmc/": (_make_dmc, _dmc_ids),
    "metaworld/": (_make_metaworld, _metaworld_ids),
    "mo/": (_make_mo, _mo_ids),
    "toy/": (_make_toy, lambda: sorted(TOY_TASKS)),
    "safe/": (make_velocity_env, lambda: sorted(VELOCITY_TASKS)),
}


def known_env_ids() -> list[str]:
    """Every id :func:`make_env` accepts (gymnasium's registry plus the prefixed families)."""
    ids = [k for k in gym.registry if not k.startswith(("dm_control/", "Meta-World/", "mo-", *_PREFIXED))]
    for prefix, (_, names) in _PREFIXED.items():
        ids += [prefix + name for name in names()]
    return ids


def _unknown(env_id: str) -> ValueError:
    close = difflib.get_close_matches(env_id, known_env_ids(), n=5, cutoff=0.5)
    families = "; ".join(f"{k}: {v}" for k, v in FAMILIES.items())
    hint = f" Closest known ids: {', '.join(close)}." if close else ""
    return ValueError(f"Unknown environment id {env_id!r}.{hint} Families: {families}.")


def check_env_id(env_id: str) -> None:
    """Raise a ``ValueError`` naming the families and the closest ids unless :func:`make_env` knows ``env_id``."""
    if not isinstance(env_id, str):
        raise ValueError(f"An environment id must be a string, got {env_id!r} ({type(env_id).__name__})")
    for prefix, (_, names) in _PREFIXED.items():
        if env_id.startswith(prefix):
            if env_id[len(prefix) :] not in names():
                raise _unknown(env_id)
            return
    if env_id not in gym.registry:
        raise _unknown(env_id)


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """Create a gymnasium environment from any family rlkit knows.

    :param env_id: ``HalfCheetah-v5``, ``dmc/cheetah-run``, ``metaworld/reach-v3``,
        ``mo/mo-halfcheetah-v5`` or ``toy/reach-v0`` (see the module docstring)
    :param kwargs: passed to the underlying constructor (``gym.make``'s kwargs,
        the toy task's constructor, ...); ``metaworld/`` takes ``seed`` (default 0), which fixes
        the set of 50 goal positions that ``reset(seed=...)`` draws from
    :return: the environment
    :raises ValueError: for an unknown id, listing the families and the closest known ids
    """
    check_env_id(env_id)
    for prefix, (factory, _) in _PREFIXED.items():
        if env_id.startswith(prefix):
            return factory(env_id[len(prefix) :], **kwargs)
    return gym.make(env_id, **kwargs)


def _dmc_suite_names() -> list[str]:
    """``<domain>-<task>`` of every dm_control suite task, read from shimmy's table without importing dm_control."""
    spec = importlib.util.find_spec("shimmy")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "envs_configs.py"
    config_spec = importlib.util.spec_from_file_location("_shimmy_envs_configs", path)
    if config_spec is None or config_spec.loader is None:
        return []
    configs = importlib.util.module_from_spec(config_spec)
    config_spec.loader.exec_module(configs)
    return [f"{domain}-{task}" for domain, task in configs.DM_CONTROL_SUITE_ENVS]


def scripted_policy(env_id: str) -> Callable[[np.ndarray], np.ndarray]:
    """The hand-written expert of ``env_id``: the scripted policy of a Meta-World task (``metaworld.policies``).

    :param env_id: a :func:`make_env` id, e.g. ``metaworld/button-press-v3``
    :return: observation -> action, float32 (not clipped: Meta-World clips actions to its bounds)
    :raises ValueError: where ``env_id`` has no scripted policy (only ``metaworld/`` tasks have one)
    """
    check_env_id(env_id)
    policies: dict[str, Any] = {}
    if env_id.startswith("metaworld/"):
        from metaworld.policies import ENV_POLICY_MAP

        policies = ENV_POLICY_MAP
    name = env_id.removeprefix("metaworld/")
    if name not in policies:
        raise ValueError(
            f"{env_id!r} has no scripted policy: only Meta-World tasks have one (metaworld/<task>-v3, "
            "e.g. metaworld/button-press-v3, from metaworld.policies)"
        )
    policy = policies[name]()

    def act(obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the policies warn whenever their gain would leave the action bounds
            return np.asarray(policy.get_action(obs), dtype=np.float32)

    return act


def _registered_env(rlkit_id: str, **kwargs: Any) -> gym.Env:
    """Entry point of the ids that :func:`register_gymnasium_ids` adds: :func:`make_env` itself."""
    return make_env(rlkit_id, **kwargs)


def register_gymnasium_ids() -> list[str]:
    """Register every prefixed id of :func:`make_env` in gymnasium's registry, so that ``gym.make`` knows it.

    SB3's algorithms (and so every rlkit class built on them) call ``gym.make`` on a
    string env: with these ids registered, ``SAC("MlpPolicy", "toy/reach-v0")`` or
    ``gym.make("dmc/cheetah-run")`` build the same env as ``make_env``. The entry
    point is :func:`make_env`, imported lazily: registering imports no simulator.
    Called once when :mod:`rlkit.envs` is imported.

    :return: the ids registered
    """
    import mo_gymnasium  # noqa: F401  registers the mo- ids (imports no simulator)

    names = {
        "toy/": sorted(TOY_TASKS),
        "safe/": sorted(VELOCITY_TASKS),
        "mo/": _mo_ids(),
        "dmc/": _dmc_suite_names(),
        "metaworld/": _metaworld_ids(),
    }
    ids = []
    for prefix, family in names.items():
        for name in family:
            env_id = prefix + name
            if env_id not in gym.registry:
                gym.register(
                    env_id,
                    entry_point=f"{__name__}:_registered_env",
                    kwargs={"rlkit_id": env_id},
                    order_enforce=False,
                    disable_env_checker=True,
                )
                ids.append(env_id)
    return ids
