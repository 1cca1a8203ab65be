"""``statistics()``: a frozen, complete snapshot of a worker and of the orchestrator — what the
simulator, the runner and the fault checker read instead of internals."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from startline.engine.model import EventType, RunStatus, WorkerStatus
from startline.inprocess import InProcessRun, run_in_process_async
from startline.testing import CLOCK0, RecordingTarget, scenario


def test_worker_statistics_are_frozen_and_complete():
    sc = scenario(workers=2, connections_per_worker=2, measurement_s=3.0)
    result = trio.run(
        lambda: run_in_process_async(sc, target=RecordingTarget(), clock=CLOCK0),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    log = [e.sequence_id for e in result.store.events[sc.name]]
    for w in result.workers:
        s = w.statistics()
        payload = result.payloads[w.worker_id]
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            s.status = WorkerStatus.FAILED  # type: ignore[misc]
        with pytest.raises(TypeError):
            s.marks["ready"] = 0.0  # type: ignore[index]
        assert s.status is WorkerStatus.COMPLETED and str(s.status) == payload["status"]
        assert list(s.applied_events) == log == payload["applied_events"]
        assert s.operations == sum(payload["metrics"]["ops"].values()) > 0
        assert s.errors == 0
        assert all(payload["timeline"][k] == v for k, v in s.marks.items())
        assert {"ready", "detect", "scale", "stop"} <= set(s.trio_marks)
        assert set(s.first_query) == set(range(sc.connections_per_worker))
        assert s.offset is not None and s.health.failures == 0
        assert sum(s.queries.values()) == sum(payload["control_plane"]["queries"].values())
        assert s.view.stopping and s.connections == 0  # all drained


def test_a_snapshot_does_not_change_as_the_run_goes_on():
    sc = scenario(workers=1, connections_per_worker=2, measurement_s=3.0)
    snaps = []

    async def main() -> InProcessRun:
        async def watch(orchestrator) -> None:
            await trio.sleep(sc.start.lead_ms / 1000.0 + 2.0)  # mid-run
            snaps.append(orchestrator.statistics())

        return await run_in_process_async(sc, target=RecordingTarget(), clock=CLOCK0, watch=watch)

    result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    (mid,) = snaps
    end = result.orchestrator.statistics()
    assert mid.status is RunStatus.RUNNING and end.status is RunStatus.COMPLETED
    assert [e.event_type for e in mid.events][-1] is not EventType.STOP
    assert end.events[-1].event_type is EventType.STOP and len(end.events) > len(mid.events)
    assert mid.stopped_at is None and end.stopped_at is not None
    with pytest.raises(TypeError):
        mid.worker_statuses["w000"] = WorkerStatus.DEAD  # type: ignore[index]
    assert dict(end.worker_statuses) == {"w000": WorkerStatus.COMPLETED}
    assert end.queries > mid.queries > 0 and end.start_time == result.summary["start_time"]
