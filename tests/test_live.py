"""Live backends with real parts: SQLite files, worker processes, and the real Snowflake
connector talking HTTP to a fakesnow server on loopback."""

from __future__ import annotations

import functools
import json
import os
import re
import sqlite3
import subprocess
import tomllib
from pathlib import Path

import pytest
import trio

from startline.backends.snowflake import SnowflakeControlPlane, SnowflakeTarget
from startline.backends.snowflake.conn import SnowflakeExecutor, SnowflakeSettings
from startline.backends.sqlcontrol import fetch
from startline.engine.model import ControlEvent, Phase, RunState, RunStatus
from startline.engine.ports import ControlPlaneError, Target
from startline.engine.scenario import ConfigError, OperationSpec, Scenario
from startline.inprocess import run_in_process_async
from startline.simulate.models import Profile
from startline.testing import CLI, ROOT, kv_setup, run_cli

pytestmark = pytest.mark.live  # processes, servers or a browser

LIVE = (
    """
name = "live"
workers = 2
connections_per_worker = 2
warmup_s = 0.5
measurement_s = 1.5
heartbeat_s = 0.5
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
"""
    + kv_setup(500)
    + """

[start]
strategy = "scheduled"
lead_ms = 1500

[[operations]]
name = "read"
weight = 3
sql = "SELECT v FROM kv WHERE k = :k"
params.k = { type = "int", min = 1, max = 500 }

[[operations]]
name = "write"
weight = 1
sql = "UPDATE kv SET v = v + 1 WHERE k = :k"
params.k = { type = "int", min = 1, max = 500 }

[[schedule]]
at_s = 1.0
connections = 3
"""
)


cli = functools.partial(run_cli, timeout=240)


def _check_multiprocess_run(out: Path, proc: subprocess.CompletedProcess[str], control: Path | None) -> dict:
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "COMPLETED"
    assert [w["status"] for w in summary["workers"]] == ["COMPLETED", "COMPLETED"]
    assert summary["start"]["connections"] == 4
    for wid in ("w000", "w001"):
        assert (out / f"worker-{wid}.log").exists()
        # each spawned worker leads a session of its own (Linux's autogroup: a CPU share of its own
        # against a database server's backends, each in its own session, at the release)
        assert json.loads((out / f"worker-{wid}.json").read_text())["host"]["own_session"] is True
    if control is not None:
        db = sqlite3.connect(control)
        seqs = [s for (s,) in db.execute("SELECT SEQUENCE_ID FROM RUN_CONTROL_EVENTS ORDER BY SEQUENCE_ID")]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 4  # START, MEASUREMENT, target, STOP
        payloads = [json.loads(p) for (p,) in db.execute("SELECT PAYLOAD FROM TEST_RESULTS")]
        assert len(payloads) == 2
        measured = sum(p["metrics"]["ops"].get("MEASUREMENT", 0) for p in payloads)
        assert summary["phases"]["MEASUREMENT"]["ops"] == measured > 0
        assert all(p["applied_events"] == seqs for p in payloads)
    return summary


