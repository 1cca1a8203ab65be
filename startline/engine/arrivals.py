"""An open loop's rate: ``Arrivals``, one worker's schedule of intended starts, and
``OpenLoopRate``, the worker's rate state around it (its share of the run's rate, the SET_RATE
changes read before the schedule existed, growing a connection on demand)."""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence

import attrs
import trio

from startline.engine.loadcontrol import rate_plan
from startline.engine.scenario import LoadMode, Scenario
from startline.engine.schedule import PhaseWindows

RateChange = tuple[float | None, float, float]
"""A SET_RATE's (at on the control plane's clock or None for now, rate, ramp_s)."""


@attrs.define(eq=False)
class Arrivals:
    """An open loop's schedule for one worker: the intended start of each operation, whichever
    connection is free to take it (a late one is taken late, and its lag shows).

    The rate is a piecewise-linear plan: ``rate`` from ``start``, then each change ``(at, rate,
    ramp_s)`` ramps linearly from the rate at ``at`` to its rate over ``ramp_s``. The next start
    is where the area under the plan since the last one reaches one (uniform) or an exponential
    draw (Poisson, seeded). Uniform schedules of the workers are shifted by ``phase`` of a gap
    after the first start (at START_TIME for all, so the start skew means what it means in a
    closed loop), so that the run's starts are spread evenly, not in bursts of one per worker.
    """

    rate: float
    """Operations per second from ``start`` (until the first change)."""
    start: float
    poisson: bool = False
    phase: float = 0.0
    rng: random.Random = attrs.field(factory=lambda: random.Random(0))
    idle: int = attrs.field(init=False, default=0)
    """Connections holding an arrival that is not due yet."""
    taken: int = attrs.field(init=False, default=0)
    _points: list[tuple[float, float]] = attrs.field(init=False)
    """The plan's breakpoints (time, rate), linear between them, constant after the last."""
    _last: float = attrs.field(init=False)
    _next: float = attrs.field(init=False)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _stopped: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self._points = [(self.start, self.rate)]
        self._last = self.start
        self._next = self.start if self.rate > 0 else math.inf  # a schedule at rate 0 waits for a ramp

    def rate_at(self, t: float) -> float:
        pts = self._points
        k = bisect.bisect_right(pts, (t, math.inf)) - 1
        if k < 0:
            return pts[0][1]
        if k == len(pts) - 1:
            return pts[k][1]
        (a, ra), (b, rb) = pts[k], pts[k + 1]
        return ra if b == a else ra + (rb - ra) * (t - a) / (b - a)

    def change(self, at: float, rate: float, ramp_s: float, now: float) -> None:
        """From ``at``, ramp linearly to ``rate`` over ``ramp_s`` (what the plan held from ``at`` on
        is replaced). ``at`` may be past (a change read late ramps from where it should have
        begun) or future (planned); the next start moves to match."""
        pending = self._units(now, self._next) if math.isfinite(self._next) and self._next > now else None
        pts = self._points
        before = [p for p in pts if p[0] < at]
        from_rate = self.rate_at(at)
        if before:  # the plan up to ``at`` is kept as it was: its value just before ``at``
            a, ra = before[-1]
            b, rb = next((p for p in pts if p[0] >= at), (math.inf, ra))
            before.append((at, ra if b == math.inf else ra + (rb - ra) * (at - a) / (b - a)))
        self._points = [*before, (at, from_rate), (at + max(0.0, ramp_s), rate)]
        if pending is not None:
            self._next = self._advance(now, pending)
        elif not math.isfinite(self._next):
            self._next = self._advance(max(now, self._last), self._draw())
        self._changed.set()
        self._changed = trio.Event()

    def backlog(self, until: float, edges: Sequence[float] = ()) -> list[tuple[float, int]]:
        """The starts due before ``until`` that no connection took (the loop fell behind), taken
        now so that they are counted offered: how many in each piece ``edges`` cut the span into,
        as (where the piece begins, count). Counted from the plan's area, not stepped through one
        by one (a rate far past what the loop kept up with made that a loop of millions at the
        drain): exact for a uniform schedule, the plan's expected count for a Poisson one."""
        first = self._next
        if not first < until:
            return []
        cuts = sorted({first, until, *(e for e in edges if first < e < until)})

        def due_before(t: float) -> int:  # starts at area 0, 1, 2, … (expected: 1 + area) before t
            if t <= first:
                return 0
            area = self._units(first, t)
            return round(1 + area) if self.poisson else math.ceil(area - 1e-9) or 1

        pieces = [(a, due_before(b) - due_before(a)) for a, b in itertools.pairwise(cuts)]
        self.taken += sum(n for _, n in pieces)
        self._next = math.inf
        return [(a, n) for a, n in pieces if n > 0]

    def stop(self) -> None:
        """No more starts: connections waiting for one (the rate is zero) stop waiting."""
        self._stopped = True
        self._changed.set()

    async def take(self) -> float:
        """The next intended start (waits while the rate is zero); after ``stop``, infinity."""
        while not math.isfinite(self._next):
            if self._stopped:
                return math.inf
            await self._changed.wait()
        return self._take_next()

    def _take_next(self) -> float:
        """The next start, and the schedule moved on past it (the first gap of a uniform schedule
        shifted by ``phase``)."""
        t = self._last = self._next
        units = self._draw() + (self.phase if self.taken == 0 and not self.poisson else 0.0)
        self._next = self._advance(t, units)
        self.taken += 1
        return t

    def _draw(self) -> float:
        return self.rng.expovariate(1.0) if self.poisson else 1.0

    def _segments(self, t: float) -> Iterator[tuple[float, float, float, float]]:
        """(from, to, rate at from, rate at to) of the plan from ``t`` on; the last is endless."""
        pts = self._points
        for (a, _ra), (b, rb) in itertools.pairwise(pts):
            if b > t and b > a:  # a step (a == b) has no area
                lo = max(a, t)
                yield lo, b, self.rate_at(lo), rb
        last_t, last_r = pts[-1]
        yield max(t, last_t), math.inf, last_r, last_r

    def _units(self, a: float, b: float) -> float:
        """The area under the plan over [a, b] (operations due in it)."""
        area = 0.0
        for lo, hi, r0, r1 in self._segments(a):
            if lo >= b:
                break
            m = min(hi, b)
            rm = r0 if hi == math.inf else r0 + (r1 - r0) * (m - lo) / (hi - lo)
            area += (r0 + rm) / 2 * (m - lo)
        return area

    def _advance(self, t: float, units: float) -> float:
        """The instant after ``t`` where the area under the plan reaches ``units``."""
        for lo, hi, r0, r1 in self._segments(t):
            if hi == math.inf:
                return lo + units / r0 if r0 > 0 else math.inf
            area = (r0 + r1) / 2 * (hi - lo)
            if units <= area:
                slope = (r1 - r0) / (hi - lo)
                if abs(slope) < 1e-12:
                    return lo + units / r0
                # r0·x + slope/2·x² = units
                return lo + (math.sqrt(max(0.0, r0 * r0 + 2 * slope * units)) - r0) / slope
            units -= area
        return math.inf


