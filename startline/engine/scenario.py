"""What a benchmark run is: the ``Scenario`` and its parts, loaded from TOML and validated.

Every field is checked where it is declared; a bad value raises ``ConfigError``
naming the dotted field (``start.lead_ms``) and the value, in one line.
"""

from __future__ import annotations

import copy
import enum
import math
import re
import stat
import tomllib
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from startline.engine.model import Scope
from startline.engine.thresholds import Threshold, ThresholdError
from startline.engine.thresholds import parse as parse_thresholds

MAX_RATE_PER_WORKER = 1_000_000
"""An open loop's rate per worker process at most: one Trio loop issues well under a million
operations a second, and a schedule further ahead than that only piles up a backlog."""


class ConfigError(ValueError):
    """A scenario or argument that cannot be used; ``field`` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _thresholds(scenario: Any, table: Any) -> None:
    """Every threshold readable, and each ``kind`` one of the scenario's operations."""
    try:
        items = parse_thresholds(table)
    except ThresholdError as exc:
        raise ConfigError(exc.field, exc.message) from None
    kinds = {op.name for op in scenario.operations}
    for t in items:
        if t.kind is not None and t.kind not in kinds:
            raise ConfigError(
                f'thresholds."{t.key}"', f"no operation is named {t.kind!r} (known: {', '.join(sorted(kinds))})"
            )


