"""The control-plane contract every backend keeps (memory, SQLite, Snowflake on fakesnow, PostgreSQL): one
process per worker id, a final result never replaced, a run id created once."""

from __future__ import annotations

import pytest

from startline.backends.memory.control import MemoryControlPlane, MemoryStore
from startline.backends.snowflake import SnowflakeControlPlane
from startline.backends.snowflake.conn import SnowflakeSettings
from startline.backends.sqlite.control import SqliteControlPlane
from startline.engine.model import Heartbeat, Phase, RunState, RunStatus, WorkerResult, WorkerStatus
from startline.engine.ports import ControlPlaneError
from startline.testing import CLOCK0


@pytest.fixture(params=["memory", "sqlite", "snowflake", "postgres"])
def control(request, tmp_path):
    if request.param == "memory":
        return MemoryControlPlane(MemoryStore(CLOCK0))
    if request.param == "sqlite":
        return SqliteControlPlane(tmp_path / "control.db")
    if request.param == "postgres":
        from startline.backends.postgres import PostgresControlPlane

        return PostgresControlPlane(request.getfixturevalue("postgres_url"))
    request.getfixturevalue("fakesnow_home")
    return SnowflakeControlPlane(SnowflakeSettings("fakesnow", database=f"CONTRACT_{tmp_path.name[-6:].upper()}"))


async def _close(cp) -> None:
    if hasattr(cp, "close"):
        await cp.close()


async def _run(cp, run_id="r1"):
    await cp.create_run(RunState(run_id, RunStatus.PREPARED, Phase.PREPARING, connections=1, scenario={}))


async def test_a_worker_id_is_registered_by_one_incarnation_only(control):
    await _run(control)
    first = await control.register_worker(Heartbeat("r1", "w0", WorkerStatus.STARTING, incarnation="a"))
    assert first.incarnation == "a"
    again = await control.register_worker(Heartbeat("r1", "w0", WorkerStatus.STARTING, incarnation="b"))
    assert again.incarnation == "a"  # the second process is told whose id it is
    await control.upsert_heartbeat(Heartbeat("r1", "w0", WorkerStatus.RUNNING, incarnation="b"))
    (row,) = await control.read_heartbeats("r1")
    assert row.incarnation == "a" and row.status is WorkerStatus.STARTING  # b's beat changed nothing
    await control.upsert_heartbeat(Heartbeat("r1", "w0", WorkerStatus.RUNNING, incarnation="a"))
    (row,) = await control.read_heartbeats("r1")
    assert row.status is WorkerStatus.RUNNING
    await _close(control)


async def test_a_final_result_is_never_replaced(control):
    await _run(control)
    await control.upsert_result(WorkerResult("r1", "w0", WorkerStatus.RUNNING, {"ops": 1}, incarnation="a"))
    await control.upsert_result(WorkerResult("r1", "w0", WorkerStatus.COMPLETED, {"ops": 9}, incarnation="a"))
    # a late partial write of the same process, and a respawned process's empty FAILED result
    await control.upsert_result(WorkerResult("r1", "w0", WorkerStatus.RUNNING, {"ops": 5}, incarnation="a"))
    await control.upsert_result(WorkerResult("r1", "w0", WorkerStatus.FAILED, {"ops": 0}, incarnation="b"))
    (res,) = await control.read_results("r1")
    assert res.status is WorkerStatus.COMPLETED and res.payload == {"ops": 9} and res.incarnation == "a"
    await _close(control)


async def test_another_incarnation_cannot_write_a_partial_result_either(control):
    await _run(control)
    await control.upsert_result(WorkerResult("r1", "w0", WorkerStatus.RUNNING, {"ops": 1}, incarnation="a"))
    await control.upsert_result(WorkerResult("r1", "w0", WorkerStatus.RUNNING, {"ops": 0}, incarnation="b"))
    (res,) = await control.read_results("r1")
    assert res.payload == {"ops": 1} and res.incarnation == "a"
    await _close(control)


async def test_a_run_id_is_created_once(control):
    await _run(control)
    with pytest.raises(ControlPlaneError, match="exists already"):
        await _run(control)
    await _close(control)
