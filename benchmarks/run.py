"""``python -m benchmarks.run``: every (algorithm, task, seed) of a suite, then tables and curves.

Examples::

    python -m benchmarks.run                                  # the quick suite -> results/quick/
    python -m benchmarks.run --suite mujoco-cpu --algos SAC --envs Hopper-v5 --seeds 0 1 2
    python -m benchmarks.run --suite quick --budget 2000 --out /tmp/smoke --workers 2
    python -m benchmarks.run --suite mujoco --backend ray --address auto --cpus-per-run 1 --gpus-per-run 0.25

A rerun with the same output folder skips runs that already finished with the
same configuration, and a run that was interrupted continues from its last
checkpoint (``--checkpoint-every``). With ``--backend ray`` every run is a Ray
task (retried up to ``--max-retries`` times when its worker dies) and this
process, the driver, writes the results as they stream in. Exit status: 0 when
every run succeeded, 2 for bad input (nothing is written), ``100 + k`` when
``k`` runs failed (their tracebacks are in their JSON files).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from benchmarks.claims import suite_claims, write_profile
from benchmarks.plots import write_curves
from benchmarks.store import git_commit, is_done, load_results, write_result
from benchmarks.suite import RunSpec, SuiteError, build_specs, suite_path
from benchmarks.tables import write_tables
from benchmarks.worker import base_record, run_one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="quick", help="suite name in benchmarks/suites/ or a YAML path (default: quick)")
    parser.add_argument("--algos", nargs="+", help="only these algorithms of the suite")
    parser.add_argument("--envs", nargs="+", help="only these tasks of the suite")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the suite's)")
    parser.add_argument("--budget", type=int, help="override every task's budget (env steps or gradient steps)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/<suite>)")
    parser.add_argument("--device", default="auto", help="torch device for every run: auto, cpu, cuda (default: auto)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel runs (default: CPU count)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=100_000,
        help="save model, replay buffer and RNG state every N steps of a run; 0: never (default: 100000)",
    )
    parser.add_argument(
        "--tables-only", action="store_true", help="run nothing: rebuild the tables and curves from the finished runs"
    )
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="local process pool or a Ray cluster")
    parser.add_argument("--address", help="Ray cluster address: auto, HOST:PORT or ray://HOST:10001 (default: start Ray here)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray: CPUs reserved per run (default: 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray: GPUs reserved per run, e.g. 0.25 (default: 0)")
    parser.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a run whose worker died (default: 3)")
    return parser.parse_args(argv)


def _check_out_dir(out_dir: Path) -> None:
    """Fail early, with nothing written, if ``out_dir`` cannot hold results."""
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SuiteError(f"--out {out_dir}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise SuiteError(f"--out {out_dir}: {existing} is not writable ({exc.strerror}); choose another folder with --out") from exc


def _execute_ray(specs: list[RunSpec], args: argparse.Namespace) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
    """Yield ``(spec, record)`` as Ray tasks finish (``ray.wait`` streaming; nothing blocks the submission)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(run_one).options(
        num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run, max_retries=args.max_retries, retry_exceptions=False
    )
    pending = {remote.remote(spec, args.threads): spec for spec in specs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            spec = pending.pop(ref)
            try:
                yield spec, ray.get(ref)
            except ray.exceptions.RayError as exc:
                message = f"Ray task failed after {args.max_retries} retries: {exc}"
                yield spec, {**base_record(spec, args.threads), "status": "failed", "traceback": message, "wall_time_s": 0.0}


def _execute(specs: list[RunSpec], workers: int, threads: int) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
    """Yield ``(spec, record)`` as runs finish: in-process for one worker, else a spawn process pool."""
    if workers <= 1:
        for spec in specs:
            yield spec, run_one(spec, threads)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: dict[Future, RunSpec] = {pool.submit(run_one, spec, threads): spec for spec in specs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                spec = pending.pop(future)
                yield spec, future.result()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.workers < 1 or args.threads < 1:
            raise SuiteError("--workers and --threads must be at least 1")
        if args.checkpoint_every < 0 or args.max_retries < 0 or args.cpus_per_run <= 0 or args.gpus_per_run < 0:
            raise SuiteError("--checkpoint-every, --max-retries, --gpus-per-run must be >= 0 and --cpus-per-run > 0")
        if args.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise SuiteError('--backend ray needs Ray: pip install -e ".[distributed]" (or pip install "ray[tune]")')
        specs = build_specs(args.suite, args.algos, args.envs, args.seeds, args.budget, args.device)
        out_dir = args.out or Path("results") / suite_path(args.suite).stem
        _check_out_dir(out_dir)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    commit = git_commit()
    for spec in specs:
        spec.meta = {"command": command, "commit": commit, "suite": spec.suite}
        spec.checkpoint_every = args.checkpoint_every
        spec.checkpoint_dir = str((out_dir / "checkpoints" / spec.run_id).resolve())
    todo = [s for s in specs if not is_done(out_dir, s)]
    skipped = len(specs) - len(todo)
    missing = len(todo) if args.tables_only else 0
    if args.tables_only:
        todo = []
    start = time.perf_counter()
    failed = 0
    bar = tqdm(total=len(specs) - missing, initial=skipped, desc=f"{specs[0].suite}", unit="run", file=sys.stderr)
    results = _execute_ray(todo, args) if args.backend == "ray" else _execute(todo, args.workers, args.threads)
    for spec, record in results:
        write_result(out_dir, spec, record)
        if record["status"] != "ok":
            failed += 1
            last_line = record["traceback"].strip().splitlines()[-1]
            tqdm.write(f"FAILED {spec.run_id}: {last_line}", file=sys.stderr)
        bar.set_postfix_str(spec.run_id)
        bar.update()
    bar.close()

    records = load_results(out_dir, specs)
    header = {
        "suite": specs[0].suite,
        "command": f"`{command}`",
        "commit": commit,
        "seeds": sorted({s.seed for s in specs}),
        "budget": ", ".join(sorted({f"{s.task}: {s.budget}" for s in specs})),
        "device": ", ".join(sorted({r.get("device", "?") for r in records if r.get("status") == "ok"})) or "—",
        "wall time of this invocation": f"{time.perf_counter() - start:.0f} s ({len(todo)} runs, {skipped} reused)",
        **({"unfinished runs (not in the table)": missing} if missing else {}),
        "machine": "as recorded in each run's JSON (tables rebuilt with --tables-only)"
        if args.tables_only
        else (
            f"Ray cluster {args.address or '(local)'}, {args.cpus_per_run} CPUs and {args.gpus_per_run} GPUs per run"
            if args.backend == "ray"
            else f"{os.cpu_count()} CPUs, {args.workers} workers x {args.threads} torch threads"
        ),
    }
    claims, last_k = suite_claims(args.suite)
    write_tables(out_dir, records, header, claims, last_k)
    write_profile(out_dir, records, specs[0].suite, last_k)
    write_curves(out_dir, records)
    n_ok = sum(r.get("status") == "ok" for r in records)
    print(f"{n_ok} of {len(specs)} runs ok; tables in {out_dir / 'table.md'}", file=sys.stderr)
    if failed:
        print(f"error: {failed} runs failed; see the traceback in their JSON under {out_dir / 'runs'}", file=sys.stderr)
        return 100 + min(failed, 155)
    return 0


if __name__ == "__main__":
    sys.exit(main())