class _FieldError(ValueError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def _check(pred: Callable[[Any], bool], what: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    def validate(_inst: Any, attr: attrs.Attribute, value: Any) -> None:
        if not pred(value):
            raise _FieldError(attr.name, f"{what} (got {value!r})")

    return validate


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


_number = _check(_is_number, "must be a number")
_int = _check(_is_int, "must be an integer")
_str = _check(lambda x: isinstance(x, str) and x != "", "must be a non-empty string")
_bool = _check(lambda x: isinstance(x, bool), "must be true or false")
_MAX_SECONDS = 7 * 24 * 3600.0
_MAX_COUNT = 1_000_000
MAX_SCENARIO_BYTES = 1 << 20
"""A scenario file is a regular file of at most 1 MiB."""
NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A scenario's ``name`` (it makes run ids, file names and query tags): letters, digits, ``_.-``."""
_name = _check(
    lambda x: isinstance(x, str) and NAME_CHARS.fullmatch(x) is not None,
    "must be 1 to 64 letters, digits, '_', '.' or '-'",
)
_scalar_values = _check(
    lambda v: (
        v is None
        or (isinstance(v, tuple) and all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in v))
    ),
    "must be an array of strings or numbers",
)


def _num(lo: float, hi: float, *, lo_open: bool = False) -> list[Callable[..., None]]:
    sign = ">" if lo_open else ">="
    return [
        _number,
        _check(lambda x: (x > lo if lo_open else x >= lo) and x <= hi, f"must be {sign} {lo:g} and <= {hi:g}"),
    ]


def _count(lo: int, hi: int = _MAX_COUNT) -> list[Callable[..., None]]:
    return [_int, _check(lambda x: lo <= x <= hi, f"must be between {lo} and {hi}")]


def _one_of(kind: type[enum.Enum]) -> Callable[..., None]:
    names = [m.value for m in kind]  # type: ignore[attr-defined]
    return _check(lambda x: isinstance(x, kind), f"must be one of {', '.join(names)}")


def _to(kind: type[enum.Enum]) -> Callable[[Any], Any]:
    """Converter: a member of ``kind`` from its value (an alias warns); anything else is left
    for the ``_one_of`` validator to refuse, naming the field."""

    def convert(value: Any) -> Any:
        if value is None or isinstance(value, kind):
            return value
        try:
            return kind(value)
        except ValueError:
            return value

    return convert


def deprecated(old: str, new: str) -> None:
    """One note per use of an old name that still works for one release."""
    warnings.warn(f"{old!r} is deprecated and will be removed in startline 0.3: use {new!r}", FutureWarning, 2)


class Strategy(enum.StrEnum):
    """How workers learn that the run started (see docs/architecture.md)."""

    INLINE_POLL = "inline-poll"
    """One loop polls RUN_STATUS every 200 ms, with the events and a heartbeat inline once a second;
    after the start a sequential heartbeat and results insert, then the connections: the original design's loop."""
    POLL = "poll"
    PUSH = "push"
    SCHEDULED = "scheduled"

    @classmethod
    def _missing_(cls, value: object) -> Strategy | None:
        if value == "seed-legacy":
            deprecated("seed-legacy", cls.INLINE_POLL.value)
            return cls.INLINE_POLL
        return None


class Bookkeeping(enum.StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    DEFERRED = "deferred"


class OnWorkerLoss(enum.StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"


SCHEDULED_MARGIN_MS = 100.0
"""Under ``scheduled``, an explicit poll interval needs ``lead_ms`` >= poll + this (a round trip)."""


@attrs.frozen
class StartOptions:
    """How workers learn that the run started and how fast they get going: what the TOML says.
    An option left unset (None) takes the strategy's default, which ``engine.startplan.StartPlan``
    derives (the one place that says what a strategy means). ``lead_ms`` (3000) must exceed the
    poll interval plus the round trips: an explicit poll interval under ``scheduled`` needs
    ``lead_ms >= poll_interval_ms + 100``."""

    strategy: Strategy = attrs.field(default=Strategy.SCHEDULED, converter=_to(Strategy), validator=_one_of(Strategy))
    poll_interval_ms: float | None = attrs.field(default=None, validator=attrs.validators.optional(_num(1, 3_600_000)))
    jitter_ms: float = attrs.field(default=0.0, validator=_num(0, 3_600_000))
    bookkeeping: Bookkeeping | None = attrs.field(
        default=None, converter=_to(Bookkeeping), validator=attrs.validators.optional(_one_of(Bookkeeping))
    )
    prespawn: bool | None = attrs.field(default=None, validator=attrs.validators.optional(_bool))
    lead_ms: float = attrs.field(default=3000.0, validator=_num(0, 3_600_000, lo_open=True))
    offset_samples: int = attrs.field(default=8, validator=_count(1, 1000))
    spin_ms: float = attrs.field(default=0.0, validator=_num(0, 1000))
    """``scheduled``: spin (yielding) the last ``spin_ms`` before the start instant instead of
    sleeping, since an OS timer wakes a process late. Helps where cores are idle; hurts when
    worker processes outnumber cores (they spin against each other)."""
    yield_after_release: bool = attrs.field(default=True, validator=_bool)
    """``scheduled``: once its connections have issued their first operations, a worker process
    offers its core to a process waiting for one (``sched_yield``: nothing happens when none
    waits), so the workers still queued at the instant begin sooner."""


class ParamType(enum.StrEnum):
    INT = "int"
    CHOICE = "choice"
    SEQUENCE = "sequence"
    ZIPF = "zipf"
    HOTSPOT = "hotspot"
    WEIGHTED = "weighted"
    SAMPLE = "sample"
    SCRAMBLED_ZIPF = "scrambled_zipf"
    NURAND = "nurand"
    LATEST = "latest"
    STRING = "string"
    CONNECTION = "connection"


ZIPF_MAX_KEYS = 1_000_000
"""A zipf parameter's range up to which its cumulative weights are a table (8 bytes a key, each
draw exact); beyond, YCSB's generator draws it (``engine.distributions.zipfian``)."""
SAMPLE_MAX = 1_000_000


def _unit(lo_open: bool = True) -> Callable[..., None]:
    def check(_self: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        ok = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (0 < value < 1 if lo_open else 0 <= value <= 1)
        )
        if not ok:
            raise _FieldError(attribute.name, f"must be a fraction strictly between 0 and 1 (got {value!r})")

    return check


@attrs.frozen
class ParamSpec:
    """A parameter generator, every draw from the connection's seeded stream:

    - ``int``: uniform in [min, max]; ``choice``: uniform over ``values``; ``sequence``: start,
      start + step, … (each connection slot in its own block);
    - ``zipf``: an integer in [min, max], rank k (min is rank 1) drawn with weight 1 / k^s (``s``
      1 unless given); over more than ``ZIPF_MAX_KEYS`` keys by YCSB's zipfian generator;
    - ``scrambled_zipf``: YCSB's scrambled zipfian in [min, max] (``s`` 0.99 unless given): hot
      keys spread over the range by a hash, as YCSB's core workloads draw them;
    - ``nurand``: TPC-C's NURand(``a``, min, max) with run constant ``c`` (0 unless given);
    - ``latest``: YCSB's skewed-latest: the newest key of the ``sequence`` parameter it
      ``follows`` (``"operation.param"``) the most frequent, older ones by zipfian rank (``s``
      0.99 unless given), over keys from ``min`` (before the first insert, the newest is its
      ``start`` − 1);
    - ``string``: ``length`` printable characters (YCSB's random field values);
    - ``connection``: min + the connection's place in the run modulo the range, the same every
      draw: each connection its own value (TPC-C's home warehouse of a terminal);
    - ``hotspot``: an integer in [min, max]; with probability ``hot_share`` from the hot set, the
      first ``hot_fraction`` of the range, else from the rest (uniform within each);
    - ``weighted``: one of ``values`` with the matching ``weights``;
    - ``sample``: values read from the target at setup (``sql``, the first column, at most
      ``size`` distinct values, in the order the query returns them), stored with the run so
      every worker walks the same pool: connection c of C starts at c × ⌊size / C⌋ and steps by
      one, so no two connections take the same value in the same step of a pass.

    ``hashed``: an integer drawn is replaced by YCSB's ``fnvhash64`` of it (its ``insertorder =
    hashed`` key names, ``"user" || :key``).
    """

    type: ParamType = attrs.field(converter=_to(ParamType), validator=_one_of(ParamType))
    min: int | None = attrs.field(default=None, validator=attrs.validators.optional(_int))
    max: int | None = attrs.field(default=None, validator=attrs.validators.optional(_int))
    values: tuple[Any, ...] | None = attrs.field(
        default=None,
        converter=lambda x: None if x is None else tuple(x) if isinstance(x, list | tuple) else x,
        validator=_scalar_values,
    )
    start: int = attrs.field(default=1, validator=_int)
    step: int = attrs.field(default=1, validator=_int)
    s: float | None = attrs.field(default=None, validator=attrs.validators.optional(_num(0, 10, lo_open=True)))
    a: int | None = attrs.field(default=None, validator=attrs.validators.optional(_int))
    c: int = attrs.field(default=0, validator=_int)
    hot_fraction: float | None = attrs.field(default=None, validator=_unit())
    hot_share: float | None = attrs.field(default=None, validator=_unit(lo_open=False))
    weights: tuple[float, ...] | None = attrs.field(
        default=None, converter=lambda x: tuple(x) if isinstance(x, list | tuple) else x
    )
    sql: str | None = attrs.field(default=None, validator=attrs.validators.optional(_str))
    size: int = attrs.field(default=5000, validator=_count(1, SAMPLE_MAX))
    follows: str | None = attrs.field(default=None, validator=attrs.validators.optional(_str))
    length: int = attrs.field(default=100, validator=_count(0, 1_000_000))
    hashed: bool = attrs.field(default=False, validator=_bool)

    def __attrs_post_init__(self) -> None:
        if self.type in _RANGED:
            if self.min is None or self.max is None:
                raise _FieldError("min" if self.min is None else "max", f"{self.type} parameters need min and max")
            if self.min > self.max:
                raise _FieldError("max", f"must be >= min (got {self.max} < {self.min})")
        if self.type is ParamType.NURAND and (self.a is None or self.a < 0):
            raise _FieldError("a", f"nurand parameters need a >= 0 (TPC-C's A; got {self.a!r})")
        if self.type is ParamType.HOTSPOT:
            for name in ("hot_fraction", "hot_share"):
                if getattr(self, name) is None:
                    raise _FieldError(name, "hotspot parameters need hot_fraction and hot_share")
        if self.type in (ParamType.CHOICE, ParamType.WEIGHTED) and (
            not isinstance(self.values, tuple) or not self.values
        ):
            raise _FieldError("values", f"{self.type} parameters need a non-empty list (got {self.values!r})")
        if self.type is ParamType.WEIGHTED:
            w = self.weights
            if not isinstance(w, tuple) or len(w) != len(self.values or ()):
                raise _FieldError("weights", "weighted parameters need one weight per value")
            if any(not isinstance(x, int | float) or isinstance(x, bool) or x < 0 for x in w) or not sum(w) > 0:
                raise _FieldError("weights", f"must be numbers >= 0, not all 0 (got {list(w)!r})")
        if self.type is ParamType.SAMPLE and not self.sql:
            raise _FieldError("sql", "sample parameters need the query whose first column holds the values")
        if self.type is ParamType.LATEST:
            if self.min is None:
                raise _FieldError("min", "latest parameters need min (the oldest key)")
            if not (isinstance(self.follows, str) and self.follows.count(".") == 1):
                raise _FieldError("follows", "latest parameters follow a sequence: 'operation.param'")
        if self.hashed and self.type not in _INTEGERS:
            raise _FieldError("hashed", f"hashes an integer draw (not a {self.type} parameter's)")


_RANGED = (
    ParamType.INT,
    ParamType.ZIPF,
    ParamType.HOTSPOT,
    ParamType.SCRAMBLED_ZIPF,
    ParamType.NURAND,
    ParamType.CONNECTION,
)
_INTEGERS = frozenset(
    {
        ParamType.INT,
        ParamType.SEQUENCE,
        ParamType.ZIPF,
        ParamType.HOTSPOT,
        ParamType.SCRAMBLED_ZIPF,
        ParamType.NURAND,
        ParamType.LATEST,
        ParamType.CONNECTION,
    }
)


def _names(value: Any) -> tuple[str, ...]:
    return tuple(value) if isinstance(value, list | tuple) else value


@attrs.frozen
class Step:
    """One statement of a SQL transaction; ``into`` names its first row's columns, in order, for
    the steps after it to bind (``:name``)."""

    sql: str = attrs.field(validator=_str)
    into: tuple[str, ...] = attrs.field(default=(), converter=_names)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.into, tuple) or not all(isinstance(n, str) and n.isidentifier() for n in self.into):
            raise _FieldError("into", f"must be a list of names (got {self.into!r})")


def _steps(value: Any) -> tuple[Step, ...]:
    """Steps, as given (``Step``) or as tables (library use: ``{"sql": ..., "into": [...]}``)."""
    return tuple(Step(**x) if isinstance(x, Mapping) else x for x in value)


@attrs.frozen
class OperationSpec:
    """One kind of operation in the mix: SQL text, a SQL transaction of steps, or an async callable.

    ``call`` is ``"module:function"`` (importable by every worker process) or,
    for library users running in one process, the async callable itself. On the memory target
    it is awaited with its parameters as keywords; on a SQL target as ``op(session, params)``,
    ``session`` the connection's (``backends.sqlsession.SqlSession``).
    """

    name: str = attrs.field(validator=_str)
    weight: float = attrs.field(default=1.0, validator=_num(0, 1e12, lo_open=True))
    sql: str | None = attrs.field(default=None, validator=attrs.validators.optional(_str))
    call: Any = None
    params: Mapping[str, ParamSpec] = attrs.field(factory=dict)
    prepare: bool = attrs.field(default=False, validator=_bool)
    """Prepare the statement once per session and send only its parameters after (pgbench's
    ``-M prepared``); the default binds them client-side into the text (PgBouncer-safe)."""
    transaction: tuple[Step, ...] = attrs.field(default=(), converter=_steps)
    """Steps run in one transaction (BEGIN … COMMIT, ROLLBACK on an error)."""
    timeout_ms: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_num(0, 3_600_000, lo_open=True))
    )
    """An operation still running after this long is cancelled (on the server too) and counted
    as an error of category ``timeout``."""
    think_time_ms: float | None = attrs.field(default=None, validator=attrs.validators.optional(_num(0, 3_600_000)))
    """The closed loop's pause after this operation (the scenario's ``think_time_ms`` when not given)."""
    max_tries: int = attrs.field(default=1, validator=_count(1, 1000))
    """Tries of an operation whose error is a ``conflict`` (a serialization failure, a deadlock),
    with the same parameters, before its error counts (pgbench's ``--max-tries``): 1, none again."""

    def __attrs_post_init__(self) -> None:
        if (self.sql is not None) + (self.call is not None) + bool(self.transaction) != 1:
            raise _FieldError("sql", "give exactly one of sql, transaction or call")
        if self.call is not None and not (callable(self.call) or (isinstance(self.call, str) and ":" in self.call)):
            raise _FieldError("call", f"must be 'module:function' or an async callable (got {self.call!r})")
        if self.prepare and self.sql is None:
            raise _FieldError("prepare", "prepares a sql operation's statement (not a transaction's, nor a call's)")


