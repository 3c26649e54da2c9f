"""Cross-task preference transfer (PEARL): labels from a source task, RL on a target task.

A task of this kind is the target (``env`` and ``dataset`` or ``generate``) and names its source:
``source_env`` with ``source_generate`` (or ``source_dataset``). Pool keys: ``n_source_labels``
(N_q labelled source pairs, default 500), ``segment_length`` (default 20), ``label_mode``
(``window``: a segment's own return), ``pool_seed`` (default 0) and ``heldout_labels`` (a
held-out pool of the target, labelled by the rational teacher, default 500).

Every label pool (source pool, target pools) of a run with seed ``s`` is drawn with the seed
``pool_seed + s``, so the seeds cover the draw of the labels as well as training; within one
seed every arm with the same pool settings sees the same pairs. Algorithms:

- :class:`~rlkit.pearl.PEARL` (CPA + a reward model, zero target labels): gets ``source_dataset``
  and ``n_labels = n_source_labels``;
- :class:`~rlkit.iql.IQLBT` on target labels (the few-label, oracle, random and flipped-label arms):
  its ``n_labels`` and ``teacher`` come from the suite's hyperparameters.

Each evaluation point records ``labels`` (target labels used), ``label_accuracy`` (the labels
trained on, transferred or scripted, against the hidden rational target teacher, measured before
any RL), ``preference_accuracy`` (the fitted reward model on the held-out target pool) and, for
PEARL, the Gromov-Wasserstein sizes (M, N), seconds and memory: the numpy peak during the
alignment (tracemalloc) and the process's peak resident set size. The alignment holds the two
within-task distance matrices and the plan (three N x N float64 arrays, 24 MB at N = M = 1,000) and
POT's work arrays of the same size.
"""

from __future__ import annotations

import dataclasses
import resource
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.claims import table_score
from benchmarks.suite import RunSpec, constructor_params
from benchmarks.worker import train_model
from rlkit.data.generate import generate

NEEDS_DATA = True
TASK_KEYS: dict[str, Any] = {
    "source_env": str,
    "source_generate": dict,
    "source_dataset": str,
    "n_source_labels": int,
    "segment_length": int,
    "label_mode": str,
    "pool_seed": int,
    "heldout_labels": int,
}
REQUIRED_TASK_KEYS = ("source_env",)
EXCLUSIVE = True
DEFAULTS: dict[str, Any] = {
    "n_source_labels": 500,
    "segment_length": 20,
    "label_mode": "window",
    "pool_seed": 0,
    "heldout_labels": 500,
}


def source_dataset_id(options: dict[str, Any]) -> str:
    """The source dataset of a task: its ``source_dataset``, or the id ``source_generate`` writes (generated once)."""
    if "source_dataset" in options:
        return options["source_dataset"]
    if "source_generate" not in options:
        raise ValueError("A pearl task needs source_dataset or source_generate (with source_env) for its labelled source")
    settings = dict(options["source_generate"])
    kind = settings.pop("kind")
    return generate(options["source_env"], [kind], progress_bar=False, **settings)[kind]


def train(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate one run: the task's pool settings fill the constructor keys the hyperparameters leave unset."""
    params = constructor_params(spec.entry.load())
    options = {**DEFAULTS, **spec.options}
    hyperparams = dict(spec.hyperparams)
    hyperparams.setdefault("pool_seed", options["pool_seed"] + spec.seed)
    for key in ("segment_length", "label_mode", "heldout_labels"):
        hyperparams.setdefault(key, options[key])
    hyperparams.setdefault("heldout_teacher", "oracle")
    if "source_dataset" in params:
        hyperparams.setdefault("source_dataset", source_dataset_id(options))
        hyperparams.setdefault("n_labels", options["n_source_labels"])
    unknown = sorted(set(hyperparams) - params - {"policy", "n_envs", "normalize"})
    if unknown:
        raise ValueError(f"{spec.algo} takes no {', '.join(unknown)}: a pearl task runs PEARL or IQLBT")
    outcome = train_model(dataclasses.replace(spec, hyperparams=hyperparams))
    outcome["label_pool"] = {
        key: hyperparams[key] for key in ("n_labels", "teacher", "pool_seed", "segment_length") if key in hyperparams
    }
    outcome["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return outcome


def _pm(values: list[Any], digits: int) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}" if values else "—"


def _labels(record: dict[str, Any]) -> str:
    final = record["final"]
    if "source_labels" in final:
        return f"0 (from {int(final['source_labels'])} source)"
    teacher = record.get("label_pool", {}).get("teacher", "oracle")
    if isinstance(teacher, dict) and teacher.get("beta") == 0.0:
        return f"{int(final.get('labels', 0))} random"
    if isinstance(teacher, dict) and teacher.get("eps_mistake"):
        return f"{int(final.get('labels', 0))} ({int(100 * teacher['eps_mistake'])}% flipped)"
    return f"{int(final.get('labels', 0))}"


def table(records: list[dict[str, Any]]) -> list[str]:
    """Target labels, label accuracy, held-out accuracy and score per task and arm; the alignment's size and memory.

    :param records: the records of the sweep (those of this kind are tabulated)
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("kind") == "pearl" and record.get("status") == "ok":
            groups[(record["task"], record["algo"])].append(record)
    if not groups:
        return []
    lines = [
        "Cross-task preference transfer: target labels used (PEARL and CPA+BT use none: their labels are transferred "
        "from the source task), accuracy of the labels trained on against the hidden rational target teacher (before "
        "any RL), the reward model's accuracy on a held-out target pool, and the normalised score as in the tables "
        "above (each run's mean of its last evaluations); mean ± std over seeds.",
        "",
        "| task | algorithm | seeds | target labels | label accuracy | held-out preference accuracy | normalised score |",
        "|---|---|---|---|---|---|---|",
    ]
    memory = []
    for (task, algo), runs in sorted(groups.items()):
        finals = [r["final"] for r in runs]
        score = _pm([table_score(r) for r in runs], 1)
        label_accuracy = _pm([f.get("label_accuracy") for f in finals], 3)
        heldout = _pm([f.get("preference_accuracy") for f in finals], 3)
        lines.append(f"| {task} | {algo} | {len(runs)} | {_labels(runs[0])} | {label_accuracy} | {heldout} | {score} |")
        if "gw_source_segments" in finals[0]:
            memory.append(
                f"| {task} | {algo} | {int(finals[0]['gw_source_segments'])} | {int(finals[0]['gw_target_segments'])} | "
                f"{_pm([f['transferred_pairs'] for f in finals], 0)} | {_pm([f['gw_seconds'] for f in finals], 1)} | "
                f"{max(f['gw_peak_alloc_mib'] for f in finals):.1f} | {max(r.get('peak_rss_mib', 0.0) for r in runs):.0f} |"
            )
    if memory:
        lines += [
            "",
            "Gromov-Wasserstein alignment (O(N^2) memory): M source and N target segments, transferred pairs, seconds of "
            "the distance matrices and all restarts, the largest numpy peak during the alignment (MiB) and the largest "
            "peak resident set size of the process that ran it (MiB; the whole process: torch, the datasets, IQL; with "
            "--workers 1 one process runs every run in turn, so this is the sweep's peak up to that run).",
            "",
            "| task | algorithm | M | N | transferred pairs | GW seconds | GW peak numpy MiB | process peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|",
            *memory,
        ]
    return lines
