"""PostgreSQL as control plane and target, against a real server (pgserver's PostgreSQL 16 on
loopback): its clock, push by LISTEN/NOTIFY and the fallback to polling when the listening
connection is killed, the target's binding and application_name, and live multi-process runs
with push, poll and scheduled starts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import trio

from startline.backends.postgres import PostgresControlPlane, PostgresTarget
from startline.backends.postgres.conn import safe
from startline.backends.sqlparams import positional
from startline.engine.model import ControlEvent, EventType, Phase, RunState, RunStatus
from startline.engine.scenario import OperationSpec
from startline.testing import CLI, ROOT, run_cli, thread_hops

pytestmark = pytest.mark.live  # processes, servers or a browser


async def _run(cp: PostgresControlPlane, run_id: str = "r1") -> RunState:
    await cp.create_run(RunState(run_id, RunStatus.PREPARED, Phase.PREPARING, connections=1, scenario={"a": 1}))
    run = await cp.read_run(run_id)
    assert run is not None
    return run


async def test_the_control_planes_clock_is_the_servers_and_the_log_keeps_order(postgres_url):
    cp = PostgresControlPlane(postgres_url)
    try:
        before = time.time()
        now = await cp.server_time()
        assert abs(now - before) < 5  # the server runs on this host: the same clock, give or take
        run = await _run(cp)
        assert run.scenario == {"a": 1} and run.start_time is None
        started = await cp.update_run(
            "r1", expect_status=RunStatus.PREPARED, status=RunStatus.RUNNING, start_time_now=True
        )
        assert started is not None and started.start_time is not None and started.version == run.version + 1
        assert await cp.update_run("r1", expect_status=RunStatus.PREPARED, status=RunStatus.FAILED) is None
        for n in (1, 2):
            await cp.append_event(ControlEvent("r1", n, EventType.SET_CONNECTIONS, connections=n))
        await cp.append_event(ControlEvent("r1", 2, EventType.SET_CONNECTIONS, connections=2))  # a retry: once
        assert [e.sequence_id for e in await cp.read_events("r1", 0)] == [1, 2]
        await cp.append_snapshot("r1", "w0", {"n": 1, "intervals": []})
        assert await cp.read_snapshots("r1") == [("w0", {"n": 1, "intervals": []})]
    finally:
        await cp.close()


async def test_push_wakes_a_waiter_at_once_on_every_change_of_the_run(postgres_url):
    cp, writer = PostgresControlPlane(postgres_url), PostgresControlPlane(postgres_url)
    try:
        run = await _run(writer)
        woke: list[int] = []

        async def wait() -> None:
            woke.append(await cp.wait_for_change("r1", run.version))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.3)  # the waiter is listening, nothing changed yet
            assert woke == []
            await writer.append_event(ControlEvent("r1", 1, EventType.START, at=0.0, connections=1))
        assert woke == [run.version + 1]
        stats = cp.statistics()
        assert stats.listening and stats.listens == 1 and stats.notifications >= 1 and stats.fallback_polls == 0
    finally:
        await cp.close()
        await writer.close()


async def test_push_falls_back_to_polling_when_its_connection_is_killed_and_listens_again(postgres_url):
    cp, writer = PostgresControlPlane(postgres_url), PostgresControlPlane(postgres_url)
    try:
        run = await _run(writer)
        with trio.move_on_after(0.2):
            await cp.wait_for_change("r1", run.version)  # now listening
        first = cp.listener_pid
        assert first is not None
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
        woke: list[int] = []

        async def wait() -> None:
            woke.append(await cp.wait_for_change("r1", run.version))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.3)
            await writer.update_run("r1", status=RunStatus.STARTING)
        assert woke == [run.version + 1]
        stats = cp.statistics()
        assert stats.listens == 2 and cp.listener_pid not in (None, first)  # listening again, a new connection
        # and the new connection is woken by NOTIFY again
        async with trio.open_nursery() as nursery:
            woke.clear()
            nursery.start_soon(lambda: _append_after(writer, 0.3))
            woke.append(await cp.wait_for_change("r1", run.version + 1))
        assert woke == [run.version + 2] and cp.statistics().notifications > stats.notifications
    finally:
        await cp.close()
        await writer.close()


async def _append_after(cp: PostgresControlPlane, delay: float) -> None:
    await trio.sleep(delay)
    await cp.update_run("r1", status=RunStatus.RUNNING)


async def test_the_target_binds_named_parameters_outside_literals_and_tags_sessions_by_phase(postgres_url):
    target = PostgresTarget(postgres_url)
    await target.setup(["CREATE TABLE kv (k INT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (1, 'time:now 5%')"])
    session = await target.open_session("w7", 0)
    try:
        await session.set_phase({"run_id": "r", "worker_id": "w7", "phase": "MEASUREMENT"})
        op = OperationSpec("q", sql="UPDATE kv SET v = v || ':x' || :suffix WHERE k = :k AND v LIKE 'time:now 5%'")
        await session.execute(op, {"k": 1, "suffix": "!"})
        with psycopg.connect(postgres_url) as c:
            assert c.execute("SELECT v FROM kv").fetchone() == ("time:now 5%:x!",)
            names = [r[0] for r in c.execute("SELECT application_name FROM pg_stat_activity").fetchall()]
        assert "startline w7 MEASUREMENT" in names
        with pytest.raises(psycopg.errors.UndefinedTable) as err:
            await session.execute(OperationSpec("bad", sql="SELECT * FROM absent"), {})
        assert target.error_category(err.value) == "sql"
    finally:
        await session.close()


def test_named_parameters_are_rewritten_only_in_sql_code():
    sql = "SELECT ':a', \"b:c\", x::int, :id, $$:d$$, $t$:e$t$ -- :f\n/* :g */ FROM t WHERE y = :id AND z LIKE '5%'"
    qmark, names = positional(sql)
    assert names == ("id", "id")
    assert qmark == sql.replace(":id", "?")
    pyformat, _ = positional(sql, "%s")
    assert pyformat == sql.replace(":id", "%s").replace("%'", "%%'")


def test_a_password_never_shows_in_a_message():
    assert safe("postgresql://bob:s3cret@db:5432/x failed") == "postgresql://bob:***@db:5432/x failed"
    assert "s3cret" not in safe("host=db password=s3cret user=bob")


SCENARIO = """
name = "pg-{strategy}"
workers = 3
connections_per_worker = 2
warmup_s = 0.5
measurement_s = 2
stale_after_beats = 10  # a busy CI machine is not a lost worker
dead_after_beats = 20
control = "{url}"
target = "{url}"
setup = ["DROP TABLE IF EXISTS accounts",
         "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL)",
         "INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 1000) g"]

