"""Paper claims as data, tested with the aggregates of Agarwal et al. (2021) and written to ``results/CLAIMS.md``.

A suite declares the claims it tests under ``claims:``::

    claims:
      - id: mdpo-beats-ppo                  # unique within the suite
        paper: Tomar et al. 2022 (MDPO)
        claim: On-policy MDPO reaches a higher return than PPO at equal env steps.
        better: MDPO                        # the arm that should win
        baseline: PPO                       # the arm it beats, or a number (a threshold)
        metric: return                      # a key of the evaluation points (aliases below)
        tasks: [Hopper-v5, HalfCheetah-v5]
        paper_budget: 1000000               # per task (a number, or a mapping task -> number)
        # optional:
        aggregate: iqm                      # iqm (default) or mean
        lower_is_better: false              # true for cost, steps or queries to a target
        summary: last                       # last (default), auc, at, to_target
        at: 0.25                            # summary "at": the first evaluation at >= this share of the budget
        target: -20.0                       # summary "to_target": the metric at the first evaluation whose
        target_metric: return               #   target_metric reaches target (the last one if none does);
                                            #   a number, or a mapping task -> number
        budget_key: online_budget           # the task key our budget is read from (default: the run's budget)
        controls: {NEW: NEW-Control, OLD: OLD-Control}  # each arm's aggregate minus its control's (below)
        note: what the reader must know     # shown beside the verdict

The score of a run is, by default, the mean of its last ``k`` evaluations (the suite's
``score_last_k``, default 3) on the evaluation episodes, whose seeds are disjoint from
every seed used in training (:data:`benchmarks.suite.EVAL_SEED_OFFSET`); the "best"
evaluation is shown in tables but never used here. A metric that the curve does not
carry (a kind's final-only measure, such as the hypervolume of the final front) is read
from the run's ``final`` point.

For each claim the scores form a (runs x tasks) matrix per arm. The effect is the
difference of the arms' IQMs (or means), signed so that a positive effect favours the
claim; its 95% confidence interval comes from rliable's stratified bootstrap over runs
(tasks are strata). The probability of improvement (rliable; Mann-Whitney, ties 1/2) has a
bootstrap CI too. Verdict: **holds** if the CI lies above 0, **contradicted** if below,
**not shown** if it spans 0 (or there are fewer than two runs per arm). A claim over
several tasks whose metric is not a normalised score compares min-max scaled scores (per
task, over the runs of both arms), so no task dominates by its scale; a monotone scaling
leaves every per-task comparison unchanged.

With ``controls`` each compared arm is paired with a control arm (e.g. the same method
taking the same gradient steps without new data) and the effect is the difference of the
arms' aggregates *minus their controls'*: ``(agg(better) - agg(better's control)) -
(agg(baseline) - agg(baseline's control))``, its CI from the bootstrap of all four arms'
runs. The probability of improvement is not defined for such a difference and is left out.

``python -m benchmarks.claims`` rebuilds ``results/CLAIMS.md`` from every suite's records
(and the performance profile of each suite); nothing else writes it.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: names a claim may use for the standard evaluation keys
METRIC_ALIASES = {
    "return": "return_mean",
    "normalized": "normalized",
    "normalised": "normalized",
    "score": "normalized",
    "cost": "cost_mean",
    "success": "success_rate",
}
SUMMARIES = ("last", "auc", "at", "to_target")
AGGREGATES = ("iqm", "mean")
VERDICTS = ("holds", "contradicted", "not shown")
REQUIRED_KEYS = {
    "id": str,
    "paper": str,
    "claim": str,
    "better": str,
    "baseline": (str, int, float),
    "metric": str,
    "tasks": list,
    "paper_budget": (int, float, dict),
}
OPTIONAL_KEYS = {
    "aggregate": str,
    "lower_is_better": bool,
    "summary": str,
    "at": (int, float),
    "target": (int, float, dict),
    "target_metric": str,
    "budget_key": str,
    "controls": dict,
    "note": str,
}
DEFAULT_LAST_K = 3
DEFAULT_REPS = 2000
CONFIDENCE = 0.95
#: metrics on a common scale across tasks (no per-task scaling when pooling tasks)
COMMON_SCALE_METRICS = {"normalized", "normalized_reward", "normalized_cost", "success_rate"}


class ClaimError(ValueError):
    """A claim declaration that cannot be tested; the message names the key and the fix."""


@dataclass(frozen=True)
class Claim:
    """One paper claim declared by a suite (see the module docstring for the keys).

    :param suite: the suite that declares it
    """

    id: str
    paper: str
    claim: str
    better: str
    baseline: str | float
    metric: str
    tasks: tuple[str, ...]
    paper_budget: float | dict[str, float]
    suite: str = ""
    aggregate: str = "iqm"
    lower_is_better: bool = False
    summary: str = "last"
    at: float | None = None
    target: float | dict[str, float] | None = None
    target_metric: str = "return_mean"
    budget_key: str | None = None
    controls: tuple[tuple[str, str], ...] = ()
    note: str = ""

    @property
    def key(self) -> str:
        """The evaluation-point key the metric names."""
        return METRIC_ALIASES.get(self.metric, self.metric)

    @property
    def threshold(self) -> float | None:
        """The baseline as a number when the claim compares against a constant, else ``None``."""
        return None if isinstance(self.baseline, str) else float(self.baseline)

    def compared(self) -> list[str]:
        """The algorithms the claim compares (one for a threshold claim)."""
        return [self.better] if self.threshold is not None else [self.better, str(self.baseline)]

    def control_of(self, arm: str) -> str | None:
        """The control arm whose aggregate is subtracted from ``arm``'s, if the claim pairs it with one."""
        return dict(self.controls).get(arm)

    def arms(self) -> list[str]:
        """Every algorithm the claim reads: the compared arms, then their controls in the same order."""
        controls = [self.control_of(arm) for arm in self.compared()]
        return [*self.compared(), *(control for control in controls if control is not None)]

    def target_of(self, task: str) -> float:
        """The value the ``to_target`` summary waits for on ``task``."""
        assert self.target is not None
        return float(self.target[task]) if isinstance(self.target, dict) else float(self.target)

    def paper_budget_of(self, task: str) -> float:
        """The paper's budget on ``task``."""
        if isinstance(self.paper_budget, dict):
            return float(self.paper_budget[task])
        return float(self.paper_budget)


