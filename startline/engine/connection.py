"""The load path: one connection's closed loop — choose, draw, execute, record, think — and
the per-connection ``Tally`` that records each operation into its worker's ``Recorder``.

The loop waits at the worker's ``StartGate`` (connections may be spawned before the start
and parked there), then runs until the worker drains, its operation budget is spent, or the
planned end passes. Everything about time is ``trio.current_time()``.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import trio

from startline.engine.arrivals import Arrivals
from startline.engine.metrics import (
    HIGHEST_US,
    RETRIED,
    UNFINISHED,
    Recorder,
    bucket_index,
    fold_counts,
    to_us,
)
from startline.engine.model import Phase
from startline.engine.pool import Lease
from startline.engine.ports import Session
from startline.engine.scenario import Arrival, OperationSpec, Scenario
from startline.engine.schedule import PhaseWindows
from startline.engine.workload import Mix, ParamSource, derive_seed, draws

MEASUREMENT = Phase.MEASUREMENT
NO_PARAMS: dict[str, Any] = {}
"""Shared by every parameterless operation (never mutated)."""
GROW_LAG_S = 0.001
"""Open loop: an operation taken this late, with no connection idle, asks for one more connection."""
T = TypeVar("T")
SLOT_STRIDE = 100_000
"""Connection slots of worker ``index`` are ``index * SLOT_STRIDE + slot`` run-wide."""
PICKS = 64
"""A connection draws its mix this many operations ahead, into one list: an operation reads one
item of it (and one line of the CPU's caches every eight operations) instead of calling its
generator, whose state would be more of the connection's to bring back into the caches each
turn. (The list's position counts up to it: ints the interpreter shares, up to 256.)"""


def _first_only(items: Sequence[T]) -> list[T]:
    """The mix of one operation, ``PICKS`` ahead (``Mix.picks``)."""
    return [items[0]] * PICKS


Entry = tuple[int, OperationSpec, Callable[..., Coroutine[Any, Any, None]] | None, bool, dict[int, int]]
"""An operation as the closed loop takes it (``Connections._plan``)."""


def loop_clock() -> tuple[Callable[[], float], float]:
    """(now, offset): ``now() + offset`` is the run's trio time, read as cheaply as it can be.
    Trio's system clock is ``offset + time.perf_counter()``: a loop that reads ``perf_counter``
    (C) and keeps its instants in that frame skips a Python method call per reading, two per
    operation. Any other clock (a MockClock), or a Trio whose system clock reads otherwise, is
    read through its own method, offset 0."""
    clock = trio.lowlevel.current_clock()
    offset = getattr(clock, "offset", None)
    if type(clock).__name__ == "SystemClock" and isinstance(offset, float):
        if abs(clock.current_time() - offset - time.perf_counter()) < 1e-3:
            return time.perf_counter, offset
    return clock.current_time, 0.0


@attrs.define(eq=False)
class StartGate:
    """Where connections wait for the start, in two steps. *Armed* with the phase windows once
    the start is known: each connection then makes ready what its first operation needs (its
    tally, the first interval's histograms) and parks. *Opened* at the release instant: the
    parked connections go, in the order the start plan gives (``startplan.release_order``);
    one that comes to the gate after it opened goes at once."""

    _armed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _windows: PhaseWindows | None = attrs.field(init=False, default=None)
    _parked: dict[int, trio.Event] = attrs.field(init=False, factory=dict)
    _places: dict[int, int] = attrs.field(init=False, factory=dict)
    _open: bool = attrs.field(init=False, default=False)

    @property
    def is_open(self) -> bool:
        return self._open

    @property
    def windows(self) -> PhaseWindows | None:
        """The phase windows, once the gate is armed."""
        return self._windows

    @property
    def parked(self) -> list[int]:
        """The slots waiting for the release."""
        return sorted(self._parked)

    def arm(self, windows: PhaseWindows) -> None:
        self._windows = windows
        self._armed.set()

    def open(self, order: Sequence[int] = ()) -> None:
        """Release the parked connections: the slots of ``order`` first, in that order, then any
        other parked slot (by slot)."""
        self._open = True
        parked, self._parked = self._parked, {}
        for slot in (*order, *sorted(parked)):
            self._places.setdefault(slot, len(self._places))
            event = parked.pop(slot, None)
            if event is not None:
                event.set()

    async def armed(self) -> PhaseWindows:
        await self._armed.wait()
        assert self._windows is not None  # set before the event, in arm()
        return self._windows

    async def released(self, slot: int) -> int:
        """Return at the release (at once when the gate is open) the slot's place in the order
        the release let the connections go (``order``, then the parked ones; 0 the first, and a
        slot it did not name)."""
        if self._open:
            return self._places.pop(slot, 0)
        event = self._parked[slot] = trio.Event()
        try:
            await event.wait()
        finally:
            if self._parked.get(slot) is event:
                del self._parked[slot]
        return self._places.pop(slot, 0)


TIMEOUT = "timeout"


async def _stays(place: int) -> None:
    """``Connections.left_gate`` where no runtime is given: nothing to pay."""
    return None


class OperationTimedOut(Exception):
    """An operation ran past its own ``timeout_ms``."""


@attrs.define(eq=False)
class Tally:
    """One connection's recording: each operation into the histogram of its (kind, phase), each
    error into its (phase, category), and both into the current snapshot interval's counts.

    An operation counts in MEASUREMENT only if it began and ended inside it; the common case
    (wholly inside) skips the general rule, and counts its latency here by HDR bucket (a dict
    increment; HDR's ``record_value`` is Python and costs a microsecond), folded into the
    histogram once per interval and at ``close`` — the same histogram as recording each value.
    Interval counts are held here and added to the recorder when the interval changes and at
    ``close``. In an open loop an operation "begins"
    at its intended start: ``latency_ms`` is the response time, and ``late`` (over
    ``latency_limit_ms``) counts on it.
    """

    recorder: Recorder
    operations: tuple[OperationSpec, ...]
    windows: PhaseWindows
    latency_limit_s: float = math.inf
    _measured: list[Any] = attrs.field(init=False)
    counts: list[dict[int, int]] = attrs.field(init=False)
    """MEASUREMENT latencies per operation, as (HDR bucket index → count), not yet in the histograms."""
    held: int = attrs.field(init=False, default=0)
    """Operations of the current interval not yet added to the recorder, beside those in ``counts``."""
    _other: dict[tuple[int, Phase], Any] = attrs.field(init=False, factory=dict)
    _iv: int = attrs.field(init=False, default=0)
    _iv_end: float = attrs.field(init=False, default=-math.inf)
    _iv_errors: int = attrs.field(init=False, default=0)
    _limit_us: float = attrs.field(init=False)
    _more: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._measured = [self.recorder.histogram(op.name, MEASUREMENT) for op in self.operations]
        self.counts = [{} for _ in self.operations]
        self._limit_us = self.latency_limit_s * 1e6 if self.latency_limit_s > 0 else math.inf
        self._more = self.latency_limit_s > 0

    def prime(self, now: float) -> None:
        """Make before the release what the first operation would otherwise make as it ends: the
        histograms of the interval it begins in and (intervals keeping latency: an empty one is
        never shipped) of its phase — at the start, or ``now`` for a connection added later (an
        interval taken already is not made again)."""
        w = self.windows
        at = max(w.start, now)
        self._next_interval(at)
        phase = w.phase_at(at)
        if phase is not MEASUREMENT and self.recorder.interval_latency:
            for i, op in enumerate(self.operations):
                self._other[(i, phase)] = self.recorder.recording(self._iv, op.name, phase)

    def fast_until(self, now: float) -> float:
        """Asked at ``now``, after an operation went through ``ok`` or ``failed``: the operations
        that follow (they begin after ``now``) and end before the instant returned count in
        MEASUREMENT and in the current interval, with no latency limit to judge — the common
        case, which a connection's loop may count itself (in ``counts[i]``); anything
        else goes through ``ok``, after which this is asked again."""
        if self._more or now < self.windows.measure:
            return -math.inf
        return min(self.windows.cooldown, self._iv_end)

    def phase(self, began: float, ended: float) -> Phase:
        w = self.windows
        return MEASUREMENT if w.measure <= began and ended < w.cooldown else w.attribute(began, ended)

    def ok(self, i: int, began: float, ended: float) -> None:
        """Operation ``i`` (its index in ``operations``) succeeded."""
        if ended >= self._iv_end:  # first: the interval decides the histogram
            self._next_interval(ended)
        us = int((ended - began) * 1e6 + 0.5)  # to_us, inlined: this is the hot path
        w = self.windows
        if w.measure <= began and ended < w.cooldown:  # MEASUREMENT (self.phase, inlined)
            phase = MEASUREMENT
            key = bucket_index(us)
            counts = self.counts[i]
            counts[key] = counts.get(key, 0) + 1  # (counted in the interval as it is folded)
        else:
            phase = w.attribute(began, ended)
            if phase is MEASUREMENT:
                hist = self._measured[i]
            else:
                hist = self._other.get((i, phase))
                if hist is None:
                    hist = self._other[(i, phase)] = self.recorder.recording(self._iv, self.operations[i].name, phase)
            hist.record_value(1 if us < 1 else us if us < HIGHEST_US else HIGHEST_US)
            self.held += 1
        if self._more and us > self._limit_us:  # a latency limit: not the common case
            self.recorder.count(phase, LATE)

    def served(self, i: int, intended: float, began: float, ended: float) -> None:
        """Open loop: operation ``i``, due at ``intended``, ran from ``began`` and succeeded."""
        self.ok(i, intended, ended)
        phase = self.phase(intended, ended)
        self.recorder.service_histogram(self.operations[i].name, phase).record_value(to_us(ended - began))
        self.recorder.lag_histogram(phase).record_value(to_us(began - intended))

    def failed(self, i: int, began: float, ended: float, category: str, message: str = "") -> None:
        """Operation ``i`` failed with ``category`` saying ``message``."""
        if ended >= self._iv_end:
            self._next_interval(ended)
        self.recorder.add_error(self.phase(began, ended), category, self.operations[i].name, message, ended, self._iv)
        self._iv_errors += 1

    def retried(self, i: int, began: float, ended: float, retries: int) -> None:
        """Operation ``i`` was tried ``retries`` more times (it ends counted as ``ok`` or ``failed``)."""
        if ended >= self._iv_end:  # (the interval the operation ends in, as ok and failed take it)
            self._next_interval(ended)
        self.recorder.retry(self.operations[i].name, self.phase(began, ended), retries, self._iv)

    def unfinished(self, i: int, began: float, ended: float) -> None:
        """Operation ``i`` was still running at ``ended`` when its connection was cancelled."""
        self.failed(i, began, ended, UNFINISHED, "still running when its connection was cancelled (drain timed out)")

    def offered(self, intended: float, now: float, skipped: bool) -> None:
        """Open loop: an operation was due at ``intended``; ``skipped``: too late to send."""
        phase = self.windows.phase_at(intended)
        if now >= self._iv_end:
            self._next_interval(now)
        self.recorder.count(phase, OFFERED, self._iv)
        if skipped:
            self.recorder.count(phase, SKIPPED, self._iv)

    def _next_interval(self, t: float) -> None:
        self.close()
        interval_s = self.recorder.interval_s
        self._iv = math.floor((t - self.windows.start) / interval_s)
        self._iv_end = self.windows.start + (self._iv + 1) * interval_s
        if self.recorder.interval_latency:  # this interval's histograms from now on
            self._measured = [self.recorder.recording(self._iv, op.name, MEASUREMENT) for op in self.operations]
            self._other.clear()

    def close(self) -> None:
        """Fold the latencies and add the counts held for the current interval to the recorder."""
        for hist, counts in zip(self._measured, self.counts, strict=True):
            self.held += fold_counts(hist, counts)
        if self.held or self._iv_errors:
            self.recorder.add_interval(self._iv, self.held, self._iv_errors)
        self.held = self._iv_errors = 0


OFFERED, SKIPPED, LATE = 0, 1, 2
"""Indexes of ``Recorder.count``."""


@attrs.define(eq=False)
class Connections:
    """What a worker's connections share: the workload, the gate, the recorder and the marks."""

    scenario: Scenario
    worker_id: str
    index: int
    recorder: Recorder
    error_category: Callable[[BaseException], str]
    error_message: Callable[[BaseException], str]
    phase: Phase
    """The phase the worker's view says it is (a session is re-tagged when it changes): set
    through ``set_phase``."""
    tag: Callable[[Phase], Mapping[str, str]]
    gate: StartGate = attrs.field(init=False, factory=StartGate)
    draining: trio.Event = attrs.field(init=False, factory=trio.Event)
    first_query: dict[int, float] = attrs.field(init=False, factory=dict)
    """slot → trio time of the slot's first operation."""
    host_now: Callable[[], float] | None = attrs.field(init=False, default=None)
    """This host's clock (``time.time``) on real time: the start's host-clock witness."""
    host_first_query: dict[int, float] = attrs.field(init=False, factory=dict)
    """slot → the host's clock at the slot's first operation (when ``host_now`` is set)."""
    target_first_query: dict[int, float] = attrs.field(init=False, factory=dict)
    """slot → the target's own clock when it received the slot's first operation (a target whose
    sessions say so: ``first_stamp``; the start's target witness)."""
    spent: int = attrs.field(init=False, default=0)
    """Connections that ended because they had issued ``operations_per_connection``."""

    arrivals: Arrivals | None = attrs.field(init=False, default=None)
    """The open loop's schedule, made when the gate is armed (rate mode, find-max over the rate)."""
    tallies: set[Tally] = attrs.field(init=False, factory=set)
    """The running connections' tallies (``settle`` hands their held counts to the recorder)."""
    first_issued: trio.Event = attrs.field(init=False, factory=trio.Event)
    """Set once every connection the release let go has begun its first operation."""
    _first_pending: set[int] = attrs.field(init=False, factory=set)
    left_gate: Callable[[int], Awaitable[None]] = attrs.field(init=False, default=_stays)
    """``Runtime.left_gate``: awaited by a connection the release let go after others (its place)."""
    grow: Callable[[], None] = attrs.field(init=False, default=lambda: None)
    """Open loop: asked for one more connection when an operation is taken late and none is idle."""
    alerts: int = attrs.field(init=False, default=0)
    """How many times the running connections were told to look up from their operations (a
    drain, a new phase): each loop compares it with the count it last saw."""
    _instants: dict[float, float] = attrs.field(init=False, factory=dict)
    """One float object per instant the connections' loops compare with (the end of their fast
    path, the same for all of them in an interval): shared, it stays in the CPU's caches."""
    _thinks: list[float] = attrs.field(init=False)
    """Each operation's think time in seconds (``Scenario.think_times_s``), one list for all."""
    _clock: tuple[Callable[[], float], float] | None = attrs.field(init=False, default=None)
    """``loop_clock()``, read once for all the connections (one clock-reading object for all)."""

    @_thinks.default
    def _thinks_of_scenario(self) -> list[float]:
        return self.scenario.think_times_s

    def set_phase(self, phase: Phase) -> None:
        """The worker's view is in ``phase`` now: every running connection looks at once."""
        if phase is not self.phase:
            self.phase = phase
            self._alert()

    def drain(self) -> None:
        """Stop issuing: each connection ends after its operation in flight."""
        self.draining.set()
        self._alert()

    def _same(self, instant: float) -> float:
        """``instant``, as the one float object the connections share for it (``_instants``)."""
        return self._instants.setdefault(instant, instant)

    def _alert(self) -> None:
        self.alerts += 1

    def close_schedule(self, now: float) -> None:
        """The drain: starts that fell due before now (and the planned end) but were never sent
        count as offered — offered − completed − skipped is what was still waiting to be sent."""
        arrivals, windows = self.arrivals, self.gate.windows
        if arrivals is None or windows is None:
            return
        edges = (windows.measure, windows.cooldown)
        for t, n in arrivals.backlog(min(now, windows.end), edges):
            self.recorder.count(windows.phase_at(t), OFFERED, n=n)
        arrivals.stop()

    def settle(self) -> None:
        """Every running connection adds the interval counts it holds to the recorder (before a
        snapshot is taken: an interval's operations travel with it, not one snapshot later)."""
        for tally in self.tallies:
            tally.close()

    def arm(self, windows: PhaseWindows, rate: float, changes: Sequence[tuple[float, float, float]] = ()) -> None:
        """The start is known: the connections make ready and park; an open loop's schedule starts
        at ``windows.start`` at ``rate``, then follows ``changes`` — (at, rate, ramp_s) on this
        process's trio clock."""
        sc = self.scenario
        if sc.load.open_loop:
            arrivals = self.arrivals = Arrivals(
                rate,
                windows.start,
                poisson=sc.load.arrival is Arrival.POISSON,
                phase=(self.index % sc.workers) / sc.workers,
                rng=random.Random(derive_seed(sc.seed, self.worker_id, "arrivals")),
            )
            for at, to, ramp_s in changes:
                arrivals.change(at, to, ramp_s, windows.start)
        self.gate.arm(windows)

    def release(self, order: Sequence[int] = ()) -> None:
        """Open the gate (``StartGate.open``); ``first_issued`` is set once every closed-loop
        connection released now has begun its first operation (or ended)."""
        if not self.scenario.load.open_loop:
            self._first_pending.update(self.gate.parked)
        self.gate.open(order)
        if not self._first_pending:
            self.first_issued.set()

    def _began_first(self, slot: int, at: float) -> None:
        self.first_query[slot] = at
        if self.host_now is not None:
            self.host_first_query[slot] = self.host_now()
        self._settled_first(slot)

    def _settled_first(self, slot: int) -> None:
        pending = self._first_pending
        if slot in pending:
            pending.discard(slot)
            if not pending:
                self.first_issued.set()

    def run(self, slot: int, session: Session, lease: Lease) -> Coroutine[Any, Any, None]:
        """One connection, from the gate until drained, its budget spent, or the planned end: the
        loop's own coroutine, the root of the connection's task (``pool.RunConnection``), which
        holds its ``lease`` while it runs."""
        loop = self._open_loop if self.scenario.load.open_loop else self._closed_loop
        return loop(slot, session, lease)

    def _draws(self, slot: int) -> tuple[Callable[[Sequence[Any]], list[Any]], ParamSource]:
        """This slot's seeded draws: ``choices(items)``, the mix's next ``PICKS`` choices as
        ``Mix.choose`` makes them from the slot's seed, each as the chosen operation's item of
        ``items`` (``Mix.picks``), and its parameters."""
        sc = self.scenario
        specs = sc.param_specs
        if len(sc.operations) > 1:
            rng = random.Random(derive_seed(sc.seed, self.worker_id, slot, "mix"))
            choices = functools.partial(Mix.of(sc.operations).picks, rng, PICKS)
        else:
            choices = _first_only
        params = ParamSource(
            draws(bool(specs), sc.seed, self.worker_id, slot, "params"),
            slot=self.index * SLOT_STRIDE + slot,
            position=self.index * sc.connections_per_worker + slot,
            connections=sc.total_connections,
            planned=slot < sc.connections_per_worker,
            specs=specs,
        )
        return choices, params

    def _plan(self, session: Session, tally: Tally) -> list[Entry]:
        """Each operation as the closed loop takes it, its ``Entry`` (one object of its
        connection's to read per operation): its index, its spec, what runs it with nothing
        between when the session offers that, whether it has parameters to draw, and the
        tally's latency counts for it by HDR bucket."""
        return [
            (i, op, session.direct_call(op), bool(op.params), held)
            if op.timeout_ms is None
            else (i, op, self._timed(op, session), True, held)  # (not the common case: one deadline more)
            for i, (op, held) in enumerate(zip(self.scenario.operations, tally.counts, strict=True))
        ]

    def _loop_clock(self) -> tuple[Callable[[], float], float]:
        """``loop_clock()``, the same objects for every connection of the worker."""
        if self._clock is None:
            self._clock = loop_clock()
        return self._clock

    async def _closed_loop(self, slot: int, session: Session, lease: Lease) -> None:
        """The closed loop: the next operation as soon as the last one ended (and the think time)."""
        with lease:
            sc = self.scenario
            ops = sc.operations
            choices, params = self._draws(slot)
            windows = await self.gate.armed()
            tally = Tally(self.recorder, ops, windows, sc.load.latency_limit_ms / 1000.0)
            tally.prime(trio.current_time())
            self.tallies.add(tally)
            entries = functools.partial(choices, self._plan(session, tally))
            picks, k = entries(), 0
            execute, hi, same = session.execute, -math.inf, self._same
            # the run's clock, bound once; this loop's instants are now() readings (trio time − offset)
            now, offset = self._loop_clock()
            ok, failed, draining = tally.ok, tally.failed, self.draining
            end = same(windows.end - offset)  # (shared: read by every operation, as its due)
            limit = sc.operations_per_connection or math.inf
            thinks = self._thinks
            bounded = limit < math.inf or max(thinks) > 0
            tagged = self.phase
            first = slot not in self.first_query
            # when the loop must next look beyond its operation: the planned end, or at once (the
            # first operation; a drain or a new phase, which count in ``alerts``): one comparison
            # of the connection's own, one of its worker's
            due, seen = -math.inf, self.alerts
            done = 0
            try:
                if place := await self.gate.released(slot):
                    await self.left_gate(place)
                while True:
                    if k == PICKS:
                        picks, k = entries(), 0
                    i, op, call, drawn, held = picks[k]
                    k += 1
                    args = params.draw(op) if drawn else NO_PARAMS
                    began = now()
                    if began >= due or seen != self.alerts:
                        if began >= end or draining.is_set():
                            break
                        due, seen = end, self.alerts
                        if self.phase is not tagged and self.phase is not Phase.DONE:
                            tagged = self.phase
                            await session.set_phase(self.tag(tagged))
                            began = now()
                        if first:
                            self._began_first(slot, began + offset)
                            first = False
                    try:
                        if call is None:
                            await execute(op, args)
                        elif drawn:
                            await call(**args)
                        else:
                            await call()
                    except trio.Cancelled:
                        if draining.is_set():  # the drain timed out (a scale-down's cancel is not a loss)
                            tally.unfinished(i, began + offset, now() + offset)
                        raise
                    except Exception as exc:
                        failure: Exception | None = exc
                        if op.max_tries > 1:  # (not the common case: a conflict is tried again)
                            again = (
                                functools.partial(execute, op, args)
                                if call is None
                                else functools.partial(call, **args)
                                if drawn
                                else call
                            )
                            failure = await self._tries(again, op, exc, tally, i, began + offset)
                        ended = now()
                        if failure is None:
                            ok(i, began + offset, ended + offset)
                        else:
                            failed(
                                i, began + offset, ended + offset, self.category(failure), self.error_message(failure)
                            )
                        hi = same(tally.fast_until(ended + offset) - offset)
                        await trio.lowlevel.checkpoint()  # a failing call may not have yielded
                    else:
                        ended = now()
                        if ended < hi:  # Tally.ok's common case, inlined: the hot path
                            us = int((ended - began) * 1e6 + 0.5)
                            key = (1 if us < 1 else us) if us < 2048 else bucket_index(us)
                            held[key] = held.get(key, 0) + 1
                        else:
                            ok(i, began + offset, ended + offset)
                            hi = same(tally.fast_until(ended + offset) - offset)
                    if bounded:  # an operation budget or a think time: not the common case
                        done += 1
                        if done >= limit:
                            break
                        if thinks[i] > 0:
                            with trio.move_on_after(thinks[i]):
                                await draining.wait()
            finally:
                tally.close()
                self.tallies.discard(tally)
                self._note_stamp(slot, session)
                self._settled_first(slot)
            if done >= limit:
                self.spent += 1

    def category(self, exc: BaseException) -> str:
        """An operation's error category: ``timeout`` past its own ``timeout_ms``, else the target's."""
        return TIMEOUT if isinstance(exc, OperationTimedOut) else self.error_category(exc)

    def _timed(self, op: OperationSpec, session: Session) -> Callable[..., Coroutine[Any, Any, None]]:
        """What runs ``op`` (awaited with its parameters as keywords) within its ``timeout_ms``:
        past it the operation is cancelled — the session stops it on the server as for any
        cancel — and fails as ``OperationTimedOut``."""
        limit = (op.timeout_ms or 0) / 1000.0
        direct = session.direct_call(op)

        async def timed(**args: Any) -> None:
            try:
                with trio.fail_after(limit):
                    await (session.execute(op, args) if direct is None else direct(**args))
            except trio.TooSlowError:
                raise OperationTimedOut(f"still running after its timeout_ms ({op.timeout_ms:g} ms)") from None

        return timed

    async def _tries(
        self, again: Callable[[], Any], op: OperationSpec, exc: Exception, tally: Tally, i: int, began: float
    ) -> Exception | None:
        """Operation ``i`` failed with ``exc``: while its error is a conflict (``RETRIED``: a
        serialization failure, a deadlock) and ``op.max_tries`` allow, run it again with the same
        parameters (pgbench's ``--max-tries``). Returns the last error, None when a try succeeded;
        the retries made are counted (``retried``, ``retries``) in the phase the operation began
        and ends in. Cancelled meanwhile in a drain: ``unfinished``, as any operation."""
        retries = 0
        failure: Exception | None = exc
        try:
            while failure is not None and retries + 1 < op.max_tries and self.category(failure) in RETRIED:
                retries += 1
                try:
                    await again()
                except Exception as next_exc:
                    failure = next_exc
                else:
                    failure = None
        except trio.Cancelled:
            if self.draining.is_set():
                tally.unfinished(i, began, trio.current_time())
            raise
        finally:
            if retries:
                tally.retried(i, began, trio.current_time(), retries)
        return failure

    def _note_stamp(self, slot: int, session: Session) -> None:
        stamp = session.first_stamp
        if stamp is not None and slot not in self.target_first_query:
            self.target_first_query[slot] = stamp

    async def _open_loop(self, slot: int, session: Session, lease: Lease) -> None:
        """The open loop: take the next intended start, wait for it, send — or, already later than
        ``max_lag_ms``, skip it. Response time runs from the intended start (coordinated omission
        is not hidden), service time from the actual one."""
        with lease:
            sc = self.scenario
            ops = sc.operations
            choices, params = self._draws(slot)
            pick = functools.partial(choices, range(len(ops)))
            picks, k = pick(), 0
            windows = await self.gate.armed()
            arrivals = self.arrivals
            assert arrivals is not None  # made by arm, before the gate is armed
            tally = Tally(self.recorder, ops, windows, sc.load.latency_limit_ms / 1000.0)
            tally.prime(trio.current_time())
            self.tallies.add(tally)
            draining, now, end = self.draining, trio.current_time, windows.end
            max_lag = sc.load.max_lag_ms / 1000.0 if sc.load.max_lag_ms > 0 else math.inf
            timed = [None if op.timeout_ms is None else self._timed(op, session) for op in ops]
            limit = sc.operations_per_connection or math.inf
            tagged = self.phase
            done = 0
            try:
                if place := await self.gate.released(slot):
                    await self.left_gate(place)
                while done < limit and not draining.is_set():
                    intended = await arrivals.take()
                    if intended >= end:
                        break
                    first = arrivals.taken == 1
                    if intended > now():
                        arrivals.idle += 1
                        try:
                            with trio.move_on_at(intended):
                                await draining.wait()
                        finally:
                            arrivals.idle -= 1
                        if draining.is_set():
                            break
                    began = now()
                    late = began - intended > max_lag
                    tally.offered(intended, began, skipped=late)
                    if late:
                        await trio.lowlevel.checkpoint()
                        continue
                    if began - intended > GROW_LAG_S and arrivals.idle == 0:
                        self.grow()  # the schedule is ahead of the connections
                    phase = self.phase
                    if phase is not tagged and phase is not Phase.DONE:
                        tagged = phase
                        await session.set_phase(self.tag(tagged))
                    if k == PICKS:
                        picks, k = pick(), 0
                    i = picks[k]
                    k += 1
                    op = ops[i]
                    args = params.draw(op) if op.params else NO_PARAMS
                    if first:
                        self._began_first(slot, began)
                    run = timed[i]
                    try:
                        await (session.execute(op, args) if run is None else run(**args))
                    except trio.Cancelled:
                        if draining.is_set():  # the drain timed out (a scale-down's cancel is not a loss)
                            tally.unfinished(i, intended, now())
                        raise
                    except Exception as exc:
                        failure: Exception | None = exc
                        if op.max_tries > 1:
                            again = (
                                functools.partial(session.execute, op, args)
                                if run is None
                                else functools.partial(run, **args)
                            )
                            failure = await self._tries(again, op, exc, tally, i, intended)
                        if failure is None:
                            tally.served(i, intended, began, now())
                        else:
                            tally.failed(i, intended, now(), self.category(failure), self.error_message(failure))
                        await trio.lowlevel.checkpoint()
                    else:
                        tally.served(i, intended, began, now())
                    done += 1
            finally:
                tally.close()
                self.tallies.discard(tally)
                self._note_stamp(slot, session)
            if done >= limit:
                self.spent += 1
