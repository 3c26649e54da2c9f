"""Offline-to-online runs: offline pretraining on the task's dataset, then fine-tuning in its env.

A run trains the model with ``learn_offline(spec.budget)`` (gradient steps), evaluates
it (``after_offline``), then runs ``learn(online_budget)`` (env steps) with an
evaluation every ``eval_freq`` env steps and at the end (``final``). The curve's
``step`` counts online env steps; its first point (step 0) is the evaluation after
the offline phase. Every point also carries ``gain``: its score (normalised where the task has
reference scores) minus the score after the offline phase, so a claim can compare what the online
phase adds, e.g. against a no-new-data control (``online_data: false``, which takes the same
gradient steps on the dataset alone). The model is one object through both phases (``FamO2O``,
``IQLO2O``). Task keys: ``online_budget`` (env steps of the online phase, required).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks.suite import RunSpec, eval_seed
from benchmarks.worker import EvalRecorder, dataset_id, make_envs, reference_scores, split_runner_keys

NEEDS_DATA = True
REQUIRED_TASK_KEYS = ("online_budget",)
TASK_KEYS: dict[str, type] = {"online_budget": int}


def train(spec: RunSpec) -> dict[str, Any]:
    """Offline phase, evaluation, online phase with periodic evaluation; the record's outcome fields.

    :param spec: the run (``spec.budget`` offline gradient steps, ``spec.options["online_budget"]`` env steps)
    """
    online_budget = spec.options.get("online_budget")
    if not isinstance(online_budget, int) or online_budget <= 0:
        raise ValueError(
            f"Task {spec.task!r} needs a positive 'online_budget' (env steps of the online phase) for the o2o "
            f"algorithm {spec.algo}, got {online_budget!r}"
        )
    kwargs, runner = split_runner_keys(spec)
    train_env, eval_env = make_envs(spec, runner)
    kwargs["dataset"] = dataset_id(spec)
    model = spec.entry.load()(runner.get("policy", "MlpPolicy"), train_env, seed=spec.seed, device=spec.device, **kwargs)
    recorder = EvalRecorder(eval_env, spec.eval_freq, spec.eval_episodes, seed=eval_seed(spec.seed), ref_scores=None)
    recorder.ref_scores = reference_scores(eval_env, model)

    started = time.perf_counter()
    model.learn_offline(spec.budget)
    offline_time = time.perf_counter() - started
    recorder.init_callback(model)
    recorder.evaluate_now()
    after_offline = {**recorder.curve[0], "step": 0}
    recorder.curve[0] = after_offline
    recorder.last_eval_step, offline_eval_time = 0, recorder.eval_time

    started = time.perf_counter()
    model.learn(online_budget, callback=recorder)
    online_time = time.perf_counter() - started - (recorder.eval_time - offline_eval_time)
    for point in recorder.curve:
        point["gain"] = _score(point) - _score(after_offline)
    return {
        "device": str(model.device),
        "curve": recorder.curve,
        "after_offline": after_offline,
        "final": recorder.curve[-1],
        "best": max(recorder.curve, key=lambda p: p["return_mean"]),
        "ref_scores": recorder.ref_scores,
        "dataset_id": kwargs["dataset"],
        "offline_gradient_steps": spec.budget,
        "online_env_steps": int(model.num_timesteps),
        "offline_time_s": offline_time,
        "online_time_s": online_time,
        "train_time_s": offline_time + online_time,
        "eval_time_s": recorder.eval_time,
        "env_steps_per_s": model.num_timesteps / max(online_time, 1e-9),
        "grad_steps_per_s": spec.budget / max(offline_time, 1e-9),
    }


def _score(point: dict[str, Any]) -> float:
    return float(point.get("normalized", point["return_mean"]))


def table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown: normalised score (return where the task has no reference scores) after offline and after online.

    :param records: the records of the sweep (those of this kind are tabulated)
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in (r for r in records if r.get("kind") == "o2o"):
        groups[(record["task"], record["algo"])].append(record)
    lines = [
        "Normalised score (return where the task has no reference scores) after the offline phase and after the "
        "online phase, mean ± std over seeds.",
        "",
        "| task | algorithm | seeds | offline grad steps | online env steps | after offline | after online | change (gain) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, algo), group in sorted(groups.items()):
        ok = [r for r in group if r.get("status") == "ok"]
        seeds = f"{len(ok)}" + (f" ({len(group) - len(ok)} failed)" if len(ok) < len(group) else "")
        if not ok:
            lines.append(f"| {task} | {algo} | {seeds} | {group[0]['budget']} | — | — | — | — |")
            continue
        before = np.array([_score(r["after_offline"]) for r in ok])
        after = np.array([_score(r["final"]) for r in ok])
        change = after - before
        lines.append(
            f"| {task} | {algo} | {seeds} | {ok[0]['offline_gradient_steps']} | {ok[0]['online_env_steps']} | "
            f"{before.mean():.1f} ± {before.std():.1f} | {after.mean():.1f} ± {after.std():.1f} | "
            f"{change.mean():+.1f} ± {change.std():.1f} |"
        )
    return lines
