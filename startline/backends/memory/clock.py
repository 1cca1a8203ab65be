"""A wall clock built on Trio's clock, so that a MockClock moves it too."""

from __future__ import annotations

import time

import attrs
import trio

EPOCH_2026 = 1_767_225_600.0
"""2026-01-01T00:00:00Z: the default epoch of virtual time."""


@attrs.frozen
class TrioWallClock:
    """now = epoch + trio time × (1 + drift) + offset: a host's (possibly wrong) wall clock."""

    epoch: float = EPOCH_2026
    offset_s: float = 0.0
    drift_ppm: float = 0.0

    @classmethod
    def aligned_to_system(cls) -> TrioWallClock:
        """Follows ``time.time()`` (call inside ``trio.run``): the live default."""
        return cls(epoch=time.time() - trio.current_time())

    def now(self) -> float:
        t = trio.current_time()
        return self.epoch + t + t * self.drift_ppm * 1e-6 + self.offset_s
