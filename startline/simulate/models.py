"""Latency, clock and fault models. Every draw comes from (seed, host, call class, sequence
number), never from the order in which tasks happen to run."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import attrs

from startline.engine.scenario import ConfigError
from startline.engine.workload import derive_seed

MAX_LATENCY_MS = 3_600_000
"""A latency model's figures are at most an hour: a simulated run lasts minutes (larger figures
overflowed the virtual clock's arithmetic in every seed)."""


def rng_for(seed: int, host: str, what: str, seq: int) -> random.Random:
    return random.Random(derive_seed(seed, host, what, seq))


@attrs.define(eq=False)
class Streams:
    """One host's random streams, one per kind of draw (a call class, ``spawn``, ``wake``, an
    operation): the n-th draw of a kind follows the n−1 before it in that kind's stream. Same
    determinism as a generator seeded per (seed, host, kind, n) — which cost 5.5 µs per draw to
    seed, a twentieth of a simulated call — provided a caller takes all of one call's draws
    before it awaits anything, so that concurrent calls of a kind draw in the order of their
    sequence numbers."""

    seed: int
    host: str
    _streams: dict[str, random.Random] = attrs.field(init=False, factory=dict)

    def __call__(self, what: str) -> random.Random:
        rng = self._streams.get(what)
        if rng is None:
            rng = self._streams[what] = random.Random(derive_seed(self.seed, self.host, what))
        return rng


@attrs.frozen
class Latency:
    """One latency model; ``sample`` returns seconds.

    types: constant(ms) · uniform(lo_ms, hi_ms) · normal(mean_ms, sd_ms, clipped at lo_ms/hi_ms)
    · lognormal(p50_ms, p99_ms) · empirical(samples_ms) · mixture(components: [(weight, model)])
    """

    type: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    components: tuple[tuple[float, Latency], ...] = ()

    def sample(self, rng: random.Random) -> float:
        p = self.params
        match self.type:
            case "constant":
                ms = p["ms"]
            case "uniform":
                ms = rng.uniform(p["lo_ms"], p["hi_ms"])
            case "normal":
                ms = min(p.get("hi_ms", math.inf), max(p.get("lo_ms", 0.0), rng.gauss(p["mean_ms"], p["sd_ms"])))
            case "lognormal":
                mu = math.log(p["p50_ms"])
                sigma = (math.log(p["p99_ms"]) - mu) / 2.3263478740408408  # z of the 99th percentile
                ms = math.exp(rng.gauss(mu, sigma))
            case "empirical":
                ms = rng.choice(p["samples_ms"])
            case "mixture":
                total = sum(w for w, _ in self.components)
                x = rng.random() * total
                for w, model in self.components:
                    x -= w
                    if x <= 0:
                        return model.sample(rng)
                return self.components[-1][1].sample(rng)
            case _:
                raise ValueError(self.type)
        return max(0.0, ms) / 1000.0

    @property
    def mean_s(self) -> float:
        """The mean of ``sample`` (a normal's clipping ignored)."""
        p = self.params
        match self.type:
            case "constant":
                ms = p["ms"]
            case "uniform":
                ms = (p["lo_ms"] + p["hi_ms"]) / 2
            case "normal":
                ms = p["mean_ms"]
            case "lognormal":
                mu = math.log(p["p50_ms"])
                sigma = (math.log(p["p99_ms"]) - mu) / 2.3263478740408408
                ms = math.exp(mu + sigma * sigma / 2)
            case "empirical":
                ms = sum(p["samples_ms"]) / len(p["samples_ms"])
            case "mixture":
                total = sum(w for w, _ in self.components)
                return sum(w * m.mean_s for w, m in self.components) / total
            case _:
                raise ValueError(self.type)
        return max(0.0, ms) / 1000.0

    @property
    def worst_s(self) -> float:
        """An upper bound of ``sample`` (inf where unbounded)."""
        p = self.params
        match self.type:
            case "constant":
                return p["ms"] / 1000.0
            case "uniform":
                return p["hi_ms"] / 1000.0
            case "normal":
                return p.get("hi_ms", math.inf) / 1000.0
            case "empirical":
                return max(p["samples_ms"]) / 1000.0
            case "mixture":
                return max(m.worst_s for _, m in self.components)
        return math.inf

    @classmethod
    def parse(cls, data: Any, field: str) -> Latency:
        """From a number (constant ms) or a table ``{type = ..., ...}``."""
        if isinstance(data, int | float) and not isinstance(data, bool):
            return cls("constant", {"ms": float(data)})
        if not isinstance(data, Mapping) or "type" not in data:
            raise ConfigError(field, f"must be a number of ms or a table with a type (got {data!r})")
        type_ = data["type"]
        need = {
            "constant": {"ms"},
            "uniform": {"lo_ms", "hi_ms"},
            "normal": {"mean_ms", "sd_ms"},
            "lognormal": {"p50_ms", "p99_ms"},
            "empirical": {"samples_ms"},
            "mixture": {"components"},
        }
        if type_ not in need:
            raise ConfigError(f"{field}.type", f"must be one of {', '.join(need)} (got {type_!r})")
        missing = need[type_] - set(data)
        if missing:
            raise ConfigError(f"{field}.{sorted(missing)[0]}", "is required")
        params = {k: v for k, v in data.items() if k not in ("type", "components")}
        for k, v in params.items():
            ok = all(
                isinstance(x, int | float) and not isinstance(x, bool) and 0 <= x <= MAX_LATENCY_MS
                for x in (v if isinstance(v, list) else [v])
            )
            if not ok or (isinstance(v, list) and not v):
                raise ConfigError(
                    f"{field}.{k}",
                    f"must be a number of ms from 0 to {MAX_LATENCY_MS:,} (one hour), or a list of them (got {v!r})",
                )
        if type_ == "uniform" and params["lo_ms"] > params["hi_ms"]:
            raise ConfigError(f"{field}.hi_ms", "must be >= lo_ms")
        if type_ == "lognormal" and not 0 < params["p50_ms"] <= params["p99_ms"]:
            raise ConfigError(f"{field}.p99_ms", "must be >= p50_ms > 0")
        comps: tuple[tuple[float, Latency], ...] = ()
        if type_ == "mixture":
            items = data["components"]
            if not isinstance(items, list) or not items:
                raise ConfigError(f"{field}.components", "must be a non-empty list of {weight, model}")
            comps = tuple(
                (float(c.get("weight", 1.0)), cls.parse(c.get("model"), f"{field}.components[{i}].model"))
                for i, c in enumerate(items)
            )
        return cls(type_, params, comps)


