"""Learning curves of a sweep: one PNG per task, mean ± std over seeds per algorithm."""

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


def write_curves(out_dir: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write ``out_dir/curves/<task>.png`` for every task; returns the paths."""
    by_task: dict[str, dict[str, list[list[dict[str, float]]]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.get("status") == "ok":
            by_task[record["task"]][record["algo"]].append(record["curve"])
    paths = []
    for task, curves in sorted(by_task.items()):
        use_normalized = all("normalized" in p for runs in curves.values() for run in runs for p in run)
        key = "normalized" if use_normalized else "return_mean"
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for algo, runs in sorted(curves.items()):
            length = min(len(run) for run in runs)
            steps = np.array([p["step"] for p in runs[0][:length]])
            values = np.array([[p[key] for p in run[:length]] for run in runs])
            mean, std = values.mean(axis=0), values.std(axis=0)
            ax.plot(steps, mean, label=f"{algo} ({len(runs)})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("steps")
        ax.set_ylabel("normalised score" if use_normalized else "return")
        ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        path = out_dir / "curves" / f"{task.replace('/', '-')}.png"
        write_atomic(path, buffer.getvalue())
        paths.append(path)
    return paths
