"""The one registry of algorithms the runner and the speed harness know.

Every algorithm, SB3's baselines and rlkit's own, is one :func:`register` call
here. Classes are imported lazily, so listing the registry costs nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

from stable_baselines3.common.base_class import BaseAlgorithm

#: ``online`` (learns from an env) and ``offline`` (from a dataset) are run by
#: :mod:`benchmarks.worker`; every other kind is a module ``benchmarks.kinds.<kind>``
#: (see :mod:`benchmarks.kinds`).
BUILTIN_KINDS = ("online", "offline")


@dataclass(frozen=True)
class AlgoEntry:
    """A registered algorithm.

    :param name: the name used in suites and on the command line
    :param target: ``"module:ClassName"``
    :param kind: ``"online"`` (learns from an env, budget in env steps),
        ``"offline"`` (learns from a dataset, budget in gradient steps) or the name
        of a module in :mod:`benchmarks.kinds` that trains and tabulates it
    :param peer: the registered algorithm it is compared against for speed
    """

    name: str
    target: str
    kind: str
    peer: str

    def load(self) -> type[BaseAlgorithm]:
        """Import and return the algorithm class."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def needs_data(self) -> bool:
        """Whether it runs on tasks with a dataset (``dataset`` or ``generate``) rather than env-only tasks."""
        if self.kind in BUILTIN_KINDS:
            return self.kind == "offline"
        return bool(kind_module(self.kind).NEEDS_DATA)


def kind_module(kind: str) -> ModuleType:
    """The module ``benchmarks.kinds.<kind>`` that runs algorithms of this kind."""
    return importlib.import_module(f"benchmarks.kinds.{kind}")


ALGORITHMS: dict[str, AlgoEntry] = {}


def register(name: str, target: str, kind: str = "online", peer: str | None = None) -> None:
    """Add an algorithm to the registry (see :class:`AlgoEntry`); ``peer`` defaults to itself."""
    if name in ALGORITHMS:
        raise ValueError(f"Algorithm {name!r} is already registered as {ALGORITHMS[name].target}")
    if kind not in BUILTIN_KINDS and importlib.util.find_spec(f"benchmarks.kinds.{kind}") is None:
        raise ValueError(f"kind must be one of {', '.join(BUILTIN_KINDS)} or a module of benchmarks.kinds, got {kind!r}")
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
register("PEBBLE", "rlkit.pebble:PEBBLE", kind="pbrl", peer="SAC")
register("PARL", "rlkit.parl:PARL", kind="pbrl", peer="SAC")
# PARL with use_correction: false (first-order upper step on current-policy queries): the ablation arm of pbrl-toy
register("PARL-NoCorrection", "rlkit.parl:PARL", kind="pbrl", peer="PARL")
register("BC", "rlkit.bc:BC", kind="offline", peer="TD3")
register("TD3BC", "rlkit.td3bc:TD3BC", kind="offline", peer="TD3")
register("IQL", "rlkit.iql:IQL", kind="offline", peer="TD3")
register("A2PR", "rlkit.a2pr:A2PR", kind="offline", peer="TD3BC")
register("CMORL", "rlkit.cmorl:CMORL", kind="mo", peer="LinearScalarizationPPO")
register("LinearScalarizationPPO", "rlkit.cmorl:LinearScalarizationPPO", kind="mo", peer="PPO")
# the same classes under a second name, for a second hyperparameter set in one suite (morl-toy)
register("LinearScalarizationPPO-11", "rlkit.cmorl:LinearScalarizationPPO", kind="mo", peer="PPO")
register("CMORL-NoBarrier", "rlkit.cmorl:CMORL", kind="mo", peer="CMORL")
register("IQLO2O", "rlkit.famo2o:IQLO2O", kind="o2o", peer="IQL")
register("FamO2O", "rlkit.famo2o:FamO2O", kind="o2o", peer="IQLO2O")
# the no-new-data controls of the offline-to-online claims (suites set online_data: false)
register("IQLO2O-NoData", "rlkit.famo2o:IQLO2O", kind="o2o", peer="IQLO2O")
register("FamO2O-NoData", "rlkit.famo2o:FamO2O", kind="o2o", peer="FamO2O")
register("FISOR", "rlkit.fisor:FISOR", kind="safe", peer="TD3")
register("BCAll", "rlkit.safe_baselines:BCAll", kind="safe", peer="TD3")
register("BCSafe", "rlkit.safe_baselines:BCSafe", kind="safe", peer="TD3")
register("TD3BCLag", "rlkit.safe_baselines:TD3BCLag", kind="safe", peer="TD3")
register("SAC+S3RL", "stable_baselines3:SAC", kind="snapshot", peer="SAC")
register("PPO+S3RL", "stable_baselines3:PPO", kind="snapshot", peer="PPO")
register("OPPO", "rlkit.oppo:OPPO", kind="pbrl_offline", peer="IQL")
register("IQL+BT", "rlkit.iql:IQLBT", kind="pbrl_offline", peer="IQL")
register("PEARL", "rlkit.pearl:PEARL", kind="pearl", peer="IQL")
# the same classes under other names: the arms of pearl-local (reward model, target labels, teacher)
register("CPA+BT", "rlkit.pearl:PEARL", kind="pearl", peer="IQL")
register("IQL+BT-10", "rlkit.iql:IQLBT", kind="pearl", peer="IQL")
register("IQL+BT-50", "rlkit.iql:IQLBT", kind="pearl", peer="IQL")
register("IQL+BT-oracle", "rlkit.iql:IQLBT", kind="pearl", peer="IQL")
register("IQL+RRL-random", "rlkit.iql:IQLBT", kind="pearl", peer="IQL")
register("IQL+RRL-flip30", "rlkit.iql:IQLBT", kind="pearl", peer="IQL")
register("IQL+BT-flip30", "rlkit.iql:IQLBT", kind="pearl", peer="IQL")
register("AlignDiff", "rlkit.aligndiff:AlignDiff", kind="aligndiff", peer="AttributeBC")
# the same class without candidate selection (n_samples = 1): diffusion alone, no generate-and-select
register("AlignDiff-n1", "rlkit.aligndiff:AlignDiff", kind="aligndiff", peer="AlignDiff")
register("AttributeBC", "rlkit.aligndiff:AttributeBC", kind="aligndiff", peer="BC")
