"""Preference-based RL (PEBBLE, PARL): trained as online runs; the table adds sample and feedback efficiency.

Each evaluation point of these algorithms records the feedback used so far
(``queries``, from ``progress_info``). For a task with a ``target_return`` the
table gives, per algorithm, the env steps and the queries at the first
evaluation whose return reaches it, beside every other algorithm of the task
(the SAC oracle on the true reward included).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.suite import RunSpec
from benchmarks.worker import train_model

NEEDS_DATA = False
TASK_KEYS: dict[str, Any] = {"target_return": (int, float)}
DISPLAY_KEYS = ("target_return",)


def train(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate like an online run (the env's true reward is what evaluation reports)."""
    return train_model(spec)


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation point whose mean return is at least ``target``, or ``None``."""
    return next((point for point in curve if point["return_mean"] >= target), None)


def _pm(values: list[float], digits: int = 0) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if values else "—"


def table(records: list[dict[str, Any]]) -> list[str]:
    """Env steps and queries to reach each task's ``target_return``, and the final return, per algorithm.

    :param records: the records of the sweep; tasks without a ``target_return`` are left out
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("status") == "ok" and "target_return" in (record.get("options") or {}):
            groups[(record["task"], record["algo"])].append(record)
    if not groups:
        return []
    lines = [
        "Env steps and feedback queries at the first evaluation whose return reaches the task's `target_return` "
        "(mean ± std over the seeds that reach it), and the final return and queries used.",
        "",
        "| task | target return | algorithm | seeds reaching | env steps to target | queries to target | final return "
        "| queries used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, algo), runs in sorted(groups.items()):
        target = float(runs[0]["options"]["target_return"])
        hits = [point for point in (first_reaching(r["curve"], target) for r in runs) if point is not None]
        queries = [p["queries"] for p in hits if "queries" in p]
        final_queries = [r["final"]["queries"] for r in runs if "queries" in r["final"]]
        lines.append(
            f"| {task} | {target:g} | {algo} | {len(hits)}/{len(runs)} | {_pm([p['step'] for p in hits])} | "
            f"{_pm(queries) if queries else '—'} | {_pm([r['final']['return_mean'] for r in runs], 1)} | "
            f"{_pm(final_queries) if final_queries else '—'} |"
        )
    return lines
