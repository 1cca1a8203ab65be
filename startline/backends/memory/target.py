"""A target of async Python callables: an operation's ``call`` is awaited with its params."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from startline.engine.ports import Session, Target
from startline.engine.scenario import ConfigError, OperationSpec, Scenario
from startline.engine.workload import resolve_call


@attrs.define(eq=False)
class CallableSession(Session):
    target: CallableTarget
    worker_id: str
    slot: int
    tag: Mapping[str, str] = attrs.Factory(dict)

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        await self.direct_call(op)(**params)

    def direct_call(self, op: OperationSpec) -> Callable[..., Awaitable[Any]]:
        """The operation's own function: a connection awaits it with the params (no layer between)."""
        return self.target._resolved.get(op.name) or self.target.function(op)

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        self.tag = dict(tag)

    async def close(self) -> None:
        return None


@attrs.define(eq=False)
class CallableTarget(Target):
    """Runs each operation's ``call`` (a callable, or ``"module:function"`` imported once)."""

    _resolved: dict[str, Callable[..., Awaitable[Any]]] = attrs.Factory(dict)

    @classmethod
    def for_scenario(cls, scenario: Scenario) -> CallableTarget:
        """Resolve every operation now, so that a bad ``call`` is a config error, not a run error."""
        target = cls()
        for i, op in enumerate(scenario.operations):
            if op.call is None:
                raise ConfigError(
                    f"operations[{i}].sql",
                    "the memory target runs callables, not SQL; use a SQL target (--target sqlite:///...)",
                )
            target._resolved[op.name] = resolve_call(op.call, f"operations[{i}].call")
        return target

    def function(self, op: OperationSpec) -> Callable[..., Awaitable[Any]]:
        fn = self._resolved.get(op.name)
        if fn is None:
            fn = self._resolved[op.name] = resolve_call(op.call)
        return fn

    async def open_session(self, worker_id: str, slot: int) -> CallableSession:
        return CallableSession(self, worker_id, slot)

    def error_category(self, exc: BaseException) -> str:
        """The exception's ``category`` when it names one (a callable that raises a conflict says
        ``category = "conflict"``: tried again under ``max_tries``), else its class's name."""
        category = getattr(exc, "category", None)
        return category if isinstance(category, str) else type(exc).__name__
