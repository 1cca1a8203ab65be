"""Pure decisions about who is alive: a worker from its last heartbeat (the orchestrator's
judgement, and when to look again), and the orchestrator from RUN_STATUS (a worker's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from startline.engine.clocksync import ClockMap
from startline.engine.model import Heartbeat, WorkerStatus

IDLE_MARGIN_S = 0.001
"""A read at the idle deadline itself finds the row just not stale yet: read a hair after."""
MIN_LIVENESS_WAIT_S = 0.001
"""Between two heartbeat reads at least this long (clock rounding never makes a busy loop)."""


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


@attrs.frozen
class LivenessRound:
    """One reading of the heartbeats: each worker's status, the changes to write to the control
    plane, who was judged DEAD just now, and the control-plane instant to read again."""

    statuses: Mapping[str, WorkerStatus]
    marks: tuple[tuple[str, WorkerStatus], ...]
    newly_dead: tuple[str, ...]
    next_check: float


def liveness_round(
    beats: Sequence[tuple[Heartbeat, float]],
    known: Mapping[str, WorkerStatus],
    now: float,
    period_s: float,
    stale_after: int,
    dead_after: int,
) -> LivenessRound:
    """Judge every heartbeat row read at ``now`` (control-plane clock). Each row comes with the
    seconds since its beat that the orchestrator itself could not reach the control plane: a
    silence it could not have heard is nobody's. A worker whose final status is known is left
    alone. The next reading is due a period from now, or sooner, at the instant the next worker
    would cross its STALE or DEAD threshold: a dead worker is judged within k2·h plus one read."""
    statuses: dict[str, WorkerStatus] = {}
    marks: list[tuple[str, WorkerStatus]] = []
    dead: list[str] = []
    next_check = now + period_s
    for hb, own_outage_s in beats:
        previous = known.get(hb.worker_id)
        if previous is not None and previous.finished:
            continue
        last = hb.last_heartbeat + own_outage_s
        status = classify_liveness(hb.status, last, now, period_s, stale_after, dead_after)
        if status is WorkerStatus.DEAD and previous is not WorkerStatus.DEAD:
            dead.append(hb.worker_id)
        if status is not hb.status:
            marks.append((hb.worker_id, status))
        statuses[hb.worker_id] = status
        if not status.finished:
            for beats_ in (stale_after, dead_after):
                crossing = last + beats_ * period_s
                if crossing > now:
                    next_check = min(next_check, crossing)
                    break
    return LivenessRound(statuses, tuple(marks), tuple(dead), next_check)


@attrs.frozen
class RunSeen:
    """A worker's memory of RUN_STATUS before it knows its clock map: the trio time it saw
    ``updated_at`` take its current value."""

    at: float
    updated_at: float


@attrs.frozen
class RunAlive:
    """A worker's judgement of its orchestrator from one RUN_STATUS read: lost or not, when it
    could next be judged lost (trio time; read again then), and what to remember."""

    lost: bool
    recheck_at: float
    seen: RunSeen | None


def judge_run_alive(
    updated_at: float,
    terminal: bool,
    now: float,
    timeout_s: float,
    clockmap: ClockMap | None,
    own_outage_s: float,
    seen: RunSeen | None,
) -> RunAlive:
    """Is the orchestrator lost: RUN_STATUS not updated for ``timeout_s``? Judged on the control
    plane's clock once the worker has a clock map (so the verdict comes at the first read past
    the timeout), less the time the worker itself could not reach the control plane
    (``own_outage_s``); before that, from the trio time the worker saw the row change. A
    terminal run is never "lost": it ended."""
    if terminal:
        return RunAlive(False, float("inf"), seen)
    if clockmap is not None:
        heard = updated_at + own_outage_s
        lost = clockmap.to_control(now) - heard > timeout_s
        return RunAlive(lost, clockmap.to_trio(heard + timeout_s) + IDLE_MARGIN_S, seen)
    if seen is None or seen.updated_at != updated_at:
        seen = RunSeen(now, updated_at)
    return RunAlive(now - seen.at > timeout_s, seen.at + timeout_s + IDLE_MARGIN_S, seen)
