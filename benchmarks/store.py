"""Result files: one JSON per run, written atomically, read back for tables and resume."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from benchmarks.suite import RunSpec


def _umask() -> int:
    """The process's umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``path`` through a temporary file in the same folder and a rename.

    A reader sees either the old file or the whole new one, never a partial file.
    The file gets the mode of any new file (``0o666`` less the umask), not
    ``mkstemp``'s private ``0o600``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_path(out_dir: Path, spec: RunSpec) -> Path:
    """Where the result of ``spec`` is stored."""
    return out_dir / "runs" / f"{spec.run_id}.json"


def write_result(out_dir: Path, spec: RunSpec, record: dict[str, Any]) -> Path:
    """Store one run's record atomically; returns its path."""
    path = run_path(out_dir, spec)
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=str))
    return path


class RunClaim:
    """An exclusive claim on one run of an output folder, held while this process runs it.

    Several ``benchmarks.run`` processes may share one output folder (on one machine or
    on a shared file system): each runs a run only while it holds that run's claim, an
    ``flock`` on ``<out>/.claims/<run>.lock``, so no run is done twice and a process that
    dies (even killed) gives its claims back. :meth:`acquire` never waits.
    """

    def __init__(self, out_dir: Path, spec: RunSpec) -> None:
        self.path = out_dir / ".claims" / f"{spec.run_id}.lock"
        self.handle: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the claim; ``False`` (at once) when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "w")  # held open for as long as the claim
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self.handle = handle
        return True

    def release(self) -> None:
        """Give the claim back (nothing happens if it is not held)."""
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def read_result(path: Path) -> dict[str, Any] | None:
    """A stored record, or ``None`` if the file is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_done(out_dir: Path, spec: RunSpec) -> bool:
    """True if ``spec`` finished successfully with the same configuration (resume skips it)."""
    record = read_result(run_path(out_dir, spec))
    return bool(record) and record.get("status") == "ok" and record.get("config_hash") == spec.config_hash()


def load_results(out_dir: Path, specs: list[RunSpec] | None = None) -> list[dict[str, Any]]:
    """The records of ``specs`` (default: every record in ``out_dir/runs``).

    With ``specs``, a record written with other settings than its spec's (``config_hash``: the suite
    changed since it ran) is left out, as :func:`is_done` leaves it to be run again, so that no table or
    verdict mixes the old settings with the new.
    """
    if specs is None:
        return [r for r in map(read_result, sorted((out_dir / "runs").glob("*.json"))) if r is not None]
    records = []
    for spec in specs:
        record = read_result(run_path(out_dir, spec))
        if record is not None and record.get("config_hash") == spec.config_hash():
            record["options"] = spec.options  # the suite's current view, display-only keys included
            records.append(record)
    return records


def command_line(module: str, argv: list[str]) -> str:
    """``python -m module argv...`` as it runs from the project's root: an absolute path inside the project
    (``--out /home/me/rlkit/results/x`` or ``--out=...``) is written relative to the root, so that the record
    names no one machine's folders.

    :param module: the module run with ``python -m``
    :param argv: its arguments
    :return: the command, quoted for a POSIX shell
    """
    root = Path(__file__).resolve().parent.parent

    def relative(text: str) -> str:
        path = Path(text)
        if not path.is_absolute():
            return text
        try:
            return str(path.resolve().relative_to(root))
        except ValueError:
            return text

    words = []
    for word in argv:
        flag, equals, value = word.partition("=")
        words.append(flag + equals + relative(value) if equals and flag.startswith("--") else relative(word))
    return shlex.join(["python", "-m", module, *words])


def git_commit() -> str:
    """The current commit (``-dirty`` appended when the tree has changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # results/ is output, not code: its changes do not make the code dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")
