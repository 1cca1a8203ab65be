"""What the core needs from the world: a control plane, a target, a wall clock and a runtime.

Backends implement these protocols; the engine never imports a backend. What a backend may or
may not offer is declared here with its default, as httpcore's ``_backends/base.py`` does: the
frozen ``ControlPlaneTraits`` and ``TargetTraits`` (a backend sets its own ``traits``; a wrapper
passes its inner one's through), and optional methods with a body that does the default. A
backend that subclasses the protocol inherits them; the engine never probes with ``getattr``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, ClassVar, Protocol

import attrs
import trio

from startline.engine.metrics import error_message
from startline.engine.model import ControlEvent, Heartbeat, RunState, RunStatus, WorkerResult, WorkerStatus
from startline.engine.release import release_precisely
from startline.engine.scenario import OperationSpec
from startline.engine.serverstats import ServerReading
from startline.engine.startplan import release_margin_s


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


HOST_CLOCK = "host"
"""The clock key of this machine's own clock (``time.time()``): a SQLite control plane's, and a
database server's on loopback."""


@attrs.frozen
class ControlPlaneTraits:
    """What a control plane offers beyond the required calls (every default is "no")."""

    push: bool = False
    """``wait_for_change`` wakes a waiter when RUN_STATUS changes (else workers poll)."""
    clock_key: str | None = None
    """Which clock its instants are on: ``HOST_CLOCK``, or a name such as ``postgresql://HOST:PORT``;
    two equal keys are one clock (``None``: not known, equal to nothing)."""
    clock_resolution_s: float = 0.0
    """The smallest step of its clock (the offset estimate's uncertainty has it as a floor)."""
    honours_deadline: bool = False
    """It ends each call at ``CALL_DEADLINE`` itself (the simulator): no cancel scope per call."""

    @property
    def clock_is_host(self) -> bool:
        """START_TIME is on this host's clock: host-clock witnesses measure against it."""
        return self.clock_key == HOST_CLOCK


@attrs.frozen
class TargetTraits:
    """What a target offers beyond opening sessions (every default is "no")."""

    clock_key: str | None = None
    """Which clock its sessions' ``first_stamp`` is on (see ``ControlPlaneTraits.clock_key``)."""
    setup: bool = False
    """It runs a scenario's ``setup`` statements (``setup``)."""
    sampling: bool = False
    """It reads ``sample`` parameters' values (``sample``)."""
    statement_stats: bool = False
    """It reports per-statement figures from the server (``statement_stats``)."""
    checks_statements: bool = False
    """``startline check --connect`` can try its statements (``check_statements``)."""
    prepares: bool = False
    """It runs an operation with ``prepare = true`` as a prepared statement."""
    server_sampling: bool = False
    """It reads its server's own statistics over time (``open_server_sampler``)."""
    query_history: bool = False
    """Right after a run it reads the server's own record of the run's statements
    (``query_history``)."""


@attrs.frozen
class HistoryRequest:
    """What a target needs to find a finished run's statements in its server's history and put
    them on the run's timeline (``Target.query_history``)."""

    run_id: str
    operations: Sequence[OperationSpec]
    phases: Mapping[str, Any]
    """The summary's ``phases`` (the client's counts, to say what share the server's record covers)."""
    start_time: float
    """START_TIME, epoch seconds on the control plane's clock."""
    end_time: float
    """When the run stopped, on the same clock."""
    interval_s: float
    to_control: Callable[[float], float]
    """This process's trio clock → the control plane's (the clock map the start uses) …"""
    clock_uncertainty_s: float
    """… within ± this."""
    same_clock: bool
    """The target's server is the control plane's clock (no offset to estimate)."""


def same_clock(control: ControlPlaneTraits, target: TargetTraits) -> bool:
    """Whether the target's stamps and the control plane's instants (START_TIME) are one clock."""
    return control.clock_key is not None and control.clock_key == target.clock_key