@attrs.frozen
class ScaleStep:
    """A planned ``SET_CONNECTIONS``: ``connections`` per worker from ``at_s`` seconds after
    START_TIME, ramped over ``ramp_s``."""

    at_s: float = attrs.field(validator=_num(0, _MAX_SECONDS))
    connections: int = attrs.field(validator=_count(0, 100_000))
    scope: Scope = attrs.field(default=Scope.RUN, converter=_to(Scope), validator=_one_of(Scope))
    scope_id: str | None = attrs.field(default=None, validator=attrs.validators.optional(_str))
    ramp_s: float = attrs.field(default=0.0, validator=_num(0, _MAX_SECONDS))

    def __attrs_post_init__(self) -> None:
        if self.scope is not Scope.RUN and self.scope_id is None:
            raise _FieldError("scope_id", f"scope {self.scope} needs a scope_id")


class LoadMode(enum.StrEnum):
    """How load is driven (see docs/load.md)."""

    CONCURRENCY = "concurrency"
    """A fixed closed loop: ``connections_per_worker`` connections, changed only by ``schedule``."""
    RATE = "rate"
    """An open loop: operations start on a schedule (``rate``, ``stages``), whatever the target does."""
    QPS = "qps"
    """A controller adds and removes connections to hold ``target_qps``."""
    FIND_MAX = "find_max"
    """Step the concurrency (or the offered rate) until the target degrades."""


