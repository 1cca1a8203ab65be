"""Pure decisions about statuses: which transitions a worker and a run may make (tables, as
h11's ``_state.py`` keeps them), and what a run's outcome is once its results are in."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import attrs

from startline.engine.model import RunState, RunStatus, StopReason, WorkerStatus
from startline.engine.scenario import OnWorkerLoss


class IllegalTransition(ValueError):
    """A status change the lifecycle does not allow: a bug in the caller, never input."""


_W = WorkerStatus
WORKER_TRANSITIONS: Mapping[WorkerStatus, frozenset[WorkerStatus]] = {
    _W.STARTING: frozenset({_W.INITIALIZING, _W.FAILED}),
    _W.INITIALIZING: frozenset({_W.READY, _W.FAILED}),
    _W.READY: frozenset({_W.RUNNING, _W.DRAINING, _W.FAILED}),  # a STOP before the start drains at once
    _W.RUNNING: frozenset({_W.DRAINING, _W.FAILED}),
    _W.DRAINING: frozenset({_W.COMPLETED, _W.FAILED}),
    _W.COMPLETED: frozenset(),
    _W.FAILED: frozenset(),
}
"""The statuses a worker gives itself. STALE and DEAD are the orchestrator's judgements of a
worker, never a worker's own status."""

_R = RunStatus
RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    _R.PREPARED: frozenset({_R.STARTING, _R.STOPPING, _R.FAILED}),  # STOPPING: a restart fails it
    _R.STARTING: frozenset({_R.RUNNING, _R.STOPPING, _R.CANCELLING, _R.FAILED}),
    _R.RUNNING: frozenset({_R.STOPPING, _R.CANCELLING, _R.FAILED}),
    _R.STOPPING: frozenset({_R.COMPLETED, _R.FAILED, _R.CANCELLED}),
    _R.CANCELLING: frozenset({_R.CANCELLED, _R.FAILED}),
    _R.COMPLETED: frozenset(),
    _R.FAILED: frozenset(),
    _R.CANCELLED: frozenset(),
}
"""The orchestrator's run statuses; staying in a status (a repeated write) is always allowed."""


def worker_transition(current: WorkerStatus, new: WorkerStatus) -> WorkerStatus:
    """``new``, if a worker in ``current`` may move there; else ``IllegalTransition``."""
    if new is not current and new not in WORKER_TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"worker cannot go from {current} to {new}")
    return new


def run_transition(current: RunStatus, new: RunStatus) -> RunStatus:
    """``new``, if a run in ``current`` may move there; else ``IllegalTransition``."""
    if new is not current and new not in RUN_TRANSITIONS[current]:
        raise IllegalTransition(f"run cannot go from {current} to {new}")
    return new


@attrs.frozen
class Outcome:
    """How a run ended: its terminal status, the code of why, and the words that go with it."""

    status: RunStatus
    reason: StopReason | None = None
    detail: str | None = None


COMPLETING = (StopReason.BOUNDS_LIMIT_REACHED, StopReason.THRESHOLD, StopReason.ALL_FAILING)
"""Early stops after which the run still COMPLETES (and fails a check or a threshold: exit 1)."""


def run_outcome(
    stop_reason: StopReason | None,
    stop_detail: str | None,
    statuses: Mapping[str, WorkerStatus],
    completed: Collection[str],
    on_worker_loss: OnWorkerLoss,
) -> Outcome:
    """The terminal status from why the run stopped (None or COMPLETED: as planned), each
    worker's final status, and the workers whose COMPLETED results are in."""
    if stop_reason is StopReason.USER_REQUESTED:
        return Outcome(RunStatus.CANCELLED, stop_reason, stop_detail)
    if stop_reason is not None and stop_reason not in (StopReason.COMPLETED, *COMPLETING):
        return Outcome(RunStatus.FAILED, stop_reason, stop_detail)
    lost = sorted(w for w, s in statuses.items() if s is not WorkerStatus.COMPLETED)
    if lost and on_worker_loss is OnWorkerLoss.FAIL:
        return Outcome(RunStatus.FAILED, StopReason.WORKER_LOST, ", ".join(lost))
    if not completed:
        return Outcome(RunStatus.FAILED, StopReason.NO_WORKER_COMPLETED, stop_detail)
    kept = stop_reason if stop_reason in COMPLETING else None
    return Outcome(RunStatus.COMPLETED, kept, stop_detail)


def adoption_refused(found: RunState, silent_s: float, alive_for_s: float) -> str | None:
    """Why a restarted orchestrator may not take over the run it found under its id (``None``: it
    may, to fail it cleanly): the run has ended, or its orchestrator was heard within
    ``alive_for_s`` (``silent_s`` ago) and is alive."""
    if found.status.terminal:
        return f"run {found.run_id!r} has already ended ({found.status}); choose a new run id"
    if silent_s < alive_for_s:
        return (
            f"run {found.run_id!r} is {found.status} and its orchestrator was heard {silent_s:.1f} s ago "
            f"(< {alive_for_s:g} s): it is alive; not taking it over"
        )
    return None