class ControlPlane(Protocol):
    """The run's shared state: RUN_STATUS, RUN_CONTROL_EVENTS, WORKER_HEARTBEATS,
    TEST_RESULTS and METRICS_SNAPSHOTS, plus the control plane's own clock.

    Every call is one round trip (one "query") to the control plane. ``traits`` and the methods
    with a body below are optional: a backend that subclasses this protocol has their defaults.
    """

    traits: ClassVar[ControlPlaneTraits] = ControlPlaneTraits()

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

    # ---- optional ----------------------------------------------------------------------------

    async def wait_for_change(self, run_id: str, seen_version: int) -> int:
        """With ``traits.push``: return once RUN_STATUS's version moves past ``seen_version``
        (every update and every event moves it)."""
        raise NotImplementedError("this control plane does not push (traits.push is False)")

    async def prepare_push(self) -> None:
        """With ``traits.push``: get ready to be woken (a worker calls it before READY, so the
        START cannot come before it listens). Default: nothing to prepare."""
        return None

    async def close(self) -> None:
        """Release what it holds (connections, threads). Default: nothing held."""
        return None


class Session(Protocol):
    """One connection to the system under test. ``first_stamp`` and ``direct_call`` are optional."""

    first_stamp: float | None = None
    """The target's clock (``TargetTraits.clock_key``) when it received this session's first
    operation, where the target stamps it (PostgreSQL): the start's target witness."""

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None: ...

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        """Label what follows (Snowflake: QUERY_TAG) with run, worker and phase."""
        ...

    async def close(self) -> None: ...

    def direct_call(self, op: OperationSpec) -> Callable[..., Awaitable[Any]] | None:
        """What runs ``op`` when awaited with its params as keywords, with nothing of the
        session's in between (the callable target: the operation's own function); default
        ``None``: ``execute`` it is."""
        return None

    async def warm(self, operations: Sequence[OperationSpec]) -> None:
        """Before the start, make ready what each operation's first run would otherwise pay for,
        changing no data (SQLite: the schema read and each statement compiled into the
        connection's cache, running nothing): a worker's connections take their first turns one
        after another at the release. Default: nothing to make ready."""
        return None

    def rewarm(self) -> None:
        """Called on a parked connection's session in the last millisecond before a scheduled
        release (on a real clock; the worker blocks meanwhile: microseconds, waiting for
        nothing): bring back into the CPU's caches what the first operation will use, changing
        nothing (SQLite: a read of the schema table — a connection's first statement after the
        wait cost 150 µs, 60 µs after it). Default: nothing."""
        return None


class Target(Protocol):
    """The system under test: opens sessions and names the category of an error. ``traits`` and
    the methods with a body below are optional (see ``TargetTraits``)."""

    traits: ClassVar[TargetTraits] = TargetTraits()

    async def open_session(self, worker_id: str, slot: int) -> Session: ...

    def error_category(self, exc: BaseException) -> str: ...

    def error_message(self, exc: BaseException) -> str:
        """What an operation's error says, as failures.csv groups it: one line, the same for the
        same error whatever values the operation bound (a driver that quotes them overrides this)."""
        return error_message(exc)

    # ---- optional (each with its trait) --------------------------------------------------------

    async def setup(self, statements: Sequence[str]) -> None:
        """``traits.setup``: run the scenario's setup statements."""
        raise NotImplementedError("this target runs no setup statements (traits.setup is False)")

    async def sample(self, sql: str, size: int) -> list[Any]:
        """``traits.sampling``: the first column of ``sql``'s rows, at most ``size`` distinct values."""
        raise NotImplementedError("this target reads no samples (traits.sampling is False)")

    async def statement_stats(self) -> dict[str, dict[str, Any]] | None:
        """``traits.statement_stats``: per-statement figures so far (``None``: not available now)."""
        return None

    async def open_server_sampler(self) -> ServerSampler:
        """``traits.server_sampling``: one connection that reads the server's statistics."""
        raise NotImplementedError("this target reads no server statistics (traits.server_sampling is False)")

    async def query_history(self, request: HistoryRequest) -> dict[str, Any] | None:
        """``traits.query_history``: the summary's ``server`` block from the server's record of
        the run's statements, read right after it (None: nothing to read it from)."""
        raise NotImplementedError("this target reads no query history (traits.query_history is False)")

    async def check_statements(
        self, setup: Sequence[str], statements: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[str, str]]:
        """``traits.checks_statements``: try each (where, sql, sample params) without keeping what
        it does; what each said, as (where, message)."""
        return []

    async def close(self) -> None:
        """Release what it holds. Default: nothing held."""
        return None


