"""What the database itself counted, interval by interval (issue 26, part 2): the readings turned
into deltas on the run's clock (pure), and live runs on the real PostgreSQL server (pgserver's):
commits that match what the run committed, a deadlock between two of the run's operations, the
run's sessions waiting under a lock held by the test, and the report that shows them."""

from __future__ import annotations

import csv
import json
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from startline.engine.serverstats import (
    COUNTERS,
    SERVER_COLUMNS,
    Placement,
    ServerReading,
    csv_columns,
    place,
    server_block,
    server_intervals,
)
from startline.testing import run_cli
from tests.test_report import browse, external_references


def reading(index: int, at: float, rtt: float = 0.001, **counters: int) -> ServerReading:
    return ServerReading(
        index=index,
        sent=at,
        received=at + rtt,
        server_s=1000.0 + at + rtt / 2,
        counters={k: counters.get(k, 0) for k in COUNTERS},
    )


# ---- pure: the readings into intervals ---------------------------------------------------------


@given(st.lists(st.lists(st.integers(0, 50), min_size=len(COUNTERS), max_size=len(COUNTERS)), min_size=1, max_size=12))
def test_the_interval_deltas_add_up_to_the_runs_totals_when_no_counter_was_reset(steps):
    readings, totals = [reading(0, -0.2)], dict.fromkeys(COUNTERS, 0)
    for k, step in enumerate(steps, start=1):
        totals = {c: totals[c] + d for c, d in zip(COUNTERS, step, strict=True)}
        readings.append(reading(k, k * 1.0, **totals))
    block = server_block("pg_stat_database", readings, Placement(0.0, 0.0, True), 1000.0, 1.0)
    for c in COUNTERS:
        assert sum(r[c] for r in block["intervals"]) == block["totals"][c] == totals[c]
    assert [r["t_s"] for r in block["intervals"]] == [float(k) for k in range(len(steps))]


def test_a_counter_that_went_back_between_two_readings_is_unknown_not_negative():
    rows = server_intervals(
        [reading(0, 0.0, xact_commit=500, blks_hit=90, blks_read=10), reading(1, 1.0, xact_commit=3)],
        Placement(0.0, 0.0, True),
        1000.0,
        1.0,
    )
    assert rows[0]["xact_commit"] is None  # pg_stat_reset() ran between them
    assert rows[0]["hit_ratio"] is None


def test_each_interval_says_where_its_readings_fell_on_the_runs_clock_and_the_first_stands_for_interval_0():
    rows = server_intervals(
        [reading(0, -0.35), reading(1, 1.004), reading(2, 2.1), reading(3, 2.6)], Placement(0.0, 0.0, True), 1000.0, 1.0
    )
    assert [r["t_s"] for r in rows] == [0.0, 1.0, 2.0]
    assert [(r["from_s"], r["to_s"]) for r in rows] == [(-0.3495, 1.0045), (1.0045, 2.1005), (2.1005, 2.6005)]


def test_the_servers_clock_is_placed_by_its_shortest_round_trip_with_half_of_it_as_uncertainty():
    # the server's clock runs 7 s ahead of the control plane's; the trio clock is control − 500
    readings = [
        ServerReading(0, 10.0, 10.020, 500 + 10.015 + 7, dict.fromkeys(COUNTERS, 0)),  # a slow one, read late
        ServerReading(1, 11.0, 11.002, 500 + 11.001 + 7, dict.fromkeys(COUNTERS, 0)),
    ]
    p = place(readings, lambda t: t + 500, same_clock=False, map_uncertainty_s=0.0005)
    assert p.offset_s == pytest.approx(7.0) and p.uncertainty_s == pytest.approx(0.0015)
    assert place(readings, lambda t: t + 500, same_clock=True, map_uncertainty_s=0.0005) == Placement(0.0, 0.0, True)


