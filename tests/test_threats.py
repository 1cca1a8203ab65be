"""What a worker runs is what its operator allowed (docs/reliability.md, issue 22's findings):
code named by a control-plane scenario, and a scenario changed on the control plane after the
worker vetted it."""

from __future__ import annotations

import pytest
import trio

from startline.backends.memory import MemoryControlPlane, MemoryStore
from startline.engine.events import WorkerView
from startline.engine.follow import RunFollower
from startline.engine.model import Phase, RunState, RunStatus
from startline.engine.resilience import ResilientControlPlane
from startline.engine.scenario import ConfigError, OperationSpec
from startline.engine.timeline import Timeline
from startline.live.workers import check_calls_allowed, check_sql_allowed, code_hash
from startline.testing import CLOCK0, scenario


def calling(call: str):
    return scenario(operations=[{"name": "q", "call": call}])


def test_an_allowed_module_does_not_lend_its_imports_to_a_call() -> None:
    """Issue 22 #9: ``--allow-call startline.backends.memory.ops`` ran ``…ops:trio.run_process``
    (a dotted path through the allowed module's own imports) — a shell command from the control plane."""
    allowed = ("startline.backends.memory.ops",)
    check_calls_allowed(calling("startline.backends.memory.ops:sleep_ms"), allowed)  # its own function
    with pytest.raises(ConfigError, match="defined in module 'trio"):
        check_calls_allowed(calling("startline.backends.memory.ops:trio.run_process"), allowed)
    with pytest.raises(ConfigError, match="--allow-call"):
        check_calls_allowed(calling("startline.backends.memory.ops:sleep_ms"), ("startline.backends.sqlite",))


async def test_the_samples_read_from_the_control_plane_bring_values_never_operations() -> None:
    """A worker that joined during setup re-reads the scenario for its drawn samples: only the
    values are taken, the operations stay those of the scenario it joined with (and vetted)."""
    spec = {"type": "sample", "sql": "SELECT id FROM t", "size": 3}
    joined = scenario(
        operations=[{"name": "q", "call": "startline.backends.memory.ops:sleep_ms", "params": {"id": spec}}]
    )
    swapped = scenario(
        operations=[{"name": "q", "call": "startline.backends.memory.ops:trio.run_process", "params": {"id": spec}}]
    ).with_samples({("q", "id"): [7, 8, 9]})
    store = MemoryStore(CLOCK0)
    cp = MemoryControlPlane(store)
    await cp.create_run(RunState("r", RunStatus.STARTING, Phase.PREPARING, scenario=swapped.to_dict()))
    resilient = ResilientControlPlane(cp)
    follower = RunFollower(
        resilient, "r", WorkerView("w000"), Timeline(lambda _stage: None), None, None, lambda: trio.sleep(0)
    )
    got = await follower.scenario_with_samples(joined)
    assert got.operations[0].call == "startline.backends.memory.ops:sleep_ms"
    assert got.sample_values() == {("q", "id"): (7, 8, 9)}


def sql_scenario(sql: str = "SELECT 1"):
    return scenario(operations=[{"name": "q", "sql": sql}])


def test_a_worker_runs_control_plane_sql_only_as_its_operator_allowed() -> None:
    """Issue 22 #10: a hand-started worker ran SQL a control-plane writer chose. Without
    ``--allow-sql`` it refuses a scenario with SQL; ``--code-hash`` admits exactly one scenario's
    code; a scenario without SQL or calls needs neither."""
    sc = sql_scenario("ATTACH DATABASE '/tmp/x.pth' AS p")
    with pytest.raises(ConfigError, match="--allow-sql") as refused:
        check_sql_allowed(sc, False, None)
    assert code_hash(sc) in str(refused.value)  # how to pin it, said
    check_sql_allowed(sc, True, None)
    check_sql_allowed(sc, False, code_hash(sc))
    with pytest.raises(ConfigError, match="--code-hash"):
        check_sql_allowed(sc, True, code_hash(sql_scenario("SELECT 1")))  # pinned beats allowed
    check_sql_allowed(scenario(), False, None)  # memory operations: nothing to allow


def test_the_code_hash_moves_with_any_operation_sql_or_call_and_nothing_else() -> None:
    base = code_hash(sql_scenario("SELECT 1"))
    assert code_hash(sql_scenario("SELECT 1")) == base
    assert code_hash(sql_scenario("SELECT 2")) != base
    assert code_hash(scenario(operations=[{"name": "r", "sql": "SELECT 1"}])) != base
    assert code_hash(scenario(operations=[{"name": "q", "sql": "SELECT 1"}], measurement_s=99)) == base


@pytest.mark.parametrize(
    "attack",
    [
        "ATTACH DATABASE '{path}' AS p",
        "VACUUM INTO '{path}'",
        "PRAGMA temp_store_directory = '{dir}'",
        "SELECT load_extension('{path}')",
    ],
)
async def test_a_sqlite_session_reaches_no_file_but_its_database(tmp_path, attack) -> None:
    """Issue 22 #10: ``ATTACH DATABASE '/any/path/x.pth'`` wrote a file of an attacker's choosing
    through a worker's SQLite target. Sessions that run operations are confined to their file."""
    from startline.backends.sqlite import SqliteTarget

    evil = tmp_path / "elsewhere" / "x.pth"
    evil.parent.mkdir()
    target = SqliteTarget(tmp_path / "data.db")
    session = await target.open_session("w000", 0)
    try:
        with pytest.raises(Exception, match=r"not authorized|authorization denied|too many attached"):
            await session.execute(OperationSpec("q", sql=attack.format(path=evil, dir=evil.parent)), {})
        await session.execute(OperationSpec("q", sql="SELECT 1"), {})  # the session itself still works
    finally:
        await session.close()
    assert not evil.exists() and list(evil.parent.iterdir()) == []


def test_a_sqlite_control_plane_file_is_its_owners_alone(tmp_path) -> None:
    """Issue 22 #8: control.db was created 0644 (the scenario, its SQL, readable by every user)."""
    import os

    from startline.backends.sqlite import SqliteControlPlane

    async def create() -> None:
        cp = SqliteControlPlane(tmp_path / "control.db")
        await cp.create_run(RunState("r", RunStatus.STARTING, Phase.PREPARING, scenario=scenario().to_dict()))
        await cp.close()

    old = os.umask(0o022)
    try:
        trio.run(create)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes
