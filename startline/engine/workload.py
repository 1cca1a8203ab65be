"""The closed-loop workload: a weighted mix, parameter generators, deterministic draws."""

from __future__ import annotations

import bisect
import hashlib
import importlib
import inspect
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from startline.engine.scenario import ConfigError, OperationSpec, ParamSpec, ParamType

SEQUENCE_BLOCK = 1_000_000_000
"""Each connection slot draws ``sequence`` values from its own block of this size."""


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from any parts (never Python's salted ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@attrs.frozen
class Mix:
    """A weighted choice of operations; ``choose`` is one uniform draw and a bisect."""

    operations: tuple[OperationSpec, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, operations: tuple[OperationSpec, ...]) -> Mix:
        return cls(operations, tuple(itertools.accumulate(op.weight for op in operations)))

    def choose(self, rng: random.Random) -> OperationSpec:
        i = bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.operations[min(i, len(self.operations) - 1)]


@attrs.define(eq=False)
class ParamSource:
    """Draws an operation's parameters for one connection slot."""

    rng: random.Random
    slot: int
    _counters: dict[tuple[str, str], int] = attrs.Factory(dict)

    def draw(self, op: OperationSpec) -> dict[str, Any]:
        return {name: self._one(op.name, name, spec) for name, spec in op.params.items()}

    def _one(self, op_name: str, name: str, spec: ParamSpec) -> Any:
        if spec.type is ParamType.INT:
            return self.rng.randint(spec.min, spec.max)  # type: ignore[arg-type]
        if spec.type is ParamType.CHOICE:
            return self.rng.choice(spec.values)  # type: ignore[arg-type]
        n = self._counters.get((op_name, name), 0)
        self._counters[(op_name, name)] = n + 1
        return spec.start + (self.slot * SEQUENCE_BLOCK + n) * spec.step


def resolve_call(call: str | Callable[..., Awaitable[Any]], field: str = "call") -> Callable[..., Awaitable[Any]]:
    """An operation's callable: itself, or imported from ``"module:function"``."""
    if callable(call):
        return call
    module, _, name = call.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(field, f"cannot import {call!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(field, f"{call!r} is not callable")
    method = type(obj).__call__ if not inspect.isroutine(obj) else None
    if not (inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(method)):
        raise ConfigError(field, f"{call!r} must be an async function (async def), the engine awaits it")
    return obj