def test_multiprocess_run_on_sqlite_then_calibrate_a_profile_from_it(tmp_path):
    (tmp_path / "live.toml").write_text(LIVE)
    out = tmp_path / "out"
    proc = cli("run", "--no-report", str(tmp_path / "live.toml"), "--out", str(out))
    _check_multiprocess_run(out, proc, out / "control.db")
    # what the run measured of itself becomes a profile that predicts the same scenario
    profile = tmp_path / "profile.toml"
    proc = cli("calibrate", str(out), "--out", str(profile))
    assert proc.returncode == 0, proc.stderr[-2000:]
    fitted = Profile.from_dict(tomllib.loads(profile.read_text()))
    assert {"status_read", "heartbeat_merge", "results_insert", "status_update", "event_insert"} <= set(fitted.control)
    assert fitted.clock_spread_ms == 0.0  # both workers on this host: one clock
    assert fitted.worker_start is not None and 0 < fitted.worker_start.mean_s < 30  # a process starting
    assert fitted.release_wake is not None  # a scheduled start: how late each worker's first connection began
    assert len(fitted.release_queue) == 2  # ... and by each worker's place along the release, both shown
    assert "release_queue.0" in proc.stdout and "release_queue.1" in proc.stdout
    assert fitted.connection_step is not None and "connection_step" in proc.stdout  # two connections each
    # round trips begun once a worker's load ran, by class, apart from the others (or said why not)
    assert all(f"control_loaded.{c}" in proc.stdout for c in fitted.control_loaded)
    assert fitted.control_loaded or "not fitted: control_loaded" in proc.stderr
    # each worker timed the read that found its start; a scheduled start is read before its
    # instant, so that read is an ordinary one and start_read is left unfitted, said
    payloads = [json.loads((out / f"worker-{w}.json").read_text()) for w in ("w000", "w001")]
    assert all(p["process"]["detect_read_ms"] > 0 for p in payloads)
    assert fitted.start_read is None and "not fitted: start_read" in proc.stderr
    # nor was it found by a read: no step from a detection to the release to fit
    assert all(p["process"]["after_detect_ms"] is None for p in payloads)
    assert fitted.after_detect is None and "not fitted: after_detect" in proc.stderr
    proc = cli("simulate", str(tmp_path / "live.toml"), "--profile-file", str(profile), "--seeds", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "profile calibrated" in proc.stdout


def test_multiprocess_run_with_the_control_plane_on_fakesnow(tmp_path, fakesnow_home):
    (tmp_path / "live.toml").write_text(LIVE)
    out = tmp_path / "out"
    proc = cli(
        "run",
        "--no-report",
        str(tmp_path / "live.toml"),
        "--out",
        str(out),
        "--control",
        f"snowflake://fakesnow?database=LIVE_{tmp_path.name[-6:].upper().replace('-', '_')}",
    )
    summary = _check_multiprocess_run(out, proc, None)
    assert summary["phases"]["MEASUREMENT"]["ops"] > 0


async def test_snowflake_control_plane_protocol(fakesnow_home):
    cp = SnowflakeControlPlane(SnowflakeSettings("fakesnow", database="PROTO"))
    await cp.create_run(RunState("r1", RunStatus.PREPARED, Phase.PREPARING, connections=2, scenario={"x": 1}))
    with pytest.raises(ControlPlaneError, match="exists already"):
        await cp.create_run(RunState("r1", RunStatus.PREPARED, Phase.PREPARING))
    assert await cp.update_run("r1", expect_status=RunStatus.STARTING, status=RunStatus.RUNNING) is None
    run = await cp.update_run("r1", expect_status=RunStatus.PREPARED, status=RunStatus.RUNNING, start_time_now=True)
    assert run is not None and run.status is RunStatus.RUNNING and run.start_time == run.updated_at
    now = await cp.server_time()
    assert abs(now - run.start_time) < 60
    await cp.append_event(ControlEvent("r1", 1, "START", at=run.start_time, connections=2))
    with pytest.raises(ControlPlaneError, match="does not follow"):
        await cp.append_event(ControlEvent("r1", 3, "STOP", reason="completed"))
    await cp.append_event(ControlEvent("r1", 2, "SET_PHASE", phase="MEASUREMENT"))
    assert [e.sequence_id for e in await cp.read_events("r1", 0)] == [1, 2]
    assert (await cp.read_run("r1")).last_sequence_id == 2
    from startline.engine.model import Heartbeat, WorkerResult, WorkerStatus

    await cp.upsert_heartbeat(Heartbeat("r1", "w0", WorkerStatus.READY))
    await cp.mark_worker("r1", "w0", WorkerStatus.DEAD)
    await cp.upsert_heartbeat(Heartbeat("r1", "w0", WorkerStatus.RUNNING))  # late beat: stays DEAD
    (hb,) = await cp.read_heartbeats("r1")
    assert hb.status is WorkerStatus.DEAD and hb.heartbeat_count == 2
    await cp.upsert_result(WorkerResult("r1", "w0", WorkerStatus.RUNNING, {"a": 1}))
    await cp.upsert_result(WorkerResult("r1", "w0", WorkerStatus.COMPLETED, {"a": 2}))
    (res,) = await cp.read_results("r1")
    assert res.status is WorkerStatus.COMPLETED and res.payload == {"a": 2}
    await cp.append_snapshot("r1", "w0", {"intervals": [{"interval": 0, "ops": 3, "errors": 0}]})
    assert (await cp.read_snapshots("r1"))[0][1]["intervals"][0]["ops"] == 3
    await cp.close()


async def test_phase_change_is_visible_in_the_query_tag(fakesnow_home):
    settings = SnowflakeSettings("fakesnow", database="TAGS", schema="PUBLIC")
    target = SnowflakeTarget(settings)
    await target.setup(
        [
            'CREATE DATABASE IF NOT EXISTS "TAGS"',
            'CREATE SCHEMA IF NOT EXISTS "TAGS"."PUBLIC"',
            'CREATE TABLE IF NOT EXISTS "TAGS"."PUBLIC".T (K INTEGER, V INTEGER)',
        ]
    )
    sessions = []

    class Keeping(Target):  # the real target, keeping its sessions for inspection (its traits: the defaults)
        async def open_session(self, worker_id, slot):
            s = await target.open_session(worker_id, slot)
            sessions.append(s)
            return s

        def error_category(self, exc):
            return target.error_category(exc)

    sc = Scenario.from_dict(
        {
            "name": "tags",
            "workers": 1,
            "connections_per_worker": 1,
            "warmup_s": 0.6,
            "measurement_s": 0.6,
            "start": {"strategy": "poll", "poll_interval_ms": 20},
            "operations": [
                {
                    "name": "q",
                    "sql": 'SELECT COUNT(*) FROM "TAGS"."PUBLIC".T WHERE K = :k',
                    "params": {"k": {"type": "int", "min": 1, "max": 5}},
                }
            ],
        }
    )
    result = await run_in_process_async(sc, target=Keeping(), run_id="tag-run")
    assert result.summary["status"] == "COMPLETED"
    (session,) = sessions
    tags = [json.loads(s.split(" [", 1)[1][:-1]) for s in session.issued]
    assert [t["phase"] for t in tags][:2] == ["WARMUP", "MEASUREMENT"]
    assert all(t["run_id"] == "tag-run" and t["worker_id"] == "w000" for t in tags)
    assert all(s.startswith("ALTER SESSION SET QUERY_TAG = ?") for s in session.issued)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--control", "mysql://x"], "unknown scheme"),
        (["--control", "sqlite:/nope"], "not a URL"),
        (["--control", "sqlite:///no/such/dir/run.db"], "does not exist"),
        (["--target", "sqlite:////no/such/dir/data.db"], "does not exist"),
        (["--control", "snowflake://fakesnow?database=bad;drop"], "not a valid identifier"),
        (["--control", "snowflake://fakesnow?schema=x%22y"], "not a valid identifier"),
    ],
)
def test_bad_urls_and_identifiers_exit_2_with_one_line(tmp_path, args, needle):
    (tmp_path / "live.toml").write_text(LIVE)
    proc = cli("run", "--no-report", str(tmp_path / "live.toml"), "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_snowflake_exits_2_with_one_line(tmp_path, fakesnow_home):
    home = tmp_path / "home"
    home.mkdir()
    (home / "connections.toml").write_text(
        '[dead]\naccount = "x"\nuser = "u"\npassword = "SENTINEL-PASSWORD"\nhost = "127.0.0.1"\nport = 9\n'
        'protocol = "http"\n'
    )
    (home / "connections.toml").chmod(0o600)
    (tmp_path / "live.toml").write_text(LIVE)
    proc = cli(
        "run",
        str(tmp_path / "live.toml"),
        "--out",
        str(tmp_path / "out"),
        "--control",
        "snowflake://dead",
        env={**os.environ, "SNOWFLAKE_HOME": str(home)},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], proc.stderr
    assert "SENTINEL-PASSWORD" not in proc.stderr + proc.stdout
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all(b"SENTINEL-PASSWORD" not in p.read_bytes() for p in written), written


def test_identifiers_are_validated_before_any_sql():
    for bad in ('a"b', "a.b", "1abc", "", "a b", "x;drop"):
        with pytest.raises(ConfigError):
            SnowflakeSettings("c", database=bad)
    assert SnowflakeSettings("c", database="Ok_1$").qualified("RUN_STATUS") == '"Ok_1$"."CONTROL"."RUN_STATUS"'


def test_env_connection_reads_the_snowflake_variables(tmp_path, fakesnow_home, monkeypatch):
    import tomllib

    entry = tomllib.loads((fakesnow_home / "connections.toml").read_text())["fakesnow"]
    for key, value in entry.items():
        monkeypatch.setenv(f"SNOWFLAKE_{key.upper()}", str(value))

    async def main():
        cp = SnowflakeControlPlane(SnowflakeSettings("env", database="ENVAUTH"))
        t = await cp.server_time()
        await cp.close()
        return t

    assert trio.run(main) > 1.7e9
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT")
    with pytest.raises(ConfigError, match="SNOWFLAKE_ACCOUNT"):
        from startline.backends.snowflake.conn import connection_kwargs

        connection_kwargs("env")


def test_no_spawn_run_waits_for_workers_started_elsewhere_pinned_to_the_scenario_check_named(tmp_path):
    (tmp_path / "live.toml").write_text(LIVE)
    out = tmp_path / "out"
    out.mkdir()
    checked = subprocess.run([*CLI, "check", str(tmp_path / "live.toml")], cwd=ROOT, capture_output=True, text=True)
    pinned = re.search(r"code hash ([0-9a-f]{64})", checked.stdout)
    assert pinned, checked.stdout
    run = subprocess.Popen(
        [
            *CLI,
            "run",
            "--no-report",
            str(tmp_path / "live.toml"),
            "--out",
            str(out),
            "--run-id",
            "elsewhere",
            "--no-spawn",
            "--quiet",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    control = f"sqlite:///{out}/control.db"
    workers = [
        subprocess.Popen(
            [
                *CLI,
                "worker",
                "--control",
                control,
                "--run-id",
                "elsewhere",
                "--worker-id",
                f"host{i}",
                "--index",
                str(i),
                "--code-hash",
                pinned[1],
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    _stdout, stderr = run.communicate(timeout=240)
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    assert run.returncode == 0, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(w["worker_id"] for w in summary["workers"]) == ["host0", "host1"]
    assert summary["status"] == "COMPLETED" and summary["phases"]["MEASUREMENT"]["ops"] > 0


@pytest.mark.parametrize("secret", ["pa ss word", "p@ss/w:rd&x=1", 'q"uote\\back', "ünï cødé"])
def test_a_secret_is_masked_by_value_in_every_encoding_an_endpoint_may_echo(secret):
    from urllib.parse import quote, quote_plus

    from startline.backends.snowflake.conn import safe_message, secrets_of

    kwargs = {"account": "a", "user": "u", "password": secret, "private_key_file_pwd": secret + "2"}
    for echoed in (secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]):
        message = safe_message(RuntimeError(f"login failed for u with {echoed} at host a"), secrets_of(kwargs))
        assert echoed not in message and "***" in message
        assert message.startswith("login failed for u with")


@pytest.mark.parametrize("strategy", ["scheduled", "poll", "inline-poll"])
def test_skew_and_lag_with_their_error_bars_bracket_the_host_clock_witness(tmp_path, strategy):
    """Live on SQLite every process shares the host's clock: the host-clock witness is ground
    truth, and what the workers measured through their clock maps must bracket it."""
    (tmp_path / "live.toml").write_text(LIVE.replace('strategy = "scheduled"', f'strategy = "{strategy}"'))
    out = tmp_path / "out"
    proc = cli("run", "--no-report", str(tmp_path / "live.toml"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    start, host = summary["start"], summary["start"]["witnesses"]["host"]
    assert host["connections"] == start["connections"] == 4
    assert abs(start["skew_ms"] - host["skew_ms"]) <= start["skew_uncertainty_ms"]
    for k in ("min", "p50", "max"):
        assert abs(start["lag_ms"][k] - host["lag_ms"][k]) <= start["lag_uncertainty_ms"]
    for w in summary["workers"]:  # one host, one clock: the true offset is 0
        assert abs(w["clock_offset_ms"]) <= w["clock_uncertainty_ms"]


async def test_the_snowflake_target_works_in_its_urls_database_and_schema_and_binds_outside_literals(fakesnow_home):
    """Unqualified names (setup's DROP/CREATE, the workload) land in the URL's database and schema,
    not in the connection's default; a literal holding ':name' is sent as written."""
    from startline.urls import parse_url

    keep = SnowflakeSettings("fakesnow", database="KEEPDB", schema="PUBLIC", context={"database": "KEEPDB"})
    other = SnowflakeTarget(keep)
    await other.setup(
        [
            "CREATE DATABASE IF NOT EXISTS KEEPDB",
            "CREATE SCHEMA IF NOT EXISTS KEEPDB.PUBLIC",  # (the emulator makes no PUBLIC schema by itself)
            "CREATE OR REPLACE TABLE KEEPDB.PUBLIC.LOG (V TEXT)",
        ]
    )
    target = SnowflakeTarget.from_url(parse_url("snowflake://fakesnow?database=TGTDB&schema=APP", "target"))
    assert dict(target.settings.context) == {"database": "TGTDB", "schema": "APP"}
    await target.setup(
        [
            "CREATE DATABASE IF NOT EXISTS TGTDB",
            "CREATE SCHEMA IF NOT EXISTS TGTDB.APP",
            "DROP TABLE IF EXISTS LOG",
            "CREATE TABLE LOG (V TEXT, K INTEGER)",
        ]
    )
    session = await target.open_session("w0", 0)
    try:
        op = OperationSpec("log", sql="INSERT INTO LOG (V, K) SELECT 'time:now :k', :k")
        await session.execute(op, {"k": 7})
        rows = await session.executor.run(lambda c: fetch(c, "SELECT V, K FROM TGTDB.APP.LOG"))
    finally:
        await session.close()
    assert rows == [{"V": "time:now :k", "K": 7}]
    check = SnowflakeExecutor(keep)
    try:
        kept = await check.run(lambda c: fetch(c, "SELECT COUNT(*) AS N FROM KEEPDB.PUBLIC.LOG"))
    finally:
        await check.close()
    assert kept == [{"N": 0}]  # the other database's LOG was not dropped


async def test_a_snowflake_worker_has_a_thread_for_each_session_and_no_more(fakesnow_home):
    """Issue 23: the connector is blocking, so Snowflake sessions stay on threads: one bounded
    pool per worker, sized to the sessions it opened (64 fixed before: a 65th waited for a thread)."""
    from startline.urls import parse_url

    target = SnowflakeTarget.from_url(parse_url("snowflake://fakesnow?database=TGTDB&schema=APP", "target"))
    await target.setup(["CREATE DATABASE IF NOT EXISTS TGTDB", "CREATE SCHEMA IF NOT EXISTS TGTDB.APP"])
    sessions = [await target.open_session("w0", slot) for slot in range(3)]
    try:
        assert target.limiter.total_tokens == 3
        async with trio.open_nursery() as nursery:  # all three at once, each on its own thread
            for s in sessions:
                nursery.start_soon(s.execute, OperationSpec("q", sql="SELECT 1"), {})
        assert target.limiter.borrowed_tokens == 0
    finally:
        for s in sessions:
            await s.close()


MANY_CONNECTIONS = """
name = "many"
workers = 1
connections_per_worker = 150
warmup_s = 0
measurement_s = 0.5
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
"""


def test_a_worker_opens_more_connections_than_its_inherited_soft_open_files_limit(tmp_path):
    """A soft limit of 256 open files (inherited from the shell; 1,024 is a common default) and
    150 SQLite connections — a database file, its WAL and its shared memory each: the worker
    raises its soft limit to the hard one instead of failing with 'Too many open files'."""
    import resource

    (tmp_path / "many.toml").write_text(
        MANY_CONNECTIONS + kv_setup(10) + '[[operations]]\nname = "get"\nsql = "SELECT v FROM kv WHERE k = 1"\n'
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"this host's hard limit of open files is {hard}: too low to show anything")

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    proc = subprocess.run(
        [*CLI, "run", "--no-report", str(tmp_path / "many.toml"), "--out", str(tmp_path / "out"), "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        preexec_fn=low,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["start"]["connections"] == 150 and s["phases"]["MEASUREMENT"]["errors"] == 0
