"""Kind ``snapshot``: an SB3 learner trained with SnapshotRL / S3RL resets (:mod:`rlkit.envs.snapshot`).

An algorithm ``"<learner>+<variant>"`` (e.g. ``"SAC+S3RL"``) has the plain learner
class as its target and a variant of :data:`rlkit.envs.snapshot.VARIANTS` after
the ``+``. A run first gets a teacher (the zip of ``teacher_path``, or a
``teacher_algo`` model trained for ``teacher_steps`` steps with seed 0 and cached on
disk by its settings), records its snapshots (cached likewise), then trains the
learner with :func:`benchmarks.worker.train_model`, each training env wrapped in
:class:`~rlkit.envs.snapshot.SnapshotReset` for the first ``snapshot_fraction`` of
the budget. The budget counts the student's steps only: the teacher's are not
counted, as in the paper.

Task keys (all optional):

- ``teacher_algo``: registered name of the teacher's algorithm (default: the learner, i.e. the entry's peer);
- ``teacher_steps``: the teacher's training steps (default: the run's budget);
- ``teacher_hyperparams``: its constructor kwargs, plus ``policy`` and ``normalize`` (frozen observation
  normalisation of the teacher, as the paper's PPO teacher); default: the learner's when ``teacher_algo``
  is the learner, else the class defaults;
- ``teacher_path``: a saved teacher to use instead of training one;
- ``teacher_episodes`` (10), ``snapshot_every`` (10): collection settings of the paper;
- ``snapshot_fraction``: share of the student's budget spent in the snapshot phase (the paper: 0.1).

The cache lives in ``$RLKIT_CACHE_DIR/teachers`` (default ``~/.cache/rlkit/teachers``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from benchmarks import algorithms
from benchmarks.checkpoint import Checkpointer
from benchmarks.suite import RunSpec
from benchmarks.worker import resolve_hyperparams, split_runner_keys, train_model
from rlkit.envs import make_env
from rlkit.envs.snapshot import VARIANTS, SnapshotReset, SnapshotSet, collect_snapshots, kmeans_1d, load_teacher

NEEDS_DATA = False
TASK_KEYS: dict[str, Any] = {
    "teacher_algo": str,
    "teacher_steps": int,
    "teacher_hyperparams": dict,
    "teacher_path": str,
    "teacher_episodes": int,
    "snapshot_every": int,
    "snapshot_fraction": float,
}
#: evaluation points of :func:`table`, as fractions of the budget
TABLE_FRACTIONS = (0.25, 0.5, 1.0)
TEACHER_SEED = 0


def cache_dir() -> Path:
    """Where teachers and their snapshots are cached."""
    return Path(os.environ.get("RLKIT_CACHE_DIR", Path.home() / ".cache" / "rlkit")) / "teachers"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across processes: two runs needing one teacher train it once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def variant_of(name: str) -> str:
    """The SnapshotRL variant of an algorithm name ``"<learner>+<variant>"``."""
    variant = name.partition("+")[2]
    if variant not in VARIANTS:
        raise ValueError(f"Algorithm {name!r}: expected '<learner>+<variant>' with a variant of {', '.join(VARIANTS)}")
    return variant


def _teacher_settings(spec: RunSpec) -> tuple[str, int, dict[str, Any]]:
    algo = spec.options.get("teacher_algo", spec.entry.peer)
    steps = spec.options.get("teacher_steps", spec.budget)
    default = spec.hyperparams if algo == spec.entry.peer else {}
    hyperparams = dict(spec.options.get("teacher_hyperparams", default))
    if hyperparams.get("n_envs", 1) != 1:
        raise ValueError("teacher_hyperparams: the teacher trains on one env (n_envs 1)")
    hyperparams.pop("n_envs", None)
    return algo, steps, hyperparams


def get_teacher(spec: RunSpec) -> tuple[BaseAlgorithm, VecNormalize | None, Path]:
    """The run's teacher, its frozen observation normalisation (or ``None``) and its cache folder."""
    algo, steps, hyperparams = _teacher_settings(spec)
    algo_cls = algorithms.get(algo).load()
    if "teacher_path" in spec.options:
        path = Path(spec.options["teacher_path"]).expanduser().resolve()
        folder = cache_dir() / f"path-{_digest([str(path), path.stat().st_mtime_ns])}"
        folder.mkdir(parents=True, exist_ok=True)
        return load_teacher(path, algo_cls, device=spec.device), None, folder
    settings = {"env": spec.env, "algo": algorithms.get(algo).target, "steps": steps, "hyperparams": hyperparams}
    folder = cache_dir() / f"{spec.env.replace('/', '-')}-{algo}-{_digest(settings)}"
    with _lock(folder):
        normalize = hyperparams.get("normalize", False)
        if not (folder / "teacher.zip").is_file():
            kwargs = resolve_hyperparams({k: v for k, v in hyperparams.items() if k not in ("policy", "normalize")})
            env: Any = DummyVecEnv([lambda: Monitor(make_env(spec.env))])
            if normalize:
                env = VecNormalize(env, **(normalize if isinstance(normalize, dict) else {}))
            env.seed(TEACHER_SEED)
            model = algo_cls(hyperparams.get("policy", "MlpPolicy"), env, seed=TEACHER_SEED, device=spec.device, **kwargs)
            model.learn(steps)
            if normalize:
                env.save(str(folder / "vecnormalize.pkl"))
            model.save(folder / "teacher.zip")
            (folder / "settings.json").write_text(json.dumps(settings, indent=1, default=str))
        model = algo_cls.load(folder / "teacher.zip", device=spec.device)
        obs_rms = None
        if normalize:
            obs_rms = VecNormalize.load(str(folder / "vecnormalize.pkl"), DummyVecEnv([lambda: make_env(spec.env)]))
            obs_rms.training = False
    return model, obs_rms, folder


