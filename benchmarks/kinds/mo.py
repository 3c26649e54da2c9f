"""Kind ``mo``: multi-objective algorithms that return a Pareto archive (C-MORL and its baseline).

Task keys (besides the common ones):

- ``ref_point`` (list, required for hypervolume): the reference point of every objective;
- ``nadir`` (list, optional): the nadir of the task's Pareto front (the component-wise minimum
  of its points), the second point the hypervolume is reported at. Where the front is known in
  closed form (the toy tasks' ``pareto_front()``) it is that front's nadir; without it the
  table takes the data-driven nadir of the task (:func:`data_nadir`): the component-wise
  minimum over every point of every run's final front in the table;
- ``eu_step`` (float, default 0.01): step of the simplex weight grid of the expected utility;
- ``eval_gamma`` (float, default 1.0): discount of the evaluated returns (1: undiscounted); it is
  also the algorithm's ``eval_gamma`` unless its hyperparameters set one;
- ``max_episode_steps`` (int): episode cap of the task's env (C-MORL: 500 on MuJoCo).

A run trains with ``learn(budget)``, then evaluates every archive member on
``max(eval_episodes, 5)`` episodes whose seeds (:func:`final_eval_seed`: ``20000 + 1000 * seed``
onwards) are disjoint from every seed of the run's training envs (below 10000) and of its
in-training evaluations, which built and selected the archive (``10000 + seed`` onwards). It
keeps the non-dominated vectors as the front and computes hypervolume (HV) at ``ref_point``
and at ``nadir``, expected utility (EU) and sparsity (SP). The curve holds the archive's HV
after each archive update (from the algorithm's own evaluations); its last point, the final
one, is the HV of the re-evaluated front. ``return_mean`` is the **hypervolume** at
``ref_point``, so the common table shows it; :func:`table` adds both HVs, EU, SP, the number of
front points, the discount and the step accounting of each algorithm. Each finished run
redraws ``fronts/<task>.png`` in the suite's results folder from every finished run of that
task.
"""

from __future__ import annotations

import io
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.store import write_atomic
from benchmarks.suite import RunSpec
from benchmarks.worker import split_runner_keys
from rlkit.cmorl import evaluate_returns
from rlkit.common.mo_metrics import expected_utility, hypervolume, pareto_mask, sparsity
from rlkit.envs import make_env

NEEDS_DATA = False
REQUIRED_TASK_KEYS = ("ref_point",)
EXCLUSIVE = True
TASK_KEYS: dict[str, Any] = {"ref_point": list, "nadir": list, "eu_step": float, "eval_gamma": float, "max_episode_steps": int}
#: the final front of the run with seed ``s`` is evaluated on seeds ``FINAL_SEED_OFFSET + FINAL_SEED_STRIDE * s`` onwards
FINAL_SEED_OFFSET, FINAL_SEED_STRIDE = 20_000, 1_000
#: fewest episodes per point of the final front
MIN_FINAL_EPISODES = 5


def final_eval_seed(seed: int) -> int:
    """Seed of the first final-front episode of the run with seed ``seed``.

    Training envs use seeds below :data:`benchmarks.suite.EVAL_SEED_OFFSET` and in-training
    evaluations ``eval_seed(seed)`` onwards; this range starts above both, and runs' ranges
    do not overlap while they use at most ``FINAL_SEED_STRIDE`` episodes.
    """
    return FINAL_SEED_OFFSET + FINAL_SEED_STRIDE * seed


def final_episodes(eval_episodes: int) -> int:
    """Episodes per point of the final front: the suite's ``eval_episodes``, at least :data:`MIN_FINAL_EPISODES`."""
    n = max(int(eval_episodes), MIN_FINAL_EPISODES)
    if n > FINAL_SEED_STRIDE:
        raise ValueError(
            f"eval_episodes must be at most {FINAL_SEED_STRIDE} for a mo run (its final seeds would reach the next "
            f"run's), got {n}"
        )
    return n


def front_metrics(
    points: np.ndarray, ref_point: list[float] | None, eu_step: float, nadir: list[float] | None = None
) -> dict[str, Any]:
    """HV (at ``ref_point`` and at ``nadir``), EU and SP of the non-dominated subset of ``points``, and that front."""
    front = points[pareto_mask(points)] if len(points) else points
    return {
        "hypervolume": hypervolume(front, ref_point) if ref_point is not None else float("nan"),
        "hypervolume_nadir": hypervolume(front, nadir) if nadir is not None else float("nan"),
        "expected_utility": expected_utility(front, step=eu_step),
        "sparsity": sparsity(front),
        "front": front.tolist(),
    }


