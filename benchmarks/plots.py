"""Learning curves of a sweep: one PNG per task, mean ± std over seeds per algorithm.

Each algorithm has its own colour and line style (ten colours, then the next line
style), a curve of one evaluation is a point with its error bar, multi-objective runs
(whose curve is the archive's hypervolume) are labelled so, and figures are written at
150 dpi with their titles and legends inside the image.

Where runs record the feedback used at each evaluation (``queries``, as the
preference-based algorithms do), a second figure per task plots the return
against the queries; the algorithms of that task without feedback (the oracle
on the true reward) appear there as a dashed line at their final return.
"""

from __future__ import annotations

import io
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.store import write_atomic

Curve = list[dict[str, float]]

#: resolution of every figure
DPI = 150
#: line styles, changed after each cycle of the ten colours so that more than ten algorithms stay apart
LINE_STYLES = ("-", "--", "-.", ":")


def style(index: int) -> dict[str, Any]:
    """Colour, line style and marker of the ``index``-th algorithm of a figure (distinct up to 40 algorithms)."""
    return {
        "color": plt.get_cmap("tab10")(index % 10),
        "linestyle": LINE_STYLES[(index // 10) % len(LINE_STYLES)],
        "marker": "osD^v<>ph*"[(index // 10 + index) % 10],
        "markersize": 3,
    }


def _title(ax: Any, text: str) -> None:
    ax.set_title("\n".join(textwrap.wrap(text, 60)), fontsize=9)


def _legend(ax: Any, n_entries: int) -> None:
    """Inside the axes for a few entries, beside them (outside) for many."""
    if n_entries > 6:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    elif n_entries:
        ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return path


def _draw(ax: Any, x: np.ndarray, mean: np.ndarray, std: np.ndarray, label: str, index: int) -> None:
    """A mean curve with its ± std band; a single evaluation as a point with an error bar."""
    if len(x) == 1:
        ax.errorbar(x, mean, yerr=std, capsize=3, label=label, **style(index))
        return
    line_style = style(index)
    if len(x) > 12:
        line_style["markevery"] = max(len(x) // 12, 1)
    ax.plot(x, mean, label=label, **line_style)
    ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=line_style["color"])


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
    kinds: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.get("status") == "ok" and record.get("curve"):
            by_task[record["task"]][record["algo"]].append(record["curve"])
            kinds[record["task"]].add(record.get("kind", "online"))
    paths = []
    for task, curves in sorted(by_task.items()):
        use_normalized = all("normalized" in p for runs in curves.values() for run in runs for p in run)
        key = "normalized" if use_normalized else "return_mean"
        label = "normalised score" if use_normalized else "return"
        if kinds[task] == {"mo"}:  # the curve of a multi-objective run is its archive's hypervolume
            label = "hypervolume of the Pareto archive"
        name = task.replace("/", "-")

        fig, ax = plt.subplots(figsize=(6, 4))
        for index, (algo, runs) in enumerate(sorted(curves.items())):
            steps, mean, std = _mean_std(runs, "step", key)
            _draw(ax, steps, mean, std, f"{algo} ({len(runs)} seeds)", index)
        _title(ax, f"{task}: mean ± std over seeds")
        ax.set(xlabel="steps (env steps online, gradient steps offline)", ylabel=label)
        _legend(ax, len(curves))
        paths.append(_save(fig, out_dir / "curves" / f"{name}.png"))

        with_queries = {a: runs for a, runs in curves.items() if all("queries" in p for run in runs for p in run)}
        if not with_queries:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for index, (algo, runs) in enumerate(sorted(with_queries.items())):
            queries, mean, std = _mean_std(runs, "queries", key)
            _draw(ax, queries, mean, std, f"{algo} ({len(runs)} seeds)", index)
        oracles = [algo for algo in sorted(curves) if algo not in with_queries]
        for index, algo in enumerate(oracles):
            final = np.mean([run[-1][key] for run in curves[algo]])
            label_final = f"{algo}, final ({len(curves[algo])} seeds)"
            ax.axhline(final, linestyle=LINE_STYLES[1 + index % 3], color="gray", label=label_final)
        _title(ax, f"{task}: {label} against feedback")
        ax.set(xlabel="queries", ylabel=label)
        _legend(ax, len(with_queries) + len(oracles))
        paths.append(_save(fig, out_dir / "curves" / f"{name}-queries.png"))
    return paths
