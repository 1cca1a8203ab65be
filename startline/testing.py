"""Parts for testing startline and harnesses built on it (the tests and benchmarks use them):
a recording target, a control plane with delays and repeats, a live multi-process run on SQLite
whose every participant can be killed, and the ``startline`` command as a subprocess."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from startline.backends.memory import TrioWallClock
from startline.engine.model import ControlEvent
from startline.engine.ports import ControlPlaneTraits, Session, Target
from startline.engine.scenario import OperationSpec, Scenario
from startline.engine.workload import derive_seed
from startline.simulate.backend import stale_read

ROOT = Path(__file__).resolve().parents[1]
"""The source checkout (examples/, docs/) when startline runs from one: the tests' working directory."""
CLI = (sys.executable, "-m", "startline.cli")
"""The ``startline`` command as a real subprocess, whatever the PATH."""


def run_cli(
    *args: str, timeout: float, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``startline ARGS`` from the project root (or ``cwd``) and capture its output."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=None if env is None else dict(env),
    )


def kv_setup(rows: int) -> str:
    """A scenario's ``setup`` line (TOML) that creates table kv (k primary key, v) with ``rows`` rows."""
    return (
        'setup = ["""\n  DROP TABLE IF EXISTS kv;\n'
        "  CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL);\n"
        f"  WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
        'INSERT INTO kv SELECT i, 0 FROM n;\n"""]\n'
    )


FAULTY = """
name = "faulty"
workers = {workers}
connections_per_worker = 2
warmup_s = 0.5
measurement_s = {measurement_s}
heartbeat_s = 0.5
stale_after_beats = 2
dead_after_beats = 4
flush_interval_s = 0.5
snapshot_interval_s = 0.5
drain_timeout_s = 1.0
run_idle_timeout_s = {idle_s}
on_worker_loss = "{policy}"
target = "sqlite:///{{out}}/data.db"
{setup}

[start]
strategy = "scheduled"
lead_ms = 1000

[[operations]]
name = "read"
sql = "SELECT v FROM kv WHERE k = :k"
params.k = {{ type = "int", min = 1, max = 200 }}
"""


def faulty(**fields: object) -> str:
    """FAULTY (a short SQLite run with fast heartbeats, for fault tests) filled in, on a 200-row kv table."""
    return FAULTY.format(setup=kv_setup(200), **fields)


CLOCK0 = TrioWallClock(epoch=0.0)
"""Virtual wall clock = trio time: control-plane instants and trio times coincide."""


@attrs.frozen
class Op:
    worker_id: str
    slot: int
    name: str
    began: float
    ended: float


@attrs.define(eq=False)
class RecordingSession(Session):
    target: RecordingTarget
    worker_id: str
    slot: int
    tags: list[dict[str, str]] = attrs.Factory(list)

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        began = trio.current_time()
        try:
            await trio.sleep(params.get("ms", 0) / 1000.0)
        finally:
            self.target.ops.append(Op(self.worker_id, self.slot, op.name, began, trio.current_time()))

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        self.tags.append(dict(tag))

    async def close(self) -> None:
        self.target.closed += 1


@attrs.define(eq=False)
class RecordingTarget(Target):
    """Each operation sleeps ``params['ms']`` and is recorded (trio time, finished or cancelled)."""

    ops: list[Op] = attrs.Factory(list)
    sessions: list[RecordingSession] = attrs.Factory(list)
    closed: int = 0

    async def open_session(self, worker_id: str, slot: int) -> RecordingSession:
        s = RecordingSession(self, worker_id, slot)
        self.sessions.append(s)
        return s

    def error_category(self, exc: BaseException) -> str:
        return type(exc).__name__


def processes_running(*words: str) -> list[int]:
    """The pids of this machine's processes whose command line holds every one of ``words``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone meanwhile
                continue
            if all(w in cmdline for w in words):
                found.append(int(entry.name))
    return found


def scenario(**overrides: Any) -> Scenario:
    """A small scenario with one sleeping operation; any field can be overridden."""
    base: dict[str, Any] = {
        "name": "t",
        "workers": 2,
        "connections_per_worker": 2,
        "warmup_s": 1.0,
        "measurement_s": 3.0,
        "operations": [
            {
                "name": "q",
                "call": "startline.backends.memory.ops:sleep_ms",
                "params": {"ms": {"type": "int", "min": 5, "max": 50}},
            }
        ],
    }
    start = overrides.pop("start", {})
    base.update(overrides)
    base["start"] = start
    return Scenario.from_dict(base)


@attrs.define(eq=False)
class SluggishControlPlane:
    """Wraps a control plane: every call takes a drawn latency (half each way); event reads come back late,
    repeated, shuffled and cut short (a prefix of what is there), as a real poll may."""

    inner: Any
    seed: int
    max_latency_s: float = 0.05
    mangle_events: bool = True
    _n: int = 0

    @property
    def traits(self) -> ControlPlaneTraits:
        """The wrapped control plane's (latency changes none of them)."""
        return self.inner.traits

    def _rng(self, what: str) -> random.Random:
        self._n += 1
        return random.Random(derive_seed(self.seed, what, self._n))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name.startswith("_") or not callable(method) or name == "wait_for_change":
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            rng = self._rng(name)
            half = rng.uniform(0, self.max_latency_s) / 2  # symmetric legs: NTP's offset is exact
            await trio.sleep(half)
            result = await method(*args, **kwargs)
            await trio.sleep(half)
            if name == "read_events" and self.mangle_events:
                result = _mangle(result, rng)
            return result

        return call