class Arrival(enum.StrEnum):
    UNIFORM = "uniform"
    POISSON = "poisson"


class FindMaxOver(enum.StrEnum):
    CONCURRENCY = "concurrency"
    RATE = "rate"


@attrs.frozen
class RateStage:
    """Ramp the run-wide rate linearly to ``rate`` over ``duration_s`` (k6's ramping-arrival-rate)."""

    duration_s: float = attrs.field(validator=_num(0, _MAX_SECONDS, lo_open=True))
    rate: float = attrs.field(validator=_num(0, 1e9))


@attrs.frozen
class Slo:
    """Latency limits a find-max step must keep (response time, all kinds merged), in ms."""

    p95_ms: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_num(0, 3_600_000, lo_open=True))
    )
    p99_ms: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_num(0, 3_600_000, lo_open=True))
    )


@attrs.frozen
class FindMax:
    """``[load.find_max]``: step the level (run-wide connections, or offered ops/s when ``over =
    "rate"``) from ``start`` by ``step`` every ``step_s`` until a step is unstable, then bisect
    between the last stable and the first unstable level ``max_refinements`` times."""

    start: float = attrs.field(default=5, validator=_num(0, 1e9, lo_open=True))
    step: float = attrs.field(default=10, validator=_num(0, 1e9, lo_open=True))
    step_s: float = attrs.field(default=30.0, validator=_num(0, _MAX_SECONDS, lo_open=True))
    settle_s: float | None = attrs.field(default=None, validator=attrs.validators.optional(_num(0, _MAX_SECONDS)))
    """Excluded from the step's figures; default min(5, step_s / 3)."""
    max_error_rate: float = attrs.field(default=0.01, validator=_num(0, 1))
    qps_stability_pct: float = attrs.field(default=5.0, validator=_num(0, 100))
    latency_stability_pct: float = attrs.field(default=20.0, validator=_num(0, 1e6))
    slo: Slo = attrs.field(factory=Slo)
    max_refinements: int = attrs.field(default=2, validator=_count(0, 20))
    over: FindMaxOver = attrs.field(
        default=FindMaxOver.CONCURRENCY, converter=_to(FindMaxOver), validator=_one_of(FindMaxOver)
    )

    def __attrs_post_init__(self) -> None:
        if self.settle_s is not None and self.settle_s >= self.step_s:
            raise _FieldError("settle_s", f"must be < step_s (got {self.settle_s:g} >= {self.step_s:g})")

    @property
    def settle(self) -> float:
        return self.settle_s if self.settle_s is not None else min(5.0, self.step_s / 3)