def get_snapshots(spec: RunSpec) -> tuple[SnapshotSet, dict[str, Any]]:
    """The snapshots of the run's teacher (collected once per teacher and settings) and a summary of them."""
    teacher, obs_rms, folder = get_teacher(spec)
    n_episodes = spec.options.get("teacher_episodes", 10)
    every = spec.options.get("snapshot_every", 10)
    path = folder / f"snapshots-{_digest({'episodes': n_episodes, 'every': every, 'seed': TEACHER_SEED})}.npz"
    with _lock(folder):
        if not path.is_file():
            normalizer = obs_rms.normalize_obs if obs_rms is not None else None
            collect_snapshots(teacher, spec.env, n_episodes, every, seed=TEACHER_SEED, obs_normalizer=normalizer).save(path)
    snapshots = SnapshotSet.load(path)
    returns = snapshots.meta["teacher_returns"]
    summary = {
        "algo": _teacher_settings(spec)[0],
        "steps": None if "teacher_path" in spec.options else _teacher_settings(spec)[1],
        "path": spec.options.get("teacher_path"),
        "return_mean": float(np.mean(returns)),  # of the collection episodes
        "return_std": float(np.std(returns)),
        "n_snapshots": len(snapshots),
    }
    return snapshots, summary


def _steps_done(spec: RunSpec) -> int:
    """Env steps a resumed run already took (0 for a fresh run)."""
    if not (spec.checkpoint_dir and spec.checkpoint_every > 0):
        return 0
    checkpointer = Checkpointer(Path(spec.checkpoint_dir), spec.checkpoint_every, spec.config_hash(), extra_state=dict)
    latest = checkpointer.latest()
    return 0 if latest is None else int(json.loads((latest / "state.json").read_text())["step"])


def train(spec: RunSpec) -> dict[str, Any]:
    """Train the learner from snapshot resets; the outcome of :func:`~benchmarks.worker.train_model` plus the teacher's."""
    settings = VARIANTS[variant_of(spec.algo)]
    snapshots, teacher = get_snapshots(spec)
    n_envs = split_runner_keys(spec)[1].get("n_envs", 1)
    snapshot_steps = int(spec.options.get("snapshot_fraction", 0.1) * spec.budget) // n_envs
    steps_done = _steps_done(spec) // n_envs

    def wrap(env: gym.Env) -> gym.Env:
        return SnapshotReset(env, snapshots, snapshot_steps, steps_done=steps_done, **settings)

    outcome = train_model(spec, wrap_train_env=wrap)
    n_clusters = settings["n_clusters"]
    labels = kmeans_1d(snapshots.values, n_clusters) if n_clusters else np.zeros(len(snapshots), dtype=np.int64)
    outcome["teacher"] = teacher
    outcome["snapshot"] = {
        "variant": variant_of(spec.algo),
        **settings,
        "snapshot_steps": snapshot_steps * n_envs,
        "cluster_sizes": np.bincount(labels).tolist(),
    }
    return outcome


def _return_at(record: dict[str, Any], fraction: float) -> float:
    target = fraction * record["budget"]
    return float(min(record["curve"], key=lambda point: abs(point["step"] - target))["return_mean"])


def table(records: list[dict[str, Any]]) -> list[str]:
    """Return at 25%, 50% and 100% of the budget, mean ± std over seeds, beside the plain learner when present.

    The paper's claim is better sample efficiency early; the teacher's steps are not in the budget.

    :param records: result records; those of this kind and of their plain learners (the name before
        the ``+``) are tabulated, any others ignored
    """
    learners = {r["algo"].partition("+")[0] for r in records if r.get("kind") == "snapshot"}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("status") == "ok" and (record.get("kind") == "snapshot" or record["algo"] in learners):
            groups[(record["task"], record["algo"])].append(record)
    order = sorted(groups, key=lambda key: (key[0], key[1].partition("+")[0], "+" in key[1], key[1]))
    heads = " | ".join(f"return @{int(100 * f)}%" for f in TABLE_FRACTIONS)
    lines = [
        "Return of the deterministic policy at 25%, 50% and 100% of the student's budget (mean ± std over seeds); "
        "teacher steps are not counted in the budget.",
        "",
        f"| task | algorithm | seeds | budget | snapshot phase | teacher return (collection) | {heads} |",
        "|---|---|---|---|---|---|" + "---|" * len(TABLE_FRACTIONS),
    ]
    for task, algo in order:
        group = groups[(task, algo)]
        cells = []
        for fraction in TABLE_FRACTIONS:
            values = np.array([_return_at(r, fraction) for r in group])
            cells.append(f"{values.mean():.1f} ± {values.std():.1f}")
        teacher = group[0].get("teacher")
        snapshot = group[0].get("snapshot")
        teacher_cell = f"{teacher['return_mean']:.1f} ({teacher['algo']})" if teacher else "—"
        phase = f"{snapshot['snapshot_steps']} steps" if snapshot else "—"
        lines.append(
            f"| {task} | {algo} | {len(group)} | {group[0]['budget']} | {phase} | {teacher_cell} | " + " | ".join(cells) + " |"
        )
    return lines
