"""``python -m benchmarks.speed``: training throughput and peak memory against each algorithm's peer.

Every algorithm of :data:`SPEED_CASES` and its registered peer are measured in
the same invocation, on the same task, with the same network sizes, each in a
fresh process (so that peak memory is its own) and one after the other (so
that they do not compete for cores). Online algorithms report env steps/s of
``learn`` (collection and updates, after a warm-up that fills
``learning_starts``); offline ones gradient steps/s of ``learn`` on a dataset of
``--dataset-size`` transitions, next to SB3 TD3's ``train`` step on a replay
buffer holding the same transitions, with the same batch and network sizes.
A case named ``ALGO/update`` measures the update alone: gradient steps/s of
``train`` after the same warm-up (for PEBBLE and PARL, continued until the
first reward learning, so that it is the SAC inner loop on the learned reward),
against the peer's ``train`` (``SAC/update``). PEBBLE and PARL themselves count
env steps/s of ``learn`` with everything in it: collection, the unsupervised
phase, queries, reward learning, relabelling and SAC's updates.
The table gives the ratio to the peer: > 1 is faster. With ``--repeats N`` every
measurement is taken N times in interleaved rounds and the median counts, so
that a change of machine load between rounds does not bias the ratio.

Every case also counts the matrix-multiply FLOPs of its work (forward and
backward, :class:`GemmFlopCounter`) in an unmeasured run after the timed one, in
the first round (an update or an offline case: :data:`FLOP_COUNT_STEPS` more
gradient steps; an online case: as many more env steps as were measured, so that
periodic work, such as PEBBLE's and PARL's reward learning, counts in the same
share), against the device's matmul peak measured in the same invocation
(:func:`gemm_peak`): the table gives GFLOP per step, the share of the peak the
measured throughput reaches, and the *ratio bound*, the ratio to the peer that
the algorithm would reach if its matrix multiplies ran at the peak and nothing
else took time. The same run times those matrix multiplies where they run (at
their own shapes and cache states, where small layers run well below the peak):
the *matmul-time bound* is the ratio the algorithm would reach if nothing but
them took time. A target ratio above either bound cannot be reached on that
machine without changing what the update computes.

A new algorithm gets its speed case by an entry in :data:`SPEED_CASES` (its peer
is the one registered in :mod:`benchmarks.algorithms`); an offline algorithm
that takes a second dataset names that argument in :data:`EXTRA_DATASETS`.

Examples::

    python -m benchmarks.speed                       # every case -> results/speed/
    python -m benchmarks.speed --algos SAC PPO --steps 1000 --device cuda --out results/gpu/speed
    python -m benchmarks.speed --algos PMOEPPO --steps 4096 --repeats 3 --out results/speed-pmoe
    python -m benchmarks.speed --algos PEBBLE PARL PEBBLE/update PARL/update --repeats 5 --out results/speed-pbrl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import configure
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from benchmarks import algorithms
from benchmarks.store import command_line, git_commit, write_atomic
from benchmarks.worker import resolve_hyperparams, versions
from rlkit.common.offline import OfflineAlgorithm
from rlkit.data import OfflineDataset
from rlkit.envs import make_env

OFF_POLICY = {"learning_starts": 500, "policy_kwargs": {"net_arch": [256, 256]}}
OFFLINE = {"batch_size": 256, "policy_kwargs": {"net_arch": [256, 256]}}
ON_POLICY = {"n_steps": 1024, "batch_size": 64, "policy_kwargs": {"net_arch": [64, 64]}}
# SAC's case, with the phases of preference learning inside the measured steps: the unsupervised phase ends at
# 800 steps, the first reward learning (a critic reset and 100 updates) follows the first episode's end (1000
# steps on HalfCheetah), then 10 queries every 500 steps
PREFERENCE = {**OFF_POLICY, "unsup_steps": 300, "num_interact": 500, "reward_batch": 10, "reset_update": 100}
# AlignDiff's and AttributeBC's shared set-up (the CPU-size networks, a short attribute-model fit)
ALIGNDIFF = {"network_size": "cpu", "n_labels": 500, "asm_steps": 100, "asm_batch_size": 64, "relabel_stride": 100}

#: algorithm -> constructor kwargs; the peer is measured with its own entry here
SPEED_CASES: dict[str, dict[str, Any]] = {
    "SAC": OFF_POLICY,
    "TD3": OFF_POLICY,
    "PPO": ON_POLICY,
    "TRPO": ON_POLICY,
    "MDPO": {"n_steps": 1024, "policy_kwargs": {"net_arch": [64, 64]}},
    "MDPOOff": OFF_POLICY,
    "PMOESAC": OFF_POLICY,
    "PMOEPPO": ON_POLICY,
    "PEBBLE": PREFERENCE,
    "PARL": PREFERENCE,
    # the updates alone (gradient steps/s of ``train``): SAC's, and SAC's inner loop of PEBBLE and PARL
    "SAC/update": OFF_POLICY,
    "PEBBLE/update": PREFERENCE,
    "PARL/update": PREFERENCE,
    # PMOE-SAC's update alone: SAC's work plus scoring the K experts' actions with the critic (B * K rows)
    "PMOESAC/update": OFF_POLICY,
    "BC": OFFLINE,
    "TD3BC": OFFLINE,
    "IQL": OFFLINE,
    # the paper's networks: 256x3 actor, 256x4 critics and V, 750-750 VAE
    "A2PR": {"batch_size": 256},
    # FISOR's own defaults (a T=5 diffusion actor; acting samples 16 candidates: see the predict column)
    "FISOR": {},
    # the CPU-sized transformers (1 layer, width 64; the paper's 3 layers of width 128 take seconds per step on
    # one CPU thread) and the paper's batch (64 pairs: 128 HIM windows + 128 labelled ones)
    "OPPO": {"n_labels": 500, "batch_size": 64, "network_size": "cpu"},
    # IQL's step on learned rewards (the reward model is fitted at construction, outside the measurement)
    "IQL+BT": {**OFFLINE, "n_labels": 500},
    # PEARL's learner: IQL on labels transferred from a source dataset (the alignment runs at construction, outside
    # the measurement); 500 source labels
    "PEARL": {**OFFLINE, "n_labels": 500},
    # AlignDiff's planner step and AttributeBC's, on 500 labels of HalfCheetah's scripted speed and height, the
    # CPU-size DiT (width 64, depth 2); a short attribute-model fit and windows relabelled every 100 steps, both at
    # construction, outside the measurement; acting plans 16 candidates with 5 Euler steps, replanning every 5 steps
    "AlignDiff": {**ALIGNDIFF, "n_samples": 16, "sampling_steps": 5, "replan_every": 5},
    "AttributeBC": {**ALIGNDIFF, "policy_kwargs": {"net_arch": [256, 256]}},
}


#: offline algorithms that take a second dataset: the argument, given a random dataset of the same size (seed 1)
EXTRA_DATASETS: dict[str, tuple[str, ...]] = {"PEARL": ("source_dataset",)}

#: env steps that an update case may add to its warm-up until the first reward learning
REWARD_WARMUP_LIMIT = 5000

#: gradient steps of the unmeasured run that counts the FLOPs of an update or offline case (an online case counts
#: as many env steps as it measured)
FLOP_COUNT_STEPS = 50


class GemmFlopCounter(TorchDispatchMode):
    """Counts the FLOPs of the matrix multiplies (and convolutions) that run inside it, forward and backward,
    and the time they take.

    Torch's own FLOP formulas (``torch.utils.flop_counter``): 2 * m * n * k for an (m x k) @ (k x n)
    product; elementwise work is not counted. Unlike ``FlopCounterMode`` it tracks no modules, so that
    it counts code that calls a network under ``no_grad`` on inputs that require a gradient.
    :attr:`seconds` is the wall time of those operations alone, at the shapes and cache states of the
    code that runs them (on CUDA each is synchronised, so the code around them runs slower, not them).
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.seconds = 0.0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None:
            return func(*args, **kwargs)
        cuda = th.cuda.is_available() and th.cuda.is_initialized()
        if cuda:
            th.cuda.synchronize()
        start = time.perf_counter()
        out = func(*args, **kwargs)
        if cuda:
            th.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        self.flops += count(*args, **kwargs, out_val=out)
        return out


