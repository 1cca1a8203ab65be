"""A start, decided once from the scenario's ``[start]`` options: how a worker learns of the
start, what it does between detection and its first operation, how it follows the log
afterwards, and how far ahead the orchestrator sets START_TIME. This is the one place that says
what a strategy means: every default an unset option takes is derived here; the worker's start
path and the orchestrator read the plan and branch on nothing else."""

from __future__ import annotations

import enum
import zlib
from collections.abc import Sequence

import attrs

from startline.engine.scenario import Bookkeeping, StartOptions, Strategy
from startline.engine.schedule import percentile

INLINE_PERIOD_S = 1.0
"""The inline loop reads the events and heartbeats at most once a second."""
STEERED_FOLLOW_S = 0.5
"""When the orchestrator steers the level (qps, find_max), workers read the log at least this often."""
FIRST_ISSUE_WAIT_S = 0.05
"""After the release, a worker's start task waits (at most this long) for its connections to begin
their first operations before it does anything else (its follow loop, its chores)."""
RELEASE_MARGIN_S = (0.0015, 0.002, 0.005)
"""The release's final blocking sleep: at least, without a measurement, at most (seconds)."""


def release_margin_s(late_s: Sequence[float]) -> float:
    """How long before the release instant a worker stops sleeping on the event loop and sleeps
    the rest on the OS's own precise timer (blocking, a few milliseconds at most): the event
    loop's timer rounds up to whole milliseconds and the OS wakes a process a little later, so
    a release slept on the loop alone is a millisecond or more late. The margin is the loop's
    wake lateness as just measured (``late_s``, seconds: the 90th percentile, nearest rank) plus
    half a millisecond, within ``RELEASE_MARGIN_S``: a wake later than the margin is still late
    by the difference, and blocking longer would hold the worker's other tasks."""
    least, default, most = RELEASE_MARGIN_S
    if not late_s:
        return default
    return min(most, max(least, percentile(list(late_s), 90) + 0.0005))


def release_turn(run_id: str, worker_id: str) -> int:
    """Where a worker's release order begins: from the run and the worker (a stable hash), so
    that over runs no slot is systematically released first, and a simulation is reproducible."""
    return zlib.crc32(f"{run_id}/{worker_id}".encode())


def release_order(slots: Sequence[int], turn: int) -> list[int]:
    """The order a worker's parked connections are released in: its slots, in slot order,
    rotated to begin at the ``turn``-th (modulo their number). Every slot is released; over
    consecutive turns each slot comes first equally often."""
    ordered = sorted(slots)
    if not ordered:
        return []
    k = turn % len(ordered)
    return ordered[k:] + ordered[:k]


def poll_interval_s(options: StartOptions) -> float:
    """``poll_interval_ms``, or the strategy's: poll and push 50 ms; inline-poll 200 ms (the original
    loop's sleep); scheduled 2 s — the lead, not the poll, sets the start instant, so a slow poll
    keeps waiting cheap (with the heartbeat, under 2 queries per worker per second) — and with a
    lead under 3 s, the lead minus 1 s but at least half the lead (a worker must see the start
    before its instant)."""
    if options.poll_interval_ms is not None:
        return options.poll_interval_ms / 1000.0
    if options.strategy is Strategy.SCHEDULED:
        return min(2.0, max(options.lead_ms / 2, options.lead_ms - 1000.0) / 1000.0)
    return 0.2 if options.strategy is Strategy.INLINE_POLL else 0.05


def default_bookkeeping(strategy: Strategy) -> Bookkeeping:
    """The start's bookkeeping when ``bookkeeping`` is unset: the original design's loop writes its two rows
    one after the other (inline-poll); the other strategies write them in parallel. (``prespawn``
    unset: off for inline-poll — the original design spawns after detection — else on.)"""
    return Bookkeeping.SEQUENTIAL if strategy is Strategy.INLINE_POLL else Bookkeeping.PARALLEL


class Detection(enum.Enum):
    INLINE = "inline"
    """One loop: RUN_STATUS every pass, events and a heartbeat inline at most once a second."""
    POLL = "poll"
    """RUN_STATUS every poll interval (with jitter); heartbeats in their own task."""
    PUSH = "push"
    """Wait for the control plane to say RUN_STATUS changed, then read it."""


@attrs.frozen
class StartPlan:
    detection: Detection
    poll_interval_s: float
    jitter_s: float
    prespawn: bool
    """Connections are spawned before the start and parked at the gate."""
    bookkeeping: Bookkeeping
    at_start_time: bool
    """Release the connections at START_TIME on this worker's clock map (``scheduled``), not at detection."""
    spin_s: float
    yield_after_release: bool
    """``scheduled``: offer the core (``Runtime.yield_core``) once the first operations are issued."""
    follow_interval_s: float
    """How often the event log is read after the start (when not pushed)."""
    release_lead_s: float | None
    """``scheduled``: START_TIME is the control plane's now plus this; else None (START_TIME is the
    control plane's now, and workers start as they detect it)."""

    @classmethod
    def of(cls, options: StartOptions, push_available: bool, steered: bool = False) -> StartPlan:
        """``steered``: the orchestrator changes the level as the run goes (qps, find_max): its
        changes are read within ``STEERED_FOLLOW_S``."""
        strategy = options.strategy
        poll = poll_interval_s(options)
        if strategy is Strategy.INLINE_POLL:
            detection = Detection.INLINE
        elif strategy is Strategy.PUSH and push_available:
            detection = Detection.PUSH
        else:
            detection = Detection.POLL  # push on a control plane that cannot notify falls back to polling
        return cls(
            detection=detection,
            poll_interval_s=poll,
            jitter_s=options.jitter_ms / 1000.0,
            prespawn=options.prespawn if options.prespawn is not None else strategy is not Strategy.INLINE_POLL,
            bookkeeping=options.bookkeeping if options.bookkeeping is not None else default_bookkeeping(strategy),
            at_start_time=strategy is Strategy.SCHEDULED,
            spin_s=options.spin_ms / 1000.0,
            yield_after_release=options.yield_after_release and strategy is Strategy.SCHEDULED,
            follow_interval_s=min(
                INLINE_PERIOD_S if detection is Detection.INLINE else poll,
                STEERED_FOLLOW_S if steered else float("inf"),
            ),
            release_lead_s=options.lead_ms / 1000.0 if strategy is Strategy.SCHEDULED else None,
        )

    @property
    def heartbeat_task_while_waiting(self) -> bool:
        """Heartbeats in their own task from READY (the inline loop beats itself until the start)."""
        return self.detection is not Detection.INLINE

    @property
    def release_as_spawned(self) -> bool:
        """Each connection starts as it is spawned after detection (the original design's way)."""
        return not self.prespawn and not self.at_start_time

    @property
    def pushed(self) -> bool:
        return self.detection is Detection.PUSH
