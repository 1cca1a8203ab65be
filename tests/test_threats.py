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
from startline.engine.scenario import ConfigError
from startline.engine.timeline import Timeline
from startline.live.workers import check_calls_allowed
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
