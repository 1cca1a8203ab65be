"""A worker's timeline: the marks of its life (ready, detect, scale, stop, …) on both clocks, the
stage its control-plane queries count toward, how late its start-path sleeps woke, and the
witnesses of its start (the host's clock and the target's at each connection's first operation).
What the worker's results say of them is ``payload``; the worker only says when."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio
from hdrh.histogram import HdrHistogram

from startline.engine.clocksync import ClockMap
from startline.engine.metrics import new_histogram, to_us
from startline.engine.ports import Runtime


@attrs.define(eq=False)
class Timeline:
    enter_stage: Callable[[str], None]
    """Control-plane queries count toward this stage from now (``CountingControlPlane.stage``)."""
    clockmap: ClockMap | None = None
    """Set once the worker has its offset: marks are on the control plane's clock too from then."""
    began: float | None = None
    """This host's wall clock when the worker's ``run()`` began."""
    launched_at: float | None = None
    """When the worker's launcher started it, on this host's wall clock (``None``: not known)."""
    release_at: float | None = None
    """The trio instant a scheduled start releases the connections at."""
    marks: dict[str, float] = attrs.field(factory=dict)
    """Marks on the control plane's clock (once there is a clock map)."""
    trio_marks: dict[str, float] = attrs.field(factory=dict)
    stage_started: dict[str, float] = attrs.field(factory=dict)
    wakes: HdrHistogram = attrs.field(factory=new_histogram)
    """How late this process woke from its start-path sleeps."""
    detection: str | None = None
    """How this worker learnt of the start (``startplan.Detection``: inline, poll, push)."""
    detect_read: float | None = None
    """How long the read of RUN_STATUS that found the run started took (seconds)."""
    detected_at: float | None = None
    """The trio instant a start found by a read was found, its connections already spawned (what
    ``after_detect_ms`` runs from; None otherwise)."""
    bookkeeping_s: float = 0.0
    """How long the start's bookkeeping held the start path (not ``deferred``)."""

    def enter(self, stage: str) -> None:
        self.enter_stage(stage)
        self.stage_started[stage] = trio.current_time()

    def mark(self, name: str) -> None:
        now = trio.current_time()
        self.trio_marks[name] = now
        if self.clockmap is not None:
            self.marks[name] = self.clockmap.to_control(now)

    async def sleep(self, runtime: Runtime, seconds: float) -> None:
        """A start-path sleep, through the runtime, noting how late it woke."""
        deadline = trio.current_time() + seconds
        await runtime.sleep_until(deadline)
        self.wakes.record_value(to_us(trio.current_time() - deadline))

    def span(self, a: str, b: str) -> float:
        """Seconds from entering stage ``a`` to entering ``b`` (or now)."""
        st = self.stage_started
        return (st.get(b, trio.current_time()) - st[a]) if a in st else 0.0

    def process(self, firsts: Mapping[int, float]) -> dict[str, Any]:
        """This process's own costs: how long after its launcher it began; how late it woke from
        its start-path sleeps; under a scheduled start, how late its first connection began after
        the release instant (a late wake, and the wait for a core when every process wakes at once)."""
        began, launched, release = self.began, self.launched_at, self.release_at
        return {
            "start_delay_ms": None if began is None or launched is None else (began - launched) * 1000.0,
            "wake_late_us": self.wakes.encode().decode("ascii") if self.wakes.get_total_count() else None,
            "release_late_ms": None if release is None or not firsts else (min(firsts.values()) - release) * 1000.0,
            "detection": self.detection,
            "detect_read_ms": None if self.detect_read is None else self.detect_read * 1000.0,
            "after_detect_ms": None
            if self.detected_at is None or not firsts
            else (min(firsts.values()) - self.detected_at - self.bookkeeping_s) * 1000.0,
        }

    def of_run(self, firsts: Mapping[int, float]) -> tuple[dict[str, float], dict[int, float]]:
        """The timeline of the results (the marks, and the first operation's instant) and each
        slot's first operation, on the control plane's clock."""
        cm = self.clockmap
        initial = {s: (cm.to_control(t) if cm else t) for s, t in sorted(firsts.items())}
        timeline = dict(self.marks)
        if initial:
            timeline["first_query"] = min(initial.values())
        return timeline, initial


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


def own_session() -> bool | None:
    """This process leads its session (None where there are no sessions)."""
    try:
        return os.getsid(0) == os.getpid()
    except (AttributeError, OSError):
        return None


def host_witness(first_query: Mapping[int, float] | None, control_clock: bool) -> dict[str, Any] | None:
    """The host's own clock at each connection's first operation (``None`` on virtual time), and
    whether the control plane's clock is this host's (then START_TIME is on it too); the host's
    cores, and whether this process leads a session of its own (Linux: a CPU group of its own
    where autogroup is on; ``live.workers.worker_process``)."""
    if first_query is None:
        return None
    return {
        "name": socket.gethostname(),
        "cores": cores(),
        "own_session": own_session(),
        "control_clock": control_clock,
        "first_query": {str(s): t for s, t in sorted(first_query.items())},
    }


def target_witness(first_query: Mapping[int, float], control_clock: bool) -> dict[str, Any] | None:
    """The target's own clock at each connection's first operation (a target that stamps them:
    PostgreSQL), and whether START_TIME is on that clock too."""
    if not first_query:
        return None
    return {"control_clock": control_clock, "first_query": {str(s): t for s, t in sorted(first_query.items())}}
