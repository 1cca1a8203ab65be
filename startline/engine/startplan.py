"""A worker's start, decided once from the scenario's ``[start]`` options: how it learns of the
start, what it does between detection and its first operation, and how it follows the log
afterwards. The worker's start path reads this plan and branches on nothing else."""

from __future__ import annotations

import enum

import attrs

from startline.engine.scenario import Bookkeeping, StartOptions, Strategy

INLINE_PERIOD_S = 1.0
"""The inline loop reads the events and heartbeats at most once a second."""
STEERED_FOLLOW_S = 0.5
"""When the orchestrator steers the level (qps, find_max), workers read the log at least this often."""


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
    follow_interval_s: float
    """How often the event log is read after the start (when not pushed)."""

    @classmethod
    def of(cls, options: StartOptions, push_available: bool, steered: bool = False) -> StartPlan:
        """``steered``: the orchestrator changes the level as the run goes (qps, find_max): its
        changes are read within ``STEERED_FOLLOW_S``."""
        strategy = options.strategy
        if strategy is Strategy.INLINE_POLL:
            detection = Detection.INLINE
        elif strategy is Strategy.PUSH and push_available:
            detection = Detection.PUSH
        else:
            detection = Detection.POLL  # push on a control plane that cannot notify falls back to polling
        return cls(
            detection=detection,
            poll_interval_s=options.poll_interval_s,
            jitter_s=options.jitter_ms / 1000.0,
            prespawn=options.prespawns,
            bookkeeping=options.bookkeeping_mode,
            at_start_time=strategy is Strategy.SCHEDULED,
            spin_s=options.spin_ms / 1000.0,
            follow_interval_s=min(
                INLINE_PERIOD_S if detection is Detection.INLINE else options.poll_interval_s,
                STEERED_FOLLOW_S if steered else float("inf"),
            ),
        )

    @property
    def heartbeat_task_while_waiting(self) -> bool:
        """Heartbeats in their own task from READY (the inline loop beats itself until the start)."""
        return self.detection is not Detection.INLINE

    @property
    def release_as_spawned(self) -> bool:
        """Each connection starts as it is spawned after detection (the seed's way)."""
        return not self.prespawn and not self.at_start_time

    @property
    def pushed(self) -> bool:
        return self.detection is Detection.PUSH
