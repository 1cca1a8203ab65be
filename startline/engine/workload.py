"""The closed-loop workload: a weighted mix, parameter generators, deterministic draws."""

from __future__ import annotations

import array
import bisect
import functools
import hashlib
import importlib
import inspect
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from startline.engine.distributions import YCSB_THETA, fnv64, latest, nurand, printable, scrambled_zipfian, zipfian
from startline.engine.scenario import ZIPF_MAX_KEYS, ConfigError, OperationSpec, ParamSpec, ParamType

SEQUENCE_BLOCK = 1_000_000_000
"""A connection beyond the planned ones (added by a load mode) draws ``sequence`` values from its
own block of this size, far above the planned connections' shared sequence."""


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from any parts (never Python's salted ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class NothingDrawn(random.Random):
    """The generator of draws a connection never makes (one operation: no mix to draw; no
    parameters: none to draw) — one for the process, where a seeded ``random.Random`` would
    hold 2.5 KB of state per connection. Drawing from it is a bug, and says so."""

    def random(self) -> float:
        raise AssertionError("drew from a generator of draws that are never made")

    def getrandbits(self, k: int) -> int:
        raise AssertionError("drew from a generator of draws that are never made")


NOTHING_DRAWN = NothingDrawn(0)


def draws(needed: bool, *parts: object) -> random.Random:
    """The seeded generator of ``parts`` (``derive_seed``) when its draws are ``needed``, else
    ``NOTHING_DRAWN``: which of them a run makes does not depend on it."""
    return random.Random(derive_seed(*parts)) if needed else NOTHING_DRAWN


T = TypeVar("T")


@attrs.frozen
class Mix:
    """A weighted choice of operations; ``choose`` is one uniform draw and a bisect."""

    operations: tuple[OperationSpec, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, operations: tuple[OperationSpec, ...]) -> Mix:
        # floats (exact: weights are at most 1e12): a float draw times a float bound and compared
        # with floats takes the interpreter's float fast path, not int-to-float conversions
        return cls(operations, tuple(itertools.accumulate(float(op.weight) for op in operations)))

    def choose(self, rng: random.Random) -> OperationSpec:
        i = bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.operations[min(i, len(self.operations) - 1)]

    def picks(self, rng: random.Random, n: int, items: Sequence[T]) -> list[T]:
        """The next ``n`` choices ``choose`` would make from ``rng``, each as the item of ``items``
        (one per operation, in their order) at the chosen operation's place: a connection draws
        its mix so, ahead, a list at a time."""
        total, uniform = self.cumulative[-1], rng.random
        if len(items) == 2:  # bisect_right's answer for two, in one comparison: the first below the split
            first, second = items
            split = self.cumulative[0]
            return [first if uniform() * total < split else second for _ in range(n)]
        bounds = (*self.cumulative[:-1], math.inf)  # choose's min(i, last): bisect never runs off the end
        bisect_right = bisect.bisect_right
        return [items[bisect_right(bounds, uniform() * total)] for _ in range(n)]


@attrs.define(eq=False)
class ParamSource:
    """Draws an operation's parameters for one connection slot.

    ``position`` is the connection's place among the run's ``connections`` (worker index ×
    connections per worker + slot): where it starts walking a ``sample`` parameter's values, and
    its stripe of a ``sequence``: the planned connections share one sequence, connection p of C
    taking start + (n·C + p)·step at its n-th draw, so together they fill it without gaps while
    they go at one pace (YCSB's insert key sequence). ``planned`` is false for a connection a
    load mode added beyond them: it draws from its own block instead."""

    rng: random.Random
    slot: int
    position: int = 0
    connections: int = 1
    planned: bool = True
    specs: Mapping[tuple[str, str], ParamSpec] = attrs.Factory(dict)
    """Every operation's parameters by (operation, name): what a ``latest`` parameter follows."""
    _counters: dict[tuple[str, str], int] = attrs.Factory(dict)

    def draw(self, op: OperationSpec) -> dict[str, Any]:
        return {name: self._one(op.name, name, spec) for name, spec in op.params.items()}

    def _one(self, op_name: str, name: str, spec: ParamSpec) -> Any:
        if spec.hashed:
            return fnv64(self._value(op_name, name, spec))
        return self._value(op_name, name, spec)

    def newest(self, follows: str) -> int:
        """The run's newest value of the sequence ``follows`` names, as far as this connection
        can tell without asking: every planned connection has drawn as many as it has."""
        op_name, _, name = follows.partition(".")
        spec = self.specs[(op_name, name)]
        return spec.start + self._counters.get((op_name, name), 0) * self.connections - 1

    def _value(self, op_name: str, name: str, spec: ParamSpec) -> Any:
        t = spec.type
        if t is ParamType.INT:
            return self.rng.randint(spec.min, spec.max)  # type: ignore[arg-type]
        if t is ParamType.CHOICE:
            return self.rng.choice(spec.values)  # type: ignore[arg-type]
        if t is ParamType.ZIPF:
            n = spec.max - spec.min + 1  # type: ignore[operator]
            if n > ZIPF_MAX_KEYS:
                return spec.min + zipfian(n, spec.s or 1.0).rank(self.rng.random())  # type: ignore[operator]
            table = zipf_table(n, spec.s or 1.0)
            return spec.min + bisect.bisect_right(table, self.rng.random() * table[-1])  # type: ignore[operator]
        if t is ParamType.SCRAMBLED_ZIPF:
            return scrambled_zipfian(self.rng.random(), spec.min, spec.max, spec.s or YCSB_THETA)  # type: ignore[arg-type]
        if t is ParamType.NURAND:
            return nurand(self.rng, spec.a, spec.min, spec.max, spec.c)  # type: ignore[arg-type]
        if t is ParamType.HOTSPOT:
            return hotspot(self.rng, spec.min, spec.max, spec.hot_fraction, spec.hot_share)  # type: ignore[arg-type]
        if t is ParamType.WEIGHTED:
            table = weights_table(spec.weights)  # type: ignore[arg-type]
            return spec.values[bisect.bisect_right(table, self.rng.random() * table[-1])]  # type: ignore[index]
        if t is ParamType.CONNECTION:
            return spec.min + self.position % (spec.max - spec.min + 1)  # type: ignore[operator]
        if t is ParamType.STRING:
            return printable(self.rng, spec.length)
        if t is ParamType.LATEST:
            top = self.newest(spec.follows)  # type: ignore[arg-type]
            return latest(self.rng.random(), spec.min, top, spec.s or YCSB_THETA)  # type: ignore[arg-type]
        n = self._counters.get((op_name, name), 0)
        self._counters[(op_name, name)] = n + 1
        if t is ParamType.SAMPLE:
            pool = spec.values
            if not pool:
                raise ConfigError(f"{op_name}.params.{name}", "its samples were not drawn (no target setup ran)")
            return pool[walk(self.position, self.connections, len(pool), n)]
        if self.planned:
            return spec.start + (n * self.connections + self.position) * spec.step
        return spec.start + ((self.slot + 1) * SEQUENCE_BLOCK + n) * spec.step


def walk(position: int, connections: int, size: int, step: int) -> int:
    """Where connection ``position`` of ``connections`` is in ``size`` samples at its ``step``:
    it starts at position × ⌊size / connections⌋ and moves by one, so within a pass (``step`` <
    ⌊size / connections⌋) no two connections take the same index at the same step."""
    stride = max(1, size // max(1, connections))
    return (position * stride + step) % size


@functools.lru_cache(maxsize=32)
def zipf_table(n: int, s: float) -> array.array:
    """Cumulative weights 1/k^s for ranks 1..n (one table per process and (n, s))."""
    return array.array("d", itertools.accumulate(k**-s for k in range(1, n + 1)))


@functools.lru_cache(maxsize=256)
def weights_table(weights: tuple[float, ...]) -> tuple[float, ...]:
    """Cumulative weights, with a zero weight never chosen (bisect_right skips its empty span)."""
    return tuple(itertools.accumulate(weights))


def hotspot(rng: random.Random, lo: int, hi: int, hot_fraction: float, hot_share: float) -> int:
    """The first ``hot_fraction`` of [lo, hi] (at least one key) takes ``hot_share`` of the draws."""
    n = hi - lo + 1
    hot = min(n, max(1, round(n * hot_fraction)))
    if hot == n or rng.random() < hot_share:
        return lo + rng.randrange(hot)
    return lo + hot + rng.randrange(n - hot)


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


def sample_values(rows: Any, size: int) -> list[Any]:
    """A ``sample`` parameter's values from a query's rows: the first column's first ``size`` distinct values,
    in the order the query returned them, as JSON values (a whole Decimal as int, others as float;
    anything else not a number or a string as its text)."""
    import decimal

    seen: dict[Any, None] = {}
    for row in rows:
        value = row[0]
        if isinstance(value, decimal.Decimal):
            value = int(value) if value == value.to_integral_value() else float(value)
        elif isinstance(value, bool) or (value is not None and not isinstance(value, str | int | float)):
            value = str(value)  # (samples are strings and numbers only)
        if value is None or value in seen:
            continue
        seen[value] = None
        if len(seen) >= size:
            break
    return list(seen)


async def draw_samples(target: Any, scenario: Any) -> Any:
    """The scenario with every ``sample`` parameter's values drawn from ``target`` (its ``sample(sql, size)``):
    once, at setup, so that every worker walks the same pool. An empty pool is a config error."""
    samples = {}
    for op_name, name, spec in scenario.undrawn_samples:
        field = f"operations.{op_name}.params.{name}"
        if not target.traits.sampling:
            raise ConfigError(field, "sample parameters need a SQL target to draw the pool from")
        try:
            values = await target.sample(spec.sql, spec.size)
        except Exception as exc:
            raise ConfigError(field, f"the target refused its sql: {type(exc).__name__}: {exc}") from exc
        if not values:
            raise ConfigError(field, f"its sql returned no value to sample ({spec.sql!r})")
        samples[(op_name, name)] = values
    return scenario.with_samples(samples) if samples else scenario
