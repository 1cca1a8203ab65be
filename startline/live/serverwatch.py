"""The orchestrator's reading of the target server's own statistics during a live run (a target
with ``traits.server_sampling``: PostgreSQL): one connection, one reading as soon as the start is
known and one at each snapshot-interval boundary from START_TIME, one after the workers have
ended; the summary's ``server`` block (``engine/serverstats.py``) and intervals.csv's server
columns from them. Or, from a target with ``traits.query_history`` (Snowflake), the server's own
record of the run's statements read right after it (``history_at_end``). A figure about the
target, never a reason for the run to fail: a reading that fails is counted and skipped, a
sampler or a history that cannot be read is one line."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from startline.engine.files import write_summary
from startline.engine.metrics import error_message
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import HistoryRequest, ServerSampler, Target
from startline.engine.scenario import Scenario
from startline.engine.serverstats import ServerReading, place, server_block

FIRST_READING_LEAD_S = 0.2
"""The reading before the start is taken this long before START_TIME (at most half an interval):
near enough that interval 0 holds little from before, far enough to be answered by then."""
READ_TIMEOUT_S = 5.0
"""A reading not answered by then is abandoned (and counted as failed)."""
HISTORY_TIMEOUT_S = 120.0
"""The query history right after a run is abandoned (one line) if not read by then."""


@attrs.define(eq=False)
class ServerWatch:
    sampler: ServerSampler
    interval_s: float
    readings: list[ServerReading] = attrs.field(factory=list)
    failed: int = 0
    last_error: str | None = None

    @classmethod
    async def open(cls, target: Target, scenario: Scenario, say: Callable[[str], None]) -> ServerWatch | None:
        """A watch for ``target`` (None: the scenario says ``server_stats = false``, the target
        reads no server statistics, or cannot now — said in one line)."""
        if not (scenario.server_stats and target.traits.server_sampling):
            return None
        try:
            return cls(await target.open_server_sampler(), scenario.snapshot_interval_s)
        except Exception as exc:
            say(f"server statistics not read: {error_message(exc)}")
            return None

    async def _read(self, index: int) -> None:
        try:
            with trio.fail_after(READ_TIMEOUT_S):
                self.readings.append(await self.sampler.read(index))
        except Exception as exc:  # (trio.TooSlowError included)
            self.failed += 1
            self.last_error = error_message(exc)

    async def follow(self, orchestrator: Orchestrator) -> None:
        """Reading 0 just before START_TIME (``FIRST_READING_LEAD_S``), then one at each boundary
        START_TIME + k × interval until cancelled; a boundary passed while a reading was late is
        skipped (the next reading spans it: its ``from_s``/``to_s`` say so)."""
        start = await orchestrator.started()
        await trio.sleep_until(start - min(FIRST_READING_LEAD_S, self.interval_s / 2))
        await self._read(0)
        k = 1
        while True:
            await trio.sleep_until(start + k * self.interval_s)
            await self._read(k)
            k = max(k + 1, math.floor((trio.current_time() - start) / self.interval_s) + 1)

    async def finish(self, orchestrator: Orchestrator, same_clock: bool) -> dict[str, Any] | None:
        """The last reading (the workers have ended: their sessions' counts are published) and the
        summary's ``server`` block; the sampler closed. None when the run never started or fewer
        than two readings came."""
        try:
            if orchestrator.start_time is not None and self.readings:
                await self._read(self.readings[-1].index + 1)
        finally:
            with trio.move_on_after(5.0, shield=True):
                await self.sampler.close()
        if orchestrator.start_time is None or len(self.readings) < 2:
            return None
        placement = place(self.readings, orchestrator.to_control, same_clock, orchestrator.clock_uncertainty_s)
        block = server_block(
            self.sampler.source,
            self.readings,
            placement,
            orchestrator.start_time,
            self.interval_s,
            failed_readings=self.failed,
        )
        if self.last_error is not None:
            block["sampling"]["last_error"] = self.last_error
        return block


async def history_at_end(
    target: Target,
    scenario: Scenario,
    orchestrator: Orchestrator,
    summary: dict[str, Any],
    same_clock: bool,
    say: Callable[[str], None],
) -> dict[str, Any] | None:
    """The ``server`` block from the target's record of the run's statements, read now (None:
    the scenario says ``server_stats = false``, the target keeps none, the run never started, or
    it could not be read — said in one line)."""
    if not (scenario.server_stats and target.traits.query_history) or orchestrator.start_time is None or not summary:
        return None
    request = HistoryRequest(
        run_id=orchestrator.run_id,
        operations=scenario.operations,
        phases=summary.get("phases") or {},
        start_time=orchestrator.start_time,
        end_time=summary.get("stopped_at") or orchestrator.start_time,
        interval_s=scenario.snapshot_interval_s,
        to_control=orchestrator.to_control,
        clock_uncertainty_s=orchestrator.clock_uncertainty_s,
        same_clock=same_clock,
    )
    try:
        with trio.fail_after(HISTORY_TIMEOUT_S):
            block = await target.query_history(request)
    except Exception as exc:  # (trio.TooSlowError included)
        say(f"query history not read: {error_message(exc)}")
        return None
    if block is None:
        say("query history not read: no warehouse named (the target URL's `warehouse=`, or connections.toml's)")
    return block


def with_server(out: Path, summary: dict[str, Any], block: dict[str, Any] | None, statements: Any) -> dict[str, Any]:
    """The summary with its ``server`` block (the readings' ``block``; ``statements``:
    pg_stat_statements per phase), OUT's summary.json and intervals.csv rewritten; unchanged
    when there is neither or nothing was summarised."""
    if not summary or (block is None and statements is None):
        return summary
    server = dict(block or {})
    if statements is not None:
        server["statements"] = statements
    summary = {**summary, "server": server}
    write_summary(out, summary)
    return summary
