"""A scheduled start's release instant, slept precisely on a real clock (``TrioRuntime``).

Trio sleeps on the OS's readiness wait, whose timeout is whole milliseconds rounded up, and the
OS wakes a process a little later again: a release slept on the event loop alone began its
first operation 0.5–5 ms late (issue 25's profile). ``release_precisely`` sleeps on the loop to
a margin before the instant — the loop's wake lateness measured just before — and the rest on
the OS's own timer. The margin's rule is ``startplan.release_margin_s``. Meanwhile the thread's
timer slack is a nanosecond (``precise_timers``): Linux lets a sleeping thread's timer fire up to
50 µs late by default, to batch wake-ups.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import trio

from startline.engine.determinism import on_virtual_time

PR_SET_TIMERSLACK, PR_GET_TIMERSLACK = 29, 30
"""``prctl(2)``'s options for the calling thread's timer slack (nanoseconds)."""

REWARM_S = 0.001
"""The sessions are brought back into the caches (``rewarm``) this long before the instant, to be
done by half-way."""

PROBE_S = 0.004
PROBES = 5
PROBE_LEAD_S = 0.06
"""The loop's wake lateness is measured with ``PROBES`` sleeps of ``PROBE_S``, beginning
``PROBE_LEAD_S`` before the instant."""


@contextlib.contextmanager
def precise_timers() -> Iterator[None]:
    """The calling thread's timer slack at one nanosecond, and back to what it was after (Linux;
    elsewhere nothing changes). Linux's default, 50 µs, lets the kernel fire a sleeping thread's
    timer that much late to batch wake-ups: the median wake from a 3 ms ``time.sleep`` measured
    117 µs late here with it, 60 µs without."""
    prctl = _prctl()
    if prctl is None:
        yield
        return
    was = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0)
    if was <= 0 or prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) != 0:
        yield
        return
    try:
        yield
    finally:
        prctl(PR_SET_TIMERSLACK, was, 0, 0, 0)


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # (here, not at import: only a real release pays for it)

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


async def release_precisely(
    deadline: float, margin: Callable[[Sequence[float]], float], rewarm: Callable[[float], None] | None = None
) -> float:
    """Sleep until ``deadline`` on the system clock, precisely: on the event loop to
    ``PROBE_LEAD_S`` before it, then a few short sleeps measuring how late the loop wakes now,
    then on the loop until ``margin(latenesses)`` before the deadline, and the rest on the OS's
    own timer (``time.sleep``: blocking, nanosecond resolution, no CPU spent — spinning processes
    that outnumber the cores were measured to start further apart); ``rewarm(by)`` is called
    once in that blocking sleep, ``REWARM_S`` before the deadline (or as soon as it wakes, if
    later), to be done by ``REWARM_S / 2`` before it. Under a ``MockClock``: the deadline
    exactly, and no rewarm (a simulated session has nothing to bring back). Returns the margin
    used (0 under a ``MockClock``)."""
    if on_virtual_time():
        await trio.sleep_until(deadline)
        return 0.0
    await trio.sleep_until(deadline - PROBE_LEAD_S)
    with precise_timers():
        late: list[float] = []
        for _ in range(PROBES):
            due = trio.current_time() + PROBE_S
            if due > deadline - PROBE_S:
                break
            await trio.sleep_until(due)
            late.append(trio.current_time() - due)
        used = margin(late)
        await trio.sleep_until(deadline - used)
        rest = deadline - trio.current_time()
        if rewarm is not None:
            if rest > REWARM_S:
                time.sleep(rest - REWARM_S)  # (blocking, on purpose: a few milliseconds at the release)
            rewarm(deadline - REWARM_S / 2)
            rest = deadline - trio.current_time()
        if rest > 0:
            time.sleep(rest)  # (blocking, on purpose: a few milliseconds at the release instant)
    return used
