"""Tables of a sweep: ``table.md`` and ``table.csv``, mean ± std over seeds of each run's score, and the claims.

A run's score is the mean of its last ``k`` evaluations (the suite's ``score_last_k``,
default 3; see :mod:`benchmarks.claims`); the best evaluation is shown, never used for a verdict.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.algorithms import BUILTIN_KINDS, kind_module
from benchmarks.claims import DEFAULT_LAST_K, Claim, claims_section, evaluate_claim, run_score
from benchmarks.store import write_atomic
from benchmarks.suite import EVAL_SEED_OFFSET

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
    "final_return_mean",
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


def aggregate(records: list[dict[str, Any]], last_k: int = DEFAULT_LAST_K) -> list[dict[str, Any]]:
    """One row per (task, algorithm): mean and std over seeds of each run's score (mean of its last ``last_k`` evaluations)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["algo"])].append(record)
    rows = []
    for (task, algo), group in groups.items():
        ok = [r for r in group if r.get("status") == "ok"]

        def scores(key: str, runs: list[dict[str, Any]] = ok) -> np.ndarray:
            values = [run_score(r, last_k=last_k, key=key) for r in runs]
            return np.array([v for v in values if v is not None])

        returns, normalized, success, cost = (scores(k) for k in ("return_mean", "normalized", "success_rate", "cost_mean"))
        throughputs = [t for t, _ in map(_throughput, ok) if t is not None]
        rows.append(
            {
                "task": task,
                "algo": algo,
                "seeds": len(ok),
                "failed": len(group) - len(ok),
                "budget": group[0]["budget"],
                "return_mean": float(returns.mean()) if len(returns) else None,
                "return_std": float(returns.std()) if len(returns) else None,
                "normalized_mean": float(normalized.mean()) if len(normalized) else None,
                "normalized_std": float(normalized.std()) if len(normalized) else None,
                "best_return_mean": float(np.mean([r["best"]["return_mean"] for r in ok])) if ok else None,
                "final_return_mean": float(np.mean([r["final"]["return_mean"] for r in ok])) if ok else None,
                "cost_mean": float(cost.mean()) if len(cost) else None,
                "success_mean": float(success.mean()) if len(success) else None,
                "wall_time_s": float(np.mean([r["wall_time_s"] for r in group])),
                "throughput": float(np.mean(throughputs)) if throughputs else None,
                "throughput_unit": _throughput(ok[0])[1] if ok else "",
                "device": ok[0].get("device", "") if ok else "",
            }
        )
    return rows


def _pm(mean: float | None, std: float | None, digits: int = 1, n: int = 2) -> str:
    """``mean ± std``; the mean alone for one seed (a spread of one run is no spread)."""
    if mean is None:
        return "—"
    if n < 2 or std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _budget_label(budget: int) -> str:
    return f"{budget // 1000}k" if budget % 1000 == 0 else str(budget)


def _score_table(rows: list[dict[str, Any]]) -> list[str]:
    """D4RL style: one row per task, one column per algorithm; normalised score where known, else return.

    A cell whose budget differs from its row's most common budget carries its own, e.g. ``(15k)``, and one whose
    number of seeds differs from the table's most common number carries its own, e.g. ``(n = 5)``.
    """
    algos = list(dict.fromkeys(r["algo"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cells = {(r["task"], r["algo"]): r for r in rows}
    counts = [r["seeds"] for r in rows]
    common_seeds = max(set(counts), key=counts.count) if counts else 0
    lines = ["| task | " + " | ".join(algos) + " |", "|---|" + "---|" * len(algos)]
    for task in tasks:
        budgets = [r["budget"] for r in rows if r["task"] == task]
        common = max(set(budgets), key=budgets.count)
        row = []
        for algo in algos:
            r = cells.get((task, algo))
            if r is None:
                row.append("")
                continue
            if r["normalized_mean"] is not None:
                cell = _pm(r["normalized_mean"], r["normalized_std"], n=r["seeds"])
            else:
                cell = _pm(r["return_mean"], r["return_std"], n=r["seeds"])
            notes = [_budget_label(r["budget"])] if r["budget"] != common else []
            notes += [f"n = {r['seeds']}"] if r["seeds"] != common_seeds else []
            row.append(cell + (f" ({', '.join(notes)})" if notes else ""))
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return lines


def _detail_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| task | algorithm | seeds | budget | score (return) | normalised | final return | best return | wall time (s) "
        "| throughput |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds = f"{r['seeds']}" + (f" ({r['failed']} failed)" if r["failed"] else "")
        speed = (
            f"{r['throughput']:.0f} {r['throughput_unit'].replace('_per_s', '/s').replace('_', ' ')}"
            if r["throughput"]
            else "—"
        )
        best = f"{r['best_return_mean']:.1f}" if r["best_return_mean"] is not None else "—"
        final = f"{r['final_return_mean']:.1f}" if r["final_return_mean"] is not None else "—"
        score = _pm(r["return_mean"], r["return_std"], n=r["seeds"])
        normalised = _pm(r["normalized_mean"], r["normalized_std"], n=r["seeds"])
        lines.append(
            f"| {r['task']} | {r['algo']} | {seeds} | {r['budget']} | {score} | {normalised} | {final} | {best} | "
            f"{r['wall_time_s']:.0f} | {speed} |"
        )
    return lines


def _protocol(records: list[dict[str, Any]], last_k: int) -> str:
    """What a score is: evaluations averaged, episodes per evaluation, seeds and evaluation seeds."""
    episodes = sorted({r.get("eval_episodes") for r in records if r.get("eval_episodes")})
    seeds = sorted({r["seed"] for r in records})
    per_evaluation = " / ".join(map(str, episodes)) or "?"
    return (
        f"Score of a run: the mean of its last {last_k} evaluations, {per_evaluation} episodes each, on evaluation "
        f"seeds {EVAL_SEED_OFFSET} + run seed onwards (disjoint from the training seeds); table: mean ± std over "
        f"run seeds {seeds} (a cell marked n = k has k of them). Normalised score (100 = reference expert, 0 = random) "
        'where the task has reference scores, else the undiscounted return. "best return" is the best evaluation, '
        "shown only: no verdict uses it."
    )


def write_tables(
    out_dir: Path,
    records: list[dict[str, Any]],
    header: dict[str, Any],
    claims: list[Claim] | None = None,
    last_k: int = DEFAULT_LAST_K,
) -> list[dict[str, Any]]:
    """Write ``table.md`` and ``table.csv`` in ``out_dir``; returns the aggregated rows.

    :param out_dir: the sweep's folder
    :param records: the per-run records
    :param header: facts printed above the table (command, commit, seeds, budget, device, wall time)
    :param claims: the suite's claims, tested in a "Claims" section
    :param last_k: evaluations averaged into a run's score
    """
    rows = aggregate(records, last_k)
    md = [f"# {header.get('suite', 'results')}", ""]
    md += [f"- {key}: {value}" for key, value in header.items() if key != "suite"]
    md += [
        "",
        _protocol(records, last_k),
        "",
        *_score_table(rows),
        "",
        *claims_section([evaluate_claim(claim, records, last_k) for claim in claims or []], last_k),
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