@attrs.frozen
class Capacity:
    """A target that serves ``servers`` operations at once, each for a ``service`` time; the rest
    wait in one FIFO queue. An operation that waited ``timeout_ms`` (0: never) fails instead.
    Its ground truth: the knee at ``servers`` operations in flight, and at most
    ``servers / mean service time`` operations per second."""

    servers: int
    service: Latency
    timeout_ms: float = 0.0

    @property
    def max_qps(self) -> float:
        mean = self.service.mean_s
        return self.servers / mean if mean > 0 else math.inf

    def truth(self) -> dict[str, float]:
        mean_ms = self.service.mean_s * 1000
        return {"servers": self.servers, "max_qps": round(self.max_qps, 3), "service_mean_ms": mean_ms}

    @classmethod
    def parse(cls, data: Any) -> Capacity | None:
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ConfigError("capacity", "must be a table {servers, service, timeout_ms}")
        unknown = set(data) - {"servers", "service", "timeout_ms"}
        if unknown:
            raise ConfigError(f"capacity.{sorted(unknown)[0]}", "unknown key (known: servers, service, timeout_ms)")
        servers = data.get("servers")
        if not isinstance(servers, int) or isinstance(servers, bool) or not 1 <= servers <= 1_000_000:
            raise ConfigError("capacity.servers", f"must be an integer between 1 and 1000000 (got {servers!r})")
        if "service" not in data:
            raise ConfigError("capacity.service", "is required")
        timeout = data.get("timeout_ms", 0.0)
        if not _is_number(timeout) or timeout < 0:
            raise ConfigError("capacity.timeout_ms", f"must be a number >= 0 (got {timeout!r})")
        return cls(servers, Latency.parse(data["service"], "capacity.service"), float(timeout))


