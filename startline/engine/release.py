"""A scheduled start's release instant, slept precisely on a real clock (``TrioRuntime``).

Trio sleeps on the OS's readiness wait, whose timeout is whole milliseconds rounded up, and the
OS wakes a process a little later again: a release slept on the event loop alone began its
first operation 0.5–5 ms late (issue 25's profile). ``release_precisely`` sleeps on the loop to
a margin before the instant — the loop's wake lateness measured just before — and the rest on
the OS's own timer. The margin's rule is ``startplan.release_margin_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import trio

from startline.engine.determinism import on_virtual_time

PROBE_S = 0.004
PROBES = 5
PROBE_LEAD_S = 0.06
"""The loop's wake lateness is measured with ``PROBES`` sleeps of ``PROBE_S``, beginning
``PROBE_LEAD_S`` before the instant."""


async def release_precisely(deadline: float, margin: Callable[[Sequence[float]], float]) -> float:
    """Sleep until ``deadline`` on the system clock, precisely: on the event loop to
    ``PROBE_LEAD_S`` before it, then a few short sleeps measuring how late the loop wakes now,
    then on the loop until ``margin(latenesses)`` before the deadline, and the rest on the OS's
    own timer (``time.sleep``: blocking, nanosecond resolution, no CPU spent — spinning processes
    that outnumber the cores were measured to start further apart). Under a ``MockClock``: the
    deadline exactly. Returns the margin used (0 under a ``MockClock``)."""
    if on_virtual_time():
        await trio.sleep_until(deadline)
        return 0.0
    await trio.sleep_until(deadline - PROBE_LEAD_S)
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
    if rest > 0:
        time.sleep(rest)  # (blocking, on purpose: a few milliseconds at the release instant)
    return used