def _check_type(where: str, value: Any, expected: type | tuple[type, ...]) -> None:
    types = expected if isinstance(expected, tuple) else (expected,)
    wrong_bool = isinstance(value, bool) and bool not in types
    if wrong_bool or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise ClaimError(f"'{where}' must be {names}, got {value!r}")


def _check_keys(where: str, entry: Any) -> None:
    """The entry is a mapping of known keys, with every required key, each of its type."""
    _check_type(where, entry, dict)
    for key in entry:
        if key not in REQUIRED_KEYS and key not in OPTIONAL_KEYS:
            allowed = ", ".join(sorted({*REQUIRED_KEYS, *OPTIONAL_KEYS}))
            raise ClaimError(f"unknown key '{where}.{key}'; allowed keys: {allowed}")
    for key, expected in REQUIRED_KEYS.items():
        if key not in entry:
            raise ClaimError(f"'{where}.{key}' is missing (a claim needs {', '.join(REQUIRED_KEYS)})")
        _check_type(f"{where}.{key}", entry[key], expected)
    for key, expected in OPTIONAL_KEYS.items():
        if key in entry:
            _check_type(f"{where}.{key}", entry[key], expected)


def _check_per_task(where: str, key: str, value: Any, tasks: list[str]) -> None:
    """A per-task mapping covers every task of the claim; its values are positive numbers where ``key`` is a budget."""
    if isinstance(value, dict):
        missing = [task for task in tasks if task not in value]
        if missing:
            raise ClaimError(f"'{where}.{key}' has no value for {', '.join(missing)}")
    if key == "paper_budget":
        values = list(value.values()) if isinstance(value, dict) else [value]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in values):
            raise ClaimError(f"'{where}.paper_budget' must be positive numbers, got {value!r}")


def _check_arms_and_tasks(where: str, entry: dict[str, Any], tasks: dict[str, Any], algorithms: dict[str, Any]) -> None:
    """The arms are algorithms of the suite (or the baseline a number), the tasks are tasks of the suite."""
    for key in ("better", "baseline"):
        if isinstance(entry[key], str) and entry[key] not in algorithms:
            known = ", ".join(algorithms)
            raise ClaimError(f"'{where}.{key}' names {entry[key]!r}, which is not an algorithm of this suite ({known})")
    if entry["better"] == entry["baseline"]:
        raise ClaimError(f"'{where}.baseline' equals 'better'; a claim compares two arms (or an arm and a number)")
    if not entry["tasks"]:
        raise ClaimError(f"'{where}.tasks' is empty; name at least one task of the suite")
    for task in entry["tasks"]:
        if task not in tasks:
            raise ClaimError(f"'{where}.tasks' names {task!r}, which is not a task of this suite ({', '.join(tasks)})")
    _check_controls(where, entry, algorithms)
    budget_key = entry.get("budget_key")
    for task in entry["tasks"] if budget_key is not None else []:
        if budget_key not in tasks[task]:
            raise ClaimError(f"'{where}.budget_key' names {budget_key!r}, which task {task!r} does not set")