[start]
strategy = "{strategy}"

[[operations]]
name = "read"
weight = 3
sql = "SELECT balance FROM accounts WHERE id = :id"
params.id = {{ type = "int", min = 1, max = 1000 }}

[[operations]]
name = "update"
weight = 1
sql = "UPDATE accounts SET balance = balance + 1 WHERE id = :id"
params.id = {{ type = "int", min = 1, max = 1000 }}
"""


@pytest.mark.parametrize("strategy", ["push", "poll", "scheduled"])
def test_a_live_run_on_postgresql_with_worker_processes(strategy, postgres_url, tmp_path):
    path = tmp_path / "pg.toml"
    path.write_text(SCENARIO.format(strategy=strategy, url=postgres_url))
    proc = run_cli("run", str(path), "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (s["status"], s["verdict"], s["start_strategy"]) == ("COMPLETED", "passed", strategy)
    assert s["start"]["connections"] == 6 and s["phases"]["MEASUREMENT"]["ops"] > 0
    assert set(s["phases"]["MEASUREMENT"]["by_kind"]) == {"read", "update"}
    with psycopg.connect(postgres_url) as c:
        updated = c.execute("SELECT sum(balance) - 100 * 1000 FROM accounts").fetchone()[0]
    assert updated == sum(b["by_kind"].get("update", {}).get("ops", 0) for b in s["phases"].values())
    assert (tmp_path / "out" / "report.html").exists()
    # the target's witness: the server's clock when each first operation arrived (sent with it);
    # START_TIME is on that clock too (same server), and no first operation arrives before it was sent
    st = s["start"]
    target = st["witnesses"]["target"]
    assert target["connections"] == 6 and target["skew_ms"] >= 0
    assert target["lag_ms"]["min"] >= st["lag_ms"]["min"] - st["lag_uncertainty_ms"] - 1.0
    # pgserver's build has no pg_stat_statements: one line says so, and there is no file
    assert "pg_stat_statements is not installed on the target" in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "pg_stat_statements.json").exists()


async def test_statement_figures_are_read_from_pg_stat_statements_and_their_deltas_are_per_statement(postgres_url):
    """pgserver's PostgreSQL has no contrib modules: a table with the view's columns stands in for
    the extension so that the reading runs as written against a real server."""
    from startline.backends.postgres.target import statement_deltas

    target = PostgresTarget(postgres_url)
    assert await target.statement_stats() is None  # not installed: None, not an error
    await target.setup(
        [
            "CREATE TABLE pg_stat_statements "
            "(queryid BIGINT, query TEXT, calls BIGINT, total_exec_time FLOAT8, rows BIGINT)",
            "INSERT INTO pg_stat_statements VALUES (1, 'SELECT 1', 10, 5.0, 10), (2, 'UPDATE t', 4, 8.0, 4)",
        ]
    )
    before = await target.statement_stats()
    assert before is not None and before["1"] == {"query": "SELECT 1", "calls": 10, "total_ms": 5.0, "rows": 10}
    await target.setup(
        [
            "UPDATE pg_stat_statements SET calls = calls + 90, total_exec_time = total_exec_time + 45, "
            "rows = rows + 90 WHERE queryid = 1",
            "INSERT INTO pg_stat_statements VALUES (3, 'INSERT INTO t', 2, 1.0, 2)",
        ]
    )
    after = await target.statement_stats()
    deltas = statement_deltas(before, after)
    assert [d["queryid"] for d in deltas] == ["1", "3"]  # most time first; statement 2 did not run
    assert deltas[0] == {
        "queryid": "1",
        "query": "SELECT 1",
        "calls": 90,
        "rows": 90,
        "total_ms": 45.0,
        "mean_ms": 0.5,
    }
    assert deltas[1]["calls"] == 2  # new since the first reading: counted from zero


def test_check_connect_explains_every_statement_on_postgresql_and_leaves_nothing_behind(postgres_url, tmp_path):
    path = tmp_path / "pg.toml"
    good = SCENARIO.format(strategy="push", url=postgres_url)
    path.write_text(good)
    proc = run_cli("check", str(path), "--connect", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with psycopg.connect(postgres_url) as c:  # the setup ran inside a transaction that was rolled back
        assert c.execute("SELECT to_regclass('accounts')").fetchone() == (None,)
    path.write_text(good.replace("SELECT balance FROM accounts", "SELECT balanse FROM accounts"))
    proc = run_cli("check", str(path), "--connect", timeout=120)
    assert proc.returncode == 2
    assert "operations[0].sql: the target refuses it" in proc.stderr and "balanse" in proc.stderr


def test_the_target_shares_the_control_planes_clock_only_on_the_same_server_or_host():
    """Same clock is a comparison of declared clock keys: one server, or this host's clock (SQLite,
    a server on loopback); the Snowflake and callable targets stamp nothing, so share no clock."""
    from startline.backends.memory import CallableTarget
    from startline.backends.postgres import PostgresControlPlane, PostgresTarget
    from startline.backends.snowflake import SnowflakeTarget
    from startline.backends.sqlite import SqliteControlPlane
    from startline.engine.ports import same_clock

    def target(url: str):
        return PostgresTarget(url).traits

    pg = PostgresControlPlane("postgresql://postgres@db.example.com:5432/db").traits
    assert same_clock(pg, target("postgresql://bob@db.example.com/other"))  # another database, one server
    assert not same_clock(pg, target("postgresql://postgres@db.example.com:5433/db"))
    assert not same_clock(pg, target("postgresql://postgres@127.0.0.1:5432/db"))
    host = SqliteControlPlane(Path("x.db")).traits
    assert host.clock_is_host and not pg.clock_is_host
    assert same_clock(host, target("postgresql://postgres@127.0.0.1:5432/db"))  # a server on this host
    assert same_clock(host, target("postgresql:///db"))  # a local socket
    assert not same_clock(host, target("postgresql://db.example.com/x"))
    assert not same_clock(host, CallableTarget().traits) and not same_clock(host, SnowflakeTarget.traits)


@pytest.mark.parametrize(
    ("driver", "url", "extra"),
    [
        ("psycopg", "postgresql://x@127.0.0.1/db", "startline[postgres]"),
        ("snowflake", "snowflake://c", "startline[snowflake]"),
    ],
)
def test_a_missing_driver_is_one_line_naming_its_extra(tmp_path, driver, url, extra):
    """As if the extra were not installed: the driver cannot be imported in the CLI's process."""
    import subprocess
    import sys

    from startline.testing import ROOT

    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n[[operations]]\nname = "q"\nsql = "SELECT 1"\n')
    code = f"import sys; sys.modules[{driver!r}] = None; from startline.cli import main; main()"
    args = ["run", str(path), "--out", str(tmp_path / "out"), "--control", url, "--target", url]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and extra in proc.stderr and "Traceback" not in proc.stderr


