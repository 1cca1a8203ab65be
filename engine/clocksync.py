"""Estimate this host's offset to the control plane's clock, NTP-style.

Each round trip gives offset = server − midpoint(local send, local receive) with
error at most RTT/2; the sample with the lowest RTT is kept.
"""

from __future__ import annotations

import attrs
import trio
import trio.testing

from engine.ports import ControlPlane, WallClock


@attrs.frozen
class OffsetEstimate:
    """``offset_s`` = control-plane clock − local clock; true offset is within ``uncertainty_s``."""

    offset_s: float
    rtt_s: float
    samples: int

    @property
    def uncertainty_s(self) -> float:
        return self.rtt_s / 2.0


def best_offset(samples: list[tuple[float, float, float]]) -> OffsetEstimate:
    """From (local send, server time, local receive) triples, the minimum-RTT estimate."""
    if not samples:
        raise ValueError("need at least one sample")
    t0, server, t1 = min(samples, key=lambda s: (s[2] - s[0], s[0]))
    return OffsetEstimate(offset_s=server - (t0 + t1) / 2.0, rtt_s=t1 - t0, samples=len(samples))


async def estimate_offset(cp: ControlPlane, clock: WallClock, samples: int) -> OffsetEstimate:
    """``samples`` sequential ``server_time`` round trips, minimum-RTT filtered."""
    taken = []
    for _ in range(samples):
        t0 = clock.now()
        server = await cp.server_time()
        t1 = clock.now()
        taken.append((t0, server, t1))
        await trio.lowlevel.checkpoint()
    return best_offset(taken)


@attrs.frozen
class ClockMap:
    """Converts between this process's trio clock and the control plane's clock.

    Anchored once (trio now ↔ local wall now + offset); durations come from trio.
    """

    trio_anchor: float
    control_anchor: float

    @classmethod
    def anchor(cls, clock: WallClock, offset: OffsetEstimate) -> ClockMap:
        return cls(trio.current_time(), clock.now() + offset.offset_s)

    def to_control(self, trio_time: float) -> float:
        return self.control_anchor + (trio_time - self.trio_anchor)

    def to_trio(self, control_time: float) -> float:
        return self.trio_anchor + (control_time - self.control_anchor)


async def sleep_until_precisely(deadline: float, spin_s: float) -> None:
    """``trio.sleep_until`` that, on the system clock, spins the last ``spin_s`` (yielding
    to other tasks each pass) since an OS timer wakes a process a millisecond or two late.
    Under a ``MockClock`` it is a plain ``sleep_until``: virtual time is exact."""
    if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock) or spin_s <= 0:
        await trio.sleep_until(deadline)
        return
    await trio.sleep_until(deadline - spin_s)
    while trio.current_time() < deadline:
        await trio.lowlevel.checkpoint()
