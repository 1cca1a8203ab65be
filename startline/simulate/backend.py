"""The memory backend's semantics plus latency on virtual time.

A call of class C from host H takes a latency drawn from (seed, H, C, n) where n counts
H's calls of class C. A read looks (and a ``server_time`` reads the clock) at ``visibility``
× latency into the round trip; a write takes its timestamp at ``stamp`` × latency (as a
statement's ``CURRENT_TIMESTAMP()`` is taken when it begins) and lands at ``commit`` × latency;
the reply comes back after the rest. The control plane's clock is the truth.

``SimRuntime`` charges a worker process's own costs: each connection task's start (``spawn``)
and each start-path sleep's late wake (``wake``, ``monotonic_drift_ppm``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from startline.backends.memory import MemoryControlPlane, MemoryStore
from startline.backends.memory.control import STAMPED_AT
from startline.engine.ports import ControlPlaneError
from startline.engine.scenario import OperationSpec
from startline.simulate.models import Capacity, Latency, Profile, rng_for

SLEEPS = [0]
"""Virtual-time waits the simulated backend has made (2 per control-plane call, 1 per operation):
the "simulated events" of benchmarks/sim_speed.py."""

CALL_CLASS_OF = {
    "read_run": "status_read",
    "read_heartbeats": "status_read",
    "read_events": "event_read",
    "update_run": "status_update",
    "append_event": "event_insert",
    "register_worker": "heartbeat_merge",
    "upsert_heartbeat": "heartbeat_merge",
    "upsert_result": "results_insert",
    "server_time": "server_time",
}
WRITE_METHODS = frozenset(
    {"create_run", "update_run", "append_event", "register_worker", "upsert_heartbeat", "mark_worker", "upsert_result"}
)
"""Calls whose effect is a write: stamped at ``stamp``, landing at ``commit``."""


@attrs.define(eq=False)
class SimControlPlane:
    """One host's handle on the shared store, with that host's latencies."""

    store: MemoryStore
    profile: Profile
    seed: int
    host: str
    calls: dict[str, int] = attrs.Factory(lambda: defaultdict(int))
    inner: MemoryControlPlane = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.inner = MemoryControlPlane(self.store)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name.startswith("_") or not callable(method) or name == "wait_for_change":
            return method
        call_class = CALL_CLASS_OF.get(name, "other")

        async def call(*args: Any, **kwargs: Any) -> Any:
            n = self.calls[call_class]
            self.calls[call_class] = n + 1
            rng = rng_for(self.seed, self.host, call_class, n)
            now = trio.current_time()
            resume = self.profile.paused_until(self.host, now)
            if resume > now:  # this process is descheduled: nothing it does happens until then
                await trio.sleep_until(resume)
                now = resume
            latency = self.profile.control_latency(call_class).sample(rng) + self.profile.extra_latency_s(now)
            failing = (
                rng.random() < self.profile.error_probability.get(call_class, 0.0)
                or self.profile.in_outage(now)
                or self.profile.broken(call_class, now)
            )
            vis, jit = self.profile.visibility, self.profile.visibility_jitter
            shift = rng.uniform(-jit, jit) if jit else 0.0
            stamp, commit = self.profile.write_points() if name in WRITE_METHODS else (vis, vis)
            before = latency * min(1.0, max(0.0, commit + shift))
            stamped_at = latency * min(1.0, max(0.0, stamp + shift))
            SLEEPS[0] += 2
            stamp_value = None
            if stamped_at < before:  # the statement reads the clock as it begins, lands later
                await trio.sleep(stamped_at)
                stamp_value = self.store.clock.now()
                await trio.sleep(before - stamped_at)
            else:
                await trio.sleep(before)
            if failing:
                await trio.sleep(latency - before)
                raise ControlPlaneError(f"injected {call_class} failure")
            token = STAMPED_AT.set(stamp_value)
            try:
                result = await method(*args, **kwargs)
            finally:
                STAMPED_AT.reset(token)
            await trio.sleep(latency - before)
            if call_class == "event_read" and result and rng.random() < self.profile.stale_event_reads:
                result = stale_read(result, rng)
            return result

        return call


def stale_read(events: list[Any], rng: Any, cut: bool = True) -> list[Any]:
    """An event read as a lagging replica or a retried query may return it: only a prefix of
    what is there (the rest arrives later; unless not ``cut``), some events repeated, in any order."""
    events = events[: rng.randint(0, len(events))] if cut else list(events)
    events = events + [rng.choice(events) for _ in range(rng.randint(0, 2))] if events else events
    rng.shuffle(events)
    return events


@attrs.define(eq=False)
class SimRuntime:
    """One worker process's costs on virtual time: starting a connection's task takes ``spawn``
    (drawn per host and task), a sleep lasts (1 + the host's monotonic drift) times as long and
    wakes ``wake`` late (drawn per host and wake); the release every worker wakes at together,
    ``release_wake`` late (else ``wake``)."""

    profile: Profile
    seed: int
    host: str
    _spawns: int = attrs.field(init=False, default=0)
    _wakes: int = attrs.field(init=False, default=0)
    _drift: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._drift = self.profile.host_drift(self.seed, self.host)

    async def spawned(self) -> None:
        if self.profile.spawn is not None:
            n, self._spawns = self._spawns, self._spawns + 1
            await trio.sleep(self.profile.spawn.sample(rng_for(self.seed, self.host, "spawn", n)))

    async def sleep_until(self, deadline: float) -> None:
        await self._sleep(deadline, self.profile.wake, "wake")

    async def release_until(self, deadline: float) -> None:
        await self._sleep(deadline, self.profile.release_wake or self.profile.wake, "release")

    async def _sleep(self, deadline: float, late: Latency | None, what: str) -> None:
        now = trio.current_time()
        wake = now + max(0.0, deadline - now) * (1.0 + self._drift)
        if late is not None:
            n, self._wakes = self._wakes, self._wakes + 1
            wake += late.sample(rng_for(self.seed, self.host, what, n))
        await trio.sleep_until(wake)


@attrs.define(eq=False)
class SimSession:
    target: SimTarget
    worker_id: str
    slot: int
    n: int = 0

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        began = trio.current_time()
        rng = rng_for(self.target.seed, f"{self.worker_id}/{self.slot}", op.name, self.n)
        self.n += 1
        if self.slot not in self.target.first_query.get(self.worker_id, {}):
            self.target.first_query.setdefault(self.worker_id, {})[self.slot] = began
        SLEEPS[0] += 1
        profile = self.target.profile
        if profile.target_stalls:
            resume = profile.stalled_until(began)
            if resume > began:  # the target answers nothing until then
                await trio.sleep_until(resume)
        capacity = profile.capacity
        if capacity is None:
            await trio.sleep(self.target.profile.target.sample(rng))
        else:
            await self.target.serve(capacity, rng)
        if self.target.ops is not None:
            self.target.ops.append((self.worker_id, began, trio.current_time()))

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        return None

    async def close(self) -> None:
        return None


@attrs.define(eq=False)
class SimTarget:
    """A target whose every operation takes the profile's target latency; it records, in true
    (virtual) time, when each connection issued its first operation."""

    profile: Profile
    seed: int
    first_query: dict[str, dict[int, float]] = attrs.Factory(dict)
    ops: list[tuple[str, float, float]] | None = None  # (worker, began, ended) in trio time, when recording

    _servers: trio.Semaphore | None = attrs.field(init=False, default=None)
    _opened: set[str] = attrs.field(init=False, factory=set)

    async def serve(self, capacity: Capacity, rng: Any) -> None:
        """Wait (FIFO) for one of the target's servers, then hold it for a service time; past
        ``timeout_ms`` in the queue the operation fails."""
        if self._servers is None:
            self._servers = trio.Semaphore(capacity.servers)
        servers, service = self._servers, capacity.service.sample(rng)
        acquired = False
        with trio.move_on_after(capacity.timeout_ms / 1000.0 if capacity.timeout_ms > 0 else math.inf):
            await servers.acquire()
            acquired = True
        if not acquired:
            raise TimeoutError(f"queued over {capacity.timeout_ms:g} ms at a saturated target")
        try:
            await trio.sleep(service)
        finally:
            servers.release()

    async def open_session(self, worker_id: str, slot: int) -> SimSession:
        init = self.profile.worker_init
        if init is not None and worker_id not in self._opened:  # the worker's pool sets up once
            self._opened.add(worker_id)
            await trio.sleep(init.sample(rng_for(self.seed, worker_id, "init", 0)))
        return SimSession(self, worker_id, slot)

    def error_category(self, exc: BaseException) -> str:
        return type(exc).__name__