def gemm_peak(device: str, threads: int, size: int = 1024, repeats: int = 20) -> float:
    """GFLOP/s of a ``size``-cubed float32 matmul on ``device`` with ``threads`` torch threads (the best of ``repeats``)."""
    th.set_num_threads(threads)
    device = "cuda" if device == "auto" and th.cuda.is_available() else ("cpu" if device == "auto" else device)
    a, b = th.randn(size, size, device=device), th.randn(size, size, device=device)
    out = th.empty(size, size, device=device)
    best = float("inf")
    for _ in range(repeats + 2):
        if device.startswith("cuda"):
            th.cuda.synchronize()
        start = time.perf_counter()
        th.mm(a, b, out=out)
        if device.startswith("cuda"):
            th.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def case_algorithm(name: str) -> str:
    """The algorithm of a case: ``PEBBLE`` for ``PEBBLE/update``."""
    return name.partition("/")[0]


def case_peer(name: str) -> str:
    """The peer case of a case: the algorithm's registered peer, in the same mode (``SAC/update`` for ``PEBBLE/update``)."""
    algorithm, separator, mode = name.partition("/")
    return algorithms.get(algorithm).peer + separator + mode


def _update_rate(model: BaseAlgorithm, steps: int) -> float:
    """Gradient steps/s of ``model.train`` (after 50 unmeasured steps), at the model's batch size."""
    batch_size = model.batch_size  # type: ignore[attr-defined]
    model.train(gradient_steps=50, batch_size=batch_size)  # type: ignore[attr-defined]
    start = time.perf_counter()
    model.train(gradient_steps=steps, batch_size=batch_size)  # type: ignore[attr-defined]
    return steps / (time.perf_counter() - start)


