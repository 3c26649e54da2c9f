"""Offline preference-based RL (OPPO, IQL+BT): a fixed label pool, the held-out preference accuracy and the normalised score.

A task may set the pool that every method of this kind learns from: ``n_labels`` (N_q,
default 500), ``label_mode`` (``foresee``: the 200-step future return, OPPO's scripted
labels; or ``window``), ``segment_length`` (default 20, OPPO's K: OPPO's
``context_length`` is set to it), ``pool_seed`` (default 0) and ``heldout_labels`` (pairs of a
held-out pool of the same settings, default 500). The pool is drawn once per dataset and
cached (:func:`rlkit.common.preference.load_or_create_pool`), so every method and every
seed sees the same labels. Training and evaluation are :func:`benchmarks.worker.train_model`'s;
each evaluation point records ``labels`` and the held-out ``preference_accuracy`` (from the
model's ``progress_info``).

The table shows, per task, these methods beside the other offline methods run on the same
tasks (BC: no reward; IQL etc.: the true reward): labels used, held-out preference accuracy
and the normalised score (mean of each run's last evaluations).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.claims import table_score
from benchmarks.suite import RunSpec, constructor_params
from benchmarks.worker import train_model

NEEDS_DATA = True
TASK_KEYS: dict[str, Any] = {
    "n_labels": int,
    "label_mode": str,
    "segment_length": int,
    "pool_seed": int,
    "heldout_labels": int,
}
DEFAULTS: dict[str, Any] = {
    "n_labels": 500,
    "label_mode": "foresee",
    "segment_length": 20,
    "pool_seed": 0,
    "heldout_labels": 500,
}
#: offline algorithms of other kinds that use no reward at all
NO_REWARD = ("BC",)


def train(spec: RunSpec) -> dict[str, Any]:
    """Train and evaluate one run on the task's label pool.

    The task's pool keys (:data:`DEFAULTS` where the task has none) fill the constructor keys that
    the algorithm's hyperparameters do not set; a task's ``segment_length`` is OPPO's ``context_length``.
    """
    params = constructor_params(spec.entry.load())
    hyperparams = dict(spec.hyperparams)
    for key, default in DEFAULTS.items():
        if key in params:
            hyperparams.setdefault(key, spec.options.get(key, default))
    if "context_length" in params and "segment_length" in spec.options:
        hyperparams.setdefault("context_length", spec.options["segment_length"])
        if hyperparams["context_length"] != spec.options["segment_length"]:
            raise ValueError(
                f"{spec.algo} on {spec.task}: context_length {hyperparams['context_length']} differs from the task's "
                f"segment_length {spec.options['segment_length']}; OPPO encodes the labelled segments with its context window"
            )
    outcome = train_model(dataclasses.replace(spec, hyperparams=hyperparams))
    outcome["label_pool"] = {key: hyperparams.get(key) for key in (*DEFAULTS, "context_length") if key in hyperparams}
    return outcome


def _pm(values: list[float | None], digits: int) -> str:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite):.{digits}f}" if finite else "—"


def _labels(record: dict[str, Any]) -> str:
    if record.get("kind") == "pbrl_offline":
        used = record["final"].get("labels")
        return f"{int(used)}" if used is not None else "—"
    return "none" if record["algo"] in NO_REWARD else "true reward"


def table(records: list[dict[str, Any]]) -> list[str]:
    """Labels used, held-out preference accuracy and normalised score (each run's last evaluations), per task and algorithm.

    :param records: the records of the sweep; the tasks with a run of this kind are tabulated, with every
        offline run on them
    """
    tasks = {r["task"] for r in records if r.get("kind") == "pbrl_offline"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["task"] in tasks and record.get("status") == "ok" and record.get("kind") in ("pbrl_offline", "offline"):
            groups[(record["task"], record["algo"])].append(record)
    if not groups:
        return []
    lines = [
        "Offline preference learning: labelled pairs used (N_q of the shared pool; IQL learns from the true reward, "
        "BC from none), preference accuracy on a held-out pool of the same settings, and the D4RL normalised score "
        "(return where the task has no reference scores) as in the tables above: each run's mean of its last "
        "evaluations; mean ± std over seeds.",
        "",
        "| task | algorithm | seeds | labels | held-out preference accuracy | normalised score |",
        "|---|---|---|---|---|---|",
    ]
    for (task, algo), runs in sorted(groups.items()):
        accuracy = [r["final"].get("preference_accuracy") for r in runs]
        scores = [table_score(r) for r in runs]
        lines.append(f"| {task} | {algo} | {len(runs)} | {_labels(runs[0])} | {_pm(accuracy, 3)} | {_pm(scores, 1)} |")
    return lines