def without(module: str, *args: str, cwd) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where ``module`` cannot be imported (as if its extra were not installed)."""
    import sys

    code = f"import sys; sys.modules[{module!r}] = None; from startline.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_postgres_start_without_psycopg_is_one_line_naming_its_extra(tmp_path):
    """Issue 22 #17: `startline postgres start` without psycopg was a raw ModuleNotFoundError."""
    proc = without("psycopg", "postgres", "start", str(tmp_path / "data"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "startline[postgres-server]" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_run_without_matplotlib_names_the_plot_extra_in_full(tmp_path):
    """Issue 22 #22: the missing-extra line printed as `pip install 'startline'` (rich read [plot] as markup)."""
    from tests.test_scenario_cli import GOOD

    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    proc = without("matplotlib", "run", str(path), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'startline[plot]'" in proc.stderr


def test_a_target_database_that_does_not_exist_fails_in_seconds_before_any_worker_starts(tmp_path, postgres_url):
    """Issue 22 #16: the orchestrator's own connection had failed, yet it spawned workers, showed
    "0/2 READY" for 60 s and exited 3 at 65 s."""
    from tests.test_scenario_cli import GOOD

    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    path = tmp_path / "s.toml"
    path.write_text(
        GOOD.replace('call = "startline.backends.memory.ops:sleep_ms"', 'sql = "SELECT 1"').replace(
            'params.ms = { type = "int", min = 1, max = 3 }', ""
        )
    )
    out = tmp_path / "out"
    began = time.monotonic()
    proc = run_cli(
        "run",
        "--no-report",
        str(path),
        "--out",
        str(out),
        "--control",
        f"sqlite:///{out}/control.db",
        "--target",
        missing,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - began < 30
    assert "target: cannot reach it" in proc.stderr and "no_such_database" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not list(out.glob("worker-*.log"))  # no worker was started to fail on it


def still_running(url: str, text: str) -> int:
    """Sessions on the server whose statement holds ``text`` and is not idle (this one left out)."""
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE strpos(query, %s) > 0 AND state <> 'idle' "
            "AND pid <> pg_backend_pid()",
            (text,),
        ).fetchone()[0]


HANGING = """
name = "hanging"
workers = 1
connections_per_worker = 2
warmup_s = 0
measurement_s = 2
drain_timeout_s = 1
control = "sqlite:///{{out}}/control.db"
target = "{url}"

[[operations]]
name = "fast"
weight = 20
sql = "SELECT 1"

[[operations]]
name = "hang"
weight = 1
sql = "SELECT pg_sleep(30)"
"""


def test_a_statement_left_running_at_the_drain_fails_the_run_and_is_cancelled_on_the_server(postgres_url, tmp_path):
    """Issue 22 #4: 30 s statements beside fast ones passed `max < 1000` and were still running on
    the server 10 s after the run exited. Each is now an ``unfinished`` error (the run fails its
    ``unfinished`` check, exit 1) and its cancellation reaches the server."""
    path = tmp_path / "hang.toml"
    path.write_text(HANGING.format(url=postgres_url))
    proc = run_cli("run", "--no-report", str(path), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    check = {c["name"]: c for c in s["checks"]}["unfinished"]
    assert not check["ok"] and check["value"] == 2  # both connections met the hang in 2 s
    assert still_running(postgres_url, "pg_sleep(30)") == 0


async def test_errors_group_by_what_the_server_said_not_the_values_bound_nor_our_stamp(postgres_url):
    """Issue 22 #20: bound values inlined in messages made five rows of count 1 of one error, and a
    session's first query showed our `; SELECT …` stamp. A target's messages are the server's
    primary message with values out."""
    target = PostgresTarget(postgres_url)
    session = await target.open_session("w000", 0)
    insert = OperationSpec("insert", sql="INSERT INTO dup VALUES (:id, :name)")
    messages = []
    try:
        for sql in ("SELECT nosuchcolumn FROM pg_class", "CREATE TABLE dup (id INT PRIMARY KEY, name TEXT)"):
            try:
                await session.execute(OperationSpec("q", sql=sql), {})
            except psycopg.Error as exc:
                messages.append(target.error_message(exc))
        await session.execute(insert, {"id": 1, "name": "first"})
        for i, name in enumerate(["a'b", "x" * 40, "ünï"]):
            for params in ({"id": 1, "name": name}, {"id": "not-a-number-" + str(i), "name": name}):
                with pytest.raises(psycopg.Error) as failed:
                    await session.execute(insert, params)
                messages.append(target.error_message(failed.value))
    finally:
        await session.close()
    first = messages[0]  # the session's first query carried the stamp
    assert "UndefinedColumn" in first and "nosuchcolumn" in first and "EXTRACT" not in first and "SELECT" not in first
    duplicates = {m for m in messages if "UniqueViolation" in m}
    assert len(duplicates) == 1 and "(1)" not in duplicates.pop()
    assert len({m for m in messages if "InvalidTextRepresentation" in m}) == 1
    assert all(m.count("\n") == 0 and "first" not in m and "a'b" not in m for m in messages)


async def test_a_session_runs_its_operations_without_a_thread_each(postgres_url, monkeypatch):
    """Issue 23: every operation was a thread hop to a blocking psycopg call. A session connects
    in a thread once; its operations then run on the Trio task, waiting on the socket."""
    target = PostgresTarget(postgres_url)
    session = await target.open_session("w000", 0)
    hops = thread_hops(monkeypatch)
    op = OperationSpec("q", sql="SELECT :n::int + 1")
    try:
        for n in range(200):
            await session.execute(op, {"n": n})
        await session.set_phase({"worker_id": "w000", "phase": "MEASUREMENT"})
    finally:
        await session.close()
    assert hops == []


async def test_a_cancelled_statement_is_stopped_on_the_server_and_the_session_goes_on(postgres_url):
    target = PostgresTarget(postgres_url)
    session = await target.open_session("w000", 0)
    try:
        with trio.move_on_after(0.5) as scope:
            await session.execute(OperationSpec("sleep", sql="SELECT pg_sleep(20)"), {})
        assert scope.cancelled_caught
        await session.execute(OperationSpec("q", sql="SELECT 1"), {})  # usable (or reconnected)
        assert still_running(postgres_url, "pg_sleep(20)") == 0
    finally:
        await session.close()


async def test_a_terminated_backend_is_one_connection_error_and_the_session_reconnects(postgres_url):
    from startline.backends.postgres.conn import error_category

    target = PostgresTarget(postgres_url)
    session = await target.open_session("w000", 7)
    q = OperationSpec("q", sql="SELECT 1")
    try:
        await session.execute(q, {})
        with psycopg.connect(postgres_url, autocommit=True) as c:
            killed = c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'startline w000/7'"
            ).fetchall()
        assert killed == [(True,)]
        with pytest.raises(psycopg.Error) as lost:
            await session.execute(q, {})
        assert error_category(lost.value) == "connection"
        await session.execute(q, {})  # the next operation reconnects
    finally:
        await session.close()


@pytest.mark.parametrize(
    "value",
    [0, 7, -1, -(2**62), 2**62, "", "plain", "it's", "back\\slash", "ünï cødé", "a%b", "--x", 1.5, True, None],
)
async def test_values_bound_on_the_fast_path_arrive_as_psycopg_binds_them(postgres_url, value):
    """The native session binds ints and text itself (libpq's escaping), anything else through
    psycopg's ClientCursor: the server must see the same value either way."""
    from startline.backends.postgres.native import NativeConnection, text_value

    conn = NativeConnection(postgres_url, "startline test")
    try:
        (result,) = await conn.query("SELECT (%s)::text, pg_typeof(%s)::text", (value, value))
        native = (text_value(result, 0, 0), text_value(result, 0, 1))
    finally:
        await conn.close()
    with psycopg.connect(postgres_url, cursor_factory=psycopg.ClientCursor) as c:
        reference = c.execute("SELECT (%s)::text, pg_typeof(%s)::text", (value, value)).fetchone()
    assert native == tuple(reference)


WORKLOAD = [  # (sql with :names, parameters): rows written, changed, read back and deleted
    ("CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY, name text, score float8, born date)", {}),
    ("INSERT INTO w VALUES (:id, :name, :score, :born)", {"id": 1, "name": "it's", "score": -1.5, "born": None}),
    ("INSERT INTO w VALUES (:id, :name, :score, :born)", {"id": 2, "name": "ünï", "score": 2.25, "born": "2026-12-03"}),
    ("INSERT INTO w VALUES (:id, :name, :score, :born)", {"id": -3, "name": None, "score": 0.0, "born": "1999-01-31"}),
    ("INSERT INTO w SELECT g, 'n' || g, g / 3.0, NULL FROM generate_series(:lo, :hi) g", {"lo": 10, "hi": 40}),
    ("UPDATE w SET score = score + :d WHERE id < :id", {"d": 1, "id": 20}),
    (
        "SELECT id, name, score::text, born::text FROM w WHERE id >= :lo OR name = :name ORDER BY id",
        {"lo": 30, "name": "it's"},
    ),
    ("SELECT count(*), sum(score)::text FROM w WHERE name LIKE :p", {"p": "n%"}),
    ("DELETE FROM w WHERE id > :id", {"id": 15}),
    ("SELECT id, name FROM w ORDER BY id", {}),
]


async def test_a_fixed_workload_returns_and_changes_the_same_rows_bound_prepared_and_through_psycopg(postgres_url):
    """Issue 23's reference check: the native session (values bound client-side, or the
    statement prepared and its values sent apart) reads and changes exactly what plain psycopg
    does with the same statements."""
    from startline.backends.postgres.native import NativeConnection, text_value
    from startline.backends.postgres.target import bound

    async def native(prepare: bool) -> list[tuple[int, list[tuple[str | None, ...]]]]:
        conn = NativeConnection(postgres_url, "startline test")
        seen = []
        try:
            for sql, params in WORKLOAD:
                text, names = bound(sql, prepare and bool(params))
                values = tuple(params[n] for n in names)
                run = conn.query_prepared if prepare and params else conn.query
                (r,) = await run(text, values)
                rows = [tuple(text_value(r, i, j) for j in range(r.nfields)) for i in range(r.ntuples)]
                seen.append((int(r.command_tuples or 0), rows))
            await conn.query("DROP TABLE w")
        finally:
            await conn.close()
        return seen

    def reference() -> list[tuple[int, list[tuple[str | None, ...]]]]:
        seen = []
        with psycopg.connect(postgres_url, autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
            for sql, params in WORKLOAD:
                text, names = positional(sql, "%s")
                cur = c.execute(text, tuple(params[n] for n in names) or None)
                rows = (
                    [tuple(None if v is None else str(v) for v in row) for row in cur.fetchall()]
                    if cur.description
                    else []
                )
                seen.append((max(cur.rowcount, 0), rows))
            c.execute("DROP TABLE w")
        return seen

    client_side, prepared, expected = await native(False), await native(True), reference()
    assert [changed for changed, _ in client_side] == [0, 1, 1, 1, 31, 13, 12, 1, 25, 9]
    assert client_side == prepared
    assert [rows for _, rows in client_side] == [rows for _, rows in expected]
    assert [changed for changed, _ in client_side] == [changed for changed, _ in expected]


async def test_a_prepared_operation_is_parsed_once_per_connection_and_again_after_a_reconnect(postgres_url):
    """``prepare = true``: the session's first operation carries the start's stamp (a simple
    query), every later one executes a statement prepared once on that connection — and
    prepared again on the connection that replaces a terminated one."""
    target = PostgresTarget(postgres_url)
    session = await target.open_session("w000", 3)
    op = OperationSpec("q", sql="SELECT :n + 1, :s::text", prepare=True)

    async def prepared() -> list[tuple[str | None, ...]]:
        from startline.backends.postgres.native import text_value

        (r,) = await session.connection.query("SELECT statement FROM pg_prepared_statements ORDER BY name")
        return [text_value(r, i) for i in range(r.ntuples)]

    try:
        await session.execute(op, {"n": 1, "s": "a"})
        assert session.first_stamp is not None and session.first_stamp > 0
        assert await prepared() == []  # the first went as a simple query with the stamp
        for n in range(5):
            await session.execute(op, {"n": n, "s": f"it's {n}"})
        assert await prepared() == ["SELECT $1 + 1, $2::text"]
        with psycopg.connect(postgres_url, autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'startline w000/3'"
            )
        with pytest.raises(psycopg.OperationalError):
            await session.execute(op, {"n": 1, "s": "b"})
        await session.execute(op, {"n": 2, "s": "c"})  # a new connection: prepared anew, not "does not exist"
        assert await prepared() == ["SELECT $1 + 1, $2::text"]
    finally:
        await session.close()


RESTARTED = """
name = "restarted"
workers = 1
connections_per_worker = 2
warmup_s = 0.5
measurement_s = {seconds}
control = "sqlite:///{{out}}/control.db"
target = "{url}"

[checks]
max_error_rate = 1.0  # the restart's errors are expected: what is judged is how they are counted

[[operations]]
name = "read"
sql = "SELECT :n::int"
params.n = {{ type = "int", min = 1, max = 9 }}
"""


def sessions_tagged(url: str, tag: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as c:
            return c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s", (f"startline % {tag}",)
            ).fetchone()[0]
    except psycopg.OperationalError:
        return 0


def test_a_target_server_restarted_mid_run_is_connection_errors_then_the_sessions_come_back(tmp_path):
    """Issue 23: the target's server stops (fast shutdown) and starts again on its port while
    the run measures: the operations meanwhile are ``connection`` errors, a few a second per
    session (a failed connect waits before it raises), and every session reconnects — tagged
    with its phase again — and goes on to the end."""
    from startline.backends.postgres import server

    local = server.start(tmp_path / "data")
    try:
        path = tmp_path / "restart.toml"
        path.write_text(RESTARTED.format(seconds=5, url=local.url))
        proc = subprocess.Popen(
            [*CLI, "run", "--no-report", str(path), "--out", str(tmp_path / "out"), "--quiet"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while sessions_tagged(local.url, "MEASUREMENT") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        server.stop(tmp_path / "data")
        down = time.monotonic()
        time.sleep(1.0)
        server.start(tmp_path / "data", port=local.port)
        up = time.monotonic()
        while sessions_tagged(local.url, "MEASUREMENT") < 2:  # both back, in their phase
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    finally:
        server.stop(tmp_path / "data")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    m = s["phases"]["MEASUREMENT"]
    assert s["status"] == "COMPLETED" and m["ops"] > 0
    assert set(m["errors_by_category"]) == {"connection"}, m["errors_by_category"]
    # at most a handful of failed attempts a second per session while it was down (not one per loop turn)
    assert 2 <= m["errors"] <= 2 * 2 * (up - down + 2) * 10, m["errors"]