def data_nadir(fronts: list[np.ndarray]) -> np.ndarray | None:
    """The data-driven nadir of a task: the component-wise minimum over every point of every run's final front.

    Each objective's value is the worst that any run's front reaches on it, so every front lies
    above it (fronts of one point included) and the hypervolume no longer counts the region
    below all runs that a far reference point adds to every one of them.
    """
    points = [np.asarray(f, dtype=np.float64) for f in fronts if len(f)]
    if not points:
        return None
    return np.concatenate([p.reshape(len(p), -1) for p in points]).min(axis=0)


def train(spec: RunSpec) -> dict[str, Any]:
    """Train one multi-objective run and evaluate its archive (see the module docstring)."""
    options = spec.options
    ref_point, nadir, eu_step = options.get("ref_point"), options.get("nadir"), options.get("eu_step", 0.01)
    eval_gamma = options.get("eval_gamma", 1.0)
    env_kwargs = {"max_episode_steps": options["max_episode_steps"]} if "max_episode_steps" in options else {}
    kwargs, runner = split_runner_keys(spec)
    kwargs.update({key: runner[key] for key in ("n_envs", "normalize") if key in runner})
    kwargs.setdefault("eval_gamma", eval_gamma)
    kwargs.setdefault("ref_point", ref_point)
    n_final = final_episodes(spec.eval_episodes)
    model = spec.entry.load()(
        runner.get("policy", "MlpPolicy"), make_env(spec.env, **env_kwargs), seed=spec.seed, device=spec.device, **kwargs
    )
    started = time.perf_counter()
    archive = model.learn(spec.budget)
    train_time = time.perf_counter() - started

    started = time.perf_counter()
    eval_env = make_env(spec.env, **env_kwargs)
    points = np.array(
        [
            evaluate_returns(model.member_predictor(i), eval_env, n_final, eval_gamma, seed=final_eval_seed(spec.seed))
            for i in range(len(archive))
        ]
    ).reshape(len(archive), -1)
    metrics = front_metrics(points, ref_point, eu_step, nadir)
    eval_time = time.perf_counter() - started
    curve = [
        {"step": int(h["step"]), "return_mean": h["hypervolume"], "return_std": 0.0, "archive_size": h["archive_size"]}
        for h in model.history
        if h["hypervolume"] is not None
    ]
    final = {
        "step": int(model.num_timesteps),
        "return_mean": metrics["hypervolume"],
        "return_std": 0.0,
        "cost_mean": 0.0,
        "success_rate": float("nan"),
        "hypervolume": metrics["hypervolume"],
        "hypervolume_nadir": metrics["hypervolume_nadir"],
        "expected_utility": metrics["expected_utility"],
        "sparsity": metrics["sparsity"],
        "front_size": len(metrics["front"]),
    }
    curve.append(final)
    outcome = {
        "device": str(model.device),
        "curve": curve,
        "final": final,
        "best": max(curve, key=lambda p: p["return_mean"]),
        "front": metrics["front"],
        "archive_returns": points.tolist(),
        "final_episodes": n_final,
        "final_eval_seed": final_eval_seed(spec.seed),
        "step_accounting": getattr(model, "step_accounting", "total"),
        "env_steps": int(getattr(model, "env_steps", model.num_timesteps)),
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "env_steps_per_s": getattr(model, "env_steps", model.num_timesteps) / max(train_time, 1e-9),
    }
    if spec.checkpoint_dir:
        out_dir = Path(spec.checkpoint_dir).parent.parent
        write_front_plot(
            out_dir, spec.task, [*_finished_records(out_dir, spec), {"algo": spec.algo, "seed": spec.seed, **outcome}]
        )
    return outcome