def test_waits_land_in_their_csv_column_and_rare_types_in_other():
    row = {c: 1 for c in COUNTERS} | {
        "hit_ratio": 0.5,
        "locks_waiting": 2,
        "waits": {"Lock": 2, "CPU": 1, "Timeout": 1},
    }
    cells = dict(zip(SERVER_COLUMNS, csv_columns(row), strict=True))
    assert (cells["wait_lock"], cells["wait_cpu"], cells["wait_other"], cells["wait_io"]) == (2, 1, 1, 0)
    assert cells["locks_waiting"] == 2 and cells["hit_ratio"] == 0.5


# ---- live: the real server ---------------------------------------------------------------------

SCENARIO = """
name = "server-stats"
workers = 2
connections_per_worker = 2
warmup_s = 0.5
measurement_s = {measurement_s}
snapshot_interval_s = 0.5
stale_after_beats = 10
dead_after_beats = 20
control = "sqlite:///{control}"
target = "{url}"

[start]
lead_ms = 1000  # (a local control plane: a second is plenty, and the suite is shorter)
{operations}
"""

COUNTED = """
[[operations]]
name = "read"
weight = 3
sql = "SELECT balance FROM accounts WHERE id = :id"
params.id = { type = "int", min = 1, max = 1000 }

[[operations]]
name = "update"
weight = 1
sql = "UPDATE accounts SET balance = balance + 1 WHERE id = :id"
params.id = { type = "int", min = 1, max = 1000 }
"""


def _accounts(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL)")
        c.execute("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 1000) g")


def _run(tmp_path: Path, url: str, operations: str, measurement_s: float = 2.0) -> tuple[dict, Path]:
    path, out = tmp_path / "s.toml", tmp_path / "out"
    path.write_text(
        SCENARIO.format(measurement_s=measurement_s, control=tmp_path / "control.db", url=url, operations=operations)
    )
    proc = run_cli("run", str(path), "--out", str(out), timeout=180)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), out