def _check_controls(where: str, entry: dict[str, Any], algorithms: dict[str, Any]) -> None:
    """``controls`` maps every compared arm to a control arm of the suite that is not itself compared."""
    if "controls" not in entry:
        return
    if not isinstance(entry["baseline"], str):
        raise ClaimError(f"'{where}.controls' needs a baseline arm, not a threshold")
    compared = [entry["better"], entry["baseline"]]
    controls = entry["controls"]
    if sorted(controls) != sorted(compared):
        raise ClaimError(f"'{where}.controls' must map each compared arm ({', '.join(compared)}) to its control arm")
    for arm, control in controls.items():
        if not isinstance(control, str) or control not in algorithms or control in compared:
            raise ClaimError(
                f"'{where}.controls.{arm}' names {control!r}: a control must be an algorithm of this suite "
                f"({', '.join(algorithms)}) other than the compared arms"
            )


def _check_summary(where: str, entry: dict[str, Any]) -> None:
    """The aggregate and the summary are known, with the keys the summary needs."""
    if entry.get("aggregate", "iqm") not in AGGREGATES:
        raise ClaimError(f"'{where}.aggregate' must be one of {', '.join(AGGREGATES)}, got {entry['aggregate']!r}")
    summary = entry.get("summary", "last")
    if summary not in SUMMARIES:
        raise ClaimError(f"'{where}.summary' must be one of {', '.join(SUMMARIES)}, got {summary!r}")
    if summary == "at" and not 0 < entry.get("at", -1) <= 1:
        raise ClaimError(f"'{where}.at' must be a share of the budget in (0, 1] when summary is 'at'")
    if summary == "to_target" and "target" not in entry:
        raise ClaimError(f"'{where}.target' is missing: summary 'to_target' needs the value to reach")


def parse_claims(entries: Any, tasks: dict[str, Any], algorithms: dict[str, Any], suite: str = "") -> list[Claim]:
    """Validate a suite's ``claims`` list against its tasks and algorithms.

    :param entries: the ``claims`` value of the suite file
    :param tasks: the suite's tasks
    :param algorithms: the suite's algorithms
    :param suite: the suite's name, kept in each claim
    :return: the claims, in the order declared
    :raises ClaimError: naming the first malformed key (``claims[i].key``) and what it must be
    """
    _check_type("claims", entries, list)
    claims: list[Claim] = []
    for i, entry in enumerate(entries):
        _check_keys(f"claims[{i}]", entry)
        where = f"claims[{i}] ({entry['id']})"
        if any(c.id == entry["id"] for c in claims):
            raise ClaimError(f"'{where}.id' is used twice; claim ids must be unique within a suite")
        _check_arms_and_tasks(where, entry, tasks, algorithms)
        _check_per_task(where, "paper_budget", entry["paper_budget"], entry["tasks"])
        _check_summary(where, entry)
        if "target" in entry:
            _check_per_task(where, "target", entry["target"], entry["tasks"])
        target_metric = entry.get("target_metric", "return")
        claims.append(
            Claim(
                id=entry["id"],
                paper=entry["paper"],
                claim=entry["claim"],
                better=entry["better"],
                baseline=entry["baseline"],
                metric=entry["metric"],
                tasks=tuple(entry["tasks"]),
                paper_budget=entry["paper_budget"],
                suite=suite,
                aggregate=entry.get("aggregate", "iqm"),
                lower_is_better=entry.get("lower_is_better", False),
                summary=entry.get("summary", "last"),
                at=entry.get("at"),
                target=entry.get("target"),
                target_metric=METRIC_ALIASES.get(target_metric, target_metric),
                budget_key=entry.get("budget_key"),
                controls=tuple(entry.get("controls", {}).items()),
                note=entry.get("note", ""),
            )
        )
    return claims


# --------------------------------------------------------------------------------------------- run scores