def random_dataset(env: gym.Env, size: int, seed: int = 0) -> OfflineDataset:
    """``size`` transitions with the env's shapes, float32, 1000-step episodes, costs for the safe algorithms
    (throughput only: the values are noise)."""
    rng = np.random.default_rng(seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    return OfflineDataset(
        observations=rng.standard_normal((size, obs_dim), dtype=np.float32),
        actions=rng.uniform(low, high, (size, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(size, dtype=np.float32),
        next_observations=rng.standard_normal((size, obs_dim), dtype=np.float32),
        terminals=np.zeros(size, dtype=np.float32),
        timeouts=(np.arange(1, size + 1) % 1000 == 0).astype(np.float32),
        costs=(rng.random(size) < 0.1).astype(np.float32),
        episode_ends=np.append(np.arange(1000, size, 1000), size),
        observation_space=env.observation_space,
        action_space=env.action_space,
    )


def _td3_train_step_rate(env: gym.Env, dataset: OfflineDataset, steps: int, device: str) -> tuple[BaseAlgorithm, float]:
    """SB3 TD3's ``train`` (the offline peer) on a replay buffer holding ``dataset``: gradient steps/s."""
    kwargs = resolve_hyperparams(OFFLINE)
    model = TD3("MlpPolicy", env, buffer_size=len(dataset), learning_starts=0, seed=0, device=device, **kwargs)
    model.set_logger(configure(None, []))
    buffer = model.replay_buffer
    n = len(dataset)
    buffer.observations[:n, 0] = dataset.observations
    buffer.next_observations[:n, 0] = dataset.next_observations
    buffer.actions[:n, 0] = model.policy.scale_action(dataset.actions)
    buffer.rewards[:n, 0] = dataset.rewards
    buffer.dones[:n, 0] = dataset.terminals
    buffer.full = True
    model.train(gradient_steps=50, batch_size=kwargs["batch_size"])
    start = time.perf_counter()
    model.train(gradient_steps=steps, batch_size=kwargs["batch_size"])
    return model, steps / (time.perf_counter() - start)


PREDICT_CALLS = 200


def _predict_rate(model: BaseAlgorithm, observations: np.ndarray) -> float:
    """Deterministic actions/s of ``predict`` on one observation at a time (acting in an env; a history-conditioned
    policy gets its ``state`` back at every call)."""
    model.predict(observations[0], deterministic=True)
    state = None
    start = time.perf_counter()
    for obs in observations:
        _, state = model.predict(obs, state=state, deterministic=True)
    return len(observations) / (time.perf_counter() - start)


def measure(
    name: str, env_id: str, steps: int, device: str, threads: int, dataset_size: int = 0, count_flops: bool = True
) -> dict[str, Any]:
    """Throughput and peak memory of one algorithm (run this in a fresh process).

    With ``dataset_size`` > 0 the measurement is offline: gradient steps/s on a
    dataset of that many transitions (for ``TD3``, the peer, its ``train`` step on a
    replay buffer holding the same transitions). ``count_flops``: count the FLOPs per
    step and the time of those matrix multiplies afterwards (see :func:`_matmul_work_per_step`;
    ``gflop_per_step`` and ``matmul_ms_per_step`` are ``None`` otherwise).
    """
    th.set_num_threads(threads)
    entry = algorithms.get(case_algorithm(name))
    update_only = name.endswith("/update")
    kwargs = resolve_hyperparams(SPEED_CASES[name])
    env = make_env(env_id)
    predict_rate = None
    if dataset_size > 0 and not entry.needs_data:
        model, rate = _td3_train_step_rate(env, random_dataset(env, dataset_size), steps, device)
    else:
        if dataset_size > 0:
            kwargs["dataset"] = random_dataset(env, dataset_size)
            for argument in EXTRA_DATASETS.get(name, ()):
                kwargs[argument] = random_dataset(env, dataset_size, seed=1)
        model = entry.load()("MlpPolicy", env, seed=0, device=device, **kwargs)
        warmup = max(kwargs.get("learning_starts", 0) + 200, kwargs.get("n_steps", 0))
        model.learn(warmup)
        if update_only:
            # PEBBLE and PARL: on to the first reward learning, after which train() is SAC's inner loop on r_hat
            while getattr(model, "reward_learned", True) is False and model.num_timesteps < warmup + REWARD_WARMUP_LIMIT:
                model.learn(100, reset_num_timesteps=False)
            rate = _update_rate(model, steps)
        else:
            start = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            rate = (model.num_timesteps - warmup) / (time.perf_counter() - start)
        if dataset_size > 0:
            predict_rate = _predict_rate(model, kwargs["dataset"].observations[:PREDICT_CALLS])
    flops_per_step = matmul_seconds_per_step = None
    if count_flops:
        train_only = update_only or (dataset_size > 0 and not entry.needs_data)
        flops_per_step, matmul_seconds_per_step = _matmul_work_per_step(model, train_only=train_only, env_steps=steps)
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_cuda_mib = th.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else None
    return {
        "algo": name + (" (train step)" if dataset_size > 0 and not entry.needs_data else ""),
        "rate": rate,
        "predict_rate": predict_rate,
        "unit": "grad_steps_per_s" if dataset_size > 0 or update_only else "env_steps_per_s",
        "gflop_per_step": None if flops_per_step is None else flops_per_step / 1e9,
        "matmul_ms_per_step": None if matmul_seconds_per_step is None else matmul_seconds_per_step * 1e3,
        "peak_rss_mib": peak_rss_mib,
        "peak_cuda_mib": peak_cuda_mib,
        "device": str(model.device),
    }


def _matmul_work_per_step(model: BaseAlgorithm, train_only: bool, env_steps: int) -> tuple[float, float]:
    """Matrix-multiply FLOPs and seconds per measured step, counted on more steps of the same work.

    ``train_only``: per gradient step of ``model.train`` (an update case, the TD3 peer), on :data:`FLOP_COUNT_STEPS`
    more; an offline algorithm: per gradient step of ``learn``, on as many more; an online one: per env step of
    ``learn``, on ``env_steps`` more (the measured length: a periodic phase, such as reward learning, then weighs as
    in the timed run; an on-policy model collects whole rollouts).
    """
    counter = GemmFlopCounter()
    if train_only:
        with counter:
            model.train(gradient_steps=FLOP_COUNT_STEPS, batch_size=model.batch_size)  # type: ignore[attr-defined]
        return counter.flops / FLOP_COUNT_STEPS, counter.seconds / FLOP_COUNT_STEPS
    n_steps = FLOP_COUNT_STEPS if isinstance(model, OfflineAlgorithm) else env_steps
    start = model.num_timesteps
    with counter:
        model.learn(n_steps, reset_num_timesteps=False)
    done = max(model.num_timesteps - start, 1)
    return counter.flops / done, counter.seconds / done


def _measure_isolated(
    name: str, env_id: str, steps: int, device: str, threads: int, dataset_size: int, count_flops: bool
) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, name, env_id, steps, device, threads, dataset_size, count_flops).result()


def _median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (the upper median of an even count), with every measured rate and the FLOPs and
    matrix-multiply time per step of the first round (the only one that counts them)."""
    ordered = sorted(results, key=lambda result: result["rate"])
    return {
        **ordered[len(ordered) // 2],
        "rates": [result["rate"] for result in results],
        "gflop_per_step": results[0]["gflop_per_step"],
        "matmul_ms_per_step": results[0]["matmul_ms_per_step"],
    }


def _table(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = ["# speed", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [
        "",
        "| algorithm | peer | throughput | peer throughput | ratio | GFLOP/step | peer GFLOP/step | % of GEMM peak "
        "| peer % of GEMM peak | ratio bound | matmul ms/step | peer matmul ms/step | matmul-time bound "
        "| predict (actions/s) | peak RSS (MiB) | peer peak RSS (MiB) | peak CUDA (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = r["unit"].replace("_per_s", "/s").replace("_", " ")
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "—"
        predict = f"{r['predict_rate']:.0f}" if r.get("predict_rate") is not None else "—"
        bound = f"{r['ratio_bound']:.2f}x" if r.get("ratio_bound") is not None else "—"
        time_bound = f"{r['matmul_time_bound']:.2f}x" if r.get("matmul_time_bound") is not None else "—"
        lines.append(
            f"| {r['algo']} | {r['peer']} | {r['rate']:.1f} {unit} | {r['peer_rate']:.1f} {unit} | {r['ratio']:.2f}x | "
            f"{r['gflop_per_step']:.3f} | {r['peer_gflop_per_step']:.3f} | {r['peak_share']:.0%} | "
            f"{r['peer_peak_share']:.0%} | {bound} | {r['matmul_ms_per_step']:.2f} | {r['peer_matmul_ms_per_step']:.2f} | "
            f"{time_bound} | {predict} | {r['peak_rss_mib']:.0f} | {r['peer_peak_rss_mib']:.0f} | "
            f"{cuda} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(SPEED_CASES), help="algorithms to measure (default: all cases)")
    parser.add_argument("--env", default="HalfCheetah-v5", help="task (default: HalfCheetah-v5)")
    parser.add_argument("--steps", type=int, default=2000, help="measured steps per algorithm (default: 2000)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure every algorithm this many times, in interleaved rounds, and report the median (default: 1)",
    )
    parser.add_argument(
        "--dataset-size", type=int, default=1_000_000, help="transitions of the offline algorithms' dataset (default: 1M)"
    )
    parser.add_argument("--out", type=Path, default=Path("results/speed"), help="output folder (default: results/speed)")
    args = parser.parse_args(argv)
    unknown = [a for a in args.algos if a not in SPEED_CASES]
    if unknown or args.steps <= 0 or args.repeats <= 0:
        if unknown:
            problem = f"no speed case for {', '.join(unknown)} (known: {', '.join(SPEED_CASES)})"
        else:
            problem = "--steps and --repeats must be > 0"
        print(f"error: {problem}", file=sys.stderr)
        return 2

    def offline(name: str) -> bool:
        return algorithms.get(case_algorithm(name)).needs_data

    # (case, offline?) pairs: an offline algorithm's online peer is measured on the same dataset
    needed = list(dict.fromkeys(p for a in args.algos for p in ((a, offline(a)), (case_peer(a), offline(a)))))
    start = time.perf_counter()
    peak_gflops = gemm_peak(args.device, args.threads)
    runs: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    # Interleaved rounds: a change of machine load between rounds affects an algorithm and its peer alike
    for round_index in range(args.repeats):
        for name, on_dataset in needed:
            where = f"{args.env}{' (offline)' if on_dataset else ''}"
            print(f"measuring {name} on {where}, round {round_index + 1}/{args.repeats} ...", file=sys.stderr)
            size = args.dataset_size if on_dataset else 0
            runs.setdefault((name, on_dataset), []).append(
                _measure_isolated(name, args.env, args.steps, args.device, args.threads, size, round_index == 0)
            )
    measured = {key: _median_run(results) for key, results in runs.items()}
    rows = []
    for name in args.algos:
        mine, peer = measured[name, offline(name)], measured[case_peer(name), offline(name)]
        rows.append(
            {
                **mine,
                "peer": peer["algo"],
                "peer_rate": peer["rate"],
                "peer_rates": peer["rates"],
                "ratio": mine["rate"] / peer["rate"],
                "peer_gflop_per_step": peer["gflop_per_step"],
                "peak_share": mine["gflop_per_step"] * mine["rate"] / peak_gflops,
                "peer_peak_share": peer["gflop_per_step"] * peer["rate"] / peak_gflops,
                # the ratio with every matrix multiply at the peak and nothing else taking time
                "ratio_bound": peak_gflops / mine["gflop_per_step"] / peer["rate"] if mine["gflop_per_step"] > 0 else None,
                "peer_matmul_ms_per_step": peer["matmul_ms_per_step"],
                # the ratio with nothing but the matrix multiplies taking time, at the speed they ran at
                "matmul_time_bound": 1e3 / mine["matmul_ms_per_step"] / peer["rate"]
                if mine["matmul_ms_per_step"] > 0
                else None,
                "peer_peak_rss_mib": peer["peak_rss_mib"],
            }
        )
    header = {
        "command": f"`{command_line('benchmarks.speed', argv if argv is not None else sys.argv[1:])}`",
        "commit": git_commit(),
        "task": args.env,
        "measured steps": args.steps,
        "seeds": "0 for every model and its peer (the random offline dataset: seed 0; a second dataset: seed 1)",
        "repeats": f"{args.repeats} (interleaved; median throughput)",
        "offline dataset": f"{args.dataset_size} transitions (float32, random values), batch 256",
        "device": ", ".join(sorted({r["device"] for r in rows})),
        "torch threads": args.threads,
        "GEMM peak": f"{peak_gflops:.1f} GFLOP/s (1024^3 float32 matmul, best of 20, same device and threads)",
        "FLOPs": f"matrix multiplies only, forward and backward, counted in the first round after the timed steps, on "
        f"{FLOP_COUNT_STEPS} more gradient steps (an update or offline case) or as many more env steps as measured; "
        "matmul ms/step: the time of those matrix multiplies",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "wall time": f"{time.perf_counter() - start:.0f} s",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "table.md", _table(rows, header))
    write_atomic(args.out / "speed.json", json.dumps({"header": header, "versions": versions(), "rows": rows}, indent=1))
    print(_table(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
