"""The load path: one connection's closed loop — choose, draw, execute, record, think — and
the per-connection ``Tally`` that records each operation into its worker's ``Recorder``.

The loop waits at the worker's ``StartGate`` (connections may be spawned before the start
and parked there), then runs until the worker drains, its operation budget is spent, or the
planned end passes. Everything about time is ``trio.current_time()``.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from startline.engine.metrics import HIGHEST_US, Recorder, error_message
from startline.engine.model import Phase
from startline.engine.ports import Session
from startline.engine.scenario import OperationSpec, Scenario
from startline.engine.schedule import PhaseWindows
from startline.engine.workload import Mix, ParamSource, derive_seed

MEASUREMENT = Phase.MEASUREMENT
NO_PARAMS: dict[str, Any] = {}
"""Shared by every parameterless operation (never mutated)."""
SLOT_STRIDE = 100_000
"""Connection slots of worker ``index`` are ``index * SLOT_STRIDE + slot`` run-wide."""


@attrs.define(eq=False)
class StartGate:
    """Where connections wait for the start: opened once, with the phase windows on this
    process's trio clock, which every connection then reads."""

    _opened: trio.Event = attrs.field(init=False, factory=trio.Event)
    _windows: PhaseWindows | None = attrs.field(init=False, default=None)

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def open(self, windows: PhaseWindows) -> None:
        self._windows = windows
        self._opened.set()

    async def wait(self) -> PhaseWindows:
        await self._opened.wait()
        assert self._windows is not None  # set before the event, in open()
        return self._windows


@attrs.define(eq=False)
class Tally:
    """One connection's recording: each operation into the histogram of its (kind, phase), each
    error into its (phase, category), and both into the current snapshot interval's counts.

    An operation counts in MEASUREMENT only if it began and ended inside it; the common case
    (wholly inside) skips the general rule. Interval counts are held here and added to the
    recorder when the interval changes and at ``close``.
    """

    recorder: Recorder
    operations: tuple[OperationSpec, ...]
    windows: PhaseWindows
    _measured: list[Any] = attrs.field(init=False)
    _other: dict[tuple[int, Phase], Any] = attrs.field(init=False, factory=dict)
    _iv: int = attrs.field(init=False, default=0)
    _iv_end: float = attrs.field(init=False, default=-math.inf)
    _iv_ops: int = attrs.field(init=False, default=0)
    _iv_errors: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._measured = [self.recorder.histogram(op.name, MEASUREMENT) for op in self.operations]

    def phase(self, began: float, ended: float) -> Phase:
        w = self.windows
        return MEASUREMENT if w.measure <= began and ended < w.cooldown else w.attribute(began, ended)

    def ok(self, i: int, began: float, ended: float) -> None:
        """Operation ``i`` (its index in ``operations``) succeeded."""
        phase = self.phase(began, ended)
        if phase is MEASUREMENT:
            hist = self._measured[i]
        else:
            hist = self._other.get((i, phase))
            if hist is None:
                hist = self._other[(i, phase)] = self.recorder.histogram(self.operations[i].name, phase)
        us = int((ended - began) * 1e6 + 0.5)  # to_us, inlined: this is the hot path
        hist.record_value(1 if us < 1 else us if us < HIGHEST_US else HIGHEST_US)
        if ended >= self._iv_end:
            self._next_interval(ended)
        self._iv_ops += 1

    def failed(self, i: int, began: float, ended: float, category: str, message: str = "") -> None:
        """Operation ``i`` failed with ``category`` saying ``message``."""
        self.recorder.add_error(self.phase(began, ended), category, self.operations[i].name, message, ended)
        if ended >= self._iv_end:
            self._next_interval(ended)
        self._iv_errors += 1

    def _next_interval(self, t: float) -> None:
        self.close()
        interval_s = self.recorder.interval_s
        self._iv = math.floor((t - self.windows.start) / interval_s)
        self._iv_end = self.windows.start + (self._iv + 1) * interval_s

    def close(self) -> None:
        """Add the counts held for the current interval to the recorder."""
        if self._iv_ops or self._iv_errors:
            self.recorder.add_interval(self._iv, self._iv_ops, self._iv_errors)
        self._iv_ops = self._iv_errors = 0


@attrs.define(eq=False)
class Connections:
    """What a worker's connections share: the workload, the gate, the recorder and the marks."""

    scenario: Scenario
    worker_id: str
    index: int
    recorder: Recorder
    error_category: Callable[[BaseException], str]
    phase_now: Callable[[], Phase]
    """The phase the worker's view says it is (a session is re-tagged when it changes)."""
    tag: Callable[[Phase], Mapping[str, str]]
    gate: StartGate = attrs.field(init=False, factory=StartGate)
    draining: trio.Event = attrs.field(init=False, factory=trio.Event)
    first_query: dict[int, float] = attrs.field(init=False, factory=dict)
    """slot → trio time of the slot's first operation."""
    spent: int = attrs.field(init=False, default=0)
    """Connections that ended because they had issued ``operations_per_connection``."""

    async def run(self, slot: int, session: Session) -> None:
        """One closed-loop connection, from the gate until drained, its budget spent, or the planned end."""
        sc = self.scenario
        mix = Mix.of(sc.operations)
        ops, total = mix.operations, mix.cumulative[-1]
        bounds = (*mix.cumulative[:-1], math.inf)  # bisect never runs off the end
        many = len(ops) > 1
        uniform = random.Random(derive_seed(sc.seed, self.worker_id, slot, "mix")).random
        bisect_right = bisect.bisect_right
        params = ParamSource(
            random.Random(derive_seed(sc.seed, self.worker_id, slot, "params")), slot=self.index * SLOT_STRIDE + slot
        )
        windows = await self.gate.wait()
        tally = Tally(self.recorder, ops, windows)
        ok, failed, draining, now = tally.ok, tally.failed, self.draining, trio.current_time
        end = windows.end
        limit, think = sc.operations_per_connection or math.inf, sc.think_time_ms / 1000.0
        tagged = self.phase_now()
        first = slot not in self.first_query
        done = 0
        try:
            while done < limit and not draining.is_set():
                phase = self.phase_now()
                if phase is not tagged and phase is not Phase.DONE:
                    tagged = phase
                    await session.set_phase(self.tag(tagged))
                i = bisect_right(bounds, uniform() * total) if many else 0
                op = ops[i]
                args = params.draw(op) if op.params else NO_PARAMS
                began = now()
                if began >= end:
                    break
                if first:
                    self.first_query[slot] = began
                    first = False
                try:
                    await session.execute(op, args)
                except Exception as exc:
                    failed(i, began, now(), self.error_category(exc), error_message(exc))
                    await trio.lowlevel.checkpoint()  # a failing call may not have yielded
                else:
                    ok(i, began, now())
                done += 1
                if think > 0:
                    with trio.move_on_after(think):
                        await draining.wait()
        finally:
            tally.close()
        if done >= limit:
            self.spent += 1