class ServerSampler(Protocol):
    """A target's reader of its server's statistics (``Target.open_server_sampler``): one
    connection of its own, one query per reading."""

    source: str
    """What it reads, as the summary's ``server.source`` names it (``pg_stat_database``)."""

    async def read(self, index: int) -> ServerReading:
        """The server's statistics now, taken for interval boundary ``index``."""
        ...

    async def close(self) -> None: ...


class WallClock(Protocol):
    """This host's idea of now, in epoch seconds; may be off from the control plane's."""

    def now(self) -> float: ...


PUSH_FALLBACK_POLL_S = 0.05
"""A control plane that notifies polls RUN_STATUS this often while its listening connection is
down (a notification sent meanwhile is lost), until it listens again."""


async def fallback_read(cp: ControlPlane, run_id: str, seen_version: int) -> int | None:
    """One read of a notifying control plane whose listener is down: RUN_STATUS after
    ``PUSH_FALLBACK_POLL_S``; its version if past ``seen_version``, else None (a failed read too)."""
    await trio.sleep(PUSH_FALLBACK_POLL_S)
    try:
        run = await cp.read_run(run_id)
    except ControlPlaneError:
        return None
    return run.version if run is not None and run.version > seen_version else None


Rewarm = Callable[[float], None]
"""``rewarm(by)``: bring the parked sessions back into the caches, stopping at trio time ``by``."""


class Runtime(Protocol):
    """What a worker's process costs in time beyond its calls: starting a connection's task, and
    how late a sleep wakes. Live, both are the machine's own (``TrioRuntime``); a simulation
    charges them from its profile."""

    async def spawned(self, index: int) -> None:
        """Called as each connection's task begins, ``index`` its place among the tasks one
        scale-up starts (0 the first): the cost of starting it."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until trio time ``deadline`` (or, on a real machine, a little later)."""
        ...

    async def release_until(self, deadline: float, rewarm: Rewarm | None = None) -> None:
        """Sleep until ``deadline``, an instant every worker of the run wakes at (a scheduled
        start's release): on a shared machine they queue for its cores. ``rewarm(by)``, where
        the runtime blocks before the instant: called once shortly before it, to be done by
        ``by`` (``Pool.rewarm``)."""
        ...

    async def left_gate(self, place: int) -> None:
        """Called as a connection leaves the start gate, ``place`` its place in the order its
        worker released them (0 the first, and any that came after the release): what the
        process takes to come to it after the ones before (it issues them one after another)."""
        ...

    async def detected(self) -> None:
        """Called once the worker has found a start it was not asleep for (poll, push, inline;
        not a scheduled instant): what its process pays from the read that found it to its
        connections' release (setting its status, launching its bookkeeping, arming them)."""
        ...

    def yield_core(self) -> None:
        """Offer this process's core to another process waiting for one, if any (after the
        release, once this worker's first operations are issued)."""
        ...


try:
    _sched_yield: Callable[[], None] = os.sched_yield
except AttributeError:  # Windows has none: there the offer is not made

    def _sched_yield() -> None:
        return None


class TrioRuntime:
    """A real process: a task costs what it costs, a sleep is ``trio.sleep_until``, the release
    is slept precisely (``release.release_precisely``: the last milliseconds on the OS's timer,
    as long as the loop's wake lateness measured just before)."""

    async def spawned(self, index: int) -> None:
        return None

    async def sleep_until(self, deadline: float) -> None:
        await trio.sleep_until(deadline)

    async def release_until(self, deadline: float, rewarm: Rewarm | None = None) -> None:
        await release_precisely(deadline, release_margin_s, rewarm)

    async def left_gate(self, place: int) -> None:
        return None  # the process's own cost is what it is

    async def detected(self) -> None:
        return None  # the process's own cost is what it is

    def yield_core(self) -> None:
        _sched_yield()  # returns at once when no other process waits for this core
