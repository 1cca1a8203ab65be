"""A live run's output directory: claimed before anything starts (writable, this run's, not in use)."""

from __future__ import annotations

import fcntl
import json
import tempfile
from pathlib import Path
from typing import IO

from startline.engine.files import write_atomic
from startline.engine.scenario import ConfigError


def claim_out(out: Path, run_id: str, overwrite: bool) -> IO[str]:
    """Make sure OUT can be written before anything starts, and that it is this run's: a
    directory holding another run's summary is refused unless ``overwrite``, one in use by
    another `startline run` always (``ConfigError`` naming ``--out``). OUT/run_id says the run's
    id at once: after a crash (the orchestrator killed) it is what a restart needs (``--run-id``).
    Returns the held lock (close it to release)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
        lock = open(out / ".startline.lock", "w")
    except OSError as exc:
        raise ConfigError(f"--out {out}", f"cannot write there ({exc.strerror or exc})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigError("", f"--out {out} is in use by another startline run: choose another --out") from None
    previous = out / "summary.json"
    if previous.exists() and not overwrite:
        try:
            other = json.loads(previous.read_text(encoding="utf-8")).get("run_id")
        except (OSError, ValueError, AttributeError):
            other = None
        if other != run_id:  # the same run id is a restart: its summary is rewritten
            lock.close()
            raise ConfigError(
                "", f"--out {out} holds the summary of run {other!r}: choose another --out, or pass --overwrite"
            )
    try:
        write_atomic(out / "run_id", run_id + "\n")
    except OSError as exc:
        lock.close()
        raise ConfigError(f"--out {out}", f"cannot write there ({exc.strerror or exc})") from None
    return lock
