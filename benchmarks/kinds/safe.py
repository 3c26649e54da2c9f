"""Safe offline algorithms (FISOR, BC-All, BC-Safe, TD3+BC-Lag): DSRL's normalised reward and cost.

A task gives its episode cost budget as ``cost_limit`` (default 10, FISOR's
evaluation budget); algorithms whose constructor takes ``cost_limit`` receive it,
and a generated dataset (``generate: {..., cost_penalties: [...]}``) is checked
against it when it is written (:func:`rlkit.data.safe.generate_safe`: enough
episodes on each side of the limit). The table shows the episode length and the
cost per step beside the normalised cost, so that a policy that is "safe" because
its episodes end early (a falling Hopper) is visible, and each dataset's card: the
share of its episodes above the limit and its cost levels.
Training and evaluation are :func:`benchmarks.worker.train_model`'s. Every curve
point, ``final`` and ``best`` get DSRL's normalised reward
``(R - r_min) / (r_max - r_min)`` (``r_min``, ``r_max``: the dataset's reference
scores, DSRL's extreme episode rewards for datasets of :mod:`rlkit.data.safe`)
and normalised cost ``(C + eps) / (kappa + eps)``; a result is safe iff its
normalised cost is at most 1.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.claims import DEFAULT_LAST_K, run_score
from benchmarks.suite import RunSpec, constructor_params
from benchmarks.worker import train_model
from rlkit.data.minari import load_dataset
from rlkit.data.safe import DEFAULT_COST_LIMIT
from rlkit.data.scores import dsrl_normalized_cost, dsrl_normalized_reward

NEEDS_DATA = True
REQUIRED_TASK_KEYS = ("cost_limit",)
EXCLUSIVE = True
TASK_KEYS: dict[str, Any] = {"cost_limit": (int, float)}


def _score(point: dict[str, Any], ref_scores: list[float] | tuple[float, float] | None, cost_limit: float) -> None:
    point["normalized_cost"] = float(dsrl_normalized_cost(point["cost_mean"], cost_limit))
    if ref_scores is not None:
        point["normalized_reward"] = float(dsrl_normalized_reward(point["return_mean"], *ref_scores))


def train(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate one safe offline run; adds ``cost_limit``, the normalised reward and cost, and the dataset's card."""
    cost_limit = float(spec.options.get("cost_limit", DEFAULT_COST_LIMIT))
    hyperparams = dict(spec.hyperparams)
    if "cost_limit" in constructor_params(spec.entry.load()):
        hyperparams.setdefault("cost_limit", cost_limit)
    generate = spec.generate
    if generate is not None and "cost_penalties" in generate:
        generate = {"cost_limit": cost_limit, **generate}
    outcome = train_model(dataclasses.replace(spec, hyperparams=hyperparams, generate=generate))
    for point in outcome["curve"]:
        _score(point, outcome["ref_scores"], cost_limit)
    outcome["final"], outcome["best"] = outcome["curve"][-1], max(outcome["curve"], key=lambda p: p["return_mean"])
    outcome["cost_limit"] = cost_limit
    card = load_dataset(outcome["dataset_id"]).metadata.get("cost_card") if outcome.get("dataset_id") else None
    if card is not None:
        outcome["dataset_card"] = json.loads(card) if isinstance(card, str) else card
    return outcome


_TABLE_KEYS = ("normalized_reward", "normalized_cost", "length_mean", "cost_mean")


def _score_of(record: dict[str, Any], key: str) -> float:
    """The run's score on ``key`` (its last evaluations' mean), NaN where its records lack the key."""
    score = run_score(record, key=key)
    return float("nan") if score is None else score


def _pm(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "—"
    return f"{np.mean(values):.{digits}f}" + (f" ± {np.std(values):.{digits}f}" if len(values) > 1 else "")


def table(records: list[dict[str, Any]]) -> list[str]:
    """DSRL's table: normalised reward and cost, episode length and cost per step per task and algorithm
    (the mean of the last evaluations of each run, see :mod:`benchmarks.claims`; mean ± std over seeds),
    then the datasets' cards. An entry whose mean normalised cost exceeds 1 is marked unsafe.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("kind") == "safe" and record.get("status") == "ok" and "normalized_cost" in record.get("final", {}):
            groups[(record["task"], record["algo"])].append(record)
    if not groups:
        return []
    lines = [
        "DSRL metrics: normalised reward (dataset's min/max episode reward) and normalised cost (episode cost / "
        f"cost_limit), each run's mean over its last {DEFAULT_LAST_K} evaluations; mean ± std over seeds. Safe iff "
        "normalised cost ≤ 1. Episode length and cost per step show whether a low cost comes from short episodes.",
        "",
        "| task | cost_limit | algorithm | seeds | normalised reward | normalised cost | episode length | cost per step | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, algo), runs in sorted(groups.items()):
        reward, cost, length, episode_cost = ([_score_of(r, key) for r in runs] for key in _TABLE_KEYS)
        per_step = [c / max(n, 1.0) for c, n in zip(episode_cost, length, strict=True)]
        verdict = "**unsafe**" if np.mean(cost) > 1.0 else "safe"
        lines.append(
            f"| {task} | {runs[0].get('cost_limit', '')} | {algo} | {len(runs)} | {_pm(reward)} | {_pm(cost)} | "
            f"{_pm(length, 0)} | {_pm(per_step, 3)} | {verdict} |"
        )
    cards = {r["task"]: r["dataset_card"] for r in records if r.get("kind") == "safe" and r.get("dataset_card")}
    if cards:
        lines += [
            "",
            "Datasets: episodes, the share whose cost exceeds cost_limit, mean episode cost per cost level (penalty λ), and "
            "the episode-cost histogram (10 bins from 0 to the upper edge).",
            "",
            "| task | episodes | above cost_limit | cost per level | histogram (upper edge: counts) |",
            "|---|---|---|---|---|",
        ]
        for task, card in sorted(cards.items()):
            levels = ", ".join(f"λ={lv['cost_penalty']:g}: {lv['episode_cost_mean']:.1f}" for lv in card["levels"])
            hist = card["histogram"]
            lines.append(
                f"| {task} | {card['episodes']} | {card['share_above_limit']:.0%} | {levels} | "
                f"{hist['edges'][-1]:.3g}: {' '.join(map(str, hist['counts']))} |"
            )
    return lines
