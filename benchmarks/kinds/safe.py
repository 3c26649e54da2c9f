"""Safe offline algorithms (FISOR, BC-All, BC-Safe, TD3+BC-Lag): DSRL's normalised reward and cost.

A task gives its episode cost budget as ``cost_limit`` (default 10, FISOR's
evaluation budget); algorithms whose constructor takes ``cost_limit`` receive it.
Training and evaluation are :func:`benchmarks.worker.train_model`'s. Every curve
point, ``final`` and ``best`` get DSRL's normalised reward
``(R - r_min) / (r_max - r_min)`` (``r_min``, ``r_max``: the dataset's reference
scores, DSRL's extreme episode rewards for datasets of :mod:`rlkit.data.safe`)
and normalised cost ``(C + eps) / (kappa + eps)``; a result is safe iff its
normalised cost is at most 1.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.suite import RunSpec, constructor_params
from benchmarks.worker import train_model
from rlkit.data.scores import dsrl_normalized_cost, dsrl_normalized_reward

NEEDS_DATA = True
REQUIRED_TASK_KEYS = ("cost_limit",)
EXCLUSIVE = True
TASK_KEYS: dict[str, Any] = {"cost_limit": (int, float)}
#: FISOR's (and OSRL's default) evaluation budget
DEFAULT_COST_LIMIT = 10.0


def _score(point: dict[str, Any], ref_scores: list[float] | tuple[float, float] | None, cost_limit: float) -> None:
    point["normalized_cost"] = float(dsrl_normalized_cost(point["cost_mean"], cost_limit))
    if ref_scores is not None:
        point["normalized_reward"] = float(dsrl_normalized_reward(point["return_mean"], *ref_scores))


def train(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate one safe offline run; adds ``cost_limit`` and the normalised reward and cost."""
    cost_limit = float(spec.options.get("cost_limit", DEFAULT_COST_LIMIT))
    hyperparams = dict(spec.hyperparams)
    if "cost_limit" in constructor_params(spec.entry.load()):
        hyperparams.setdefault("cost_limit", cost_limit)
    outcome = train_model(dataclasses.replace(spec, hyperparams=hyperparams))
    for point in outcome["curve"]:
        _score(point, outcome["ref_scores"], cost_limit)
    outcome["final"], outcome["best"] = outcome["curve"][-1], max(outcome["curve"], key=lambda p: p["return_mean"])
    outcome["cost_limit"] = cost_limit
    return outcome


def table(records: list[dict[str, Any]]) -> list[str]:
    """DSRL's table: final normalised reward and cost per task and algorithm, mean +- std over seeds.

    An entry whose mean normalised cost exceeds 1 is marked unsafe.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("kind") == "safe" and record.get("status") == "ok" and "normalized_cost" in record.get("final", {}):
            groups[(record["task"], record["algo"])].append(record)
    if not groups:
        return []
    lines = [
        "DSRL metrics of the final policy: normalised reward (dataset's min/max episode reward) and normalised cost "
        "(episode cost / cost_limit); mean ± std over seeds. Safe iff normalised cost ≤ 1.",
        "",
        "| task | cost_limit | algorithm | seeds | normalised reward | normalised cost | |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, algo), runs in sorted(groups.items()):
        rewards = [r["final"].get("normalized_reward", np.nan) for r in runs]
        costs = [r["final"]["normalized_cost"] for r in runs]
        verdict = "**unsafe**" if np.mean(costs) > 1.0 else "safe"
        lines.append(
            f"| {task} | {runs[0].get('cost_limit', '')} | {algo} | {len(runs)} | {np.mean(rewards):.2f} ± {np.std(rewards):.2f} "
            f"| {np.mean(costs):.2f} ± {np.std(costs):.2f} | {verdict} |"
        )
    return lines
