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
import random
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeGuard

import attrs
import trio

from startline.backends.memory import MemoryControlPlane, MemoryStore
from startline.backends.memory.control import STAMPED_AT
from startline.engine.model import ORCHESTRATOR, RunState
from startline.engine.ports import (
    CALL_DEADLINE,
    ControlPlaneError,
    ControlPlaneTraits,
    Rewarm,
    Session,
    Target,
    fallback_read,
)
from startline.engine.scenario import OperationSpec
from startline.simulate.clock import sleep, sleep_until
from startline.simulate.models import Capacity, Latency, Profile, Streams, rng_for

SLEEPS = [0]
"""Virtual-time waits the simulated backend has made (2 per control-plane call, 1 per operation,
1 per wait of a worker's runtime: a connection task's start, a start-path sleep, a pool's
setup): the "simulated events" of benchmarks/sim_speed.py."""

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
    "prepare_push": "status_read",
}
WRITE_METHODS = frozenset(
    {"create_run", "update_run", "append_event", "register_worker", "upsert_heartbeat", "mark_worker", "upsert_result"}
)
"""Calls whose effect is a write: stamped at ``stamp``, landing at ``commit``."""


@attrs.define(eq=False)
class SimControlPlane:
    """One host's handle on the shared store, with that host's latencies. It knows each call's
    duration as the call begins, so it ends a call at its ``CALL_DEADLINE`` itself
    (``honours_deadline``) where a live backend is bounded by a cancel scope."""

    store: MemoryStore
    profile: Profile
    seed: int
    host: str
    target: SimTarget | None = None
    """Where the workers' first operations are seen (``start_read`` and ``control_loaded`` apply
    to a worker's calls once some worker's load runs); None: no load is ever running."""
    inner: MemoryControlPlane = attrs.field(init=False)
    _streams: Streams = attrs.field(init=False)
    _methods: dict[str, Any] = attrs.field(init=False, factory=dict, repr=False)
    traits: ControlPlaneTraits = attrs.field(init=False)
    """It notifies (``push``) when its profile says how late a notification comes (``notify``)."""
    _seen_start: bool = attrs.field(init=False, default=False)
    """A worker's read of RUN_STATUS has found the run started (``start_read``: that read only)."""

    def __attrs_post_init__(self) -> None:
        # every simulated call waits on the clock before it acts: those waits are its checkpoints
        self.inner = MemoryControlPlane(self.store, checkpoints=False)
        self._streams = Streams(self.seed, self.host)
        self.traits = ControlPlaneTraits(honours_deadline=True, push=self.profile.notify is not None)

    async def wait_for_change(self, run_id: str, seen_version: int) -> int:
        """Push, as PostgreSQL's listener does it (``backends/postgres/control.py``): RUN_STATUS read
        once (a change made before the listening began is seen there), then the change's
        notification, ``notify`` after its write lands. A notification sent while the listening
        connection was down — an outage between the wait's start and the write — is lost: the
        change is found by reading RUN_STATUS every ``PUSH_FALLBACK_POLL_S``."""
        notify = self.profile.notify
        assert notify is not None  # only a control plane that says push is waited on
        run = await self.read_run(run_id)
        if run is not None and run.version > seen_version:
            return run.version
        since = trio.current_time()
        version = await self.store.wait_for_change(run_id, seen_version)
        if not self.profile.outage_within(since, trio.current_time()):
            SLEEPS[0] += 1
            await sleep(notify.sample(self._streams("notify")))
            return version
        while True:
            if (found := await fallback_read(self, run_id, seen_version)) is not None:
                return found

    def _loaded(self, at: float) -> bool:
        """Some worker had begun its first operation before ``at``: its load is on the cores (for
        a read that finds the start, another worker's: its own connections are not released yet)."""
        return self.target is not None and self.target.began_at < at

    def __getattr__(self, name: str) -> Any:
        if name in ("_methods", "inner", "_streams", "traits", "target"):  # not set yet (attrs' __init__ is running)
            raise AttributeError(name)
        call = self._methods.get(name)
        if call is not None:
            return call
        method = getattr(self.inner, name)
        if name.startswith("_") or not callable(method):
            return method
        call = self._methods[name] = self._simulated(name, method)
        return call

    def _simulated(self, name: str, method: Any) -> Any:
        call_class = CALL_CLASS_OF.get(name, "other")
        profile, writes = self.profile, name in WRITE_METHODS
        rng, model = self._streams(call_class), profile.control_latency(call_class)
        loaded = profile.control_loaded.get(call_class) if self.host != ORCHESTRATOR else None
        error_probability = profile.error_probability.get(call_class, 0.0)
        vis, jit = profile.visibility, profile.visibility_jitter
        stamp, commit = profile.write_points() if writes else (vis, vis)
        stale_reads = profile.stale_event_reads if call_class == "event_read" else 0.0
        pauses = self.host in profile.pauses
        faults = bool(profile.spikes or profile.outages or call_class in profile.broken_calls)
        start_read = profile.start_read if name == "read_run" and self.host != ORCHESTRATOR else None

        async def call(*args: Any, **kwargs: Any) -> Any:
            deadline = CALL_DEADLINE.get()
            # every draw of this call before its first wait (see Streams)
            began = trio.current_time()
            if loaded is not None and self._loaded(began):
                latency = loaded.sample(rng)  # (some worker's load runs: a core is not free)
            else:
                latency = model.sample(rng)
            slow = 0.0 if start_read is None else start_read.sample(rng)  # used if it finds the start
            failing = rng.random() < error_probability
            shift = rng.uniform(-jit, jit) if jit else 0.0
            stale = stale_reads and rng.random() < stale_reads
            stale_seed = rng.getrandbits(64) if stale_reads else 0
            now = began
            resume = profile.paused_until(self.host, now) if pauses else now
            if resume > now:  # this process is descheduled: nothing it does happens until then
                await until(resume, deadline)
                now = resume
            if faults:
                latency += profile.extra_latency_s(now)
                failing = failing or profile.in_outage(now) or profile.broken(call_class, now)
            before = latency * min(1.0, max(0.0, commit + shift))
            stamped_at = latency * min(1.0, max(0.0, stamp + shift))
            SLEEPS[0] += 2
            stamp_value = None
            if stamped_at < before:  # the statement reads the clock as it begins, lands later
                await until(now + stamped_at, deadline)
                stamp_value = self.store.clock.now()
            await until(now + before, deadline)
            if failing:
                await until(now + latency, deadline)
                raise ControlPlaneError(f"injected {call_class} failure")
            if stamp_value is None:
                result = await method(*args, **kwargs)
            else:
                token = STAMPED_AT.set(stamp_value)
                try:
                    result = await method(*args, **kwargs)
                finally:
                    STAMPED_AT.reset(token)
            if start_read is not None and not self._seen_start and _has_start(result):
                self._seen_start = True  # (the read that detects the start: later ones take their time)
                # a scheduled start is read before it; the first workers to find a polled start
                # find the cores free
                if self.store.clock.now() >= result.start_time and self._loaded(now):
                    # this read's draw, not the larger of it and the ordinary one: what start_read
                    # was fitted to (its ordinary draw only set where in it the read looked)
                    latency = max(before, slow)
            await until(now + latency, deadline)
            if stale and result:
                result = stale_read(result, random.Random(stale_seed))
            return result

        return call