@attrs.define(eq=False)
class OpenLoopRate:
    """One worker's open-loop rate: what it starts at, the changes it read before its schedule was
    made (handed to the schedule then), and one connection grown at a time when the schedule is
    ahead of its connections."""

    scenario: Scenario
    to_trio: Callable[[float | None], float]
    """A control-plane instant on this process's trio clock (None: now)."""
    pending: list[RateChange] = attrs.field(factory=list)
    """SET_RATE events read before the open loop's schedule was made."""
    growing: bool = attrs.field(default=False)
    """A connection is being opened on demand (one at a time)."""

    def first(self) -> float:
        """This worker's rate at the start: its share of ``load.rate`` (find-max over the rate: of
        its first level)."""
        sc = self.scenario
        first = sc.load.find_max.start if sc.load.mode is LoadMode.FIND_MAX else sc.load.rate
        return first / sc.workers

    def plan(self, windows: PhaseWindows) -> list[tuple[float, float, float]]:
        """The changes of rate on this process's trio clock: the scenario's stages (this worker's
        share), then the SET_RATE events read before the start."""
        share = 1.0 / self.scenario.workers
        stages = [(windows.start + at, rate * share, ramp) for at, rate, ramp in rate_plan(self.scenario.load)]
        return stages + [self._on_trio(c) for c in self.pending]

    def change(self, change: RateChange, arrivals: Arrivals | None) -> None:
        """A SET_RATE for this worker: kept until the schedule exists, else applied to it now."""
        if arrivals is None:
            self.pending.append(change)  # the schedule is made at the start, with it
        else:
            arrivals.change(*self._on_trio(change), trio.current_time())

    def _on_trio(self, change: RateChange) -> tuple[float, float, float]:
        at, rate, ramp_s = change
        return self.to_trio(at), rate, ramp_s

    def grow(self, nursery: trio.Nursery, size: int, scale_to: Callable[[int], object], stopping: bool) -> None:
        """One more connection, up to ``max_in_flight`` (one request at a time)."""
        if self.growing or size >= self.scenario.max_in_flight or stopping:
            return
        self.growing = True

        async def grow() -> None:
            try:
                await scale_to(size + 1)  # type: ignore[misc]
            finally:
                self.growing = False

        nursery.start_soon(grow)
