"""A worker process's watchdog: a thread that notices when the Trio event loop stops turning
(an operation that blocks — ``time.sleep``, a synchronous driver call — inside ``async`` code)
and says so in the worker's log while it happens, with where the loop is stuck. A blocked loop
sends no heartbeat: the orchestrator judges the worker DEAD, and its results count only if they
come in before the run's summary is written."""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback

import attrs
import trio

log = logging.getLogger("startline.watchdog")

BLOCKED_AFTER_S = 1.0
"""How long the loop may go without turning before the watchdog speaks."""
PULSE_S = 0.1


@attrs.define(eq=False)
class LoopWatchdog:
    """``pulse`` runs in the loop; the thread compares its last turn with the time."""

    blocked_after_s: float = BLOCKED_AFTER_S
    last_turn: float = attrs.field(factory=time.monotonic)
    episodes: int = 0
    """Times the loop was found blocked (each said once, and once more when it turns again)."""
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _loop_thread: int = attrs.field(factory=threading.get_ident)

    async def pulse(self) -> None:
        """Runs beside the worker: turns the loop's clock every ``PULSE_S``; starts the thread."""
        self._loop_thread = threading.get_ident()
        thread = threading.Thread(target=self._watch, name="startline-watchdog", daemon=True)
        thread.start()
        try:
            while True:
                self.last_turn = time.monotonic()
                await trio.sleep(PULSE_S)
        finally:
            self._stop.set()

    def _watch(self) -> None:
        blocked_since: float | None = None
        while not self._stop.wait(PULSE_S):
            silent = time.monotonic() - self.last_turn
            if silent > self.blocked_after_s and blocked_since is None:
                blocked_since = self.last_turn
                self.episodes += 1
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame)[-3:]).rstrip() if frame is not None else "?"
                log.warning(
                    "the event loop has been blocked for %.1f s: an operation that blocks (time.sleep, a "
                    "synchronous call) inside async code stops this worker's heartbeats — the orchestrator "
                    "will judge it DEAD. It is stuck at:\n%s",
                    silent,
                    where,
                )
            elif silent <= self.blocked_after_s and blocked_since is not None:
                log.warning("the event loop turns again after %.1f s blocked", self.last_turn - blocked_since)
                blocked_since = None