CALL_CLASSES = (
    "status_read",
    "event_read",
    "status_update",
    "event_insert",
    "heartbeat_merge",
    "results_insert",
    "server_time",
    "other",
)
"""Classes of control-plane call that carry their own latency model."""


SPAWN_PER = ("step", "connection")


def _spawn_per(value: Any) -> None:
    if value not in SPAWN_PER:
        raise ConfigError("spawn_per", f"must be one of {', '.join(SPAWN_PER)} (got {value!r})")


@attrs.frozen
class Profile:
    """Latencies per class of control-plane call and for the target, the visibility point, the clocks."""

    name: str
    control: Mapping[str, Latency]
    target: Latency
    visibility: float = 0.5  # where in a round trip a write lands / a read looks / now() is taken
    visibility_jitter: float = 0.0  # per call, visibility is uniform in ±jitter (asymmetric legs)
    clock_spread_ms: float = 0.0  # each host's offset is uniform in ±spread
    drift_ppm: float = 0.0  # each host's drift is uniform in ±drift_ppm
    error_probability: Mapping[str, float] = attrs.field(factory=dict)
    outages: tuple[tuple[float, float], ...] = ()  # [start_s, end_s) of virtual time: every call fails
    spikes: tuple[tuple[float, float, float], ...] = ()  # [start_s, end_s): every call takes extra_ms more
    crashes: Mapping[str, float] = attrs.field(factory=dict)  # host → virtual second it dies at
    orchestrator_restart_s: float = 1.0  # a crashed orchestrator's successor starts this much later
    clock_jumps: Mapping[str, tuple[float, float]] = attrs.field(factory=dict)  # host → (at_s, jump_ms)
    stale_event_reads: float = 0.0  # probability an event read comes back late (a prefix) and repeated
    broken_calls: Mapping[str, float] = attrs.field(factory=dict)  # call class → from when it always fails
    pauses: Mapping[str, tuple[float, float]] = attrs.field(factory=dict)  # host → [at_s, until_s): descheduled
    capacity: Capacity | None = None  # the target serves this many operations at once (else: each takes `target`)
    target_stalls: tuple[tuple[float, float], ...] = ()  # [start_s, end_s): the target answers nothing
    worker_start: Latency | None = None  # each worker process begins this long after its run exists
    worker_start_shared: Latency | None = None  # ... plus this, drawn once per run (a machine busy or not)
    stamp: float | None = None  # where in a write's round trip now() is taken (None: at visibility)
    commit: float | None = None  # where in a write's round trip it lands (None: at visibility)
    worker_init: Latency | None = None  # a worker's first session takes this long to open (its pool's set-up)
    spawn: Latency | None = None  # starting connection tasks costs this: per scale-up step, or per task
    spawn_per: str = attrs.field(default="step", validator=lambda _s, _a, v: _spawn_per(v))
    """``step``: one ``spawn`` for a whole scale-up (the seed's PART 7 row "Spawn worker tasks
    10–100 ms, depends on initial_target": all initial tasks); ``connection``: one per task, one
    after another (its PART 3 text's "~0.1 ms per task creation" is that reading)."""
    wake: Latency | None = None  # each sleep of a worker's start path wakes this much late
    release_wake: Latency | None = None  # a scheduled release, all workers at once, this late (else wake)
    release_queue: tuple[Latency, ...] = ()
    """A scheduled release by the order the run's workers got a core: of W workers, the one
    k/(W−1) of the way along the run's order (``release_ranks``) wakes as late as the entry
    that far along this list (the nearest). Live, 4 processes released on 2 cores: every run,
    two began 0.19–0.32 ms after the instant and two 0.52–0.83 ms — drawn each alone from the
    pooled ``release_wake``, a run has 0–4 in the lower mode. Empty: ``release_wake``."""
    notify: Latency | None = None
    """A control plane that notifies (PostgreSQL's LISTEN/NOTIFY): a change reaches a listening
    worker this long after it lands. None: the control plane cannot notify, and ``push`` runs
    as poll (as it would live on such a control plane)."""
    start_read: Latency | None = None
    """A worker's first read of RUN_STATUS that finds the run started, if its START_TIME has passed
    (the read a polling worker detects the start by; a scheduled start is read before its
    instant) and another worker had begun its first operation before the read began, takes this
    long in all (its ordinary draw only sets where in the round trip it read). Live, the workers
    that saw the start first are running their connections by then, on the cores the others'
    reads need (the first to see it read in 0.4–0.6 ms, the later ones in 2–8). Fitted by
    ``calibrate`` from the workers' own timing of that read, in the runs where another worker's
    first operation came before it."""
    connection_step: Latency | None = None
    """The connections a worker releases together issue their first operations one after
    another: the k-th along its release order comes k draws of this after the release
    (``Runtime.left_gate``; live, 4 × 2 on SQLite: a worker's second connection 0.07–0.11 ms
    after its first). Fitted by ``calibrate`` from the gaps between each worker's initial
    connections' first operations."""
    after_detect: Latency | None = None
    """A worker that found its start by a read (poll, push, inline; not a scheduled instant)
    releases its connections this long after that read, beyond its bookkeeping's calls (its
    status, its connections armed, its turn on cores other workers' load holds). Fitted by
    ``calibrate`` from each worker's first operation after its detection less its bookkeeping
    (``after_detect_ms``), in runs that spawned their connections before it."""
    monotonic_drift_ppm: float = 0.0  # each host's sleeps last (1 + uniform ±ppm) times as long
    control_loaded: Mapping[str, Latency] = attrs.field(factory=dict)
    """A worker's control-plane call of a class named here, begun once some worker's first
    operation has: its latency (else ``control``'s). Live, on one host, a round trip waits for a
    core the benchmark's load holds: 4 × 2 on SQLite under poll, a worker's start bookkeeping
    took 2.2 ms median before any load began and 3.4 ms after. Fitted by ``calibrate`` from the
    workers' round trips apart by load (``control`` then from the idle ones)."""

    def release_lateness(self, rank: float) -> Latency | None:
        """How late a worker ``rank`` of the way along a scheduled release's order (0 first, 1
        last) wakes: its ``release_queue`` entry, else ``release_wake``, else ``wake``."""
        queue = self.release_queue
        if queue:
            return queue[round(min(1.0, max(0.0, rank)) * (len(queue) - 1))]
        return self.release_wake or self.wake

    def write_points(self) -> tuple[float, float]:
        """(stamp, commit): where in a write's round trip its timestamp is taken and where it lands."""
        vis = self.visibility
        return (vis if self.stamp is None else self.stamp, vis if self.commit is None else self.commit)

    def host_drift(self, seed: int, host: str) -> float:
        """This host's monotonic clock rate error (a fraction: 1e-6 per ppm)."""
        ppm = self.monotonic_drift_ppm
        return rng_for(seed, host, "monotonic", 0).uniform(-ppm, ppm) * 1e-6 if ppm else 0.0

    def start_delay_s(self, seed: int, worker: str) -> float:
        """How long after the run exists this worker begins (a process starting, importing,
        connecting): its own ``worker_start`` plus the run's ``worker_start_shared``."""
        own = 0.0 if self.worker_start is None else self.worker_start.sample(rng_for(seed, worker, "start", 0))
        shared = self.worker_start_shared
        return own + (0.0 if shared is None else shared.sample(rng_for(seed, "run", "start", 0)))

    def stalled_until(self, now: float) -> float:
        """When a target stalled at ``now`` answers again; ``now`` if it is not stalled."""
        return max([hi for lo, hi in self.target_stalls if lo <= now < hi], default=now)

    def broken(self, call_class: str, now: float) -> bool:
        """A call kind that fails from some instant on (its table dropped or damaged)."""
        return now >= self.broken_calls.get(call_class, math.inf)

    def paused_until(self, host: str, now: float) -> float:
        """When a host descheduled at ``now`` (a paused process) runs again; ``now`` if it is not."""
        lo, hi = self.pauses.get(host, (math.inf, math.inf))
        return hi if lo <= now < hi else now

    def extra_latency_s(self, now: float) -> float:
        return sum(extra for lo, hi, extra in self.spikes if lo <= now < hi) / 1000.0

    def in_outage(self, now: float) -> bool:
        return any(lo <= now < hi for lo, hi in self.outages)

    def outage_within(self, since: float, until: float) -> bool:
        """Whether an outage overlaps [since, until]."""
        return any(lo <= until and since < hi for lo, hi in self.outages)

    def control_latency(self, call_class: str) -> Latency:
        return self.control.get(call_class) or self.control.get("other") or Latency("constant", {"ms": 0.0})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "profile") -> Profile:
        known = {
            "name",
            "control",
            "target",
            "visibility",
            "visibility_jitter",
            "clock_spread_ms",
            "drift_ppm",
            "error_probability",
            "faults",
            "capacity",
            "target_stalls",
            "worker_start",
            "worker_start_shared",
            "stamp",
            "commit",
            "worker_init",
            "spawn",
            "spawn_per",
            "wake",
            "release_wake",
            "release_queue",
            "notify",
            "start_read",
            "after_detect",
            "connection_step",
            "monotonic_drift_ppm",
            "control_loaded",
        }
        for key in data:
            if key not in known:
                raise ConfigError(key, f"unknown key (known: {', '.join(sorted(known))})")
        control, control_loaded = (_by_class(data.get(key, {}), key) for key in ("control", "control_loaded"))
        vis = data.get("visibility", 0.5)
        if not isinstance(vis, int | float) or not 0 <= vis <= 1:
            raise ConfigError("visibility", f"must be between 0 and 1 (got {vis!r})")
        jit = data.get("visibility_jitter", 0.0)
        if not isinstance(jit, int | float) or not 0 <= jit <= min(vis, 1 - vis):
            raise ConfigError(
                "visibility_jitter", f"must be between 0 and min(visibility, 1 - visibility) (got {jit!r})"
            )
        points = {k: data.get(k) for k in ("stamp", "commit")}
        for k, v in points.items():
            if v is not None and not (_is_number(v) and 0 <= v <= 1):
                raise ConfigError(k, f"must be between 0 and 1 (got {v!r})")
        stamp, commit = (vis if points[k] is None else points[k] for k in ("stamp", "commit"))
        if stamp > commit:
            raise ConfigError("stamp", f"must be <= commit: a write is stamped before it lands (got {stamp!r})")
        spawn_per = data.get("spawn_per", "step")
        drift = data.get("monotonic_drift_ppm", 0.0)
        if not _is_number(drift) or not 0 <= drift <= 1e5:
            raise ConfigError("monotonic_drift_ppm", f"must be between 0 and 100000 (got {drift!r})")

        def latency(key: str) -> Latency | None:
            return None if key not in data else Latency.parse(data[key], key)

        return cls(
            name=data.get("name", name),
            control=control,
            control_loaded=control_loaded,
            target=Latency.parse(data.get("target", 0.0), "target"),
            visibility=float(vis),
            visibility_jitter=float(jit),
            clock_spread_ms=float(data.get("clock_spread_ms", 0.0)),
            drift_ppm=float(data.get("drift_ppm", 0.0)),
            error_probability=_probabilities(data.get("error_probability", {})),
            capacity=Capacity.parse(data.get("capacity")),
            target_stalls=_stalls(data.get("target_stalls", [])),
            worker_start=latency("worker_start"),
            worker_start_shared=latency("worker_start_shared"),
            stamp=None if points["stamp"] is None else float(points["stamp"]),
            commit=None if points["commit"] is None else float(points["commit"]),
            worker_init=latency("worker_init"),
            spawn=latency("spawn"),
            spawn_per=spawn_per,
            wake=latency("wake"),
            release_wake=latency("release_wake"),
            release_queue=_queue(data.get("release_queue", {})),
            notify=latency("notify"),
            start_read=latency("start_read"),
            after_detect=latency("after_detect"),
            connection_step=latency("connection_step"),
            monotonic_drift_ppm=float(drift),
            **_faults(data.get("faults", {})),
        )


