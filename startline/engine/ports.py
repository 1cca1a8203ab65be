"""What the core needs from the world: a control plane, a target, a wall clock and a runtime.

Backends implement these protocols; the engine never imports a backend.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, runtime_checkable

import trio

from startline.engine.model import ControlEvent, Heartbeat, RunState, RunStatus, WorkerResult, WorkerStatus
from startline.engine.scenario import OperationSpec


class ControlPlaneError(Exception):
    """A control-plane call failed (unreachable, timed out, refused)."""


class ControlPlaneConflict(ControlPlaneError):
    """The control plane refused a call on its merits (run exists, sequence out of order): never retried."""


CALL_DEADLINE: ContextVar[float] = ContextVar("CALL_DEADLINE", default=math.inf)
"""The trio instant by which the current control-plane call must have answered. The engine
bounds each call with a cancel scope, unless the control plane says ``honours_deadline``: then
it sets this instead, and the control plane raises ``trio.TooSlowError`` at that instant itself,
exactly as the scope would have (the simulator, which knows each call's duration as it begins,
is spared a cancel scope per call)."""


def supports_push(cp: Any) -> bool:
    """Whether ``cp`` wakes waiters when the run changes: its ``supports_push`` if it says (a
    backend or a wrapper of one), else whether it has the push protocol's methods (a structural
    check of every method: slow through wrappers, so backends say)."""
    said = getattr(cp, "supports_push", None)
    return bool(said) if said is not None else isinstance(cp, PushControlPlane)


class ControlPlane(Protocol):
    """The run's shared state: RUN_STATUS, RUN_CONTROL_EVENTS, WORKER_HEARTBEATS,
    TEST_RESULTS and METRICS_SNAPSHOTS, plus the control plane's own clock.

    Every call is one round trip (one "query") to the control plane.
    """

    async def create_run(self, run: RunState) -> None: ...

    async def read_run(self, run_id: str) -> RunState | None: ...

    async def update_run(
        self,
        run_id: str,
        *,
        expect_status: RunStatus | None = None,
        start_time_now: bool = False,
        **changes: Any,
    ) -> RunState | None:
        """Change RUN_STATUS fields and stamp ``updated_at`` with the server's clock.

        ``start_time_now`` sets START_TIME = the server's now (CURRENT_TIMESTAMP()).
        Returns the new row, or None when ``expect_status`` did not match.
        """
        ...

    async def append_event(self, event: ControlEvent) -> None:
        """Append to the log; refuses a sequence id that is not last + 1, unless the very same
        event is already there (a retried append that had landed: a no-op)."""
        ...

    async def read_events(self, run_id: str, after: int) -> list[ControlEvent]: ...

    async def register_worker(self, heartbeat: Heartbeat) -> Heartbeat:
        """Insert the worker's first row unless its id is there already; return the row that is
        there now. Registered iff its ``incarnation`` is the caller's: one process per worker id."""
        ...

    async def upsert_heartbeat(self, heartbeat: Heartbeat) -> None:
        """Update (or insert) a worker's row; ``last_heartbeat`` = the server's now.

        A heartbeat never revives a worker the orchestrator marked DEAD, and changes nothing in
        a row another incarnation registered.
        """
        ...

    async def mark_worker(self, run_id: str, worker_id: str, status: WorkerStatus) -> None: ...

    async def read_heartbeats(self, run_id: str) -> list[Heartbeat]: ...

    async def upsert_result(self, result: WorkerResult) -> None:
        """Insert or update a worker's results: only its own incarnation's row, and never once that
        row is final (COMPLETED or FAILED): a result is never replaced by a less complete one."""
        ...

    async def read_results(self, run_id: str) -> list[WorkerResult]: ...

    async def append_snapshot(self, run_id: str, worker_id: str, snapshot: Mapping[str, Any]) -> None: ...

    async def read_snapshots(self, run_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Every METRICS_SNAPSHOTS row as (worker_id, snapshot), in insertion order."""
        ...

    async def server_time(self) -> float:
        """The control plane's now, epoch seconds UTC: the run's reference clock."""
        ...


@runtime_checkable
class PushControlPlane(ControlPlane, Protocol):
    """A control plane that can notify: ``wait_for_change`` returns once RUN_STATUS's
    version moves past ``seen_version`` (every update and every event moves it)."""

    async def wait_for_change(self, run_id: str, seen_version: int) -> int: ...


class Session(Protocol):
    """One connection to the system under test."""

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None: ...

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        """Label what follows (Snowflake: QUERY_TAG) with run, worker and phase."""
        ...

    async def close(self) -> None: ...


def direct_call(session: Session, op: OperationSpec) -> Callable[..., Awaitable[Any]] | None:
    """What runs ``op`` on ``session`` when awaited with its params as keywords, with nothing
    of the session's in between — a session may offer it as ``direct_call(op)`` (the callable
    target: the operation's own function) — else ``None``: ``session.execute`` it is."""
    offer = getattr(session, "direct_call", None)
    return None if offer is None else offer(op)


class Target(Protocol):
    """The system under test: opens sessions and names the category of an error."""

    async def open_session(self, worker_id: str, slot: int) -> Session: ...

    def error_category(self, exc: BaseException) -> str: ...


class WallClock(Protocol):
    """This host's idea of now, in epoch seconds; may be off from the control plane's."""

    def now(self) -> float: ...


class Runtime(Protocol):
    """What a worker's process costs in time beyond its calls: starting a connection's task, and
    how late a sleep wakes. Live, both are the machine's own (``TrioRuntime``); a simulation
    charges them from its profile."""

    async def spawned(self) -> None:
        """Called as each connection's task begins: the cost of starting it."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until trio time ``deadline`` (or, on a real machine, a little later)."""
        ...

    async def release_until(self, deadline: float) -> None:
        """Sleep until ``deadline``, an instant every worker of the run wakes at (a scheduled
        start's release): on a shared machine they queue for its cores."""
        ...


class TrioRuntime:
    """A real process: a task costs what it costs, a sleep is ``trio.sleep_until``."""

    async def spawned(self) -> None:
        return None

    async def sleep_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)

    async def release_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
