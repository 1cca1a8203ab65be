"""Count control-plane queries by stage of a worker's life (setup, waiting, running, draining),
and time each round trip by method (what ``startline calibrate`` fits a profile's latencies to),
apart by whether the benchmark's load could have been running on the host when it began."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import attrs
import trio
from hdrh.histogram import HdrHistogram

from startline.engine.metrics import made, to_us
from startline.engine.ports import ControlPlane, ControlPlaneTraits

QUERY_METHODS = frozenset(
    {
        "create_run",
        "read_run",
        "update_run",
        "append_event",
        "read_events",
        "register_worker",
        "upsert_heartbeat",
        "mark_worker",
        "read_heartbeats",
        "upsert_result",
        "read_results",
        "append_snapshot",
        "read_snapshots",
        "server_time",
        "wait_for_change",
    }
)
START_CALLS = 256
"""A worker's round trips begun while it waits for its start, each kept on its own (the latest
this many; older ones are counted idle): whether another worker's load ran when one began is
known only beside the other workers' first operations (``calibrate``)."""
IDLE_STAGES = frozenset({"setup"})
"""Stages before a worker's start wait: no worker's load runs yet."""


@attrs.define(eq=False)
class CountingControlPlane:
    """Wraps a control plane; every round trip adds one to the current ``stage``'s count and its
    duration to its method's histogram (failed ones too; a push wait is not a round trip)."""

    inner: ControlPlane
    timed: bool = True
    """Time each round trip by method (what ``calibrate`` reads from a live run's files); a
    simulation, which never writes them, turns it off."""
    stage: str = "setup"
    counts: dict[str, int] = attrs.Factory(lambda: defaultdict(int))
    latency: dict[str, HdrHistogram] = attrs.Factory(dict)
    by_load: bool = False
    """Also keep each round trip apart by load (a worker's): ``idle`` (begun before its start
    wait), ``loaded`` (begun after it, its own connections running), ``start_calls`` (begun
    during it, each on its own)."""
    idle: dict[str, HdrHistogram] = attrs.Factory(dict)
    loaded: dict[str, HdrHistogram] = attrs.Factory(dict)
    start_calls: deque[tuple[str, float, float]] = attrs.Factory(deque)
    """(method, began, seconds) on the trio clock, oldest first."""
    _methods: dict[str, Callable[..., Any]] = attrs.field(init=False, factory=dict, repr=False)

    @property
    def traits(self) -> ControlPlaneTraits:
        """The wrapped control plane's: counting changes none of them."""
        return self.inner.traits

    def __getattr__(self, name: str) -> Any:
        if name == "_methods":  # not set yet (attrs' __init__ is running)
            raise AttributeError(name)
        call = self._methods.get(name)
        if call is not None:
            return call
        method = getattr(self.inner, name)
        if name not in QUERY_METHODS:
            return method
        call = self._methods[name] = self._counted(name, method)
        return call

    def enter(self, stage: str) -> None:
        """Round trips count toward ``stage`` from now."""
        self.stage = stage

    def latency_payload(self) -> dict[str, str]:
        """Each method's round-trip times (HDR, microseconds), encoded."""
        return _encoded(self.latency)

    def load_payload(self, to_control: Callable[[float], float]) -> dict[str, Any]:
        """The round trips apart by load (``by_load``): ``idle_latency_us`` and
        ``loaded_latency_us`` as ``latency_us``; ``start_calls`` as [method, began on the control
        plane's clock (``to_control`` of a trio instant), milliseconds]."""
        return {
            "idle_latency_us": _encoded(self.idle),
            "loaded_latency_us": _encoded(self.loaded),
            "start_calls": [[m, to_control(began), s * 1000.0] for m, began, s in self.start_calls],
        }

    def _counted(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        if not self.timed or name == "wait_for_change":  # a push wait is not a round trip

            def counted(*args: Any, **kwargs: Any) -> Any:
                """Counted as it is called; the call itself is returned to be awaited, with no
                frame of this layer between (every suspension of a call passes each frame)."""
                self.counts[self.stage] += 1
                return method(*args, **kwargs)

            return counted

        async def call(*args: Any, **kwargs: Any) -> Any:
            stage = self.stage
            self.counts[stage] += 1
            began = trio.current_time()
            try:
                result = await method(*args, **kwargs)
            except trio.TooSlowError:  # past its deadline: as a call cancelled by it, not timed
                raise
            except Exception:  # a failed round trip took its time too; a cancelled one is not timed
                self._time(name, stage, began)
                raise
            self._time(name, stage, began)
            return result

        return call

    def _time(self, name: str, stage: str, began: float) -> None:
        took = trio.current_time() - began
        made(self.latency, name).record_value(to_us(took))
        if not self.by_load:
            return
        if stage in IDLE_STAGES:
            made(self.idle, name).record_value(to_us(took))
        elif stage == "waiting":
            calls = self.start_calls
            if len(calls) == START_CALLS:  # long before the start: no load ran then
                old, _, old_took = calls.popleft()
                made(self.idle, old).record_value(to_us(old_took))
            calls.append((name, began, took))
        else:
            made(self.loaded, name).record_value(to_us(took))


def _encoded(histograms: dict[str, HdrHistogram]) -> dict[str, str]:
    return {name: h.encode().decode("ascii") for name, h in sorted(histograms.items())}