def _finished_records(out_dir: Path, spec: RunSpec) -> list[dict[str, Any]]:
    """The other finished ``mo`` runs of the same task in ``out_dir/runs``."""
    records = []
    for path in sorted((out_dir / "runs").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        same_run = record.get("algo") == spec.algo and record.get("seed") == spec.seed
        if record.get("status") == "ok" and record.get("kind") == "mo" and record.get("task") == spec.task and not same_run:
            records.append(record)
    return records


def write_front_plot(out_dir: Path, task: str, records: list[dict[str, Any]]) -> Path:
    """Write ``out_dir/fronts/<task>.png``: objective 1 against objective 2 of every run's front.

    One colour per algorithm, one line style and marker per seed, each (algorithm, seed) in the legend.
    """
    from benchmarks.plots import DPI, LINE_STYLES

    fig, ax = plt.subplots(figsize=(6, 4))
    algos = sorted({r["algo"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    for record in sorted(records, key=lambda r: (r["algo"], r["seed"])):
        front = np.array(record["front"]).reshape(-1, 2) if record["front"] else np.zeros((0, 2))
        front = front[np.argsort(front[:, 0])]
        k = seeds.index(record["seed"])
        ax.plot(
            front[:, 0],
            front[:, 1],
            marker="osD^v"[k % 5],
            markersize=4,
            linewidth=0.9,
            alpha=0.85,
            linestyle=LINE_STYLES[k % len(LINE_STYLES)],
            color=plt.get_cmap("tab10")(algos.index(record["algo"]) % 10),
            label=f"{record['algo']}, seed {record['seed']}",
        )
    ax.set_title(f"{task}: Pareto front of each run", fontsize=9)
    ax.set_xlabel("objective 1: episode return of reward[0]")
    ax.set_ylabel("objective 2: episode return of reward[1]")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    path = out_dir / "fronts" / f"{task.replace('/', '-')}.png"
    write_atomic(path, buffer.getvalue())
    return path


def _pm(values: list[float], digits: int) -> str:
    values = [v for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
    if not values:
        return "—"
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def _nadirs(records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray | None, bool]]:
    """Per task: the nadir the HV is reported at, and whether the task declares it (else the data-driven one)."""
    fronts: dict[str, list[np.ndarray]] = defaultdict(list)
    declared: dict[str, np.ndarray] = {}
    for record in records:
        fronts[record["task"]].append(np.asarray(record.get("front") or [], dtype=np.float64))
        nadir = (record.get("options") or {}).get("nadir")
        if nadir is not None:
            declared[record["task"]] = np.asarray(nadir, dtype=np.float64)
    return {task: (declared[task], True) if task in declared else (data_nadir(f), False) for task, f in fronts.items()}


def _fmt_point(point: np.ndarray | None) -> str:
    return "—" if point is None else "(" + ", ".join(f"{v:.4g}" for v in point) + ")"


def table(records: list[dict[str, Any]]) -> list[str]:
    """HV at the reference point and at the nadir, EU and SP (mean ± std over seeds) and front sizes per task and algorithm."""
    ok = [r for r in records if r.get("kind") == "mo" and r.get("status") == "ok"]
    nadirs = _nadirs(ok)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in ok:
        groups[(record["task"], record["algo"])].append(record)
    episodes = sorted({r.get("final_episodes", r.get("eval_episodes")) for r in ok}, key=str)
    lines = [
        "Final front of each run: every archive member re-evaluated by its deterministic policy on "
        f"{', '.join(map(str, episodes)) or '—'} episodes per point (records without `final_episodes` predate the "
        "protocol and reused the seeds of the in-training evaluations; newer runs use seeds 20000 + 1000 × seed "
        "onwards, disjoint from training and selection), non-dominated points kept. Returns are discounted by the "
        "task's `eval_gamma` (γ below; 1 is undiscounted), so every HV, EU and SP is on that scale. HV@ref: "
        "hypervolume above the task's `ref_point` (the `return` column above shows it); HV@nadir: hypervolume "
        "above the nadir of the task's Pareto front — the task's `nadir` (the closed-form front's for toy tasks) or, "
        "marked *data*, the component-wise minimum over all points of all runs' final fronts below; higher is better "
        "for both. EU: expected utility over a weight grid of step `eu_step` (higher "
        "is better); SP: sparsity (lower is better, 0 for a single point). Steps: `total` counts the env steps of all "
        "envs, `per_process` those of one env process (the released C-MORL code's unit). Fronts are plotted in "
        "`fronts/`.",
        "",
        "| task | γ | ref point | nadir | algorithm | steps | seeds | HV@ref | HV@nadir | EU | SP | front points |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, algo), runs in sorted(groups.items()):
        options = runs[0].get("options") or {}
        nadir, is_declared = nadirs[task]
        hv_nadir = [
            hypervolume(np.asarray(r.get("front") or [], dtype=np.float64), nadir) if nadir is not None else float("nan")
            for r in runs
        ]
        accounting = sorted(
            {r.get("step_accounting") or (r.get("hyperparams") or {}).get("step_accounting", "total") for r in runs}
        )
        finals = [r["final"] for r in runs]
        lines.append(
            f"| {task} | {options.get('eval_gamma', 1.0):g} | {_fmt_point(options.get('ref_point'))} | "
            f"{_fmt_point(nadir)}{'' if is_declared or nadir is None else ' *data*'} | {algo} | {', '.join(accounting)} | "
            f"{len(runs)} | {_pm([f['hypervolume'] for f in finals], 2)} | {_pm(hv_nadir, 2)} | "
            f"{_pm([f['expected_utility'] for f in finals], 2)} | {_pm([f['sparsity'] for f in finals], 2)} | "
            f"{_pm([f['front_size'] for f in finals], 1)} |"
        )
    return lines