def _mangle(events: list[ControlEvent], rng: random.Random) -> list[ControlEvent]:
    """Repeated and shuffled; cut short three times in ten."""
    return stale_read(events, rng, cut=bool(events) and rng.random() < 0.3)


@attrs.define
class LiveRun:
    """A live run on SQLite with every participant a real process started here (``run --no-spawn``
    and ``worker``), so that a test or a benchmark can kill any one of them."""

    config: Path
    out: Path
    run_id: str
    workers: int
    orchestrator: subprocess.Popen[str] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = attrs.Factory(dict)

    @property
    def control(self) -> Path:
        return self.out / "control.db"

    def start(self) -> LiveRun:
        self.out.mkdir(parents=True, exist_ok=True)
        self.orchestrator = self.start_orchestrator(self.out)
        for i in range(self.workers):
            self.start_worker(i)
        return self

    def start_orchestrator(self, out: Path) -> subprocess.Popen[str]:
        cmd = [
            *CLI,
            "run",
            str(self.config),
            "--out",
            str(out),
            "--run-id",
            self.run_id,
            "--no-spawn",
            "--quiet",
            "--no-report",
        ]
        cmd += ["--control", f"sqlite:///{self.control}"]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def start_worker(self, index: int) -> None:
        wid = f"w{index:03d}"
        cmd = [*CLI, "worker", "--control", f"sqlite:///{self.control}", "--run-id", self.run_id, "--worker-id", wid]
        cmd += ["--index", str(index), "--results", str(self.out / f"worker-{wid}.json"), "--allow-sql"]
        with open(self.out / f"worker-{wid}.log", "wb") as log:  # the child keeps its own descriptor
            self.procs[wid] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)

    def pause(self, wid: str, attempts: int = 50) -> None:
        """SIGSTOP worker ``wid`` while it holds no write lock on the SQLite control plane. A
        process stopped inside a write keeps the file locked: nobody can write until it resumes
        (the run then fails ``control_plane_lost``), which is not a paused worker but a paused
        lock. Stopped inside one, it is resumed and stopped again a moment later."""
        proc = self.procs[wid]
        for _ in range(attempts):
            proc.send_signal(signal.SIGSTOP)
            db = sqlite3.connect(self.control, timeout=0.2)
            try:
                db.execute("BEGIN IMMEDIATE")
                db.rollback()
                return
            except sqlite3.OperationalError:  # locked: by this worker, or by another for a moment
                proc.send_signal(signal.SIGCONT)
                time.sleep(0.05)
            finally:
                db.close()
        raise TimeoutError(f"could not pause {wid} outside a write in {attempts} attempts")

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if not self.control.exists():
            return []
        db = sqlite3.connect(self.control, timeout=30)
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return []
        finally:
            db.close()

    def wait_until(self, what: str, predicate: Any, timeout: float = 120.0) -> None:
        """Poll ``predicate`` (real time: this waits for processes, it times nothing)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not happen within {timeout} s")
            time.sleep(0.05)

    def measured(self, *wids: str) -> bool:
        """Every worker in ``wids`` (default: all) has flushed results with an operation in them."""
        rows = self.query("SELECT WORKER_ID, PAYLOAD FROM TEST_RESULTS WHERE RUN_ID = ?", self.run_id)
        ops = {w: sum((json.loads(p).get("metrics") or {}).get("ops", {}).values()) for w, p in rows}
        wanted = wids or tuple(f"w{i:03d}" for i in range(self.workers))
        return all(ops.get(w, 0) > 0 for w in wanted)

    def measuring(self) -> bool:
        rows = self.query("SELECT PHASE FROM RUN_STATUS WHERE RUN_ID = ?", self.run_id)
        return bool(rows) and rows[0][0] == "MEASUREMENT"

    def kill(self, wid: str) -> float:
        """SIGKILL one worker; returns the instant (epoch seconds) it was killed."""
        self.procs[wid].send_signal(signal.SIGKILL)
        killed = time.time()
        self.procs[wid].wait(timeout=30)
        return killed

    def finish(self, timeout: float = 180.0) -> tuple[int, str, dict[str, Any]]:
        assert self.orchestrator is not None
        _out, err = self.orchestrator.communicate(timeout=timeout)
        for p in self.procs.values():
            p.wait(timeout=60)
        summary = json.loads((self.out / "summary.json").read_text()) if (self.out / "summary.json").exists() else {}
        return self.orchestrator.returncode, err, summary


def thread_hops(monkeypatch: Any) -> list[Any]:
    """From now on, every function sent to a thread (``trio.to_thread.run_sync``), in a list the
    caller reads: a test that an operation path makes no thread hop."""
    hops: list[Any] = []
    real = trio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    return hops