def release_ranks(seed: int, worker_ids: Sequence[str]) -> dict[str, float]:
    """Each worker's place along a scheduled release's order for the run ``seed`` (0 first, 1
    last; every place once): which of the processes woken together gets a core first is the
    machine's draw, not the workers' numbering."""
    order = list(worker_ids)
    rng_for(seed, "run", "release_rank", 0).shuffle(order)
    last = max(1, len(order) - 1)
    return {w: k / last for k, w in enumerate(order)}


def _has_start(result: Any) -> TypeGuard[RunState]:
    """A RUN_STATUS read's result says when the run starts (or started)."""
    return isinstance(result, RunState) and result.start_time is not None


def until(instant: float, deadline: float) -> Coroutine[Any, Any, None]:
    """Sleep until ``instant``; if the call's deadline comes first, until then, and raise
    ``trio.TooSlowError`` (what a cancel scope with that deadline around the call does). The
    sleep itself is returned, not awaited in a frame of its own: two per simulated call."""
    return _timed_out(deadline) if instant > deadline else sleep_until(instant)


async def _timed_out(deadline: float) -> None:
    await sleep_until(deadline)
    raise trio.TooSlowError


def stale_read(events: list[Any], rng: Any, cut: bool = True) -> list[Any]:
    """An event read as a lagging replica or a retried query may return it: only a prefix of
    what is there (the rest arrives later; unless not ``cut``), some events repeated, in any order."""
    events = events[: rng.randint(0, len(events))] if cut else list(events)
    events = events + [rng.choice(events) for _ in range(rng.randint(0, 2))] if events else events
    rng.shuffle(events)
    return events


