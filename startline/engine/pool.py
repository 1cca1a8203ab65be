"""``scale_to(n)``: the connections of one worker, each a task with its own cancel scope.

The pool owns its sessions (opened before the barrier when asked) and its tasks
(in the caller's nursery). Scaling down cancels the highest-numbered scopes; scaling
up reuses the lowest free slots and their open sessions.

A connection's task is its own loop, with no frame of the pool's above it (every suspension
of every operation passes through each frame of a task's await chain, and at 1,000
connections each is one more thing of a connection's to bring back into the CPU's caches):
the pool opens the session and counts the connection before it starts the task, and the loop
holds its ``Lease`` — the connection's cancel scope, the pool's count of it and the task's
status — for as long as it runs (``with lease:``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any

import attrs
import trio

from startline.engine.ports import Session

OpenSession = Callable[[int], Awaitable[Session]]


@attrs.define(eq=False)
class Lease:
    """One connection's place in its pool, held by the connection's loop for as long as it runs
    (``with lease:``): on the way in, the task says it has started; inside, the connection's
    cancel scope (a scale-down cancels it); on the way out, the pool no longer counts it."""

    pool: Pool
    slot: int
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    """Told the connection has started as the loop enters the lease (``scale_to`` waits for it)."""
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def __enter__(self) -> trio.CancelScope:
        scope = self.scope.__enter__()
        self.task_status.started()
        return scope

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return self.scope.__exit__(kind, exc, tb)
        finally:
            self.pool._ended(self)


RunConnection = Callable[[int, Session, Lease], Coroutine[Any, Any, None]]
"""A connection's loop, the root of its task: it runs inside ``with lease:``."""


@attrs.define(eq=False)
class Pool:
    nursery: trio.Nursery
    open_session: OpenSession
    run_connection: RunConnection
    on_size: Callable[[int], None] = lambda _n: None
    """Told the number of running connections whenever it changes."""
    spawned: Callable[[int], Awaitable[None]] | None = None
    """Awaited as each connection's task begins, before it counts as started, with the task's
    place in its scale-up: what starting tasks costs (``Runtime.spawned``)."""
    _sessions: dict[int, Session] = attrs.Factory(dict)
    _scopes: dict[int, trio.CancelScope] = attrs.Factory(dict)
    _lock: trio.StrictFIFOLock = attrs.Factory(trio.StrictFIFOLock)
    _exits: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    _running: int = 0
    """Connection tasks not yet returned (a cancelled one may still be recording what it lost)."""

    @property
    def size(self) -> int:
        """Connections running (or parked on the go-gate) right now."""
        return len(self._scopes)

    @property
    def slots(self) -> list[int]:
        """The slots running (or parked on the go-gate) right now."""
        return sorted(self._scopes)

    async def prepare(self, n: int) -> None:
        """Open sessions for slots 0..n-1 now, so the start path does not pay for it."""
        for slot in range(n):
            if slot not in self._sessions:
                self._sessions[slot] = await self.open_session(slot)

    def rewarm(self, order: Sequence[int], by: float) -> None:
        """Each open session of ``order``'s slots, in that order, brings back into the caches what
        its first operation will use (``Session.rewarm``), until trio time ``by``."""
        for slot in order:
            if trio.current_time() >= by:
                return
            session = self._sessions.get(slot)
            if session is not None:
                session.rewarm()

    async def scale_to(self, n: int) -> None:
        """Make exactly ``n`` connections run; returns once every new one has started (entered its
        lease), one after another: a connection let go at once (the original design's start)
        begins its first operation as the next is spawned."""
        async with self._lock:
            while len(self._scopes) > n:
                self._scopes.pop(max(self._scopes)).cancel()
            self.on_size(len(self._scopes))
            # Start exactly the missing number once: a connection that ends by itself at once
            # (its run is over) must not make this loop start it again forever.
            missing = n - len(self._scopes)
            free = [i for i in range(n + len(self._scopes)) if i not in self._scopes][: max(0, missing)]
            for index, slot in enumerate(free):
                if self.spawned is not None:
                    await self.spawned(index)
                session = self._sessions.get(slot)
                if session is None:
                    session = self._sessions[slot] = await self.open_session(slot)
                lease = Lease(self, slot)
                self._scopes[slot] = lease.scope
                self._running += 1
                self.on_size(len(self._scopes))
                await self.nursery.start(self._root, slot, session, lease)

    def _root(
        self, slot: int, session: Session, lease: Lease, *, task_status: trio.TaskStatus[None]
    ) -> Coroutine[Any, Any, None]:
        """The task's root coroutine: the connection's loop itself (this only hands it the
        task's status, through its lease; no frame of it stays in the task)."""
        lease.task_status = task_status
        return self.run_connection(slot, session, lease)

    async def wait_empty(self) -> None:
        """Return once no connection task is left (each exits on its own or by cancel)."""
        while self._scopes:
            await self._exits.park()

    async def wait_exited(self) -> None:
        """Return once every connection task has returned — after ``cancel_all``, once each has
        recorded its unfinished operation and its driver has asked the server to stop it."""
        while self._running:
            await self._exits.park()

    def cancel_all(self) -> None:
        for scope in self._scopes.values():
            scope.cancel()
        self._scopes.clear()
        self.on_size(0)

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        with trio.CancelScope(shield=True):
            for session in sessions.values():
                await session.close()

    def _ended(self, lease: Lease) -> None:
        """``lease``'s connection is leaving its task."""
        if self._scopes.get(lease.slot) is lease.scope:
            del self._scopes[lease.slot]
        self._running -= 1
        self.on_size(len(self._scopes))
        self._exits.unpark_all()