def _by_class(table: Any, key: str) -> dict[str, Latency]:
    """``control``, ``control_loaded``: a table of call class = latency."""
    if not isinstance(table, Mapping):
        raise ConfigError(key, "must be a table of call class = latency")
    for call_class in table:
        if call_class not in CALL_CLASSES:
            raise ConfigError(f"{key}.{call_class}", f"unknown call class (known: {', '.join(CALL_CLASSES)})")
    return {k: Latency.parse(v, f"{key}.{k}") for k, v in table.items()}


def _queue(table: Any) -> tuple[Latency, ...]:
    """``release_queue``: a table of latencies keyed 0, 1, … (the order along a release)."""
    if not isinstance(table, Mapping) or sorted(table, key=str) != sorted(map(str, range(len(table)))):
        raise ConfigError("release_queue", "must be a table keyed 0, 1, 2 … (each a latency)")
    return tuple(Latency.parse(table[str(k)], f"release_queue.{k}") for k in range(len(table)))


def _stalls(items: Any) -> tuple[tuple[float, float], ...]:
    ok = isinstance(items, list) and all(
        isinstance(w, list) and len(w) == 2 and all(_is_number(x) and x >= 0 for x in w) and w[0] <= w[1] for w in items
    )
    if not ok:
        raise ConfigError("target_stalls", "must be a list of [start_s, end_s]")
    return tuple((float(a), float(b)) for a, b in items)


