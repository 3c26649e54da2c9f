"""Kind ``mo``: multi-objective algorithms that return a Pareto archive (C-MORL and its baseline).

Task keys (besides the common ones):

- ``ref_point`` (list, required for hypervolume): the reference point of every objective;
- ``eu_step`` (float, default 0.01): step of the simplex weight grid of the expected utility;
- ``eval_gamma`` (float, default 1.0): discount of the evaluated returns (1: undiscounted); it is
  also the algorithm's ``eval_gamma`` unless its hyperparameters set one;
- ``max_episode_steps`` (int): episode cap of the task's env (C-MORL: 500 on MuJoCo).

A run trains with ``learn(budget)``, then evaluates every archive member on ``eval_episodes``
fresh episodes, keeps the non-dominated vectors as the front and computes hypervolume (HV),
expected utility (EU) and sparsity (SP). The curve holds the archive's HV after each archive
update (from the algorithm's own evaluations); its last point, the final one, is the HV of
the re-evaluated front. ``return_mean`` is the **hypervolume**, so the common table shows HV;
:func:`table` adds HV / EU / SP and the number of front points. Each finished run redraws
``fronts/<task>.png`` in the suite's results folder from every finished run of that task.
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
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.store import write_atomic  # noqa: E402
from benchmarks.suite import RunSpec, eval_seed  # noqa: E402
from benchmarks.worker import split_runner_keys  # noqa: E402
from rlkit.cmorl import evaluate_returns  # noqa: E402
from rlkit.common.mo_metrics import expected_utility, hypervolume, pareto_mask, sparsity  # noqa: E402
from rlkit.envs import make_env  # noqa: E402

NEEDS_DATA = False
REQUIRED_TASK_KEYS = ("ref_point",)
EXCLUSIVE = True
TASK_KEYS: dict[str, Any] = {"ref_point": list, "eu_step": float, "eval_gamma": float, "max_episode_steps": int}


def front_metrics(points: np.ndarray, ref_point: list[float] | None, eu_step: float) -> dict[str, Any]:
    """HV, EU and SP of the non-dominated subset of ``points``, and that front."""
    front = points[pareto_mask(points)] if len(points) else points
    return {
        "hypervolume": hypervolume(front, ref_point) if ref_point is not None else float("nan"),
        "expected_utility": expected_utility(front, step=eu_step),
        "sparsity": sparsity(front),
        "front": front.tolist(),
    }


def train(spec: RunSpec) -> dict[str, Any]:
    """Train one multi-objective run and evaluate its archive (see the module docstring)."""
    options = spec.options
    ref_point, eu_step = options.get("ref_point"), options.get("eu_step", 0.01)
    eval_gamma = options.get("eval_gamma", 1.0)
    env_kwargs = {"max_episode_steps": options["max_episode_steps"]} if "max_episode_steps" in options else {}
    kwargs, runner = split_runner_keys(spec)
    kwargs.setdefault("eval_gamma", eval_gamma)
    kwargs.setdefault("ref_point", ref_point)
    model = spec.entry.load()(runner.get("policy", "MlpPolicy"), make_env(spec.env, **env_kwargs), seed=spec.seed, device=spec.device, **kwargs)
    started = time.perf_counter()
    archive = model.learn(spec.budget)
    train_time = time.perf_counter() - started

    started = time.perf_counter()
    eval_env = make_env(spec.env, **env_kwargs)
    points = np.array(
        [
            evaluate_returns(model.member_predictor(i), eval_env, spec.eval_episodes, eval_gamma, seed=eval_seed(spec.seed))
            for i in range(len(archive))
        ]
    ).reshape(len(archive), -1)
    metrics = front_metrics(points, ref_point, eu_step)
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
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "env_steps_per_s": model.num_timesteps / max(train_time, 1e-9),
    }
    if spec.checkpoint_dir:
        out_dir = Path(spec.checkpoint_dir).parent.parent
        write_front_plot(out_dir, spec.task, [*_finished_records(out_dir, spec), {"algo": spec.algo, "seed": spec.seed, **outcome}])
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
    """Write ``out_dir/fronts/<task>.png``: objective 1 against objective 2 of every run's front, one colour per algorithm."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    colours: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: (r["algo"], r["seed"])):
        front = np.array(record["front"]).reshape(-1, 2) if record["front"] else np.zeros((0, 2))
        front = front[np.argsort(front[:, 0])]
        label = None if record["algo"] in colours else record["algo"]
        line = ax.plot(front[:, 0], front[:, 1], marker="o", markersize=3, linewidth=0.8, alpha=0.8, label=label, color=colours.get(record["algo"]))
        colours.setdefault(record["algo"], line[0].get_color())
    ax.set_title(f"{task}: Pareto fronts (one line per seed)")
    ax.set_xlabel("objective 1 return")
    ax.set_ylabel("objective 2 return")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    path = out_dir / "fronts" / f"{task.replace('/', '-')}.png"
    write_atomic(path, buffer.getvalue())
    return path


def _pm(values: list[float], digits: int) -> str:
    return f"{np.mean(values):.{digits}f} ± {np.std(values):.{digits}f}"


def table(records: list[dict[str, Any]]) -> list[str]:
    """HV, EU and SP (mean ± std over seeds) and front sizes per task and algorithm."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("kind") == "mo" and record.get("status") == "ok":
            groups[(record["task"], record["algo"])].append(record["final"])
    lines = [
        "Final front of each run: its archive re-evaluated on fresh episodes (returns discounted by the task's "
        "`eval_gamma`, default 1), non-dominated points kept. HV: hypervolume above the task's `ref_point` (higher is "
        "better; the `return` column above shows it); EU: expected utility over a weight grid (higher is better); "
        "SP: sparsity (lower is better, 0 for a single point). Fronts are plotted in `fronts/`.",
        "",
        "| task | algorithm | seeds | HV | EU | SP | front points |",
        "|---|---|---|---|---|---|---|",
    ]
    for (task, algo), finals in sorted(groups.items()):
        lines.append(
            f"| {task} | {algo} | {len(finals)} | {_pm([f['hypervolume'] for f in finals], 1)} | "
            f"{_pm([f['expected_utility'] for f in finals], 2)} | {_pm([f['sparsity'] for f in finals], 2)} | "
            f"{_pm([f['front_size'] for f in finals], 1)} |"
        )
    return lines