@attrs.frozen
class LoadOptions:
    """``[load]``: the load mode and its settings; each mode reads only its own keys.

    Counts of connections here (``starting_connections``, ``min_connections``,
    ``max_connections``, ``find_max.start``/``step``) and rates (``rate``, ``stages``) are
    run-wide; they are split across the workers. ``max_in_flight`` is per worker.
    """

    mode: LoadMode = attrs.field(default=LoadMode.CONCURRENCY, converter=_to(LoadMode), validator=_one_of(LoadMode))
    # rate
    rate: float = attrs.field(default=0.0, validator=_num(0, 1e9))
    arrival: Arrival = attrs.field(default=Arrival.UNIFORM, converter=_to(Arrival), validator=_one_of(Arrival))
    stages: tuple[RateStage, ...] = attrs.field(factory=tuple, converter=tuple)
    max_in_flight: int | None = attrs.field(default=None, validator=attrs.validators.optional(_count(1, 100_000)))
    """Per worker; default ``connections_per_worker`` (no growth)."""
    max_lag_ms: float = attrs.field(default=0.0, validator=_num(0, 3_600_000))
    latency_limit_ms: float = attrs.field(default=0.0, validator=_num(0, 3_600_000))
    # qps
    target_qps: float = attrs.field(default=0.0, validator=_num(0, 1e9))
    control_interval_s: float = attrs.field(default=10.0, validator=_num(0, 3600, lo_open=True))
    starting_connections: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_count(1, 1_000_000))
    )
    max_step_up: int = attrs.field(default=15, validator=_count(1, 1_000_000))
    max_step_down: int = attrs.field(default=8, validator=_count(1, 1_000_000))
    min_connections: int | None = attrs.field(default=None, validator=attrs.validators.optional(_count(1, 1_000_000)))
    """Run-wide; default one per worker."""
    max_connections: int = attrs.field(default=10_000, validator=_count(1, 1_000_000))
    bounds_patience: int = attrs.field(default=3, validator=_count(1, 1000))
    # find_max
    find_max: FindMax = attrs.field(factory=FindMax)

    @property
    def open_loop(self) -> bool:
        """Operations start on a schedule (rate mode, or find-max over the rate)."""
        return self.mode is LoadMode.RATE or (self.mode is LoadMode.FIND_MAX and self.find_max.over is FindMaxOver.RATE)

    @property
    def controlled(self) -> bool:
        """The orchestrator decides the level as the run goes, from the intervals it reads."""
        return self.mode in (LoadMode.QPS, LoadMode.FIND_MAX)


_NESTED: dict[Any, Any] = {}
_RENAMED: dict[tuple[type, str], str] = {}
"""Old key → its new name, accepted (with a deprecation note) for one release."""


@attrs.frozen
class Checks:
    """What a completed run must show in MEASUREMENT to pass (exit 0); failing one is exit 1."""

    max_error_rate: float = attrs.field(default=0.01, validator=_num(0, 1))
    """Errors / (operations + errors) at most this."""
    min_operations: int = attrs.field(default=1, validator=_count(0, 2**62))
    """At least this many successful operations."""
    stop_after_failing_s: float = attrs.field(default=10.0, validator=_num(0, _MAX_SECONDS))
    """Stop the run once every attempt of one operation kind has failed for this long (0: never):
    a run that cannot succeed says so in seconds, with the first error, instead of running on."""


@attrs.frozen
class Cost:
    """What the target's use costs (``startline enrich`` prices a Snowflake run's credits)."""

    per_credit: float | None = attrs.field(default=None, validator=attrs.validators.optional(_num(0, 1e9)))
    """Price of one credit, in ``currency`` (none: credits are counted, not priced)."""
    currency: str = attrs.field(default="USD", validator=_str)


