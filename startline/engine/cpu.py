"""A worker process's own CPU use (issue 23): sampled every snapshot interval while the run runs,
so that a run can say when the client, not the database, was the limit. A worker above
``SATURATED_SHARE`` of one core over an interval is *saturated*: the summary lists it
(``client.saturated``) and a load mode's answer reached meanwhile says so — a user must never
publish the client's limit as the database's. Live runs only: on virtual time a process's CPU
says nothing about the simulated one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from startline.engine.schedule import PhaseWindows

SATURATED_SHARE = 0.85
"""A worker using more than this share of one core over an interval is saturated."""


@attrs.define(eq=False)
class CpuWatch:
    """(start, end, CPU seconds) of each sampled window, on the trio clock."""

    read: Callable[[], float] = time.process_time
    windows: list[tuple[float, float, float]] = attrs.Factory(list)
    _last: tuple[float, float] | None = None

    def sample(self, now: float) -> None:
        cpu = self.read()
        if self._last is not None and now > self._last[0]:
            self.windows.append((self._last[0], now, cpu - self._last[1]))
        self._last = (now, cpu)

    async def loop(self, every_s: float) -> None:
        """Sample every ``every_s`` (a chore beside the heartbeats) until cancelled."""
        while True:
            self.sample(trio.current_time())
            await trio.sleep(every_s)

    def payload(self, windows: PhaseWindows | None) -> dict[str, Any] | None:
        """CPU seconds in all and by phase (each window in the phase of its middle), the busiest
        window's share of one core, and the seconds spent above ``SATURATED_SHARE``."""
        if not self.windows:
            return None
        total = sum(c for _, _, c in self.windows)
        span = sum(b - a for a, b, _ in self.windows)
        by_phase: dict[str, float] = {}
        if windows is not None:
            for a, b, c in self.windows:
                phase = str(windows.phase_at((a + b) / 2))
                by_phase[phase] = round(by_phase.get(phase, 0.0) + c, 4)
        shares = [(c / (b - a), b - a) for a, b, c in self.windows]
        return {
            "s": round(total, 4),
            "share_mean": round(total / span, 4) if span else None,
            "share_max": round(max(s for s, _ in shares), 4),
            "saturated_s": round(sum(d for s, d in shares if s > SATURATED_SHARE), 3),
            "by_phase": by_phase,
        }


def client_block(workers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """summary.json's ``client``: the workers that were saturated (an interval above
    ``SATURATED_SHARE`` of a core), and the busiest share of any; None when no worker measured."""
    measured = [w for w in workers if w.get("cpu")]
    if not measured:
        return None
    saturated = sorted(w["worker_id"] for w in measured if w["cpu"]["share_max"] > SATURATED_SHARE)
    return {
        "saturated": saturated,
        "share_max": max(w["cpu"]["share_max"] for w in measured),
        "threshold": SATURATED_SHARE,
    }
