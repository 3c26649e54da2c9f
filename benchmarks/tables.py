"""Tables of a sweep: ``table.md`` and ``table.csv``, mean ± std over seeds."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.algorithms import BUILTIN_KINDS, kind_module
from benchmarks.store import write_atomic

CSV_FIELDS = [
    "task",
    "algo",
    "seeds",
    "failed",
    "budget",
    "return_mean",
    "return_std",
    "normalized_mean",
    "normalized_std",
    "best_return_mean",
    "cost_mean",
    "success_mean",
    "wall_time_s",
    "throughput",
    "throughput_unit",
    "device",
]


def _throughput(record: dict[str, Any]) -> tuple[float | None, str]:
    for unit in ("env_steps_per_s", "grad_steps_per_s"):
        if unit in record:
            return float(record[unit]), unit
    return None, ""


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, algorithm): mean and std over seeds of the final evaluation."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["algo"])].append(record)
    rows = []
    for (task, algo), group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]
        finals = [r["final"] for r in ok]
        returns = np.array([f["return_mean"] for f in finals])
        normalized = np.array([f["normalized"] for f in finals if "normalized" in f])
        success = np.array([f["success_rate"] for f in finals if f.get("success_rate") == f.get("success_rate")])
        throughputs = [t for t, _ in map(_throughput, ok) if t is not None]
        rows.append(
            {
                "task": task,
                "algo": algo,
                "seeds": len(ok),
                "failed": len(group) - len(ok),
                "budget": group[0]["budget"],
                "return_mean": float(returns.mean()) if len(ok) else None,
                "return_std": float(returns.std()) if len(ok) else None,
                "normalized_mean": float(normalized.mean()) if len(normalized) else None,
                "normalized_std": float(normalized.std()) if len(normalized) else None,
                "best_return_mean": float(np.mean([r["best"]["return_mean"] for r in ok])) if ok else None,
                "cost_mean": float(np.mean([f["cost_mean"] for f in finals])) if ok else None,
                "success_mean": float(success.mean()) if len(success) else None,
                "wall_time_s": float(np.mean([r["wall_time_s"] for r in group])),
                "throughput": float(np.mean(throughputs)) if throughputs else None,
                "throughput_unit": _throughput(ok[0])[1] if ok else "",
                "device": ok[0].get("device", "") if ok else "",
            }
        )
    return rows


def _pm(mean: float | None, std: float | None, digits: int = 1) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _score_table(rows: list[dict[str, Any]]) -> list[str]:
    """D4RL style: one row per task, one column per algorithm; normalised score where known, else return."""
    algos = list(dict.fromkeys(r["algo"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cells = {(r["task"], r["algo"]): r for r in rows}
    lines = ["| task | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    for task in tasks:
        row = []
        for algo in algos:
            r = cells.get((task, algo))
            if r is None:
                row.append("")
            elif r["normalized_mean"] is not None:
                row.append(_pm(r["normalized_mean"], r["normalized_std"]))
            else:
                row.append(_pm(r["return_mean"], r["return_std"]))
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return lines


def _detail_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| task | algorithm | seeds | budget | return | normalised | best return | wall time (s) | throughput |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        speed = f"{r['throughput']:.0f} {r['throughput_unit'].replace('_per_s', '/s').replace('_', ' ')}" if r["throughput"] else "—"
        best = f"{r['best_return_mean']:.1f}" if r["best_return_mean"] is not None else "—"
        lines.append(
            f"| {r['task']} | {r['algo']} | {seeds} | {r['budget']} | {_pm(r['return_mean'], r['return_std'])} | "
            f"{_pm(r['normalized_mean'], r['normalized_std'])} | {best} | {r['wall_time_s']:.0f} | {speed} |"
        )
    return lines


def write_tables(out_dir: Path, records: list[dict[str, Any]], header: dict[str, Any]) -> list[dict[str, Any]]:
    """Write ``table.md`` and ``table.csv`` in ``out_dir``; returns the aggregated rows.

    :param out_dir: the sweep's folder
    :param records: the per-run records
    :param header: facts printed above the table (command, commit, seeds, budget, device, wall time)
    """
    rows = aggregate(records)
    md = [f"# {header.get('suite', 'results')}", ""]
    md += [f"- {key}: {value}" for key, value in header.items() if key != "suite"]
    md += [
        "",
        "Final evaluation, mean ± std over seeds: normalised score (100 = reference expert, 0 = random) where the task "
        "has reference scores, else the undiscounted return.",
        "",
        *_score_table(rows),
        "",
        "## Runs",
        "",
        *_detail_table(rows),
        "",
    ]
    for kind in dict.fromkeys(r.get("kind", "online") for r in records):
        if kind in BUILTIN_KINDS or not hasattr(kind_module(kind), "table"):
            continue
        md += [f"## {kind}", "", *kind_module(kind).table(records), ""]
    write_atomic(out_dir / "table.md", "\n".join(md))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out_dir / "table.csv", buffer.getvalue())
    return rows
