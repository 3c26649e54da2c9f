"""Suites: YAML files of tasks and per-algorithm, per-task hyperparameters (rl-zoo3 style).

A suite file ``benchmarks/suites/<name>.yaml``::

    description: what the suite measures
    seeds: [0, 1, 2]            # default seeds
    eval_freq: 2000             # evaluate every N steps (env steps online, gradient steps offline)
    eval_episodes: 10
    tasks:
      toy/reach-v0:
        budget: 5000            # env steps (online) or gradient steps (offline)
        eval_freq: 1000         # optional per-task overrides of eval_freq / eval_episodes
    algorithms:
      SAC:
        default:                # constructor kwargs for every task
          learning_starts: 500
          policy_kwargs: {net_arch: [64, 64]}
        toy/reach-v0: {}        # per-task overrides, merged over default
        tasks: [toy/reach-v0]   # optional: restrict to these tasks (default: all)

Besides constructor kwargs a hyperparameter block may set the runner keys
``policy`` (default ``"MlpPolicy"``), ``n_envs`` (default 1), ``normalize``
(``true`` or a dict of ``VecNormalize`` kwargs), and ``budget`` and ``eval_freq``
to override the task's for this algorithm (``--budget`` overrides every budget).
``policy_kwargs.activation_fn`` takes a name (``tanh``, ``relu``, ...) and ``learning_rate`` may be ``lin_<x>``
for a linear schedule from ``x`` to 0.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks import algorithms
from rlkit.envs import check_env_id

SUITES_DIR = Path(__file__).parent / "suites"
RUNNER_KEYS = {"policy": str, "n_envs": int, "normalize": (bool, dict), "budget": int, "eval_freq": int}
TOP_KEYS = {"description": str, "seeds": list, "eval_freq": int, "eval_episodes": int, "tasks": dict, "algorithms": dict}
TASK_KEYS = {"budget": int, "eval_freq": int, "eval_episodes": int, "dataset": str}
ALGO_RESERVED = {"default": dict, "tasks": list}


class SuiteError(ValueError):
    """A suite file or a command-line selection that cannot be run; the message names the fix."""


@dataclass
class RunSpec:
    """One (algorithm, task, seed) run, everything needed to execute it in another process."""

    entry: algorithms.AlgoEntry
    task: str
    seed: int
    budget: int
    eval_freq: int
    eval_episodes: int
    hyperparams: dict[str, Any]
    dataset: str | None = None
    suite: str = ""
    device: str = "auto"
    checkpoint_every: int = 0
    checkpoint_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def algo(self) -> str:
        """The algorithm's registered name."""
        return self.entry.name

    @property
    def run_id(self) -> str:
        """A file-name-safe identifier: ``<algo>__<task>__seed<k>``."""
        task = self.task.replace("/", "-")
        return f"{self.algo}__{task}__seed{self.seed}"

    def config_hash(self) -> str:
        """Hash of everything that changes the outcome (not the device or metadata)."""
        keys = ("task", "seed", "budget", "eval_freq", "eval_episodes", "hyperparams", "dataset")
        payload = {"algo": self.entry.target, **{k: asdict(self)[k] for k in keys}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def suite_path(name_or_path: str) -> Path:
    """Resolve a suite name (``quick``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        candidate = path
    else:
        candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.yaml")))
        raise SuiteError(f"Suite file {candidate} not found; known suites: {known} (or give a path to a .yaml file)")
    return candidate


def _check_type(file: Path, where: str, value: Any, expected: type | tuple[type, ...]) -> None:
    # bool is an int subclass: do not accept True where an int is expected
    wrong_bool = isinstance(value, bool) and expected is int
    if wrong_bool or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
        raise SuiteError(f"{file}: '{where}' must be {names}, got {value!r}")


def _check_keys(file: Path, where: str, mapping: dict, allowed: dict[str, Any]) -> None:
    for key, value in mapping.items():
        if key not in allowed:
            raise SuiteError(f"{file}: unknown key '{where}{key}'; allowed keys: {', '.join(sorted(allowed))}")
        _check_type(file, f"{where}{key}", value, allowed[key])


def constructor_params(cls: type) -> set[str]:
    """Keyword arguments ``cls.__init__`` accepts (excluding ``policy``, ``env`` and private ones)."""
    params = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        params |= {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            break
    return {p for p in params if not p.startswith("_")} - {"self", "policy", "env", "seed", "device", "dataset"}


def _check_hyperparams(file: Path, where: str, hyperparams: dict, allowed: set[str]) -> None:
    for key in hyperparams:
        if key not in allowed and key not in RUNNER_KEYS:
            raise SuiteError(
                f"{file}: unknown hyperparameter '{where}{key}'; allowed: {', '.join(sorted(allowed | set(RUNNER_KEYS)))}"
            )
    for key, expected in RUNNER_KEYS.items():
        if key in hyperparams:
            _check_type(file, f"{where}{key}", hyperparams[key], expected)
            if expected is int and hyperparams[key] <= 0:
                raise SuiteError(f"{file}: '{where}{key}' must be positive, got {hyperparams[key]}")


def load_suite(name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """Read and validate a suite file; returns its path and content."""
    file = suite_path(name_or_path)
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise SuiteError(f"{file}: not valid YAML: {exc}".replace("\n", " ")) from exc
    if not isinstance(data, dict):
        raise SuiteError(f"{file}: the top level must be a mapping with keys {', '.join(sorted(TOP_KEYS))}")
    _check_keys(file, "", data, TOP_KEYS)
    for key in ("tasks", "algorithms"):
        if not data.get(key):
            raise SuiteError(f"{file}: '{key}' is missing or empty")
    for i, seed in enumerate(data.get("seeds", [0])):
        _check_type(file, f"seeds[{i}]", seed, int)
    for task, conf in data["tasks"].items():
        try:
            check_env_id(task)
        except ValueError as exc:
            raise SuiteError(f"{file}: 'tasks.{task}': {exc}") from exc
        _check_type(file, f"tasks.{task}", conf, dict)
        _check_keys(file, f"tasks.{task}.", conf, TASK_KEYS)
        if "budget" not in conf:
            raise SuiteError(f"{file}: 'tasks.{task}.budget' is missing (env steps online, gradient steps offline)")
        for key in ("budget", "eval_freq", "eval_episodes"):
            if key in conf and conf[key] <= 0:
                raise SuiteError(f"{file}: 'tasks.{task}.{key}' must be positive, got {conf[key]}")
    for name, conf in data["algorithms"].items():
        if name not in algorithms.ALGORITHMS:
            raise SuiteError(f"{file}: unknown algorithm 'algorithms.{name}'; registered: {', '.join(sorted(algorithms.ALGORITHMS))}")
        conf = conf or {}
        _check_type(file, f"algorithms.{name}", conf, dict)
        allowed = constructor_params(algorithms.get(name).load())
        for key, value in conf.items():
            if key in ALGO_RESERVED:
                _check_type(file, f"algorithms.{name}.{key}", value, ALGO_RESERVED[key])
            elif key not in data["tasks"]:
                raise SuiteError(
                    f"{file}: unknown key 'algorithms.{name}.{key}'; allowed: default, tasks, or a task of this suite "
                    f"({', '.join(data['tasks'])})"
                )
            if key == "tasks":
                for task in value:
                    if task not in data["tasks"]:
                        raise SuiteError(f"{file}: 'algorithms.{name}.tasks' names {task!r}, which is not in 'tasks'")
            else:
                _check_type(file, f"algorithms.{name}.{key}", value, dict)
                _check_hyperparams(file, f"algorithms.{name}.{key}.", value or {}, allowed)
    return file, data


def _task_kind(conf: dict[str, Any]) -> str:
    return "offline" if "dataset" in conf else "online"


def build_specs(
    name_or_path: str,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    seeds: list[int] | None = None,
    budget: int | None = None,
    device: str = "auto",
) -> list[RunSpec]:
    """Every run of a suite, filtered by the command line's selection.

    :param name_or_path: suite name or YAML path
    :param algos: keep these algorithms (default: all of the suite)
    :param envs: keep these tasks (default: all of the suite)
    :param seeds: override the suite's seeds
    :param budget: override every task's budget
    :param device: torch device for every run
    """
    file, data = load_suite(name_or_path)
    if budget is not None and budget <= 0:
        raise SuiteError(f"--budget must be positive, got {budget}")
    for flag, chosen, known in (("--algos", algos, data["algorithms"]), ("--envs", envs, data["tasks"])):
        for item in chosen or []:
            if item not in known:
                raise SuiteError(f"{flag}: {item!r} is not in suite {file.stem}; it has: {', '.join(known)}")
    specs = []
    for name, conf in data["algorithms"].items():
        conf = conf or {}
        if algos and name not in algos:
            continue
        kind = algorithms.get(name).kind
        for task, task_conf in data["tasks"].items():
            if (envs and task not in envs) or task not in conf.get("tasks", data["tasks"]):
                continue
            if _task_kind(task_conf) != kind:
                continue
            hyperparams = {**(conf.get("default") or {}), **(conf.get(task) or {})}
            algo_budget = hyperparams.pop("budget", task_conf["budget"])
            default_eval_freq = task_conf.get("eval_freq", data.get("eval_freq", 5000))
            eval_freq = hyperparams.pop("eval_freq", default_eval_freq)
            for seed in seeds if seeds is not None else data.get("seeds", [0]):
                specs.append(
                    RunSpec(
                        entry=algorithms.get(name),
                        task=task,
                        seed=seed,
                        budget=budget or algo_budget,
                        eval_freq=eval_freq,
                        eval_episodes=task_conf.get("eval_episodes", data.get("eval_episodes", 10)),
                        hyperparams=hyperparams,
                        dataset=task_conf.get("dataset"),
                        suite=file.stem,
                        device=device,
                    )
                )
    if not specs:
        raise SuiteError(f"No run matches the selection in suite {file.stem} (check --algos / --envs)")
    return specs
