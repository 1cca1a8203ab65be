"""Count control-plane queries by stage of a worker's life (setup, waiting, running, draining),
and time each round trip by method (what ``startline calibrate`` fits a profile's latencies to)."""

from __future__ import annotations

from collections import defaultdict
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
        return {name: h.encode().decode("ascii") for name, h in sorted(self.latency.items())}

    def _counted(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        if not self.timed or name == "wait_for_change":  # a push wait is not a round trip

            def counted(*args: Any, **kwargs: Any) -> Any:
                """Counted as it is called; the call itself is returned to be awaited, with no
                frame of this layer between (every suspension of a call passes each frame)."""
                self.counts[self.stage] += 1
                return method(*args, **kwargs)

            return counted

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[self.stage] += 1
            began = trio.current_time()
            try:
                result = await method(*args, **kwargs)
            except trio.TooSlowError:  # past its deadline: as a call cancelled by it, not timed
                raise
            except Exception:  # a failed round trip took its time too; a cancelled one is not timed
                self._time(name, began)
                raise
            self._time(name, began)
            return result

        return call

    def _time(self, name: str, began: float) -> None:
        made(self.latency, name).record_value(to_us(trio.current_time() - began))
