"""The orchestrator's side of RUN_CONTROL_EVENTS: the only writer of the log, so sequence ids are
gap-free — one append at a time (the plan, the load control, a re-split), each the last + 1."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from startline.engine.model import ControlEvent, EventType
from startline.engine.ports import ControlPlane


@attrs.define(eq=False)
class EventLog:
    cp: ControlPlane
    run_id: str
    sequence_id: int = 0
    """The last sequence id written (an adopted run's: the last one its predecessor wrote)."""
    events: list[ControlEvent] = attrs.field(factory=list)
    """What this orchestrator appended, in order."""
    _appending: trio.StrictFIFOLock = attrs.field(init=False, factory=trio.StrictFIFOLock)

    async def emit(self, event_type: EventType, **fields: Any) -> None:
        """Append the next event."""
        async with self._appending:
            event = ControlEvent(self.run_id, self.sequence_id + 1, event_type, **fields)
            await self.cp.append_event(event)
            self.sequence_id = event.sequence_id
            self.events.append(event)