def _values(points: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(step, value)`` of the points that carry a finite ``key``."""
    out = []
    for point in points:
        value = point.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out.append((float(point["step"]), float(value)))
    return out


def table_score(record: dict[str, Any], last_k: int = DEFAULT_LAST_K) -> float | None:
    """A run's score as the tables take it: its normalised score where it has one, else its return.

    :param record: a run record
    :param last_k: how many of the last evaluations the score averages
    :return: the mean of the last ``last_k`` evaluations, or ``None`` for a run that did not finish
    """
    key = "normalized" if "normalized" in (record.get("final") or {}) else "return_mean"
    return run_score(record, last_k=last_k, key=key)


def run_score(
    record: dict[str, Any], claim: Claim | None = None, last_k: int = DEFAULT_LAST_K, key: str | None = None
) -> float | None:
    """The score of one finished run under a claim's metric and summary.

    :param record: a run record (``curve`` and ``final`` points)
    :param claim: the claim (default: the mean of the last ``last_k`` values of ``key``)
    :param last_k: how many of the last evaluations the ``last`` summary averages
    :param key: the evaluation key when no claim is given (default ``return_mean``)
    :return: the score, or ``None`` when the run does not carry the metric
    """
    if record.get("status") != "ok":
        return None
    key = claim.key if claim is not None else (key or "return_mean")
    summary = claim.summary if claim is not None else "last"
    curve = _values(record.get("curve") or [], key)
    if not curve:
        final = _values([record["final"]] if record.get("final") else [], key)
        return final[0][1] if final else None
    if summary == "last":
        return float(np.mean([value for _, value in curve[-last_k:]]))
    assert claim is not None
    if summary == "auc":
        steps, values = np.array(curve).T
        if len(steps) == 1 or steps[-1] == steps[0]:
            return float(values[-1])
        return float(np.trapezoid(values, steps) / (steps[-1] - steps[0]))
    if summary == "at":
        assert claim.at is not None
        reach = claim.at * float(record["budget"])
        return next((value for step, value in curve if step >= reach), curve[-1][1])
    target = claim.target_of(record["task"])
    signs = _values(record.get("curve") or [], claim.target_metric)
    by_step = dict(curve)
    for step, value in signs:
        if value >= target and step in by_step:
            return by_step[step]
    return curve[-1][1]


def _budget(record: dict[str, Any], claim: Claim) -> float:
    if claim.budget_key is not None:
        return float((record.get("options") or {}).get(claim.budget_key, record["budget"]))
    return float(record["budget"])


def score_matrix(
    records: list[dict[str, Any]], claim: Claim, algo: str, last_k: int = DEFAULT_LAST_K
) -> tuple[np.ndarray, list[int]]:
    """The (runs x tasks) scores of ``algo`` on the claim's tasks, over the seeds every task has.

    :return: the matrix (0 rows when some task has no scored run) and the seeds of its rows
    """
    per_task: list[dict[int, float]] = []
    for task in claim.tasks:
        scores = {}
        for record in records:
            if record.get("algo") == algo and record.get("task") == task:
                score = run_score(record, claim, last_k)
                if score is not None:
                    scores[int(record["seed"])] = score
        per_task.append(scores)
    seeds = sorted(set.intersection(*(set(s) for s in per_task))) if per_task else []
    matrix = np.array([[scores[seed] for scores in per_task] for seed in seeds], dtype=float).reshape(
        len(seeds), len(claim.tasks)
    )
    return matrix, seeds


# ---------------------------------------------------------------------------------------------- statistics


@contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """rliable draws its bootstrap indices from numpy's global generator: seed it, then restore it."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregate_fn(name: str) -> Any:
    """rliable's aggregate of a (runs x tasks) matrix: ``iqm`` or ``mean``."""
    from rliable import metrics

    return {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean}[name]


def interval_estimate(func: Any, *matrices: np.ndarray, reps: int = DEFAULT_REPS, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and stratified-bootstrap 95% CI (rliable, percentile method) of ``func(*matrices)``.

    :param func: a function of one or more (runs x tasks) matrices
    :param matrices: the score matrices (several are resampled independently, task by task)
    :param reps: bootstrap replications
    :param seed: seed of the bootstrap (the same data give the same interval)
    """
    from rliable import library as rly

    with _numpy_seed(seed):
        if len(matrices) == 1:
            points, cis = rly.get_interval_estimates({"x": matrices[0]}, lambda x: np.array([func(x)]), reps=reps)
        else:
            points, cis = rly.get_interval_estimates({"x": tuple(matrices)}, lambda *xs: np.array([func(*xs)]), reps=reps)
    return float(points["x"][0]), float(cis["x"][0][0]), float(cis["x"][1][0])


def scale_per_task(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Min-max scale each task's column over the runs of both arms (a constant column maps to 0)."""
    scaled = scale_together([x] if y is None else [x, y])
    return scaled[0], None if y is None else scaled[1]


def scale_together(matrices: list[np.ndarray]) -> list[np.ndarray]:
    """Min-max scale each task's column over the runs of every matrix (a constant column maps to 0)."""
    stacked = np.concatenate(matrices)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return [(m - low) / span for m in matrices]


def verdict_of(low: float, high: float) -> str:
    """``holds`` when the CI lies above 0, ``contradicted`` when below, else ``not shown``."""
    if low > 0:
        return "holds"
    if high < 0:
        return "contradicted"
    return "not shown"


@dataclass
class ClaimResult:
    """A claim's measured outcome over the records of its suite."""

    claim: Claim
    runs: dict[str, int] = field(default_factory=dict)
    aggregates: dict[str, float] = field(default_factory=dict)
    effect: float | None = None
    ci: tuple[float, float] | None = None
    poi: float | None = None
    poi_ci: tuple[float, float] | None = None
    budget_fraction: float | None = None
    scaled: bool = False
    verdict: str = "not shown"
    reason: str = ""
    per_task: list[dict[str, Any]] = field(default_factory=list)


def evaluate_claim(
    claim: Claim, records: list[dict[str, Any]], last_k: int = DEFAULT_LAST_K, reps: int = DEFAULT_REPS, seed: int = 0
) -> ClaimResult:
    """Effect, CI, probability of improvement, budget share and verdict of one claim.

    :param claim: the claim
    :param records: the suite's run records (others are ignored)
    :param last_k: evaluations averaged into a run's score
    :param reps: bootstrap replications
    :param seed: bootstrap seed
    """
    if claim.controls:
        return _evaluate_controlled(claim, records, last_k, reps, seed)
    result = ClaimResult(claim, budget_fraction=_budget_fraction(claim, records))
    x, _ = score_matrix(records, claim, claim.better, last_k)
    y = None if claim.threshold is not None else score_matrix(records, claim, str(claim.baseline), last_k)[0]
    result.runs = {claim.better: len(x)} | ({} if y is None else {str(claim.baseline): len(y)})
    agg = aggregate_fn(claim.aggregate)
    sign = -1.0 if claim.lower_is_better else 1.0
    for t, task in enumerate(claim.tasks):
        row: dict[str, Any] = {"task": task, claim.better: float(np.mean(x[:, t])) if len(x) else None}
        if y is not None:
            row[str(claim.baseline)] = float(np.mean(y[:, t])) if len(y) else None
        result.per_task.append(row)
    if len(x) < 2 or (y is not None and len(y) < 2):
        result.reason = "fewer than 2 runs of an arm on every task"
        return result
    result.scaled = y is not None and len(claim.tasks) > 1 and claim.key not in COMMON_SCALE_METRICS
    xs, ys = scale_per_task(x, y) if result.scaled else (x, y)
    result.aggregates[claim.better] = float(agg(x)) if len(claim.tasks) == 1 else float(agg(xs))
    if ys is None:
        threshold = float(claim.threshold)  # type: ignore[arg-type]
        effect, low, high = interval_estimate(lambda a: sign * (agg(a) - threshold), x, reps=reps, seed=seed)
    else:
        from rliable import metrics

        result.aggregates[str(claim.baseline)] = float(agg(y)) if len(claim.tasks) == 1 else float(agg(ys))
        effect, low, high = interval_estimate(lambda a, b: sign * (agg(a) - agg(b)), xs, ys, reps=reps, seed=seed)
        win, lose = (ys, xs) if claim.lower_is_better else (xs, ys)
        poi, poi_low, poi_high = interval_estimate(metrics.probability_of_improvement, win, lose, reps=reps, seed=seed)
        result.poi, result.poi_ci = poi, (poi_low, poi_high)
    result.effect, result.ci = effect, (low, high)
    result.verdict = verdict_of(low, high)
    return result


def _budget_fraction(claim: Claim, records: list[dict[str, Any]]) -> float | None:
    """Our budget as a share of the paper's, averaged over the finished runs of the claim's arms and tasks."""
    budgets = [
        _budget(r, claim) / claim.paper_budget_of(r["task"])
        for r in records
        if r.get("algo") in claim.arms() and r.get("task") in claim.tasks and r.get("status") == "ok"
    ]
    return float(np.mean(budgets)) if budgets else None


def _evaluate_controlled(claim: Claim, records: list[dict[str, Any]], last_k: int, reps: int, seed: int) -> ClaimResult:
    """:func:`evaluate_claim` for a claim with controls: each arm's aggregate minus its control's, better minus baseline.

    The four arms' runs are resampled independently (stratified by task); no probability of improvement.
    """
    result = ClaimResult(claim, budget_fraction=_budget_fraction(claim, records))
    arms = claim.arms()  # better, baseline, better's control, baseline's control
    matrices = [score_matrix(records, claim, arm, last_k)[0] for arm in arms]
    result.runs = {arm: len(m) for arm, m in zip(arms, matrices, strict=True)}
    for t, task in enumerate(claim.tasks):
        row: dict[str, Any] = {"task": task}
        for arm, m, control in ((arms[0], matrices[0], matrices[2]), (arms[1], matrices[1], matrices[3])):
            row[arm] = float(np.mean(m[:, t]) - np.mean(control[:, t])) if len(m) and len(control) else None
        result.per_task.append(row)
    if any(len(m) < 2 for m in matrices):
        result.reason = "fewer than 2 runs of an arm or a control on every task"
        return result
    result.scaled = len(claim.tasks) > 1 and claim.key not in COMMON_SCALE_METRICS
    scaled = scale_together(matrices) if result.scaled else matrices
    agg = aggregate_fn(claim.aggregate)
    sign = -1.0 if claim.lower_is_better else 1.0
    result.aggregates = {arm: float(agg(m)) for arm, m in zip(arms, scaled, strict=True)}

    def net_effect(
        better: np.ndarray, baseline: np.ndarray, better_control: np.ndarray, baseline_control: np.ndarray
    ) -> float:
        return sign * ((agg(better) - agg(better_control)) - (agg(baseline) - agg(baseline_control)))

    effect, low, high = interval_estimate(net_effect, *scaled, reps=reps, seed=seed)
    result.effect, result.ci = effect, (low, high)
    result.verdict = verdict_of(low, high)
    return result


# ------------------------------------------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.{digits}f}"


def _ci(ci: tuple[float, float] | None) -> str:
    return "—" if ci is None else f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _describe(claim: Claim) -> str:
    if claim.summary == "auc":
        summary = ", area under the curve"
    elif claim.summary == "at":
        summary = f", at {claim.at:.0%} of the budget"
    elif claim.summary == "to_target":
        target = (
            ", ".join(f"{k} {v:g}" for k, v in claim.target.items()) if isinstance(claim.target, dict) else f"{claim.target:g}"
        )
        summary = f", at the first evaluation reaching {claim.target_metric} {target}"
    else:
        summary = ""
    direction = ", lower is better" if claim.lower_is_better else ""
    controlled = ", each arm minus its control" if claim.controls else ""
    return f"{claim.aggregate.upper()} of {claim.metric}{summary}{direction}{controlled}"


def _versus(claim: Claim) -> str:
    """The "better vs baseline" cell: each arm with its control, if any."""

    def arm(name: str) -> str:
        control = claim.control_of(name)
        return f"{name} − {control}" if control else name

    return f"{arm(claim.better)} vs {arm(str(claim.baseline))}"


def claims_section(results: list[ClaimResult], last_k: int = DEFAULT_LAST_K) -> list[str]:
    """Markdown lines of a suite's "Claims" section (one row per claim, then the per-task means)."""
    if not results:
        return []
    lines = [
        "## Claims",
        "",
        f"Each run's score is the mean of its last {last_k} evaluations (evaluation seeds disjoint from training). "
        "Effect: difference of the arms' aggregates, positive when it favours the claim; 95% CI from rliable's stratified "
        "bootstrap over runs; P(improvement) is rliable's probability of improvement (that a run of the better arm "
        "beats one of the baseline, in the claim's direction). Verdict: holds (CI above 0), "
        "contradicted (CI below 0), not shown (CI spans 0). Budget: ours as a share of the paper's.",
        "",
        "| claim | paper | better vs baseline | metric | runs | effect | 95% CI | P(improvement) | budget | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.claim
        runs = " / ".join(str(r.runs.get(arm, 0)) for arm in c.arms())
        poi = "—" if r.poi is None else f"{_fmt(r.poi, 2)} {_ci(r.poi_ci)}"
        budget = "—" if r.budget_fraction is None else f"{r.budget_fraction:.2%}"
        metric = _describe(c) + (" (min-max scaled per task)" if r.scaled else "")
        verdict = f"**{r.verdict}**" + (f" ({r.reason})" if r.reason else "")
        lines.append(
            f"| {c.id}: {c.claim} | {c.paper} | {_versus(c)} | {metric} | {runs} | {_fmt(r.effect)} | "
            f"{_ci(r.ci)} | {poi} | {budget} | {verdict} |"
        )
    lines += ["", "Per task, mean score of each arm:", "", "| claim | task | better | baseline |", "|---|---|---|---|"]
    for r in results:
        for row in r.per_task:
            base = "—" if r.claim.threshold is not None else _fmt(row.get(str(r.claim.baseline)))
            if r.claim.threshold is not None:
                base = f"{r.claim.threshold:g} (threshold)"
            lines.append(f"| {r.claim.id} | {row['task']} | {_fmt(row.get(r.claim.better))} | {base} |")
    notes = [f"- {r.claim.id}: {r.claim.note}" for r in results if r.claim.note]
    return [*lines, *([""] if notes else []), *notes, ""]


# ---------------------------------------------------------------------------------------- performance profile


def profile_scores(records: list[dict[str, Any]], last_k: int = DEFAULT_LAST_K) -> tuple[dict[str, np.ndarray], str]:
    """Per algorithm, the (runs x tasks) scores of a performance profile, and what the scores are.

    Normalised scores (divided by 100) where every run has one; else returns min-max scaled per
    task over every algorithm's runs (1 = the best run on the task, 0 = the worst).
    """
    ok = [r for r in records if r.get("status") == "ok"]
    normalised = bool(ok) and all(run_score(r, last_k=last_k, key="normalized") is not None for r in ok)
    key = "normalized" if normalised else "return_mean"
    scores: dict[tuple[str, str], dict[int, float]] = {}
    for r in ok:
        value = run_score(r, last_k=last_k, key=key)
        if value is not None:
            scores.setdefault((r["algo"], r["task"]), {})[int(r["seed"])] = value / 100.0 if normalised else value
    if not normalised:
        for task in {task for _, task in scores}:
            values = [v for (_, t), runs in scores.items() if t == task for v in runs.values()]
            low, high = min(values), max(values)
            for (algo, t), runs in scores.items():
                if t == task:
                    scores[(algo, t)] = {s: (v - low) / (high - low) if high > low else 0.0 for s, v in runs.items()}
    matrices: dict[str, np.ndarray] = {}
    for algo in dict.fromkeys(a for a, _ in scores):
        tasks = [t for a, t in scores if a == algo]
        seeds = sorted(set.intersection(*(set(scores[(algo, t)]) for t in tasks)))
        if seeds:
            matrices[algo] = np.array([[scores[(algo, t)][s] for t in tasks] for s in seeds])
    label = "normalised score / 100" if normalised else "return, min-max scaled per task over all runs"
    return matrices, label


def write_profile(
    out_dir: Path, records: list[dict[str, Any]], title: str, last_k: int = DEFAULT_LAST_K, reps: int = 2000
) -> Path | None:
    """Write ``profile.png``: rliable's performance profile (fraction of runs above tau, with 95% CIs) per algorithm.

    :return: the figure's path, or ``None`` when no run has a score
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import plot_utils

    from benchmarks.store import write_atomic

    matrices, label = profile_scores(records, last_k)
    if not matrices:
        return None
    high = max(1.0, max(float(m.max()) for m in matrices.values()))
    low = min(0.0, min(float(m.min()) for m in matrices.values()))
    taus = np.linspace(low, high, 81)
    with _numpy_seed(0):
        profiles, cis = rly.create_performance_profile(matrices, taus, reps=reps)
    styles = ["solid", "dashed", "dashdot", "dotted"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=150)
    plot_utils.plot_performance_profiles(
        profiles,
        taus,
        performance_profile_cis=cis,
        ax=ax,
        linestyles={algo: styles[i // 10 % len(styles)] for i, algo in enumerate(profiles)},
        color_palette="tab10",
        xlabel=rf"{label} ($\tau$)",
        ylabel=r"fraction of runs with score > $\tau$",
        labelsize="medium",
        ticklabelsize="medium",
    )
    ax.legend(fontsize="small", ncol=2)
    ax.set_title(f"{title}: performance profile (last {last_k} evaluations per run)", fontsize="medium")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    path = out_dir / "profile.png"
    write_atomic(path, buffer.getvalue())
    return path


# ------------------------------------------------------------------------------------------------ CLAIMS.md


def suite_claims(name: str) -> tuple[list[Claim], int]:
    """The claims a suite declares and its ``score_last_k``."""
    from benchmarks.suite import load_suite

    file, data = load_suite(name)
    claims = parse_claims(data.get("claims", []), data["tasks"], data["algorithms"], file.stem)
    return claims, data.get("score_last_k", DEFAULT_LAST_K)


def claims_markdown(rows: list[tuple[ClaimResult, str]], command: str, commit: str) -> str:
    """The text of ``CLAIMS.md``: one row per declared claim, with the folder its runs came from."""
    counts = {v: sum(r.verdict == v for r, _ in rows) for v in VERDICTS}
    lines = [
        "# Claims",
        "",
        f"- command: `{command}`",
        f"- commit: {commit}",
        f"- verdicts: {counts['holds']} holds, {counts['contradicted']} contradicted, {counts['not shown']} not shown "
        f"({sum(not any(r.runs.values()) for r, _ in rows)} of them not yet run)",
        "",
        "Every claim a suite declares, tested on that suite's finished runs. A run's score is the mean of its last k "
        "evaluations (the suite's `score_last_k`, default 3) on evaluation seeds disjoint from training. Effect: "
        "difference of the arms' IQMs (or means), positive when it favours the claim, with a 95% stratified-bootstrap "
        "CI (rliable); P(improvement) is rliable's probability of improvement (that a run of the better arm beats "
        "one of the baseline, in the claim's direction). **holds**: the CI lies above 0; "
        "**contradicted**: below 0; **not shown**: it spans 0, or an arm has fewer than 2 runs. Budget: ours as a share "
        "of the paper's; at a small share a verdict says what the method does early in training, not what the paper "
        "measured. Details and per-task means: each suite's `table.md`.",
        "",
        "| paper | claim | suite | better vs baseline | metric | runs | effect | 95% CI | P(improvement) | budget | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    measured = [(r, folder) for r, folder in rows if any(r.runs.values())]
    waiting = [(r, folder) for r, folder in rows if not any(r.runs.values())]
    for r, folder in sorted(measured, key=lambda item: (item[0].claim.paper, item[0].claim.suite, item[0].claim.id)):
        c = r.claim
        runs = " / ".join(str(r.runs.get(arm, 0)) for arm in c.arms())
        poi = "—" if r.poi is None else f"{_fmt(r.poi, 2)} {_ci(r.poi_ci)}"
        budget = "—" if r.budget_fraction is None else f"{r.budget_fraction:.2%}"
        verdict = f"**{r.verdict}**" + (f" ({r.reason})" if r.reason else "")
        lines.append(
            f"| {c.paper} | {c.id}: {c.claim} | [{c.suite}]({folder}/table.md) | {_versus(c)} | "
            f"{_describe(c)}{' (scaled per task)' if r.scaled else ''} | {runs} | {_fmt(r.effect)} | {_ci(r.ci)} | {poi} | "
            f"{budget} | {verdict} |"
        )
    if waiting:
        lines += ["", "Declared in suites that have no finished runs yet (verdict: not shown):", ""]
        lines += [f"- {r.claim.paper}, `{r.claim.suite}`: {r.claim.id}: {r.claim.claim}" for r, _ in waiting]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.store import git_commit, load_results, write_atomic
    from benchmarks.suite import SUITES_DIR, SuiteError, build_specs, suite_path

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.claims", description="Rebuild CLAIMS.md from every suite's runs."
    )
    parser.add_argument("--results", type=Path, default=Path("results"), help="the folder of suite folders (default: results)")
    parser.add_argument("--out", type=Path, help="the file to write (default: <results>/CLAIMS.md)")
    parser.add_argument("--suites", nargs="+", help="only these suites (default: every suite that declares claims)")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help=f"bootstrap replications (default: {DEFAULT_REPS})")
    args = parser.parse_args(argv)
    rows: list[tuple[ClaimResult, str]] = []
    try:
        names = args.suites or sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
        for name in names:
            claims, last_k = suite_claims(name)
            if not claims:
                continue
            stem = suite_path(name).stem
            folder = args.results / stem
            # the suite's current runs only: a record of settings the suite no longer has does not count
            records = load_results(folder, build_specs(name)) if (folder / "runs").is_dir() else []
            rows += [(evaluate_claim(c, records, last_k, args.reps), stem) for c in claims]
    except (SuiteError, ClaimError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.results / "CLAIMS.md"
    command = "python -m benchmarks.claims" + ("" if not argv else " " + " ".join(argv))
    write_atomic(out, claims_markdown(rows, command, git_commit()))
    print(f"{len(rows)} claims -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
