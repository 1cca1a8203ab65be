"""Count control-plane queries by stage of a worker's life (setup, waiting, running, draining)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs

from startline.engine.ports import ControlPlane, PushControlPlane

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
    """Wraps a control plane; every round trip adds one to the current ``stage``'s count."""

    inner: ControlPlane
    stage: str = "setup"
    counts: dict[str, int] = attrs.Factory(lambda: defaultdict(int))

    @property
    def supports_push(self) -> bool:
        return isinstance(self.inner, PushControlPlane)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in QUERY_METHODS:
            return method
        return self._counted(method)

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[self.stage] += 1
            return await method(*args, **kwargs)

        return call
