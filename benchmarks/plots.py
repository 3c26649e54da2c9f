"""Learning curves of a sweep: one PNG per task, mean ± std over seeds per algorithm.

Where runs record the feedback used at each evaluation (``queries``, as the
preference-based algorithms do), a second figure per task plots the return
against the queries; the algorithms of that task without feedback (the oracle
on the true reward) appear there as a dashed line at their final return.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.store import write_atomic  # noqa: E402

Curve = list[dict[str, float]]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return path


def _mean_std(runs: list[Curve], x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (mean over seeds), and the mean and std of y, over the evaluations that every seed reached."""
    length = min(len(run) for run in runs)
    x = np.array([[point[x_key] for point in run[:length]] for run in runs]).mean(axis=0)
    y = np.array([[point[y_key] for point in run[:length]] for run in runs])
    return x, y.mean(axis=0), y.std(axis=0)


def write_curves(out_dir: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write ``out_dir/curves/<task>.png`` for every task (and ``<task>-queries.png`` where runs record queries).

    :param out_dir: the sweep's folder
    :param records: the per-run records
    :return: the paths written
    """
    by_task: dict[str, dict[str, list[Curve]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.get("status") == "ok":
            by_task[record["task"]][record["algo"]].append(record["curve"])
    paths = []
    for task, curves in sorted(by_task.items()):
        use_normalized = all("normalized" in p for runs in curves.values() for run in runs for p in run)
        key = "normalized" if use_normalized else "return_mean"
        label = "normalised score" if use_normalized else "return"
        name = task.replace("/", "-")

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for algo, runs in sorted(curves.items()):
            steps, mean, std = _mean_std(runs, "step", key)
            ax.plot(steps, mean, label=f"{algo} ({len(runs)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set(title=task, xlabel="steps", ylabel=label)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / "curves" / f"{name}.png"))

        with_queries = {a: runs for a, runs in curves.items() if all("queries" in p for run in runs for p in run)}
        if not with_queries:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for algo, runs in sorted(with_queries.items()):
            queries, mean, std = _mean_std(runs, "queries", key)
            ax.plot(queries, mean, marker=".", label=f"{algo} ({len(runs)})")
            ax.fill_between(queries, mean - std, mean + std, alpha=0.2)
        for algo, runs in sorted(curves.items()):
            if algo not in with_queries:
                final = np.mean([run[-1][key] for run in runs])
                ax.axhline(final, linestyle="--", color="gray", label=f"{algo}, final ({len(runs)})")
        ax.set(title=f"{task}: return against feedback", xlabel="queries", ylabel=label)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out_dir / "curves" / f"{name}-queries.png"))
    return paths
