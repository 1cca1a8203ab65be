"""Virtual time for a simulated run, and a sleep on it that costs no cancel scope.

``trio.sleep_until`` is a cancel scope with a deadline around ``sleep_forever``: entering it
registers the deadline, reaching it raises ``Cancelled`` into the task, and leaving it catches
the exception and unregisters. For a simulation, where nearly every step of every task is such
a sleep, that machinery was most of the cost of a run (the scopes and their exceptions: about
two fifths of a profiled seed-analysis run).

:class:`SimClock` drives a ``MockClock`` (autojump at once, rate 0: everything that asks whether
it runs on virtual time still says yes) and also keeps timers of its own, a heap of
``(instant, sequence, task)``. :func:`sleep_until` parks the task with
``trio.lowlevel.wait_task_rescheduled`` and pushes its timer; when every task is blocked, Trio
asks the clock to jump, and the clock jumps to whichever comes first — its own earliest timer
or the earliest cancel-scope deadline (the engine's own timeouts still use those) — and
reschedules every task whose timer is due, in the order they were pushed. A task cancelled
while it waits is cancelled as from ``trio.sleep_until`` (its timer is dropped).

Trio asks a clock to jump through a private method (``MockClock._autojump``, replaced on the
instance: MockClock is final) and keeps its
cancel-scope deadlines in a private heap (``runner.deadlines``); both are touched here only,
checked when a clock is made, and a Trio that moves them fails loudly (``HookMoved``), as
``engine/determinism.py`` does for the scheduler's random source.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Any

import trio
import trio.testing

__all__ = ["HookMoved", "SimClock", "sleep", "sleep_until"]


class HookMoved(RuntimeError):
    """This Trio no longer jumps a MockClock, or keeps its deadlines, where startline looks."""


def _check_hooks() -> None:
    """Trio still jumps a MockClock through ``_autojump`` and keeps its deadlines where read."""
    try:
        from trio._core import _run
    except ImportError as exc:
        raise HookMoved(f"trio {trio.__version__} moved its run loop: update startline/simulate/clock.py") from exc
    if not callable(getattr(trio.testing.MockClock, "_autojump", None)):
        raise HookMoved(f"trio {trio.__version__} no longer jumps a MockClock through _autojump")
    deadlines = getattr(_run, "Deadlines", None)
    runner = getattr(_run, "Runner", None)
    if (
        not hasattr(_run, "GLOBAL_RUN_CONTEXT")
        or not callable(getattr(deadlines, "next_deadline", None))
        or "deadlines" not in getattr(runner, "__annotations__", {})
    ):
        raise HookMoved(
            f"trio {trio.__version__} moved its deadline heap (runner.deadlines.next_deadline): "
            "update startline/simulate/clock.py"
        )


def _next_cancel_deadline() -> Any:
    """The running loop's earliest-cancel-scope-deadline function."""
    from trio._core._run import GLOBAL_RUN_CONTEXT

    return GLOBAL_RUN_CONTEXT.runner.deadlines.next_deadline


class SimClock:
    """Virtual time for one simulated run: give :meth:`for_trio` to ``trio.run``. That is a
    ``MockClock`` (Trio jumps only a MockClock, and will not let it be subclassed) whose
    reading, sleep time, jump and autojump are this object's: it jumps at once when every task
    is blocked, reads exactly the instant it jumped to (no float drift from adding
    differences), and serves :func:`sleep_until`."""

    def __init__(self) -> None:
        _check_hooks()
        self._now = 0.0
        self._timers: list[list[Any]] = []  # [instant, sequence, task or None once cancelled]
        self._sequence = itertools.count()
        self._next_cancel: Any = None
        clock = trio.testing.MockClock(rate=0.0, autojump_threshold=0.0)
        clock.current_time = self.current_time  # type: ignore[method-assign]
        clock.deadline_to_sleep_time = self.deadline_to_sleep_time  # type: ignore[method-assign]
        clock.jump = self.jump  # type: ignore[method-assign]
        clock._autojump = self._autojump  # type: ignore[method-assign]
        clock.__dict__[_SIM] = self
        self._clock = clock

    def for_trio(self) -> trio.testing.MockClock:
        return self._clock

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= self._now else 999999999.0

    def jump(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time can't go backwards")
        self._now += seconds

    def _autojump(self) -> None:
        """Every task is blocked: on to the earliest timer or cancel-scope deadline."""
        if self._next_cancel is None:
            self._next_cancel = _next_cancel_deadline()
        timers = self._timers
        while timers and timers[0][2] is None:  # cancelled while waiting
            heapq.heappop(timers)
        deadline = self._next_cancel()
        if timers and timers[0][0] <= deadline:
            instant = timers[0][0]
            if instant > self._now:
                self._now = instant
            reschedule = trio.lowlevel.reschedule
            while timers and timers[0][0] <= instant:
                task = heapq.heappop(timers)[2]
                if task is not None:
                    reschedule(task)
        elif self._now < deadline < math.inf:
            self._now = deadline

    async def sleep_until(self, instant: float) -> None:
        if instant <= self._now:  # as trio.sleep_until with a deadline passed: a checkpoint
            await trio.lowlevel.checkpoint()
            return
        entry = [instant, next(self._sequence), trio.lowlevel.current_task()]
        heapq.heappush(self._timers, entry)

        def abort(_: Any) -> trio.lowlevel.Abort:
            entry[2] = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


_SIM = "_startline_sim_clock"


def sleep_until(instant: float) -> Any:
    """Sleep until ``instant`` on the running loop's clock: on a :class:`SimClock` without a
    cancel scope, on any other clock as ``trio.sleep_until``. Returns the sleep to await."""
    sim = trio.lowlevel.current_clock().__dict__.get(_SIM)
    if sim is not None:
        return sim.sleep_until(instant)
    return trio.sleep_until(instant)


def sleep(seconds: float) -> Any:
    """Sleep ``seconds`` (as :func:`sleep_until` from now)."""
    return sleep_until(trio.current_time() + seconds)
