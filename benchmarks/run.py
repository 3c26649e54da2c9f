"""``python -m benchmarks.run``: every (algorithm, task, seed) of a suite, then tables and curves.

Examples::

    python -m benchmarks.run                                  # the quick suite -> runs/quick/
    python -m benchmarks.run --suite mujoco-cpu --algos SAC --envs Hopper-v5 --seeds 0 1 2
    python -m benchmarks.run --suite quick --budget 2000 --out /tmp/smoke --workers 2
    python -m benchmarks.run --algo SAC --env Hopper-v5 --budget 50000 --seeds 0 1   # no suite -> runs/adhoc/
    python -m benchmarks.run --suite quick --out results/quick  # republish the committed reference
    python -m benchmarks.run --suite mujoco --backend ray --address auto --cpus-per-run 1 --gpus-per-run 0.25

Runs go to ``runs/<suite>/`` (git-ignored) unless ``--out`` names another folder;
``results/<suite>/`` is the published reference, written only when ``--out`` names
it. Each finished run keeps its model under ``<out>/models/<run>/`` (see
``python -m benchmarks.evaluate``). At the end the table is printed, beside the
reference in ``results/<suite>/`` where there is one.

A rerun with the same output folder skips runs that already finished with the
same configuration, and a run that was interrupted continues from its last
checkpoint (``--checkpoint-every``). Several runners may share one output folder,
for instance one per CPU started at different times, or one per machine on a shared
file system: each run is claimed before it starts, so no run is done twice, and a
run that another runner holds or finished is skipped (the last runner to finish
writes the complete table). With ``--backend ray`` every run is a Ray
task (retried up to ``--max-retries`` times when its worker dies) and this
process, the driver, writes the results as they stream in. Exit status: 0 when
every run succeeded, 2 for bad input (nothing is written), ``100 + k`` when
``k`` runs failed (their tracebacks are in their JSON files).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from benchmarks.claims import suite_claims, write_profile
from benchmarks.plots import write_curves
from benchmarks.store import RunClaim, command_line, git_commit, is_done, load_results, write_result
from benchmarks import algorithms
from benchmarks.suite import RunSpec, SuiteError, build_specs
from benchmarks.tables import write_tables
from benchmarks.worker import base_record, run_one


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", help="suite name in benchmarks/suites/ or a YAML path (default: quick)")
    parser.add_argument("--algos", nargs="+", help="only these algorithms of the suite")
    parser.add_argument("--envs", nargs="+", help="only these tasks of the suite")
    parser.add_argument("--algo", help="a run without a suite: this registered algorithm, with its own defaults (needs --env)")
    parser.add_argument("--env", help="a run without a suite: this env id (with --algo)")
    parser.add_argument("--dataset", help="a run without a suite: the dataset of an offline --algo (a Minari id or folder)")
    parser.add_argument(
        "--hyperparams",
        nargs="+",
        default=[],
        metavar="KEY:VALUE",
        help="a run without a suite: constructor arguments over the defaults, e.g. learning_starts:1000 gamma:0.98",
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the suite's; 0 without a suite)")
    parser.add_argument(
        "--budget", type=int, help="override every task's budget (env steps or gradient steps; without a suite: 100000)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<suite>; results/<suite> republishes)")
    parser.add_argument("--tensorboard", type=Path, metavar="DIR", help="log every run to tensorboard under DIR/<run>_1")
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
        raise SuiteError(
            f"--out {out_dir}: {existing} is not writable ({exc.strerror}); choose another folder with --out"
        ) from exc


#: seeds, evaluation frequency and episodes of a run without a suite
ADHOC_SEEDS, ADHOC_BUDGET, ADHOC_EVALUATIONS, ADHOC_EVAL_EPISODES = [0], 100_000, 10, 10


def _hyperparam(item: str) -> tuple[str, Any]:
    """``key:value`` of ``--hyperparams``, the value read as YAML (``1e-3``, ``[64, 64]``, ``true``)."""
    key, sep, value = item.partition(":")
    if not sep or not key:
        raise SuiteError(
            f"--hyperparams {item!r}: write KEY:VALUE, e.g. learning_rate:0.001 or policy_kwargs:{{net_arch: [64]}}"
        )
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise SuiteError(f"--hyperparams {item!r}: the value is not valid YAML") from exc


def adhoc_suite(args: argparse.Namespace, folder: Path) -> Path:
    """Write the one-task suite of a run without a suite (``--algo``, ``--env``) and return its path.

    The algorithm keeps its constructor's defaults (SB3's for SB3's algorithms) except the
    ``--hyperparams``; it is evaluated ``ADHOC_EVALUATIONS`` times over the budget. The suite
    file is validated like any other, so a typo is the same one-line error.
    """
    if args.suite or args.algos or args.envs:
        raise SuiteError("--algo/--env run without a suite: drop --suite, --algos and --envs (or drop --algo and --env)")
    if not (args.algo and args.env):
        raise SuiteError("a run without a suite needs both --algo and --env, e.g. --algo SAC --env Hopper-v5")
    if args.algo not in algorithms.ALGORITHMS:
        raise SuiteError(f"--algo: unknown algorithm {args.algo!r}; registered: {', '.join(sorted(algorithms.ALGORITHMS))}")
    entry = algorithms.get(args.algo)
    required: tuple[str, ...] = ()
    if entry.kind not in algorithms.BUILTIN_KINDS:
        required = getattr(algorithms.kind_module(entry.kind), "REQUIRED_TASK_KEYS", ())
    if required:
        raise SuiteError(
            f"--algo {args.algo} needs the task keys {', '.join(required)}: run it from a suite "
            f"(see benchmarks/suites/, e.g. the tasks of the quick suite)"
        )
    if entry.needs_data != bool(args.dataset):
        raise SuiteError(
            f"--algo {args.algo} learns from a dataset: add --dataset ID (e.g. rlkit/hopper-v5/medium-v0)"
            if entry.needs_data
            else f"--dataset is for offline algorithms; {args.algo} learns from the env"
        )
    budget = args.budget if args.budget is not None else ADHOC_BUDGET
    if budget <= 0:
        raise SuiteError(f"--budget must be positive, got {budget}")
    task: dict[str, Any] = {"budget": budget, "eval_freq": max(budget // ADHOC_EVALUATIONS, 1)}
    if args.dataset:
        task = {"env": args.env, "dataset": args.dataset, **task}
    suite = {
        "description": f"{args.algo} on {args.env} with its defaults (python -m benchmarks.run --algo ... --env ...)",
        "seeds": ADHOC_SEEDS,
        "eval_episodes": ADHOC_EVAL_EPISODES,
        "tasks": {args.env: task},
        "algorithms": {args.algo: {"default": dict(map(_hyperparam, args.hyperparams))}},
    }
    path = folder / "adhoc.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


class ProgressBoard:
    """One tqdm bar per running run (steps, steps/s, ETA, last evaluation return) under the bar that counts runs.

    Workers send ``(run_id, steps, budget, last_return)`` on ``source`` (a queue with
    ``get(timeout=...)``); a thread of the driver moves the bars.

    :param source: the queue the workers' :class:`~benchmarks.worker.ProgressReporter` put on
    :param unit: the steps' unit shown on the bars
    """

    def __init__(self, source: Any, unit: str = "step") -> None:
        self.source, self.unit = source, unit
        self.bars: dict[str, tqdm] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                message = self.source.get(timeout=0.2)
            except queue.Empty:
                if self.stopped.is_set():  # stopped and drained
                    return
                continue
            except Exception:  # the queue went away with its backend: no more progress
                return
            self.update(*message)

    def update(self, run_id: str, steps: int, budget: int, last_return: float | None) -> None:
        """Move the bar of ``run_id`` to ``steps`` of ``budget`` (a new bar on its first message)."""
        with self.lock:
            if run_id in self.finished:
                return
            bar = self.bars.get(run_id)
            if bar is None:
                taken = {b.pos for b in self.bars.values()}
                position = next(i for i in range(1, len(self.bars) + 2) if i not in taken)
                bar = tqdm(
                    total=budget, initial=steps, desc=run_id, unit=self.unit, position=position, leave=False, file=sys.stderr
                )
                bar.pos = position
                self.bars[run_id] = bar
            bar.total = max(bar.total, steps)  # an on-policy run ends on a whole rollout, past its budget
            bar.update(steps - bar.n)
            if last_return is not None:
                bar.set_postfix_str(f"eval return {last_return:.1f}")

    def finish(self, run_id: str) -> None:
        """Remove the bar of a run that finished."""
        with self.lock:
            self.finished.add(run_id)
            bar = self.bars.pop(run_id, None)
            if bar is not None:
                bar.close()

    def close(self) -> None:
        """Stop the thread and remove every bar."""
        self.stopped.set()
        self.thread.join(timeout=2.0)
        for run_id in list(self.bars):
            self.finish(run_id)


def _execute_ray(
    specs: list[RunSpec], args: argparse.Namespace, progress: Any = None
) -> Iterator[tuple[RunSpec, dict[str, Any]]]:
    """Yield ``(spec, record)`` as Ray tasks finish (``ray.wait`` streaming; nothing blocks the submission)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    remote = ray.remote(run_one).options(
        num_cpus=args.cpus_per_run, num_gpus=args.gpus_per_run, max_retries=args.max_retries, retry_exceptions=False
    )
    pending = {remote.remote(spec, args.threads, progress): spec for spec in specs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            spec = pending.pop(ref)
            try:
                yield spec, ray.get(ref)
            except ray.exceptions.RayError as exc:
                message = f"Ray task failed after {args.max_retries} retries: {exc}"
                yield spec, {**base_record(spec, args.threads), "status": "failed", "traceback": message, "wall_time_s": 0.0}


def _claim(spec: RunSpec, out_dir: Path) -> RunClaim | None:
    """The claim on ``spec`` in ``out_dir``, or ``None`` when another runner holds it or has finished it."""
    held = RunClaim(out_dir, spec)
    if held.acquire() and not is_done(out_dir, spec):
        return held
    held.release()
    return None


def _execute(
    specs: list[RunSpec], workers: int, threads: int, progress: Any, out_dir: Path
) -> Iterator[tuple[RunSpec, dict[str, Any] | None]]:
    """Yield ``(spec, record)`` as runs finish: in-process for one worker, else a spawn process pool.

    Each run is claimed in ``out_dir`` before it starts (:class:`~benchmarks.store.RunClaim`) and
    its claim held until the caller has written its record (the generator is resumed), so that
    several runners can share one output folder: a run that another runner holds or has finished
    since this one started is yielded with ``None`` and not run.
    """
    if workers > 1:
        yield from _execute_pool(specs, workers, threads, progress, out_dir)
        return
    for spec in specs:
        held = _claim(spec, out_dir)
        if held is None:
            yield spec, None
            continue
        try:
            yield spec, run_one(spec, threads, progress)
        finally:
            held.release()


def _execute_pool(
    specs: list[RunSpec], workers: int, threads: int, progress: Any, out_dir: Path
) -> Iterator[tuple[RunSpec, dict[str, Any] | None]]:
    """:func:`_execute` on a spawn process pool: ``workers`` runs in flight, each claimed when it is submitted."""
    waiting = list(reversed(specs))
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        pending: dict[Future, tuple[RunSpec, RunClaim]] = {}
        while waiting or pending:
            while waiting and len(pending) < workers:
                spec = waiting.pop()
                held = _claim(spec, out_dir)
                if held is None:
                    yield spec, None
                else:
                    pending[pool.submit(run_one, spec, threads, progress)] = (spec, held)
            if not pending:
                continue
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                spec, held = pending.pop(future)
                try:
                    yield spec, future.result()
                finally:
                    held.release()


class _progress_queue:  # a context manager, named for what it yields
    """The queue that carries the runs' progress to the driver (``None`` when nothing runs).

    A plain queue in-process, a manager's queue for the process pool, a Ray queue for Ray.
    """

    def __init__(self, args: argparse.Namespace, needed: bool) -> None:
        self.args, self.needed, self.manager = args, needed, None

    def __enter__(self) -> Any:
        if not self.needed:
            return None
        if self.args.backend == "ray":
            import ray
            from ray.util.queue import Queue

            if not ray.is_initialized():
                ray.init(address=self.args.address, include_dashboard=False, log_to_driver=False)
            return Queue(actor_options={"num_cpus": 0})
        if self.args.workers <= 1:
            return queue.Queue()
        self.manager = get_context("spawn").Manager()
        return self.manager.Queue()

    def __exit__(self, *exc: object) -> None:
        if self.manager is not None:
            self.manager.shutdown()


def _score(row: dict[str, Any]) -> float | None:
    """The headline number of a table row: the normalised score where known, else the return."""
    for key in ("normalized_mean", "return_mean"):
        value = row.get(key)
        if value not in (None, ""):
            return float(value)
    return None


def reference_rows(suite: str, out_dir: Path) -> tuple[Path | None, dict[tuple[str, str], dict[str, Any]]]:
    """The committed reference ``results/<suite>/table.csv`` (unless ``out_dir`` is that folder), by (task, algorithm)."""
    reference = Path("results") / suite
    table = reference / "table.csv"
    if not table.is_file() or reference.resolve() == out_dir.resolve():
        return None, {}
    with table.open() as handle:
        return reference, {(row["task"], row["algo"]): row for row in csv.DictReader(handle)}


def show_summary(out_dir: Path, records: list[dict[str, Any]], suite: str, status: str) -> None:
    """Print the table (rich), how it compares with the committed reference, and where the files are.

    :param out_dir: the sweep's folder
    :param records: its run records
    :param suite: the suite's name (its reference is ``results/<suite>/``)
    :param status: a line on the runs (how many succeeded)
    """
    from rich.console import Console
    from rich.table import Table

    rows = list(csv.DictReader((out_dir / "table.csv").open())) if (out_dir / "table.csv").is_file() else []
    reference, reference_by_key = reference_rows(suite, out_dir)
    table = Table(
        title=f"{suite} (score: normalised where known, else return)",
        title_justify="left",
        caption=None if reference is None else f"reference: the committed {reference}/table.csv",
        caption_justify="left",
    )
    for column in ("task", "algorithm", "seeds", "budget", "score"):
        table.add_column(column, justify="right" if column in ("seeds", "budget", "score") else "left")
    if reference is not None:
        table.add_column("reference", justify="right")
        table.add_column("difference", justify="right")
    for row in rows:
        score = _score(row)
        cells = [row["task"], row["algo"], row["seeds"], row["budget"], "—" if score is None else f"{score:.1f}"]
        if reference is not None:
            ref = reference_by_key.get((row["task"], row["algo"]))
            ref_score = _score(ref) if ref is not None else None
            same_budget = ref is None or ref.get("budget") == row["budget"]
            cells.append("—" if ref_score is None else f"{ref_score:.1f}" + ("" if same_budget else f" ({ref['budget']})"))
            cells.append("—" if ref_score is None or score is None else f"{score - ref_score:+.1f}")
        table.add_row(*cells)
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    console.print(table)
    models = sum(1 for r in records if r.get("model"))
    files = "table.md, table.csv, curves/, runs/ (one JSON per run)"
    if models:
        files += f", models/ ({models} saved; replay one: python -m benchmarks.evaluate {out_dir}/runs/<run>.json)"
    console.print(f"{status}. Files in {out_dir}/: {files}", highlight=False, soft_wrap=True)
    if reference is None:
        console.print(f"No committed reference for {suite} (results/{suite}/table.csv) to compare with.", highlight=False)


def _check_args(args: argparse.Namespace) -> None:
    """Reject command-line values no run can use (a :class:`SuiteError` names the flag and the fix)."""
    if args.workers < 1 or args.threads < 1:
        raise SuiteError("--workers and --threads must be at least 1")
    if args.checkpoint_every < 0 or args.max_retries < 0 or args.cpus_per_run <= 0 or args.gpus_per_run < 0:
        raise SuiteError("--checkpoint-every, --max-retries, --gpus-per-run must be >= 0 and --cpus-per-run > 0")
    if args.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise SuiteError('--backend ray needs Ray: pip install -e ".[distributed]" (or pip install "ray[tune]")')
    if args.tensorboard is not None and importlib.util.find_spec("tensorboard") is None:
        raise SuiteError('--tensorboard needs tensorboard: pip install -e ".[tensorboard]" (or pip install tensorboard)')


def _attach_run_settings(specs: list[RunSpec], args: argparse.Namespace, out_dir: Path, command: str, commit: str) -> None:
    """Give every run its metadata (command, commit), model and checkpoint folders and logging."""
    for spec in specs:
        spec.meta = {"command": command, "commit": commit, "suite": spec.suite}
        spec.meta["model_dir"] = str((out_dir / "models" / spec.run_id).resolve())
        if args.tensorboard is not None:
            spec.meta["tensorboard_log"] = str(args.tensorboard.resolve())
        spec.checkpoint_every = args.checkpoint_every
        spec.checkpoint_dir = str((out_dir / "checkpoints" / spec.run_id).resolve())


def _store_results(
    results: Iterator[tuple[RunSpec, dict[str, Any] | None]], out_dir: Path, bar: tqdm, board: Any
) -> tuple[int, int]:
    """Write each finished run's record as it arrives; returns (failed runs, runs left to another runner)."""
    failed = elsewhere = 0
    for spec, record in results:
        if record is None:  # another runner on this folder holds it or has finished it
            elsewhere += 1
            tqdm.write(f"{spec.run_id}: run by another runner on {out_dir}; skipped here", file=sys.stderr)
            bar.update()
            continue
        if board is not None:
            board.finish(spec.run_id)
        record.pop("model_dir", None)
        if (out_dir / "models" / spec.run_id / "model.zip").is_file() and record["status"] == "ok":
            record["model"] = f"models/{spec.run_id}/model.zip"
        write_result(out_dir, spec, record)
        if record["status"] != "ok":
            failed += 1
            last_line = record["traceback"].strip().splitlines()[-1]
            tqdm.write(f"FAILED {spec.run_id}: {last_line}", file=sys.stderr)
        bar.set_postfix_str(spec.run_id)
        bar.update()
    return failed, elsewhere


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _check_args(args)
        if args.algo is not None or args.env is not None or args.dataset is not None or args.hyperparams:
            # the one-task suite lives as long as ``args`` (until main returns): its claims are read at the end
            args.adhoc_folder = tempfile.TemporaryDirectory(prefix="rlkit-adhoc-")
            args.suite = str(adhoc_suite(args, Path(args.adhoc_folder.name)))
        args.suite = args.suite or "quick"
        specs = build_specs(args.suite, args.algos, args.envs, args.seeds, args.budget, args.device)
        out_dir = args.out or Path("runs") / specs[0].suite
        _check_out_dir(out_dir)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    command = command_line("benchmarks.run", argv if argv is not None else sys.argv[1:])
    commit = git_commit()
    _attach_run_settings(specs, args, out_dir, command, commit)
    todo = [s for s in specs if not is_done(out_dir, s)]
    skipped = len(specs) - len(todo)
    missing = len(todo) if args.tables_only else 0
    if args.tables_only:
        todo = []
    start = time.perf_counter()
    failed = elsewhere = 0
    bar = tqdm(total=len(specs) - missing, initial=skipped, desc=f"{specs[0].suite}", unit="run", file=sys.stderr, position=0)
    with _progress_queue(args, bool(todo)) as progress:
        board = ProgressBoard(progress) if progress is not None else None
        results = (
            _execute_ray(todo, args, progress)
            if args.backend == "ray"
            else _execute(todo, args.workers, args.threads, progress, out_dir)
        )
        try:
            failed, elsewhere = _store_results(results, out_dir, bar, board)
        finally:
            if board is not None:
                board.close()
    bar.close()

    records = load_results(out_dir, specs)
    header = {
        "suite": specs[0].suite,
        "command": f"`{command}`",
        "commit": commit,
        "seeds": sorted({s.seed for s in specs}),
        "budget": ", ".join(sorted({f"{s.task}: {s.budget}" for s in specs})),
        "device": ", ".join(sorted({r.get("device", "?") for r in records if r.get("status") == "ok"})) or "—",
        "wall time of this invocation": f"{time.perf_counter() - start:.0f} s ({len(todo) - elsewhere} runs, {skipped} reused"
        + (f", {elsewhere} left to another runner" if elsewhere else "")
        + ")",
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
    show_summary(out_dir, records, specs[0].suite, f"{n_ok} of {len(specs)} runs ok")
    if failed:
        print(f"error: {failed} runs failed; see the traceback in their JSON under {out_dir / 'runs'}", file=sys.stderr)
        return 100 + min(failed, 155)
    return 0


if __name__ == "__main__":
    sys.exit(main())
