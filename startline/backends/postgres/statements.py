"""pg_stat_statements around a run on a PostgreSQL target: read before the start, when
MEASUREMENT begins and at the end, written as per-phase deltas to OUT/pg_stat_statements.json
(warmup: before → MEASUREMENT's start; measurement: from there to the end, cooldown included).
Without the extension: one line saying so, and no file."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console

from startline.backends.postgres.target import statement_deltas
from startline.engine.files import write_json
from startline.engine.ports import Target

NOT_INSTALLED = (
    "pg_stat_statements is not installed on the target: no per-statement figures "
    "(shared_preload_libraries = 'pg_stat_statements', then CREATE EXTENSION pg_stat_statements)"
)


@attrs.define(eq=False)
class StatementWatch:
    target: Target
    readings: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)

    async def begin(self, console: Console) -> bool:
        """The reading before the start; False (and the one-line note) without the extension."""
        first = await self.target.statement_stats()
        if first is None:
            console.print(NOT_INSTALLED, highlight=False)
            return False
        self.readings["before"] = first
        return True

    async def at_measurement(self, measurement_began: Callable[[], Awaitable[None]]) -> None:
        """The reading as soon as ``measurement_began()`` returns (the orchestrator's: MEASUREMENT
        began on its clock)."""
        await measurement_began()
        reading = await self.target.statement_stats()
        if reading is not None:
            self.readings["measurement"] = reading

    async def end(self, out: Path) -> dict[str, list[dict[str, Any]]] | None:
        """The last reading; the deltas per phase, also written to OUT/pg_stat_statements.json
        (None if the run never got going)."""
        last = await self.target.statement_stats()
        before = self.readings.get("before")
        if last is None or before is None:
            return None
        middle = self.readings.get("measurement")
        phases = (
            {"warmup": statement_deltas(before, middle), "measurement": statement_deltas(middle, last)}
            if middle is not None
            else {"run": statement_deltas(before, last)}  # stopped before MEASUREMENT began
        )
        write_json(Path(out) / "pg_stat_statements.json", phases)
        return phases
