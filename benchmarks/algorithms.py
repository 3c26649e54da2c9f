"""The one registry of algorithms the runner and the speed harness know.

Every algorithm, SB3's baselines and rlkit's own, is one :func:`register` call
here. Classes are imported lazily, so listing the registry costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from stable_baselines3.common.base_class import BaseAlgorithm

Kind = Literal["online", "offline"]


@dataclass(frozen=True)
class AlgoEntry:
    """A registered algorithm.

    :param name: the name used in suites and on the command line
    :param target: ``"module:ClassName"``
    :param kind: ``"online"`` (learns from an env, budget in env steps) or
        ``"offline"`` (learns from a dataset, budget in gradient steps)
    :param peer: the registered algorithm it is compared against for speed
    """

    name: str
    target: str
    kind: Kind
    peer: str

    def load(self) -> type[BaseAlgorithm]:
        """Import and return the algorithm class."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


ALGORITHMS: dict[str, AlgoEntry] = {}


def register(name: str, target: str, kind: Kind = "online", peer: str | None = None) -> None:
    """Add an algorithm to the registry (see :class:`AlgoEntry`); ``peer`` defaults to itself."""
    if name in ALGORITHMS:
        raise ValueError(f"Algorithm {name!r} is already registered as {ALGORITHMS[name].target}")
    if kind not in ("online", "offline"):
        raise ValueError(f"kind must be 'online' or 'offline', got {kind!r}")
    ALGORITHMS[name] = AlgoEntry(name, target, kind, peer or name)


def get(name: str) -> AlgoEntry:
    """The registry entry of ``name``; a ``KeyError`` lists the known names."""
    if name not in ALGORITHMS:
        raise KeyError(f"Unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
    return ALGORITHMS[name]


# SB3 and sb3-contrib baselines
register("SAC", "stable_baselines3:SAC")
register("TD3", "stable_baselines3:TD3")
register("PPO", "stable_baselines3:PPO")
register("TRPO", "sb3_contrib:TRPO", peer="PPO")

# rlkit
register("MDPO", "rlkit.mdpo:MDPO", peer="PPO")
register("MDPOOff", "rlkit.mdpo:MDPOOff", peer="SAC")
register("PMOESAC", "rlkit.pmoe:PMOESAC", peer="SAC")
register("PMOEPPO", "rlkit.pmoe:PMOEPPO", peer="PPO")
register("BC", "rlkit.bc:BC", kind="offline", peer="TD3")
register("TD3BC", "rlkit.td3bc:TD3BC", kind="offline", peer="TD3")
register("IQL", "rlkit.iql:IQL", kind="offline", peer="TD3")