def test_commits_counted_by_the_server_per_interval_match_what_the_run_committed(postgres_url, tmp_path):
    _accounts(postgres_url)
    s, out = _run(tmp_path, postgres_url, COUNTED)
    assert s["verdict"] == "passed"
    server = s["server"]
    assert server["source"] == "pg_stat_database" and server["clock"]["same_clock"]  # loopback: this host's clock
    ops = sum(p["ops"] + p["errors"] for p in s["phases"].values())
    readings = server["sampling"]["transactions"]
    commits = sum(r["xact_commit"] for r in server["intervals"])
    assert commits == server["totals"]["xact_commit"]
    # besides its operations, a session commits its phase tag once per phase it enters (WARMUP,
    # MEASUREMENT) and the orchestrator's readings are one transaction each (counted)
    extra = commits - readings - ops
    assert 0 <= extra <= 4 * 2 * 2, (commits, readings, ops)
    updated = sum(r["tup_updated"] for r in server["intervals"])
    assert updated == sum(p["by_kind"].get("update", {}).get("ops", 0) for p in s["phases"].values())
    # the intervals sit on the run's time series: same t_s, the readings where they fell
    ts = [r["t_s"] for r in s["timeseries"]]
    assert [r["t_s"] for r in server["intervals"]][: len(ts) - 1] == ts[: len(ts) - 1]
    assert server["intervals"][0]["from_s"] < 0 < server["intervals"][0]["to_s"]
    assert all(0.45 <= r["to_s"] - r["from_s"] <= 1.5 for r in server["intervals"][1:-1])
    # intervals.csv: the server's columns on each interval's "all" row
    with open(out / "intervals.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "all"]
    assert set(SERVER_COLUMNS) <= set(rows[0])
    assert sum(int(r["xact_commit"] or 0) for r in rows) == commits
    # report.html: the server's figures on the run's time axis, drawn by a real Chromium
    page = out / "report.html"
    assert external_references(page.read_text()) == []
    dom = browse(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    figure = re.search(r'<figure id="chart-server">(.*?)</figure>', dom.stdout, re.S)
    assert figure is not None and figure.group(1).count("<path") >= 10
    for drawn in ("server commits/s", "client ops/s", "cache hit ratio", "locks waiting"):
        assert drawn in figure.group(1), drawn
    section = dom.stdout.split('id="the-database-server"')[1]
    assert "xact_commit" in section and "reading round trip" in section
    # `startline summarize` rebuilds from the workers' files and keeps the orchestrator's readings
    assert run_cli("summarize", str(out), timeout=60).returncode == 0
    assert json.loads((out / "summary.json").read_text())["server"] == server


DEADLOCKING = """
[[operations]]
name = "one_then_two"
transaction = [
  { sql = "UPDATE pair SET v = v + 1 WHERE k = 1" },
  { sql = "SELECT pg_sleep(0.05)" },
  { sql = "UPDATE pair SET v = v + 1 WHERE k = 2" },
]

[[operations]]
name = "two_then_one"
transaction = [
  { sql = "UPDATE pair SET v = v + 1 WHERE k = 2" },
  { sql = "SELECT pg_sleep(0.05)" },
  { sql = "UPDATE pair SET v = v + 1 WHERE k = 1" },
]

[checks]
max_error_rate = 1.0
"""


def test_a_deadlock_between_two_of_the_runs_operations_shows_in_the_interval_it_happened(postgres_url, tmp_path):
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute("CREATE TABLE pair (k INT PRIMARY KEY, v INT NOT NULL); INSERT INTO pair VALUES (1, 0), (2, 0)")
        c.execute(f"ALTER DATABASE {c.info.dbname} SET deadlock_timeout = '50ms'")  # found fast, many of them
    s, _ = _run(tmp_path, postgres_url, DEADLOCKING, measurement_s=3.0)
    deadlocks_seen = sum(
        f["count"] for f in s["failures"] if f["category"] == "conflict"
    )  # each one the client was told of
    assert deadlocks_seen > 0
    intervals = s["server"]["intervals"]
    assert sum(r["deadlocks"] for r in intervals) == deadlocks_seen
    # each interval's client-side errors (the deadlock victims) and the server's deadlocks agree
    # within the server's publishing delay (a session publishes at most once a second: < 3 intervals)
    errors = {r["t_s"]: r["errors"] for r in s["timeseries"]}
    server = {r["t_s"]: r["deadlocks"] for r in intervals}
    first_error = min(t for t, e in errors.items() if e)
    first_deadlock = min(t for t, d in server.items() if d)
    assert first_error <= first_deadlock <= first_error + 1.5


def test_the_runs_sessions_waiting_under_a_lock_held_by_the_test_are_counted_as_lock_waits(postgres_url, tmp_path):
    _accounts(postgres_url)
    held, waited = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(postgres_url) as c, psycopg.connect(postgres_url, autocommit=True) as look:
            c.execute("LOCK TABLE accounts IN EXCLUSIVE MODE")  # a transaction of the test's, outside the run
            held.set()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until the run's updates wait on it …
                row = look.execute(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE NOT l.granted AND a.application_name LIKE 'startline w%'"
                ).fetchone()
                if row and row[0]:
                    waited.set()
                    break
                time.sleep(0.05)
            time.sleep(2.0)  # … for four readings more
            c.rollback()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        s, _ = _run(tmp_path, postgres_url, COUNTED, measurement_s=4.0)
    finally:
        holder.join()
    assert waited.is_set()
    intervals = s["server"]["intervals"]
    waiting = [r for r in intervals if r["waits"].get("Lock", 0) > 0]
    assert waiting and all(r["locks_waiting"] >= r["waits"]["Lock"] for r in waiting)
    assert any(r["xact_commit"] and not r["waits"].get("Lock") for r in intervals[-3:])  # and after it, none