@attrs.frozen
class Scenario:
    """A benchmark run: timing, workers, the start strategy, the workload and a scaling schedule.

    ``connections_per_worker`` is each worker's initial target; ``schedule``
    changes it during the run. ``operations_per_connection`` 0 means unlimited.
    """

    operations: tuple[OperationSpec, ...] = attrs.field(
        converter=tuple, validator=_check(lambda x: len(x) >= 1, "needs at least one operation")
    )
    workload: Mapping[str, Any] | None = attrs.field(default=None, converter=lambda x: None if x is None else dict(x))
    """A built-in workload (``name`` and its options; ``engine.standard``) whose operations these are."""
    name: str = attrs.field(default="scenario", validator=_name)
    seed: int = attrs.field(default=0, validator=_count(0, 2**63 - 1))
    workers: int = attrs.field(default=1, validator=_count(1, 10_000))
    connections_per_worker: int = attrs.field(default=1, validator=_count(0, 100_000))
    warmup_s: float = attrs.field(default=0.0, validator=_num(0, _MAX_SECONDS))
    measurement_s: float = attrs.field(default=10.0, validator=_num(0, _MAX_SECONDS, lo_open=True))
    cooldown_s: float = attrs.field(default=0.0, validator=_num(0, _MAX_SECONDS))
    think_time_ms: float = attrs.field(default=0.0, validator=_num(0, 3_600_000))
    operations_per_connection: int = attrs.field(default=0, validator=_count(0, 2**62))
    heartbeat_s: float = attrs.field(default=1.0, validator=_num(0.01, 3600))
    stale_after_beats: int = attrs.field(default=3, validator=_count(1, 10_000))
    dead_after_beats: int = attrs.field(default=6, validator=_count(1, 10_000))
    on_worker_loss: OnWorkerLoss = attrs.field(
        default=OnWorkerLoss.CONTINUE, converter=_to(OnWorkerLoss), validator=_one_of(OnWorkerLoss)
    )
    ready_timeout_s: float = attrs.field(default=60.0, validator=_num(0, _MAX_SECONDS, lo_open=True))
    start_timeout_s: float = attrs.field(default=120.0, validator=_num(0, _MAX_SECONDS, lo_open=True))
    drain_timeout_s: float = attrs.field(default=5.0, validator=_num(0, 3600))
    run_idle_timeout_s: float = attrs.field(default=30.0, validator=_num(0, _MAX_SECONDS, lo_open=True))
    control_timeout_s: float = attrs.field(default=10.0, validator=_num(0, 3600, lo_open=True))
    retry_base_ms: float = attrs.field(default=100.0, validator=_num(0, 600_000, lo_open=True))
    retry_cap_ms: float = attrs.field(default=2000.0, validator=_num(0, 600_000, lo_open=True))
    outage_tolerance_s: float = attrs.field(default=20.0, validator=_num(0, _MAX_SECONDS))
    snapshot_interval_s: float = attrs.field(default=1.0, validator=_num(0, 3600, lo_open=True))
    flush_interval_s: float = attrs.field(default=5.0, validator=_num(0, 3600, lo_open=True))
    interval_latency: bool = attrs.field(default=True, validator=_bool)
    """Latency percentiles per kind for every snapshot interval (intervals.csv, the report); the
    simulator turns it off unless a load mode or a windowed threshold needs it (its cost there)."""
    server_stats: bool = attrs.field(default=True, validator=_bool)
    """A target that can (PostgreSQL) has its server's own statistics read over the run by the
    orchestrator (the summary's ``server`` block, intervals.csv's server columns)."""
    start: StartOptions = attrs.field(factory=StartOptions)
    schedule: tuple[ScaleStep, ...] = attrs.field(factory=tuple, converter=tuple)
    checks: Checks = attrs.field(factory=Checks)
    thresholds: Mapping[str, Any] = attrs.field(factory=dict, validator=lambda s, _a, v: _thresholds(s, v))
    """``[thresholds]`` as written (k6-shaped; see ``engine.thresholds``): read by ``threshold_list``."""
    load: LoadOptions = attrs.field(factory=LoadOptions)
    cost: Cost = attrs.field(factory=Cost)
    control: str = attrs.field(default="memory://", validator=_str)
    target: str = attrs.field(default="memory://", validator=_str)
    setup: tuple[str, ...] = attrs.field(
        factory=tuple,
        converter=lambda v: tuple(v) if isinstance(v, list | tuple) else v,
        validator=_check(
            lambda v: isinstance(v, tuple) and all(isinstance(x, str) and x for x in v),
            "must be an array of SQL statements (strings)",
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.dead_after_beats <= self.stale_after_beats:
            raise _FieldError(
                "dead_after_beats",
                f"must be > stale_after_beats (got {self.dead_after_beats} <= {self.stale_after_beats})",
            )
        if self.retry_cap_ms < self.retry_base_ms:
            raise _FieldError(
                "retry_cap_ms", f"must be >= retry_base_ms (got {self.retry_cap_ms:g} < {self.retry_base_ms:g})"
            )
        length = self.length_s
        for i, step in enumerate(self.schedule):
            if step.at_s >= length:
                raise _FieldError(f"schedule[{i}].at_s", f"must be within the run's {length:g} s (got {step.at_s:g})")
        st = self.start
        if st.strategy is Strategy.SCHEDULED and st.poll_interval_ms is not None:
            need = st.poll_interval_ms + SCHEDULED_MARGIN_MS
            if st.lead_ms < need:
                raise _FieldError(
                    "start.lead_ms",
                    f"must be >= poll_interval_ms + {SCHEDULED_MARGIN_MS:g} ms = {need:g} under a scheduled start "
                    f"(got {st.lead_ms:g}): a worker must see the start before its instant",
                )
        self._check_load()
        names = [op.name for op in self.operations]
        for name in names:
            if names.count(name) > 1:
                raise _FieldError("operations", f"operation name {name!r} is used twice")
        self._check_follows()

    @property
    def think_times_s(self) -> list[float]:
        """Each operation's think time in seconds (its own ``think_time_ms``, else the scenario's)."""
        return [
            (self.think_time_ms if op.think_time_ms is None else op.think_time_ms) / 1000.0 for op in self.operations
        ]

    @property
    def param_specs(self) -> dict[tuple[str, str], ParamSpec]:
        """Every operation's parameters by (operation name, parameter name)."""
        return {(op.name, name): spec for op in self.operations for name, spec in op.params.items()}

    def _check_follows(self) -> None:
        """A ``latest`` parameter follows a ``sequence`` of step 1 that the scenario has."""
        specs = self.param_specs
        for i, op in enumerate(self.operations):
            for name, spec in op.params.items():
                if spec.type is not ParamType.LATEST:
                    continue
                op_name, _, param = (spec.follows or "").partition(".")
                found = specs.get((op_name, param))
                if found is None or found.type is not ParamType.SEQUENCE or found.step != 1:
                    raise _FieldError(
                        f"operations[{i}].params.{name}.follows",
                        f"must name a sequence parameter with step 1 as 'operation.param' (got {spec.follows!r})",
                    )

    def _check_load(self) -> None:
        load = self.load
        if load.mode is not LoadMode.CONCURRENCY and self.schedule:
            raise _FieldError(
                "schedule", f'is for load.mode = "concurrency" (load.mode is {load.mode!r}: it sets the level)'
            )
        if load.mode is LoadMode.RATE and load.rate == 0 and not any(st.rate > 0 for st in load.stages):
            raise _FieldError("load.rate", "must be > 0 (or give stages with a rate) in rate mode")
        if load.open_loop and self.think_time_ms > 0:
            raise _FieldError("think_time_ms", "is for closed loops: in an open loop the schedule paces the operations")
        for i, op in enumerate(self.operations):
            if load.open_loop and op.think_time_ms:
                raise _FieldError(
                    f"operations[{i}].think_time_ms",
                    "is for closed loops: in an open loop the schedule paces the operations",
                )
        if load.open_loop and self.connections_per_worker < 1:
            raise _FieldError(
                "connections_per_worker", "must be >= 1 in an open loop (the sessions opened before the start)"
            )
        if load.max_in_flight is not None and load.max_in_flight < self.connections_per_worker:
            raise _FieldError(
                "load.max_in_flight",
                f"must be >= connections_per_worker (got {load.max_in_flight} < {self.connections_per_worker})",
            )
        if load.mode is LoadMode.RATE:
            for key, rate in (
                ("load.rate", load.rate),
                *((f"load.stages[{i}].rate", st.rate) for i, st in enumerate(load.stages)),
            ):
                if rate / self.workers > MAX_RATE_PER_WORKER:
                    raise _FieldError(
                        key,
                        f"{rate:g} ops/s over {self.workers} workers is more than one worker can schedule "
                        f"({MAX_RATE_PER_WORKER:,} ops/s each): use more workers",
                    )
        if load.mode is LoadMode.QPS and load.target_qps <= 0:
            raise _FieldError("load.target_qps", "must be > 0 in qps mode")
        if load.min_connections is not None and load.min_connections > load.max_connections:
            raise _FieldError(
                "load.min_connections",
                f"must be <= max_connections (got {load.min_connections} > {load.max_connections})",
            )
        if load.mode is LoadMode.QPS and load.control_interval_s < 2 * self.snapshot_interval_s:
            raise _FieldError(
                "load.control_interval_s",
                f"must be >= 2 x snapshot_interval_s = {2 * self.snapshot_interval_s:g} "
                f"(got {load.control_interval_s:g})",
            )
        fm = load.find_max
        if load.mode is LoadMode.FIND_MAX and fm.step_s - fm.settle < self.snapshot_interval_s:
            raise _FieldError(
                "load.find_max.step_s",
                f"must leave at least one snapshot interval ({self.snapshot_interval_s:g} s) after settle_s "
                f"(got step_s {fm.step_s:g}, settle {fm.settle:g})",
            )

    @property
    def threshold_list(self) -> tuple[Threshold, ...]:
        """The ``[thresholds]``, each read (they were checked when the scenario was made)."""
        return parse_thresholds(self.thresholds)

    @property
    def interval_thresholds(self) -> bool:
        """A threshold judged per window or live: workers ship a latency histogram per interval."""
        return bool(self.abort_thresholds) or any(t.window_s is not None for t in self.threshold_list)

    @property
    def interval_histograms(self) -> bool:
        """Workers record into a histogram per interval and kind, shipped with their snapshots."""
        return self.interval_latency or self.load.controlled or self.load.open_loop or self.interval_thresholds

    @property
    def ship_interval_s(self) -> float:
        """How often a worker ships its closed snapshot intervals: each as it closes when the
        orchestrator steers on them (qps, find-max, ``abort_on_fail`` thresholds), else every
        ``flush_interval_s``."""
        if self.load.controlled or self.abort_thresholds:
            return self.snapshot_interval_s
        return max(self.flush_interval_s, self.snapshot_interval_s)

    @property
    def measurement_intervals(self) -> range:
        """The snapshot intervals (counted from START_TIME) that MEASUREMENT covers."""
        iv = self.snapshot_interval_s
        return range(round(self.warmup_s / iv), math.ceil((self.warmup_s + self.measurement_s) / iv - 1e-9))

    @property
    def abort_thresholds(self) -> tuple[Threshold, ...]:
        """The thresholds the orchestrator judges live (``abort_on_fail``)."""
        return tuple(t for t in self.threshold_list if t.abort_on_fail)

    @property
    def max_in_flight(self) -> int:
        """Connections a worker may run in an open loop."""
        return self.load.max_in_flight or self.connections_per_worker

    def check_scopes(self, worker_ids: Collection[str], groups: Collection[str]) -> None:
        """Every WORKER / WORKER_GROUP step names a worker or group that is in the run."""
        for i, step in enumerate(self.schedule):
            known = {Scope.WORKER: worker_ids, Scope.WORKER_GROUP: groups}.get(step.scope)
            if known is not None and step.scope_id not in known:
                shown = ", ".join(sorted(known)[:5]) + (", …" if len(known) > 5 else "")
                raise ConfigError(
                    f"schedule[{i}].scope_id", f"no worker has {step.scope} {step.scope_id!r} (there are: {shown})"
                )

    @property
    def length_s(self) -> float:
        """The planned run: warmup, measurement and cooldown, from START_TIME."""
        return self.warmup_s + self.measurement_s + self.cooldown_s

    @property
    def total_connections(self) -> int:
        return self.workers * self.connections_per_worker

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
        """Load and validate a scenario file, ``overrides`` (dotted keys → values) set over it;
        every problem is a ``ConfigError``."""
        p = Path(path)
        try:
            info = p.stat()  # before opening: a FIFO or a device would block or never end
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError("", f"scenario file {p} is not a regular file")
            if info.st_size > MAX_SCENARIO_BYTES:
                raise ConfigError("", f"scenario file {p} is {info.st_size:,} bytes (at most {MAX_SCENARIO_BYTES:,})")
            with open(p, "rb") as f:
                raw = f.read(MAX_SCENARIO_BYTES + 1)
            if len(raw) > MAX_SCENARIO_BYTES:
                raise ConfigError("", f"scenario file {p} is over {MAX_SCENARIO_BYTES:,} bytes")
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise ConfigError("", f"scenario file not found: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"cannot read scenario file {p}: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("", f"{p} is not valid TOML: {exc}") from None
        except RecursionError:
            raise ConfigError("", f"{p} nests arrays or tables too deeply") from None
        return cls.from_dict(with_overrides(data, overrides or {}))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        from startline.engine.standard import WorkloadError, expand  # (a [workload] table: its operations)

        try:
            data = expand(data)
        except WorkloadError as exc:
            raise ConfigError(exc.field, exc.message) from None
        return _build(cls, data, "")

    @property
    def undrawn_samples(self) -> tuple[tuple[str, str, ParamSpec], ...]:
        """(operation, parameter, spec) of every ``sample`` parameter whose values are not drawn yet."""
        return tuple(
            (op.name, name, spec)
            for op in self.operations
            for name, spec in op.params.items()
            if spec.type is ParamType.SAMPLE and spec.values is None
        )

    def sample_values(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """(operation, parameter) → the drawn values of every ``sample`` parameter that has them."""
        return {
            (op.name, name): spec.values
            for op in self.operations
            for name, spec in op.params.items()
            if spec.type is ParamType.SAMPLE and spec.values is not None
        }

    def with_samples(self, samples: Mapping[tuple[str, str], Sequence[Any]]) -> Scenario:
        """The scenario with the ``sample`` values of (operation, parameter) filled in."""
        operations = tuple(
            attrs.evolve(
                op,
                params={
                    name: attrs.evolve(spec, values=tuple(samples[(op.name, name)]))
                    if (op.name, name) in samples
                    else spec
                    for name, spec in op.params.items()
                },
            )
            for op in self.operations
        )
        return attrs.evolve(self, operations=operations)

    def to_dict(self) -> dict[str, Any]:
        """A TOML/JSON-able form that ``from_dict`` reads back (callables become their names)."""

        def plain(value: Any) -> Any:
            if attrs.has(type(value)):
                return {
                    f.name: plain(getattr(value, f.name))
                    for f in attrs.fields(type(value))
                    if getattr(value, f.name) is not None
                }
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, Mapping):
                return {k: plain(x) for k, x in value.items()}
            if isinstance(value, tuple | list):
                return [plain(x) for x in value]
            if callable(value):
                return f"{value.__module__}:{value.__qualname__}"
            return value

        return plain(self)


_NESTED.update(
    {
        (Scenario, "start"): StartOptions,
        (Scenario, "checks"): Checks,
        (Scenario, "load"): LoadOptions,
        (Scenario, "cost"): Cost,
        (LoadOptions, "stages"): [RateStage],
        (LoadOptions, "find_max"): FindMax,
        (FindMax, "slo"): Slo,
        (Scenario, "operations"): [OperationSpec],
        (Scenario, "schedule"): [ScaleStep],
        (OperationSpec, "params"): {ParamSpec},
        (OperationSpec, "transaction"): [Step],
    }
)
_RENAMED[(ScaleStep, "target")] = "connections"  # a connection count; `target` is the system under test


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A scenario table with each dotted key of ``overrides`` set (``load.rate`` sets ``rate`` in
    the ``[load]`` table, made if missing); a key through something that is not a table is a
    ``ConfigError`` naming it. ``data`` is not changed."""
    out = copy.deepcopy(dict(data))
    for key, value in overrides.items():
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(key, "is not a scenario key (dotted names: load.rate)")
        table = out
        for n, part in enumerate(parts[:-1]):
            inner = table.setdefault(part, {})
            if not isinstance(inner, dict):
                raise ConfigError(".".join(parts[: n + 1]), f"is {inner!r}, not a table: cannot set {key}")
            table = inner
        table[parts[-1]] = value
    return out


def _build(cls: type, data: Any, path: str) -> Any:
    """Build ``cls`` from a TOML table, naming the dotted field of the first problem."""
    if not isinstance(data, Mapping):
        raise ConfigError(path or "scenario", f"must be a table (got {data!r})")
    names = {f.name for f in attrs.fields(cls)}
    renamed = {old: new for (owner, old), new in _RENAMED.items() if owner is cls and old in data}
    if renamed:
        data = dict(data)
        for old, new in renamed.items():
            if new in data:
                raise ConfigError(_join(path, old), f"is the old name of {new}: give one of them")
            deprecated(_join(path, old), _join(path, new))
            data[new] = data.pop(old)
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, key), f"unknown key (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        nested = _NESTED.get((cls, key))
        where = _join(path, key)
        if isinstance(nested, list):
            if not isinstance(value, list):
                raise ConfigError(where, f"must be an array of tables (got {value!r})")
            value = [
                x if isinstance(x, nested[0]) else _build(nested[0], x, _join(where, i)) for i, x in enumerate(value)
            ]
        elif isinstance(nested, set):
            (inner,) = nested
            if not isinstance(value, Mapping):
                raise ConfigError(where, f"must be a table (got {value!r})")
            value = {k: x if isinstance(x, inner) else _build(inner, x, _join(where, k)) for k, x in value.items()}
        elif nested is not None and not isinstance(value, nested):
            value = _build(nested, value, where)
        kwargs[key] = value
    required = [f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING and f.name not in kwargs]
    if required:
        raise ConfigError(_join(path, required[0]), "is required")
    try:
        return cls(**kwargs)
    except _FieldError as exc:
        raise ConfigError(_join(path, exc.name), exc.message) from None
