"""``python -m benchmarks.speed``: training throughput and peak memory against each algorithm's peer.

Every algorithm of :data:`SPEED_CASES` and its registered peer are measured in
the same invocation, on the same task, with the same network sizes, each in a
fresh process (so that peak memory is its own) and one after the other (so
that they do not compete for cores). Online algorithms report env steps/s of
``learn`` (collection and updates, after a warm-up that fills
``learning_starts``); offline ones gradient steps/s. The table gives the ratio
to the peer: > 1 is faster.

Examples::

    python -m benchmarks.speed                       # every case -> results/speed/
    python -m benchmarks.speed --algos SAC PPO --steps 1000 --device cuda --out results/gpu/speed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch as th

from benchmarks import algorithms
from benchmarks.store import git_commit, write_atomic
from benchmarks.worker import resolve_hyperparams, versions
from rlkit.envs import make_env

OFF_POLICY = {"learning_starts": 500, "policy_kwargs": {"net_arch": [256, 256]}}
ON_POLICY = {"n_steps": 1024, "batch_size": 64, "policy_kwargs": {"net_arch": [64, 64]}}

#: algorithm -> constructor kwargs; the peer is measured with its own entry here
SPEED_CASES: dict[str, dict[str, Any]] = {
    "SAC": OFF_POLICY,
    "TD3": OFF_POLICY,
    "PPO": ON_POLICY,
    "TRPO": ON_POLICY,
    "MDPO": {"n_steps": 1024, "policy_kwargs": {"net_arch": [64, 64]}},
    "MDPOOff": OFF_POLICY,
}


def measure(name: str, env_id: str, steps: int, device: str, threads: int) -> dict[str, Any]:
    """Throughput and peak memory of one algorithm (run this in a fresh process)."""
    th.set_num_threads(threads)
    entry = algorithms.get(name)
    kwargs = resolve_hyperparams(SPEED_CASES[name])
    model = entry.load()("MlpPolicy", make_env(env_id), seed=0, device=device, **kwargs)
    warmup = max(kwargs.get("learning_starts", 0) + 200, kwargs.get("n_steps", 0))
    model.learn(warmup)
    start = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_cuda_mib = th.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else None
    return {
        "algo": name,
        "rate": (model.num_timesteps - warmup) / elapsed,
        "unit": "grad_steps_per_s" if entry.kind == "offline" else "env_steps_per_s",
        "peak_rss_mib": peak_rss_mib,
        "peak_cuda_mib": peak_cuda_mib,
        "device": str(model.device),
    }


def _measure_isolated(name: str, env_id: str, steps: int, device: str, threads: int) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure, name, env_id, steps, device, threads).result()


def _table(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = ["# speed", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [
        "",
        "| algorithm | peer | throughput | peer throughput | ratio | peak RSS (MiB) | peer peak RSS (MiB) | peak CUDA (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = r["unit"].replace("_per_s", "/s").replace("_", " ")
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "—"
        lines.append(
            f"| {r['algo']} | {r['peer']} | {r['rate']:.1f} {unit} | {r['peer_rate']:.1f} {unit} | {r['ratio']:.2f}x | "
            f"{r['peak_rss_mib']:.0f} | {r['peer_peak_rss_mib']:.0f} | {cuda} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(SPEED_CASES), help="algorithms to measure (default: all cases)")
    parser.add_argument("--env", default="HalfCheetah-v5", help="task (default: HalfCheetah-v5)")
    parser.add_argument("--steps", type=int, default=2000, help="measured steps per algorithm (default: 2000)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", type=Path, default=Path("results/speed"), help="output folder (default: results/speed)")
    args = parser.parse_args(argv)
    unknown = [a for a in args.algos if a not in SPEED_CASES]
    if unknown or args.steps <= 0:
        problem = f"no speed case for {', '.join(unknown)} (known: {', '.join(SPEED_CASES)})" if unknown else "--steps must be > 0"
        print(f"error: {problem}", file=sys.stderr)
        return 2

    needed = list(dict.fromkeys(n for a in args.algos for n in (a, algorithms.get(a).peer)))
    start = time.perf_counter()
    measured = {}
    for name in needed:
        print(f"measuring {name} on {args.env} ...", file=sys.stderr)
        measured[name] = _measure_isolated(name, args.env, args.steps, args.device, args.threads)
    rows = []
    for name in args.algos:
        mine, peer = measured[name], measured[algorithms.get(name).peer]
        rows.append(
            {
                **mine,
                "peer": peer["algo"],
                "peer_rate": peer["rate"],
                "ratio": mine["rate"] / peer["rate"],
                "peer_peak_rss_mib": peer["peak_rss_mib"],
            }
        )
    argv_text = shlex.join(argv if argv is not None else sys.argv[1:])
    header = {
        "command": f"`python -m benchmarks.speed {argv_text}`".replace(" `", "`"),
        "commit": git_commit(),
        "task": args.env,
        "measured steps": args.steps,
        "device": ", ".join(sorted({r["device"] for r in rows})),
        "torch threads": args.threads,
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
