"""Estimate this host's offset to the control plane's clock, NTP-style.

Each round trip gives offset = server − midpoint(local send, local receive) with
error at most RTT/2; the sample with the lowest RTT is kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs
import trio

from startline.engine.determinism import on_virtual_time
from startline.engine.ports import ControlPlane, WallClock


@attrs.frozen
class OffsetEstimate:
    """``offset_s`` = control-plane clock − local wall clock; true offset is within ``uncertainty_s``.

    ``server_s`` was read at ``trio_mid_s`` (this process's monotonic trio clock) within the same
    uncertainty: the anchor that maps trio time to control time, whatever the wall clock does later.
    """

    offset_s: float
    rtt_s: float
    samples: int
    server_s: float = 0.0
    trio_mid_s: float = 0.0
    resolution_s: float = 0.0
    """The control plane's clock ticks this coarsely: its reading may be this much early."""
    spread_s: float = 0.0
    """Half the range of the offsets the good round trips (RTT within twice the best) gave."""

    @property
    def uncertainty_s(self) -> float:
        """RTT/2 (where in the round trip the server read its clock), the server clock's
        resolution, and the spread of the good samples: an error bar, not a best case."""
        return self.rtt_s / 2.0 + self.resolution_s + self.spread_s


Sample = tuple[float, float, float, float, float]
"""(wall at send, trio at send, server time, trio at receive, wall at receive)."""


def best_offset(samples: list[Sample], resolution_s: float = 0.0) -> OffsetEstimate:
    """The minimum-RTT sample; RTTs are measured on the trio clock, so a wall-clock jump during
    the round trips cannot make a sample look fast (a backward jump would give a negative RTT).
    Its error bar adds the server clock's ``resolution_s`` and the spread of the good samples'
    offsets (each measured as server − trio midpoint, so a wall-clock jump does not widen it)."""
    if not samples:
        raise ValueError("need at least one sample")
    w0, m0, server, m1, w1 = min(samples, key=lambda s: (s[3] - s[1], s[1]))
    rtt = m1 - m0
    good = [s[2] - (s[1] + s[3]) / 2.0 for s in samples if s[3] - s[1] <= 2 * rtt]
    return OffsetEstimate(
        offset_s=server - (w0 + w1) / 2.0,
        rtt_s=rtt,
        samples=len(samples),
        server_s=server,
        trio_mid_s=(m0 + m1) / 2.0,
        resolution_s=resolution_s,
        spread_s=(max(good) - min(good)) / 2.0,
    )


async def estimate_offset(cp: ControlPlane, clock: WallClock, samples: int) -> OffsetEstimate:
    """``samples`` sequential ``server_time`` round trips, minimum-RTT filtered."""
    taken: list[Sample] = []
    for _ in range(samples):
        w0, m0 = clock.now(), trio.current_time()
        server = await cp.server_time()
        m1, w1 = trio.current_time(), clock.now()
        taken.append((w0, m0, server, m1, w1))  # (each call is a checkpoint: the others run between)
    return best_offset(taken, cp.traits.clock_resolution_s)


@attrs.frozen
class ClockMap:
    """Converts between this process's trio clock and the control plane's clock.

    Anchored once, on the best round trip (its trio midpoint ↔ the server's time); durations
    come from trio, so the wall clock jumping afterwards changes nothing.
    """

    trio_anchor: float
    control_anchor: float

    @classmethod
    def anchor(cls, offset: OffsetEstimate) -> ClockMap:
        return cls(offset.trio_mid_s, offset.server_s)

    def to_control(self, trio_time: float) -> float:
        return self.control_anchor + (trio_time - self.trio_anchor)

    def to_trio(self, control_time: float) -> float:
        return self.trio_anchor + (control_time - self.control_anchor)


async def sleep_until_precisely(
    deadline: float, spin_s: float, sleep_until: Callable[[float], Awaitable[None]] = trio.sleep_until
) -> None:
    """``sleep_until`` that, on the system clock, spins the last ``spin_s`` (yielding to other
    tasks each pass) since an OS timer wakes a process a millisecond or two late: a wake later
    than the spin is still late by the difference. Under a ``MockClock`` the spin is exact (a
    simulated runtime's sleep makes the wake late)."""
    if spin_s <= 0:
        await sleep_until(deadline)
        return
    await sleep_until(deadline - spin_s)
    if on_virtual_time():
        await trio.sleep_until(deadline)
        return
    while trio.current_time() < deadline:
        await trio.lowlevel.checkpoint()
