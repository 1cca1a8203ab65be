"""The values the control plane stores: run status, control events, heartbeats, results.

Every value is frozen and validated; change one with ``attrs.evolve``. Instants
are epoch seconds (UTC) on the control plane's clock unless a name says otherwise.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
from attrs import validators as v

ORCHESTRATOR = "orchestrator"
"""The orchestrator's name wherever a participant is named (a host in simulation, a part of the original design's)."""


class RunStatus(enum.StrEnum):
    PREPARED = "PREPARED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    CANCELLING = "CANCELLING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_RUN_STATUSES


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


class Phase(enum.StrEnum):
    PREPARING = "PREPARING"
    WARMUP = "WARMUP"
    MEASUREMENT = "MEASUREMENT"
    COOLDOWN = "COOLDOWN"
    DONE = "DONE"


class WorkerStatus(enum.StrEnum):
    STARTING = "STARTING"
    INITIALIZING = "INITIALIZING"
    READY = "READY"
    RUNNING = "RUNNING"
    DRAINING = "DRAINING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STALE = "STALE"
    DEAD = "DEAD"

    @property
    def finished(self) -> bool:
        return self in (WorkerStatus.COMPLETED, WorkerStatus.FAILED, WorkerStatus.DEAD)

    @property
    def final(self) -> bool:
        """A worker's own last word (its results say so): never replaced once written."""
        return self in (WorkerStatus.COMPLETED, WorkerStatus.FAILED)


class EventType(enum.StrEnum):
    START = "START"
    SET_PHASE = "SET_PHASE"
    SET_CONNECTIONS = "SET_CONNECTIONS"
    SET_RATE = "SET_RATE"
    """An open loop's rate per worker (``rate`` ops/s, reached linearly over ``ramp_s``)."""

    @classmethod
    def _missing_(cls, value: object) -> EventType | None:
        return cls.SET_CONNECTIONS if value == "SET_WORKER_TARGET" else None  # the original design's name for it

    STOP = "STOP"


class Scope(enum.StrEnum):
    RUN = "RUN"
    WORKER_GROUP = "WORKER_GROUP"
    WORKER = "WORKER"


class StopReason(enum.StrEnum):
    """Why a run stopped: a code, stored in STOP_REASON and in STOP events. The words that go
    with it (which worker, what error) are the run's ``stop_detail``, never part of the code."""

    COMPLETED = "completed"
    USER_REQUESTED = "user_requested"
    WORKER_LOST = "worker_lost"
    READY_TIMEOUT = "ready_timeout"
    ERROR = "error"
    ORCHESTRATOR_LOST = "orchestrator_lost"
    CONTROL_PLANE_LOST = "control_plane_lost"
    NO_WORKER_COMPLETED = "no_worker_completed"
    BOUNDS_LIMIT_REACHED = "bounds_limit_reached"
    """The QPS controller ran at its connection ceiling under the target for ``bounds_patience``
    readings: the run completes, and fails its check (exit 1)."""
    THRESHOLD = "threshold"
    """An ``abort_on_fail`` threshold was crossed during MEASUREMENT: the run completes early, and
    fails that threshold (exit 1)."""
    ALL_FAILING = "all_failing"
    """Every attempt of one operation kind failed for ``[checks] stop_after_failing_s``: the run
    completes early, and fails its ``all_failing`` check (exit 1)."""

    @classmethod
    def parse(cls, value: object) -> StopReason | None:
        """Read a stored reason: a code, or (from rows written before codes and details were
        apart) ``"code: words"``; anything unreadable is ERROR, so a reader never fails on it."""
        if value is None or isinstance(value, StopReason):
            return value
        text = str(value)
        for candidate in (text, text.split(":", 1)[0].strip()):
            try:
                return cls(candidate)
            except ValueError:
                continue
        return cls.NO_WORKER_COMPLETED if text == "no worker completed" else cls.ERROR


def _non_negative(_inst: Any, attr: attrs.Attribute, value: float | int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attr.name} must be >= 0 (got {value!r})")


def v_optional_enum(kind: type[enum.Enum]) -> Any:
    """Converter: None stays None, anything else becomes a member of ``kind``."""

    def convert(value: Any) -> Any:
        return None if value is None else kind(value)

    return convert


@attrs.frozen
class ControlEvent:
    """One entry of the run's append-only control log; only the orchestrator writes it.

    ``at`` is the control-plane instant the event takes effect (START: the start
    time; SET_PHASE: the phase boundary); ``connections`` is connections per worker.
    """

    run_id: str
    sequence_id: int = attrs.field(validator=v.and_(v.instance_of(int), v.ge(1)))
    event_type: EventType = attrs.field(converter=EventType)
    at: float | None = None
    phase: Phase | None = attrs.field(default=None, converter=v_optional_enum(Phase))
    connections: int | None = attrs.field(default=None, validator=_non_negative)
    scope: Scope = attrs.field(default=Scope.RUN, converter=Scope)
    scope_id: str | None = None
    ramp_s: float = attrs.field(default=0.0, validator=_non_negative)
    reason: StopReason | None = attrs.field(default=None, converter=v_optional_enum(StopReason))
    rate: float | None = attrs.field(default=None, validator=_non_negative)
    """SET_RATE: operations per second per worker."""

    def __attrs_post_init__(self) -> None:
        if self.event_type is EventType.SET_PHASE and self.phase is None:
            raise ValueError("SET_PHASE needs a phase")
        if self.event_type is EventType.SET_CONNECTIONS and self.connections is None:
            raise ValueError("SET_CONNECTIONS needs connections")
        if self.event_type is EventType.SET_RATE and self.rate is None:
            raise ValueError("SET_RATE needs a rate")
        if self.event_type is EventType.STOP and self.reason is None:
            raise ValueError("STOP needs a reason")
        if self.scope is not Scope.RUN and not self.scope_id:
            raise ValueError(f"scope {self.scope} needs a scope_id")

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(x) if isinstance(x, enum.Enum) else x) for k, x in attrs.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlEvent:
        return cls(**data)


@attrs.frozen
class RunState:
    """The RUN_STATUS row: one per run, written by the orchestrator."""

    run_id: str
    status: RunStatus = attrs.field(converter=RunStatus)
    phase: Phase = attrs.field(converter=Phase)
    start_time: float | None = None
    updated_at: float = 0.0
    last_sequence_id: int = 0
    connections: int = 0
    expected_workers: int = 0
    stop_reason: StopReason | None = attrs.field(default=None, converter=StopReason.parse)
    stop_detail: str | None = None
    version: int = 0
    scenario: dict[str, Any] = attrs.field(factory=dict, eq=False)


@attrs.frozen
class Heartbeat:
    """A WORKER_HEARTBEATS row; ``last_heartbeat`` is set by the control plane's clock."""

    run_id: str
    worker_id: str
    status: WorkerStatus = attrs.field(converter=WorkerStatus)
    phase: Phase = attrs.field(converter=Phase, default=Phase.PREPARING)
    last_heartbeat: float = 0.0
    heartbeat_count: int = 0
    active_connections: int = 0
    applied_sequence_id: int = 0
    group: str = "default"
    incarnation: str = ""
    """Which process (or task) wrote the row: a worker id belongs to one incarnation per run."""


@attrs.frozen
class WorkerResult:
    """A TEST_RESULTS row: a worker's start bookkeeping, then its results (JSON-able)."""

    run_id: str
    worker_id: str
    status: WorkerStatus = attrs.field(converter=WorkerStatus)
    payload: dict[str, Any] = attrs.field(factory=dict, eq=False)
    updated_at: float = 0.0
    incarnation: str = ""