def _probabilities(data: Any) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise ConfigError("error_probability", "must be a table of call class = probability")
    for call_class, p in data.items():
        if call_class not in CALL_CLASSES:
            raise ConfigError(
                f"error_probability.{call_class}", f"unknown call class (known: {', '.join(CALL_CLASSES)})"
            )
        if not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ConfigError(f"error_probability.{call_class}", f"must be between 0 and 1 (got {p!r})")
    return dict(data)


def _faults(data: Any) -> dict[str, Any]:
    """``[faults]``: outages = [[start_s, end_s], ...], spikes = [[start_s, end_s, extra_ms], ...],
    crashes = { HOST = at_s } (virtual seconds from the simulation's start; HOST "orchestrator"
    is replaced orchestrator_restart_s later), clock_jumps = { HOST = [at_s, jump_ms] },
    stale_event_reads = probability."""
    if not isinstance(data, Mapping):
        raise ConfigError("faults", "must be a table")
    known = {"outages", "spikes", "crashes", "orchestrator_restart_s", "clock_jumps", "stale_event_reads"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"faults.{sorted(unknown)[0]}", f"unknown key (known: {', '.join(sorted(known))})")

    def windows(key: str, width: int) -> tuple[tuple[float, ...], ...]:
        items = data.get(key, [])
        ok = isinstance(items, list) and all(
            isinstance(w, list)
            and len(w) == width
            and all(isinstance(x, int | float) and x >= 0 for x in w)
            and w[0] <= w[1]
            for w in items
        )
        if not ok:
            raise ConfigError(
                f"faults.{key}", f"must be a list of [{'start_s, end_s' + (', extra_ms' * (width == 3))}]"
            )
        return tuple(tuple(float(x) for x in w) for w in items)

    crashes = data.get("crashes", {})
    if not isinstance(crashes, Mapping) or not all(isinstance(v, int | float) and v >= 0 for v in crashes.values()):
        raise ConfigError("faults.crashes", "must be a table of host = seconds")
    jumps = data.get("clock_jumps", {})
    if not isinstance(jumps, Mapping) or not all(
        isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v) and v[0] >= 0 for v in jumps.values()
    ):
        raise ConfigError("faults.clock_jumps", "must be a table of host = [at_s, jump_ms]")
    restart = data.get("orchestrator_restart_s", 1.0)
    if not _is_number(restart) or not 0 <= restart <= 3600:
        raise ConfigError("faults.orchestrator_restart_s", f"must be between 0 and 3600 (got {restart!r})")
    stale = data.get("stale_event_reads", 0.0)
    if not _is_number(stale) or not 0 <= stale <= 1:
        raise ConfigError("faults.stale_event_reads", f"must be between 0 and 1 (got {stale!r})")
    return {
        "outages": windows("outages", 2),
        "spikes": windows("spikes", 3),
        "crashes": dict(crashes),
        "orchestrator_restart_s": float(restart),
        "clock_jumps": {h: (float(v[0]), float(v[1])) for h, v in jumps.items()},
        "stale_event_reads": float(stale),
    }


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
