"""Pure decisions about the control log: which fetched events to apply, and what
applying one does to a worker's view of the run (h11-style: no I/O here)."""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from startline.engine.model import ControlEvent, EventType, Phase, RunState, RunStatus, Scope, StopReason


@attrs.frozen
class EventBatch:
    """The events to apply now, in order, and whether a gap was seen after them."""

    to_apply: tuple[ControlEvent, ...]
    gap: bool


def events_to_apply(applied: int, fetched: Iterable[ControlEvent]) -> EventBatch:
    """From whatever a poll returned (late, repeated, out of order), the contiguous run
    of new events after ``applied``. A later event beyond a hole means a gap."""
    by_seq = {e.sequence_id: e for e in fetched if e.sequence_id > applied}
    run: list[ControlEvent] = []
    nxt = applied + 1
    while nxt in by_seq:
        run.append(by_seq.pop(nxt))
        nxt += 1
    return EventBatch(tuple(run), gap=bool(by_seq))


GAP_READS = 2
"""Reads of the log a poll makes while it finds a hole, before adopting RUN_STATUS."""
CATCH_UP_READS = 8
"""Reads of the log a worker makes to reach RUN_STATUS's last sequence id (a STOP it saw there
first), before adopting RUN_STATUS for the events it has not seen."""


class Next(enum.Enum):
    """What a worker does after reading the log."""

    DONE = "done"
    READ_AGAIN = "read_again"
    ADOPT_RUN_STATUS = "adopt_run_status"


def after_poll(gap: bool, reads: int) -> Next:
    """After ``reads`` reads in one poll: done without a hole; one more read if a hole was seen
    (a lagging read, a retried query); then whatever is still missing comes from RUN_STATUS."""
    if not gap:
        return Next.DONE
    return Next.READ_AGAIN if reads < GAP_READS else Next.ADOPT_RUN_STATUS


def catch_up(applied: int, last_sequence_id: int, reads: int) -> Next:
    """RUN_STATUS says the log goes to ``last_sequence_id``: read (each event applied once, in
    order) until this worker has applied that far, up to ``CATCH_UP_READS`` reads."""
    if applied >= last_sequence_id:
        return Next.DONE
    return Next.READ_AGAIN if reads < CATCH_UP_READS else Next.ADOPT_RUN_STATUS


@attrs.frozen
class WorkerView:
    """What one worker believes about the run, changed only by ``apply_event``/``reconcile``."""

    worker_id: str
    group: str = "default"
    applied: int = 0
    started: bool = False
    start_time: float | None = None
    phase: Phase = Phase.PREPARING
    connections: int = 0
    ramp_s: float = 0.0
    stop_reason: StopReason | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None

    def addresses(self, event: ControlEvent) -> bool:
        if event.scope is Scope.RUN:
            return True
        if event.scope is Scope.WORKER_GROUP:
            return event.scope_id == self.group
        return event.scope_id == self.worker_id


def apply_event(view: WorkerView, event: ControlEvent) -> WorkerView:
    """The view after ``event``; the caller guarantees it is the next in sequence."""
    if event.sequence_id != view.applied + 1:
        raise ValueError(f"event {event.sequence_id} applied out of order after {view.applied}")
    view = attrs.evolve(view, applied=event.sequence_id)
    match event.event_type:
        case EventType.START:
            return attrs.evolve(
                view,
                started=True,
                start_time=event.at,
                phase=event.phase or Phase.WARMUP,
                connections=view.connections if event.connections is None else event.connections,
            )
        case EventType.SET_PHASE:
            return attrs.evolve(view, phase=event.phase)
        case EventType.SET_CONNECTIONS if view.addresses(event):
            return attrs.evolve(view, connections=event.connections, ramp_s=event.ramp_s)
        case EventType.STOP:
            return attrs.evolve(view, stop_reason=event.reason, phase=event.phase or Phase.DONE)
    return view


def reconcile(view: WorkerView, run: RunState) -> WorkerView:
    """Adopt RUN_STATUS when events were missed: the row carries the state they produced."""
    started = run.status is not RunStatus.PREPARED and run.start_time is not None
    stop = view.stop_reason
    if run.status in (RunStatus.STOPPING, RunStatus.CANCELLING) or run.status.terminal:
        stop = stop or run.stop_reason or StopReason.COMPLETED
    return attrs.evolve(
        view,
        applied=max(view.applied, run.last_sequence_id),
        started=view.started or started,
        start_time=run.start_time if started else view.start_time,
        phase=run.phase,
        connections=run.connections if started else view.connections,
        stop_reason=stop,
    )
