"""Execute one :class:`~benchmarks.suite.RunSpec`: build, train with periodic evaluation, report.

:func:`run_one` is a plain function of picklable input, so the same code runs
in-process, in a local process pool or as a Ray task.
"""

from __future__ import annotations

import copy
import platform
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable

import gymnasium as gym

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import get_linear_fn
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize, sync_envs_normalization

from benchmarks.algorithms import BUILTIN_KINDS, kind_module
from benchmarks.checkpoint import Checkpointer
from benchmarks.suite import RunSpec, eval_seed
from rlkit.common.evaluation import evaluate, normalized_score
from rlkit.common.offline import OfflineAlgorithm
from rlkit.data.generate import generate
from rlkit.envs import make_env

ACTIVATIONS = {"tanh": th.nn.Tanh, "relu": th.nn.ReLU, "elu": th.nn.ELU, "leaky_relu": th.nn.LeakyReLU, "gelu": th.nn.GELU}


def resolve_hyperparams(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Turn YAML values into constructor values (activation names, ``lin_<x>`` schedules, tuples)."""
    kwargs = copy.deepcopy(hyperparams)
    policy_kwargs = kwargs.get("policy_kwargs") or {}
    if isinstance(policy_kwargs.get("activation_fn"), str):
        name = policy_kwargs["activation_fn"]
        if name not in ACTIVATIONS:
            raise ValueError(f"policy_kwargs.activation_fn: unknown {name!r}; known: {', '.join(ACTIVATIONS)}")
        policy_kwargs["activation_fn"] = ACTIVATIONS[name]
    for key in ("learning_rate", "clip_range"):
        value = kwargs.get(key)
        if isinstance(value, str) and value.startswith("lin_"):
            kwargs[key] = get_linear_fn(float(value[4:]), 0.0, 1.0)
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return kwargs


class EvalRecorder(BaseCallback):
    """Evaluate every ``eval_freq`` steps (and at the end) and keep the learning curve.

    Evaluation time is kept apart so that throughput counts training only.

    :param eval_env: a separate evaluation env (a ``VecNormalize`` is synced with the training env's)
    :param eval_freq: evaluate every this many calls to ``on_step`` times the number of envs
    :param n_episodes: episodes per evaluation
    :param seed: seed of the first evaluation episode (the same episodes at every evaluation)
    :param ref_scores: ``(ref_min, ref_max)`` for the normalised score, or ``None``
    """

    def __init__(
        self,
        eval_env: Any,
        eval_freq: int,
        n_episodes: int,
        seed: int,
        ref_scores: tuple[float, float] | None,
    ) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.eval_seed = seed
        self.ref_scores = ref_scores
        self.curve: list[dict[str, float]] = []
        self.eval_time = 0.0
        self.last_eval_step = 0

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last_eval_step >= self.eval_freq:
            self.evaluate_now()
        return True

    def _on_training_end(self) -> None:
        if self.last_eval_step != self.num_timesteps:
            self.evaluate_now()

    def evaluate_now(self) -> None:
        """Evaluate the current policy and append a point to the curve."""
        start = time.perf_counter()
        if isinstance(self.eval_env, VecNormalize) and self.model.get_vec_normalize_env() is not None:
            sync_envs_normalization(self.model.get_env(), self.eval_env)
        result = evaluate(self.model, self.eval_env, self.n_episodes, deterministic=True, seed=self.eval_seed)
        point = {
            "step": int(self.num_timesteps),
            "return_mean": result.return_mean,
            "return_std": result.return_std,
            "cost_mean": result.cost_mean,
            "length_mean": result.length_mean,
            "success_rate": result.success_rate,
        }
        # algorithms may report progress measures of their own (e.g. feedback queries used so far)
        point.update(getattr(self.model, "progress_info", dict)())
        if self.ref_scores is not None:
            point["normalized"] = float(normalized_score(result.return_mean, *self.ref_scores))
        self.curve.append(point)
        self.logger.record("eval/mean_reward", result.return_mean)
        self.last_eval_step = self.num_timesteps
        self.eval_time += time.perf_counter() - start


class TrainLogRecorder(BaseCallback):
    """Keeps the update's own diagnostics (the logger's ``train/*`` scalars: MDPO's KL and step size, losses, ...).

    SB3 records them in ``train()`` and dumps them after the next rollout, so at the start of each rollout (and
    at the end of training) the logger holds the last update's values. One entry per update, thinned to at most
    one every ``every`` steps so that off-policy runs (an update every env step) stay small.

    :param every: the least number of steps between two entries
    """

    def __init__(self, every: int = 1):
        super().__init__()
        self.every = max(int(every), 1)
        self.log: list[dict[str, float]] = []
        self._last_step: int | None = None

    def _capture(self) -> None:
        step = self.model.num_timesteps
        if self._last_step is not None and step - self._last_step < self.every:
            return
        values = {
            key.removeprefix("train/"): float(value)
            for key, value in self.model.logger.name_to_value.items()
            if key.startswith("train/") and isinstance(value, (int, float, np.floating, np.integer))
        }
        if values:
            self.log.append({"step": int(step), **values})
            self._last_step = step

    def _on_rollout_start(self) -> None:
        self._capture()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self._last_step = None  # the last update always gets an entry
        self._capture()


class ProgressReporter(BaseCallback):
    """Send ``(run_id, steps, budget, last evaluation return)`` to the driver's progress bars.

    At most one message every ``interval`` seconds, and one at the end; a driver that went
    away never stops the run.

    :param send: puts one message on the driver's queue
    :param run_id: the run's identifier
    :param budget: the run's total steps (env steps online, gradient steps offline)
    :param recorder: the run's evaluations (the last return is shown)
    :param interval: seconds between messages
    """

    def __init__(self, send: Callable[[tuple], Any], run_id: str, budget: int, recorder: EvalRecorder, interval: float = 0.5):
        super().__init__()
        self.send, self.run_id, self.budget, self.recorder, self.interval = send, run_id, budget, recorder, interval
        self.last_sent = -float("inf")

    def _on_step(self) -> bool:
        if time.monotonic() - self.last_sent >= self.interval:
            self.report()
        return True

    def _on_training_end(self) -> None:
        self.report()

    def report(self) -> None:
        """Send the current progress now."""
        self.last_sent = time.monotonic()
        last = self.recorder.curve[-1]["return_mean"] if self.recorder.curve else None
        try:
            self.send((self.run_id, int(self.num_timesteps), self.budget, last))
        except Exception:  # progress is best effort: a closed queue must not fail the run
            self.send = lambda message: None


#: where :class:`ProgressReporter` sends the progress of the run this process executes (set by :func:`run_one`)
_progress_queue: Any = None


def save_model(model: BaseAlgorithm, directory: Path) -> Path:
    """Save a trained model as ``directory/model.zip``, with ``vecnormalize.pkl`` where it normalises its env.

    :param model: the trained model
    :param directory: the run's model folder
    :return: the path of the zip
    """
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.zip")
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(directory / "vecnormalize.pkl"))
    return directory / "model.zip"


def dataset_id(spec: RunSpec, notice_after: float = 10.0) -> str | None:
    """The dataset of an offline run: its ``dataset``, or the id that ``generate`` writes (generated once, locked).

    Generating a dataset can train behaviour agents for many minutes before the run's own progress
    bar moves: when it takes longer than ``notice_after`` seconds, a line on stderr says so, and
    another says when it is done (a cached dataset says nothing).
    """
    if spec.generate is None:
        return spec.dataset
    settings = dict(spec.generate)
    kind = settings.pop("kind")
    started = time.monotonic()

    def notice() -> None:
        print(
            f"{spec.run_id}: generating the {kind} dataset of {spec.env} (behaviour agents and rollouts; "
            "once per dataset, later runs reuse it) ...",
            file=sys.stderr,
            flush=True,
        )

    timer = threading.Timer(notice_after, notice)
    timer.daemon = True
    timer.start()
    try:
        dataset = generate(spec.env, [kind], progress_bar=False, **settings)[kind]
    finally:
        timer.cancel()
    if time.monotonic() - started > notice_after:
        print(f"{spec.run_id}: dataset {dataset} ready after {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return dataset


def reference_scores(env: Any, model: BaseAlgorithm | None = None) -> tuple[float, float] | None:
    """``(ref_min, ref_max)`` of an offline model's dataset, else of the env, else ``None``."""
    for owner in (model, getattr(env, "unwrapped", None)):
        ref_min, ref_max = getattr(owner, "ref_min_score", None), getattr(owner, "ref_max_score", None)
        if ref_min is not None and ref_max is not None:
            return float(ref_min), float(ref_max)
    return None


EnvWrapper = Callable[[gym.Env], gym.Env]


def make_envs(spec: RunSpec, runner: dict[str, Any], wrap_train_env: EnvWrapper | None = None) -> tuple[VecEnv, Any]:
    """The training VecEnv (``n_envs`` copies, optionally wrapped, optionally ``VecNormalize``) and the evaluation env.

    :param spec: the run
    :param runner: the runner keys of its hyperparameters (``n_envs``, ``normalize``)
    :param wrap_train_env: a wrapper applied to each training env only (evaluation stays on the plain env)
    """
    n_envs = runner.get("n_envs", 1)

    def make_train_env() -> gym.Env:
        env = make_env(spec.env)
        return Monitor(wrap_train_env(env) if wrap_train_env is not None else env)

    train_env: VecEnv = DummyVecEnv([make_train_env for _ in range(n_envs)])
    train_env.seed(spec.seed)
    normalize = runner.get("normalize", False)
    if normalize:
        norm_kwargs = normalize if isinstance(normalize, dict) else {}
        train_env = VecNormalize(train_env, **norm_kwargs)
        eval_env: Any = VecNormalize(DummyVecEnv([lambda: Monitor(make_env(spec.env))]), training=False, norm_reward=False)
    else:
        eval_env = make_env(spec.env)
    return train_env, eval_env


def split_runner_keys(spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's constructor kwargs and its runner keys (``policy``, ``n_envs``, ``normalize``)."""
    kwargs = resolve_hyperparams(spec.hyperparams)
    runner = {key: kwargs.pop(key) for key in ("policy", "n_envs", "normalize") if key in kwargs}
    return kwargs, runner


def versions() -> dict[str, str]:
    """Versions of the packages that decide a result."""
    import gymnasium
    import mujoco
    import stable_baselines3

    import rlkit

    return {
        "python": platform.python_version(),
        "rlkit": rlkit.__version__,
        "torch": th.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
    }


def base_record(spec: RunSpec, torch_threads: int = 1) -> dict[str, Any]:
    """What every result record holds about its run, before any outcome."""
    return {
        "algo": spec.algo,
        "task": spec.task,
        "seed": spec.seed,
        "budget": spec.budget,
        "kind": spec.entry.kind,
        "env": spec.env,
        "dataset": spec.dataset,
        "generate": spec.generate,
        "options": spec.options,
        "hyperparams": spec.hyperparams,
        "eval_freq": spec.eval_freq,
        "eval_episodes": spec.eval_episodes,
        "eval_seeds": [eval_seed(spec.seed), eval_seed(spec.seed) + spec.eval_episodes - 1],
        "config_hash": spec.config_hash(),
        "versions": versions(),
        "machine": {
            "host": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch_threads,
        },
        **spec.meta,
    }


def run_one(spec: RunSpec, torch_threads: int = 1, progress: Any = None) -> dict[str, Any]:
    """Train and evaluate one run; never raises: a failure is reported with its traceback.

    :param spec: the run (with ``checkpoint_dir`` and ``checkpoint_every`` set, it resumes
        from its last checkpoint and saves new ones; ``meta["model_dir"]`` saves the trained
        model there, ``meta["tensorboard_log"]`` logs to tensorboard there)
    :param torch_threads: ``torch.set_num_threads`` for this run
    :param progress: a queue (``put_nowait``) for the driver's progress bars, or ``None``
    :return: the result record (``status`` is ``"ok"`` or ``"failed"``)
    """
    global _progress_queue
    _progress_queue = progress
    th.set_num_threads(torch_threads)
    record = base_record(spec, torch_threads)
    start = time.perf_counter()
    try:
        if spec.entry.kind in BUILTIN_KINDS:
            record.update(train_model(spec))
        else:
            record.update(kind_module(spec.entry.kind).train(spec))
        record["status"] = "ok"
    except Exception:
        record["status"] = "failed"
        record["traceback"] = traceback.format_exc()
    record["wall_time_s"] = time.perf_counter() - start + record.get("wall_time_before_resume_s", 0.0)
    return record


def train_model(spec: RunSpec, wrap_train_env: EnvWrapper | None = None) -> dict[str, Any]:
    """Build the run's model (or resume it from its checkpoint), train it with periodic evaluation, report.

    :param spec: the run; with a dataset (``dataset`` or ``generate``) the model gets ``dataset=``
    :param wrap_train_env: a wrapper for each training env (see :func:`make_envs`)
    :return: the outcome fields of the record (curve, final and best points, timings, throughput)
    """
    kwargs, runner = split_runner_keys(spec)
    train_env, eval_env = make_envs(spec, runner, wrap_train_env)
    if spec.dataset is not None or spec.generate is not None:
        kwargs["dataset"] = dataset_id(spec)
    model_cls = spec.entry.load()
    recorder = EvalRecorder(eval_env, spec.eval_freq, spec.eval_episodes, seed=eval_seed(spec.seed), ref_scores=None)
    train_log = TrainLogRecorder(every=spec.budget // 500)
    callbacks: list[BaseCallback] = [recorder, train_log]
    before: dict[str, Any] = {"train_time_s": 0.0, "eval_time_s": 0.0, "wall_time_s": 0.0}
    started = time.perf_counter()
    checkpointer, resumed = None, None
    if spec.checkpoint_dir and spec.checkpoint_every > 0:
        checkpointer = Checkpointer(
            Path(spec.checkpoint_dir),
            spec.checkpoint_every,
            spec.config_hash(),
            extra_state=lambda: {
                "curve": recorder.curve,
                "last_eval_step": recorder.last_eval_step,
                "train_log": train_log.log,
                "train_time_s": before["train_time_s"] + time.perf_counter() - started - recorder.eval_time,
                "eval_time_s": before["eval_time_s"] + recorder.eval_time,
                "wall_time_s": before["wall_time_s"] + time.perf_counter() - started,
            },
        )
        callbacks.append(checkpointer)
        resumed = checkpointer.latest()
    if _progress_queue is not None:
        callbacks.append(ProgressReporter(_progress_queue.put_nowait, spec.run_id, spec.budget, recorder))
    if spec.meta.get("tensorboard_log"):
        kwargs["tensorboard_log"] = spec.meta["tensorboard_log"]
    if resumed is None:
        model = model_cls(runner.get("policy", "MlpPolicy"), train_env, seed=spec.seed, device=spec.device, **kwargs)
    else:
        assert checkpointer is not None
        load_kwargs = {"dataset": kwargs["dataset"]} if "dataset" in kwargs else {}
        model, state = checkpointer.restore(resumed, model_cls, train_env, device=spec.device, **load_kwargs)
        recorder.curve, recorder.last_eval_step = state["curve"], state["last_eval_step"]
        train_log.log = state.get("train_log", [])
        before = {key: state[key] for key in before}
    recorder.ref_scores = reference_scores(eval_env.envs[0] if isinstance(eval_env, VecEnv) else eval_env, model)
    steps_before = model.num_timesteps
    started = time.perf_counter()
    model.tensorboard_log = kwargs.get("tensorboard_log", model.tensorboard_log)
    model.learn(
        spec.budget - steps_before,
        callback=CallbackList(callbacks),
        reset_num_timesteps=resumed is None,
        tb_log_name=spec.run_id,
    )
    train_time = time.perf_counter() - started - recorder.eval_time
    if spec.meta.get("model_dir"):
        save_model(model, Path(spec.meta["model_dir"]))
    if checkpointer is not None:
        checkpointer.clear()
    unit = "grad_steps_per_s" if isinstance(model, OfflineAlgorithm) else "env_steps_per_s"
    return {
        "device": str(model.device),
        "curve": recorder.curve,
        "final": recorder.curve[-1],
        "best": max(recorder.curve, key=lambda p: p["return_mean"]),
        "train_log": train_log.log,
        "ref_scores": recorder.ref_scores,
        "dataset_id": kwargs.get("dataset"),
        "resumed_from_step": steps_before if resumed is not None else None,
        "train_time_s": before["train_time_s"] + train_time,
        "eval_time_s": before["eval_time_s"] + recorder.eval_time,
        "wall_time_before_resume_s": before["wall_time_s"],
        unit: (model.num_timesteps - steps_before) / max(train_time, 1e-9),
    }