@attrs.define(eq=False)
class SimRuntime:
    """One worker process's costs on virtual time: starting connection tasks takes ``spawn``
    (drawn per host, once per scale-up step or once per task: ``spawn_per``), a sleep lasts
    (1 + the host's monotonic drift) times as long and wakes ``wake`` late (drawn per host and
    wake); the release every worker wakes at together, as late as its place in the run's release
    order says (``release_queue``, one draw for the run's whole release; else ``release_wake``,
    else ``wake``); a start found by a read, ``after_detect`` from that read to its connections'
    release."""

    profile: Profile
    seed: int
    host: str
    release_rank: float = 0.0
    """How far along the run's release order this worker is (``release_ranks``)."""
    _streams: Streams = attrs.field(init=False)
    _drift: float = attrs.field(init=False)
    _stepped: list[float] = attrs.field(init=False, factory=lambda: [0.0])
    """How far after the release the connection at each place along it begins (``left_gate``)."""
    _releases: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._streams = Streams(self.seed, self.host)
        self._drift = self.profile.host_drift(self.seed, self.host)

    async def spawned(self, index: int) -> None:
        if self.profile.spawn is None or (index > 0 and self.profile.spawn_per == "step"):
            return
        SLEEPS[0] += 1
        await sleep(self.profile.spawn.sample(self._streams("spawn")))

    async def sleep_until(self, deadline: float) -> None:
        await self._sleep(deadline, self.profile.wake, "wake")

    async def release_until(self, deadline: float, rewarm: Rewarm | None = None) -> None:
        # (no rewarm: a simulated session keeps nothing in a CPU's caches)
        rng = None
        if self.profile.release_queue:
            # One draw for the run's whole release, each worker at its own place's entry: the same
            # generator, seeded by the run, so every place lands at one quantile of its own
            # distribution. Live, a run whose release was late for one worker was late for the
            # ones after it (8 × 2 on 2 cores: each place drawn alone, the skew p50 was 2.00 ms
            # against the runs' 1.42; a place more workers share draws one lateness for them).
            rng = rng_for(self.seed, "run", "release", self._releases)
        self._releases += 1
        await self._sleep(deadline, self.profile.release_lateness(self.release_rank), "release", rng)

    async def left_gate(self, place: int) -> None:
        step = self.profile.connection_step
        if step is not None and place > 0:
            # each place one draw after the one before it, the k-th draw for the k-th place
            # whichever of the connections leaving together asks first
            stepped = self._stepped
            while len(stepped) <= place:
                stepped.append(stepped[-1] + step.sample(self._streams("connection_step")))
            SLEEPS[0] += 1
            await sleep(stepped[place])

    async def detected(self) -> None:
        if self.profile.after_detect is not None:
            SLEEPS[0] += 1
            await sleep(self.profile.after_detect.sample(self._streams("after_detect")))

    def yield_core(self) -> None:
        return None  # the release's queueing for cores is in ``release_queue`` / ``release_wake``

    async def _sleep(self, deadline: float, late: Latency | None, what: str, rng: random.Random | None = None) -> None:
        """Sleep to ``deadline`` (this host's drift), then ``late`` more: drawn from this host's
        stream of ``what``, or from ``rng`` when given."""
        now = trio.current_time()
        wake = now + max(0.0, deadline - now) * (1.0 + self._drift)
        if late is not None:
            wake += late.sample(self._streams(what) if rng is None else rng)
        SLEEPS[0] += 1
        await sleep_until(wake)


@attrs.define(eq=False)
class SimSession(Session):
    """One connection's session: one operation at a time, each kind's draws from its own stream."""

    target: SimTarget
    worker_id: str
    slot: int
    _streams: Streams = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._streams = Streams(self.target.seed, f"{self.worker_id}/{self.slot}")

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        began = trio.current_time()
        rng = self._streams(op.name)
        if self.slot not in self.target.first_query.get(self.worker_id, {}):
            self.target.first_query.setdefault(self.worker_id, {})[self.slot] = began
            self.target.began_at = min(self.target.began_at, began)
        SLEEPS[0] += 1
        profile = self.target.profile
        if profile.target_stalls:
            resume = profile.stalled_until(began)
            if resume > began:  # the target answers nothing until then
                await sleep_until(resume)
        capacity = profile.capacity
        if capacity is None:
            await sleep(self.target.profile.target.sample(rng))
        else:
            await self.target.serve(capacity, rng)
        if self.target.ops is not None:
            self.target.ops.append((self.worker_id, began, trio.current_time()))

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        return None

    async def close(self) -> None:
        return None


@attrs.define(eq=False)
class SimTarget(Target):
    """A target whose every operation takes the profile's target latency; it records, in true
    (virtual) time, when each connection issued its first operation."""

    profile: Profile
    seed: int
    first_query: dict[str, dict[int, float]] = attrs.Factory(dict)
    began_at: float = math.inf
    """When the first of every worker's operations began (trio time)."""
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
            await sleep(service)
        finally:
            servers.release()

    async def open_session(self, worker_id: str, slot: int) -> SimSession:
        init = self.profile.worker_init
        if init is not None and worker_id not in self._opened:  # the worker's pool sets up once
            self._opened.add(worker_id)
            SLEEPS[0] += 1
            await sleep(init.sample(rng_for(self.seed, worker_id, "init", 0)))
        return SimSession(self, worker_id, slot)

    def error_category(self, exc: BaseException) -> str:
        return type(exc).__name__
