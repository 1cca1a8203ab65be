"""Pure decision: is a worker alive, STALE or DEAD, from its last heartbeat."""

from __future__ import annotations

from startline.engine.model import WorkerStatus


def classify_liveness(
    status: WorkerStatus, last_heartbeat: float, now: float, period_s: float, stale_after: int, dead_after: int
) -> WorkerStatus:
    """The status a worker should have at ``now`` (all control-plane clock).

    A worker that missed ``stale_after`` beats is STALE, ``dead_after`` beats DEAD.
    Finished workers keep their status, DEAD stays DEAD, and a fresh beat turns
    STALE back into whatever the worker reported (the caller keeps that).
    """
    if status.finished:
        return status
    silent = now - last_heartbeat
    if silent >= dead_after * period_s:
        return WorkerStatus.DEAD
    if silent >= stale_after * period_s:
        return WorkerStatus.STALE
    return status
