"""The live view: the figures it folds from snapshots, the lines it writes for workers that go
STALE/DEAD/come back, the panel it draws, and — on a real pseudo-terminal — the panel during a
live run (and nothing but the end with --quiet)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest
from rich.console import Console

from startline.engine.metrics import new_histogram
from startline.engine.model import ControlEvent, EventType, Scope, WorkerStatus
from startline.live.view import LiveFigures, LiveTally, panel, target_connections, worker_changes
from startline.testing import CLI, ROOT


def encoded(*us: int) -> str:
    h = new_histogram()
    for v in us:
        h.record_value(v)
    return h.encode().decode("ascii")


def test_the_tally_takes_each_snapshot_once_and_reads_the_last_interval_every_worker_reported():
    tally = LiveTally(interval_s=1.0)
    a = (
        "w0",
        {
            "n": 1,
            "intervals": [
                {"interval": 0, "ops": 10, "errors": 1, "connections": 2, "kinds": {"q": encoded(1000, 3000)}}
            ],
        },
    )
    b = (
        "w1",
        {
            "n": 1,
            "intervals": [{"interval": 0, "ops": 5, "errors": 0, "connections": 2, "kinds": {"q": encoded(2000)}}],
        },
    )
    later = ("w0", {"n": 2, "intervals": [{"interval": 1, "ops": 7, "errors": 0, "connections": 2}]})
    tally.add([a, b, later])
    tally.add([a, b, later])  # read again: nothing counts twice
    assert (tally.ops, tally.errors) == (22, 1)
    assert tally.complete(["w0", "w1"]) == 0  # w1 has not reported interval 1 yet
    assert tally.complete(["w0"]) == 1
    assert tally.complete(["w2"]) is None
    last = tally.interval(0)
    assert last["qps"] == 15 and last["connections"] == 4 and last["errors"] == 1
    assert last["latency_ms"]["max"] == pytest.approx(3.0, rel=1e-3) and last["latency_ms"]["p50"] == pytest.approx(
        2.0, rel=1e-3
    )


def test_memory_of_the_tally_stays_flat_in_run_length():
    tally = LiveTally(interval_s=1.0)
    for i in range(1000):
        tally.add([("w0", {"n": i, "intervals": [{"interval": i, "ops": 1, "errors": 0, "kinds": {"q": encoded(5)}}]})])
    assert len(tally._rows) <= 6 and len(tally._latency) <= 6 and tally.ops == 1000


def test_a_line_for_each_worker_that_goes_stale_or_dead_or_recovers():
    S = WorkerStatus
    assert worker_changes({"w0": S.RUNNING}, {"w0": S.STALE}, 3.0) == ["[   3.0 s] worker w0 STALE"]
    assert worker_changes({"w0": S.STALE}, {"w0": S.RUNNING}, 4.0) == ["[   4.0 s] worker w0 recovered (RUNNING)"]
    assert worker_changes({"w0": S.STALE}, {"w0": S.DEAD}, 9.0) == ["[   9.0 s] worker w0 DEAD"]
    assert worker_changes({"w0": S.RUNNING}, {"w0": S.DRAINING}, 9.0) == []
    assert worker_changes({"w0": S.STALE}, {"w0": S.COMPLETED}, 9.0) == []


def test_target_connections_follow_each_workers_last_count_run_wide_or_its_own():
    def ev(n: int, connections: int, scope: Scope = Scope.RUN, scope_id: str | None = None) -> ControlEvent:
        return ControlEvent("r", n, EventType.SET_CONNECTIONS, connections=connections, scope=scope, scope_id=scope_id)

    events = [ev(1, 2), ev(2, 5, Scope.WORKER, "w1")]
    assert target_connections(events, {"w0": "default", "w1": "default"}) == 7
    assert target_connections(events, {"w0": "default"}) == 2
    assert target_connections([], {"w0": "default"}) is None


def test_target_connections_count_a_group_scoped_change_for_the_groups_workers_only():
    """A SET_CONNECTIONS scoped to a WORKER_GROUP counts toward "N planned" for the workers of that
    group (the live view once left WORKER_GROUP out: a worker's view applies it, the panel did not)."""

    def ev(n: int, connections: int, scope: Scope = Scope.RUN, scope_id: str | None = None) -> ControlEvent:
        return ControlEvent("r", n, EventType.SET_CONNECTIONS, connections=connections, scope=scope, scope_id=scope_id)

    events = [ev(1, 2), ev(2, 6, Scope.WORKER_GROUP, "readers")]
    workers = {"w0": "readers", "w1": "writers", "w2": "readers"}
    assert target_connections(events, workers) == 6 + 2 + 6


def test_the_panel_shows_the_run_the_last_interval_the_start_events_and_worker_changes():
    figures = LiveFigures(
        title="demo: 2 workers",
        progress="RUNNING MEASUREMENT, 7 s left",
        workers={"RUNNING": 1, "STALE": 1},
        target_connections=8,
        open_connections=6,
        last={
            "interval": 4,
            "interval_s": 1.0,
            "qps": 1234.0,
            "errors": 3,
            "connections": 6,
            "latency_ms": {"p50": 1.5, "p99": 9.25, "max": 12.0},
        },
        ops=5000,
        errors=3,
        start={"connections": 8, "lag_ms": {"p50": 1.2, "max": 2.5}, "skew_ms": 1.9},
        events=["SET_PHASE MEASUREMENT at +3.0 s"],
        changes=["[   5.0 s] worker w1 STALE"],
    )
    console = Console(record=True, width=100, force_terminal=True)
    console.print(panel(figures))
    text = console.export_text()
    for needle in (
        "RUNNING MEASUREMENT, 7 s left",
        "1 RUNNING, 1 STALE",
        "connections open 6 of 8 planned",
        "4–5 s",
        "1,234",
        "9.25",
        "totals: 5,000 operations, 3 errors",
        "skew 1.90 ms",
        "SET_PHASE MEASUREMENT",
        "worker w1 STALE",
    ):
        assert needle in text, needle


SCENARIO = """
name = "live-view"
workers = 2
connections_per_worker = 2
warmup_s = 1
measurement_s = 4
flush_interval_s = 1
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
setup = ["DROP TABLE IF EXISTS t", "CREATE TABLE t (k INTEGER PRIMARY KEY)", "INSERT INTO t VALUES (1)"]

[start]
strategy = "scheduled"
lead_ms = 1000

[[operations]]
name = "read"
sql = "SELECT k FROM t WHERE k = 1"
"""


def run_on_a_terminal(*args: str, timeout: float = 120) -> tuple[int, str]:
    """``startline ARGS`` with stdout and stderr on a pseudo-terminal; what it drew, escapes removed."""
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="110", LINES="40", TERM="xterm-256color")
    proc = subprocess.Popen([*CLI, *args], stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            out.extend(chunk)
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=30)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode("utf-8", "replace"))


@pytest.mark.live
def test_on_a_terminal_a_run_draws_the_live_panel_and_quiet_keeps_only_the_end(tmp_path):
    path = tmp_path / "live.toml"
    path.write_text(SCENARIO)
    code, drawn = run_on_a_terminal("run", "--no-report", str(path), "--out", str(tmp_path / "out"))
    assert code == 0, drawn
    assert "live-view: 2 workers × 2 connections" in drawn
    assert "workers: 2 RUNNING; connections open 4 of 4 planned" in drawn
    assert re.search(r"totals: [1-9][\d,]* operations, 0 errors", drawn)
    assert re.search(r"start: 4 connections, lag p50 [\d.]+ ms", drawn)
    assert "event: SET_PHASE MEASUREMENT" in drawn
    assert drawn.index("connections open") < drawn.index("verdict: passed")  # drawn during the run

    code, quiet = run_on_a_terminal("run", "--no-report", str(path), "--out", str(tmp_path / "quiet"), "--quiet")
    assert code == 0, quiet
    assert "connections open" not in quiet and "totals:" not in quiet
    assert quiet.strip().splitlines()[-1].strip() == str(tmp_path / "quiet" / "summary.json")
