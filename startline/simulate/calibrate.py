"""Fit a simulate profile to live runs (``startline calibrate RUN_DIR... --out profile.toml``).

What a run measured of itself becomes the profile's figures, each an empirical distribution
of ``QUANTILES`` evenly spaced quantiles of everything observed:

- ``control.<class>``: every control-plane round trip, timed by the workers (their results
  files) and the orchestrator (orchestrator.json), merged by the simulator's call class;
  ``control_loaded.<class>``, a worker's begun once some worker's first operation had (apart
  from ``control`` where both were seen, the loaded ones ``LOADED_MIN`` times or more);
- ``target``: the operations' service times (all kinds and phases);
- ``worker_start_shared`` and ``worker_start``: how long after its launcher each worker
  process began, as a part shared by the run's workers (their median, less the largest
  distance any worker began before its run's median) and a part of each worker's own (the
  rest): live, a run's workers begin either close together or with one far off, which draws
  of each worker's delay alone spread too evenly;
- ``wake``: how late the workers' start-path sleeps woke;
- ``release_wake``: under a scheduled start, how late each worker's first connection began
  after the release instant (all processes wake at once: on a small machine they queue for
  its cores, which a sleep of one's own does not show); ``release_queue``, the same by each
  worker's order within its run (the first to get a core, the second …);
- ``connection_step``: the gaps between a worker's initial connections' first operations;
- ``notify``: under push on a control plane that notifies (PostgreSQL), how late the start's
  notification reached each worker (its detection after START_TIME, less a status read).
- ``start_read``: a polled or pushed start, how long the read of RUN_STATUS that found it took
  where another worker's first operation had begun before that read (``start_reads``);
- ``after_detect``: a start found by a read, from that read to the worker's first operation
  less the bookkeeping's writes on the way (the simulator makes those calls itself), where its
  connections were spawned before it (``after_detect_ms``).

What no run can observe is left at the simulator's default and said so in the file: where in
a round trip the server reads its clock or a write lands (``visibility``, ``stamp``,
``commit``), and the cost of starting a task (``spawn``; microseconds on a real machine). Hosts'
clocks: one host (every worker's host witness names the same machine) shares one clock,
``clock_spread_ms = 0``; otherwise the largest estimated offset, as ±spread.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from hdrh.histogram import HdrHistogram

from startline.engine.cpu import SATURATED_SHARE
from startline.engine.files import read_worker_files
from startline.engine.metrics import add_into, decode, merge_histograms, new_histogram, to_us
from startline.engine.scenario import ConfigError
from startline.simulate.backend import CALL_CLASS_OF

QUANTILES = 200
"""Points of each fitted empirical distribution (the quantiles at (i + ½) / QUANTILES)."""
KEPT = 1000
"""A distribution fitted from at most this many observations keeps every one (its ``samples_ms``
each once, at the histogram's precision): a rare tail falls between quantile points (live, 7 of a
last place's 240 workers woke 1.9–17 ms late; as 200 points, the highest of the 240 and one more
were not among them, and the model drew a late worker 0.8 times as often as the runs had one)."""


@attrs.frozen
class Observed:
    """What one live run says about itself: its workers' results and its orchestrator's."""

    source: str
    payloads: tuple[Mapping[str, Any], ...]
    orchestrator: Mapping[str, Any] = attrs.field(factory=dict)
    summary: Mapping[str, Any] = attrs.field(factory=dict)
    """summary.json, where the run wrote one (its START_TIME: how late a push reached the workers)."""

    @classmethod
    def read(cls, run_dir: Path) -> Observed:
        """A run directory of ``startline run``: ``worker-*.json`` (each worker process's results)
        and ``orchestrator.json``."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ConfigError("RUN_DIR", f"{str(run_dir)!r} is not a directory")
        payloads = read_worker_files(run_dir)  # each a regular, readable results file, or one line why not
        if not payloads:
            raise ConfigError(
                "RUN_DIR",
                f"{str(run_dir)!r} has no worker-*.json: calibrate needs a run whose workers were processes",
            )
        orchestrator, summary = (_json_object(run_dir / name) for name in ("orchestrator.json", "summary.json"))
        return cls(str(run_dir), tuple(payloads), orchestrator, summary)


def _json_object(path: Path) -> Mapping[str, Any]:
    """A results file's object ({} where there is none), or one line why it cannot be read."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError("RUN_DIR", f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("RUN_DIR", f"{path} is not a JSON object")
    return data


def empirical(h: HdrHistogram) -> dict[str, Any]:
    """A histogram (microseconds) as an empirical latency model (milliseconds): every value it
    holds when it holds at most ``KEPT``, else its ``QUANTILES`` quantile points."""
    if 0 < h.get_total_count() <= KEPT:
        us = [v.value_iterated_to for v in h.get_recorded_iterator() for _ in range(v.count_at_value_iterated_to)]
    else:
        us = [h.get_value_at_percentile(100.0 * (i + 0.5) / QUANTILES) for i in range(QUANTILES)]
    return {"type": "empirical", "samples_ms": [round(v / 1000.0, 4) for v in us]}


def _merged(encoded: Iterable[str]) -> HdrHistogram | None:
    items = list(encoded)
    return merge_histograms(items) if items else None


LOADED_MIN = 20
"""Round trips of a class begun under load it takes to fit that class's ``control_loaded`` (fewer:
they are pooled with the idle ones in ``control``)."""


def control_latencies(runs: Sequence[Observed]) -> dict[str, HdrHistogram]:
    """Every timed round trip, workers' and orchestrators', by the simulator's call class."""
    return _pooled(*round_trips(runs))


def round_trips(runs: Sequence[Observed]) -> tuple[dict[str, HdrHistogram], dict[str, HdrHistogram]]:
    """Every timed round trip by the simulator's call class, (idle, loaded): loaded, a worker's
    begun after some worker of its run had begun its first operation (``loaded_latency_us``, and
    those of its ``start_calls`` begun after the run's earliest first operation, less the read
    that found the start: that one is ``start_read``'s); idle, the rest — the orchestrator's,
    and every round trip of a worker that did not keep them apart."""
    idle: dict[str, list[HdrHistogram]] = defaultdict(list)
    loaded: dict[str, list[HdrHistogram]] = defaultdict(list)
    for run in runs:
        began = _load_began(run)
        start_idle: dict[str, list[float]] = defaultdict(list)
        start_loaded: dict[str, list[float]] = defaultdict(list)
        for p in run.payloads:
            cp = p.get("control_plane", {})
            if "idle_latency_us" not in cp:  # (recorded before round trips were kept apart by load)
                _add(idle, cp.get("latency_us", {}))
                continue
            _add(idle, cp["idle_latency_us"])
            _add(loaded, cp.get("loaded_latency_us", {}))
            found = _start_finding_read(p)
            for k, call in enumerate(cp.get("start_calls", [])):
                match call:
                    case [str(method), int() | float() as at, int() | float() as ms]:
                        if at > began and k == found:  # ``start_read``'s, not an ordinary read
                            continue
                        (start_loaded if at > began else start_idle)[CALL_CLASS_OF.get(method, "other")].append(ms)
        _add(idle, run.orchestrator.get("control_plane", {}).get("latency_us", {}))
        for into, calls in ((idle, start_idle), (loaded, start_loaded)):
            for call_class, ms in calls.items():
                into[call_class].append(_histogram_ms(ms))
    return _each(idle), _each(loaded)


def _load_began(run: Observed) -> float:
    """When the run's earliest first operation began (on the control plane's clock; inf: none did)."""
    return min((min(fq.values()) for p in run.payloads if (fq := p.get("first_query"))), default=float("inf"))


def _start_finding_read(payload: Mapping[str, Any]) -> int | None:
    """Which of a worker's ``start_calls`` is the read of RUN_STATUS that found its start: the
    last one begun before its detection."""
    detect = (payload.get("timeline") or {}).get("detect")
    calls = payload.get("control_plane", {}).get("start_calls", [])
    if not isinstance(detect, int | float):
        return None
    found = None
    for k, call in enumerate(calls):
        match call:
            case ["read_run", int() | float() as at, _] if at < detect:
                found = k
    return found


def _add(into: dict[str, list[HdrHistogram]], latency: Mapping[str, str]) -> None:
    for method, encoded in latency.items():
        into[CALL_CLASS_OF.get(method, "other")].append(decode(encoded))


def _each(by_class: Mapping[str, Iterable[HdrHistogram]]) -> dict[str, HdrHistogram]:
    """Each class's histograms as one (a class nothing was timed in: left out)."""
    out = {}
    for call_class, items in sorted(by_class.items()):
        h = new_histogram()
        for item in items:
            add_into(h, item)
        if h.get_total_count():
            out[call_class] = h
    return out


def _pooled(idle: Mapping[str, HdrHistogram], loaded: Mapping[str, HdrHistogram]) -> dict[str, HdrHistogram]:
    """Each class's idle and loaded round trips together."""
    return _each({c: [h for part in (idle, loaded) if (h := part.get(c)) is not None] for c in {*idle, *loaded}})


def split_by_load(
    idle: Mapping[str, HdrHistogram], loaded: Mapping[str, HdrHistogram]
) -> tuple[dict[str, HdrHistogram], dict[str, HdrHistogram]]:
    """(``control``, ``control_loaded``): a class seen both idle and at least ``LOADED_MIN`` times
    loaded, apart; any other, pooled in ``control``."""
    apart = {c for c, h in loaded.items() if c in idle and h.get_total_count() >= LOADED_MIN}
    pooled = _pooled(*({c: h for c, h in part.items() if c not in apart} for part in (idle, loaded)))
    return {**pooled, **{c: idle[c] for c in apart}}, {c: loaded[c] for c in sorted(apart)}


def service_times(runs: Sequence[Observed]) -> HdrHistogram | None:
    """The operations' service times: in an open loop the ``service`` histograms (its latency
    includes the wait for a free slot), else the latency histograms."""
    items = []
    for run in runs:
        for p in run.payloads:
            metrics = p.get("metrics", {})
            table = metrics.get("service") or metrics.get("histograms", {})
            items += [enc for kinds in table.values() for enc in kinds.values()]
    return _merged(items)


def fit(runs: Sequence[Observed], name: str = "calibrated") -> dict[str, Any]:
    """A profile (as ``Profile.from_dict`` reads it) fitted to ``runs``."""
    if not runs:
        raise ConfigError("RUN_DIR", "give at least one run directory")
    profile: dict[str, Any] = {"name": name}
    control, control_loaded = split_by_load(*round_trips(runs))
    if not control:
        raise ConfigError("RUN_DIR", "these runs recorded no control-plane latencies (made before calibrate existed)")
    profile["control"] = {c: empirical(h) for c, h in sorted(control.items())}
    if control_loaded:
        profile["control_loaded"] = {c: empirical(h) for c, h in control_loaded.items()}
    target = service_times(runs)
    if target is not None:
        profile["target"] = empirical(target)
    payloads = [p for run in runs for p in run.payloads]
    processes = [p.get("process") or {} for p in payloads]
    profile |= _start_delays(runs)
    releases = [v for proc in processes if (v := proc.get("release_late_ms")) is not None]
    if releases:
        profile["release_wake"] = empirical(_histogram_ms(releases))
    steps = connection_steps(runs)
    if steps:
        profile["connection_step"] = empirical(_histogram_ms(steps))
    queue = release_queue(runs)
    if queue:
        profile["release_queue"] = {str(k): empirical(_histogram_ms(late)) for k, late in enumerate(queue)}
    after = [max(0.0, v) for proc in processes if (v := proc.get("after_detect_ms")) is not None]
    if after:
        profile["after_detect"] = empirical(_histogram_ms(after))
    wakes = _merged(enc for proc in processes if (enc := proc.get("wake_late_us")))
    if wakes is not None:
        profile["wake"] = empirical(wakes)
    notified = notifications(runs, control.get("status_read"))
    if notified is not None:
        profile["notify"] = empirical(notified)
    found = start_reads(runs)
    if found:
        profile["start_read"] = empirical(_histogram_ms(found))
    profile["clock_spread_ms"] = _clock_spread(payloads)
    return profile


def connection_steps(runs: Sequence[Observed]) -> list[float]:
    """The gaps (ms) between consecutive first operations of each worker's initial connections."""
    gaps = []
    for run in runs:
        for p in run.payloads:
            n = p.get("initial_connections") or 0
            firsts = sorted(t for s, t in (p.get("first_query") or {}).items() if int(s) < n)
            gaps += [(b - a) * 1000.0 for a, b in itertools.pairwise(firsts)]
    return gaps


def release_queue(runs: Sequence[Observed]) -> list[list[float]]:
    """The scheduled release's lateness by order: each run's workers' ``release_late_ms`` sorted,
    the k-th of W put in the place k/(W−1) of the way along as many places as the largest run has
    workers. Empty unless some run released two or more workers."""
    ordered = [
        sorted(v for p in run.payloads if (v := (p.get("process") or {}).get("release_late_ms")) is not None)
        for run in runs
    ]
    places = max((len(o) for o in ordered), default=0)
    if places < 2:
        return []
    queue: list[list[float]] = [[] for _ in range(places)]
    for late in ordered:
        for k, v in enumerate(late):
            queue[round(k / max(1, len(late) - 1) * (places - 1))].append(v)
    return queue  # (every place holds the largest run's worker at it)


def _detections(runs: Sequence[Observed]) -> Iterator[tuple[float, Mapping[str, Any]]]:
    """Each worker's detection after its run's START_TIME (ms; negative: before it), with its
    results payload, for the runs and workers that recorded both."""
    for run in runs:
        start = run.summary.get("start_time")
        if not isinstance(start, int | float):
            continue
        for p in run.payloads:
            detect = (p.get("timeline") or {}).get("detect")
            if isinstance(detect, int | float):
                yield (detect - start) * 1000.0, p


def notifications(runs: Sequence[Observed], status_read: HdrHistogram | None) -> HdrHistogram | None:
    """How late a pushed start reached each worker: in runs whose workers detected it by push,
    each worker's detection after START_TIME (the write the notification follows), less the
    read of RUN_STATUS the worker makes after it (the median status read)."""
    read_ms = status_read.get_value_at_percentile(50) / 1000.0 if status_read is not None else 0.0
    late = [
        max(0.0, after_ms - read_ms)
        for after_ms, p in _detections(runs)
        if (p.get("process") or {}).get("detection") == "push"
    ]
    return _histogram_ms(late) if late else None


def start_reads(runs: Sequence[Observed]) -> list[float]:
    """How long each read of RUN_STATUS that found the run started took (ms), where the worker
    read it after START_TIME (a polled or pushed start; a scheduled start is read before its
    instant, an ordinary read) and another worker of its run had begun its first operation
    before the read began (the read waited for cores that worker's load held; the first to see
    the start read as any status read)."""
    found = []
    for run in runs:
        load_began = _load_began(run)  # (another worker's: the reader's own connections wait for it)
        for after_ms, p in _detections([run]):
            read_ms = (p.get("process") or {}).get("detect_read_ms")
            if after_ms < 0 or not isinstance(read_ms, int | float):
                continue
            if load_began < p["timeline"]["detect"] - read_ms / 1000.0:
                found.append(read_ms)
    return found


NOT_FITTED_WHY = {
    "target": "no operation succeeded",
    "worker_start_shared": "no worker was launched as a process (start delays unknown)",
    "worker_start": "no worker was launched as a process (start delays unknown)",
    "release_wake": "no run used the scheduled start (no release instant)",
    "release_queue": "no run released two or more workers at a scheduled start",
    "connection_step": "no worker began two or more connections",
    "control_loaded": (
        f"no call class was timed both before any worker's load began and {LOADED_MIN}+ times after"
        " (workers that keep their round trips apart by load)"
    ),
    "after_detect": "no worker found its start by a read with its connections spawned before (poll, push)",
    "wake": "no start-path sleep was timed",
    "notify": "no worker detected a start by push (a PostgreSQL control plane and strategy push)",
    "start_read": (
        "no worker timed the read that found its run started after START_TIME while another worker's"
        " load ran (poll, push, inline-poll; two or more workers)"
    ),
}


def not_fitted(profile: Mapping[str, Any]) -> dict[str, str]:
    """The figures ``fit`` could not fit from its runs, and why: the simulator's defaults stand."""
    return {k: why for k, why in NOT_FITTED_WHY.items() if k not in profile}


def saturation(run: Observed) -> str | None:
    """Why ``run``'s workers were short of CPU, or None: a worker above ``SATURATED_SHARE`` of a
    core over an interval, or a host whose workers together used more than that share of its
    cores. A saturated run's round trips and wakes include the wait for a core: a profile fitted
    from it predicts what a loaded machine does (a start hundreds of milliseconds apart where an
    unloaded run measures tens)."""
    hosts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for p in run.payloads:
        cpu, host = p.get("cpu") or {}, p.get("host") or {}
        if (share := cpu.get("share_max") or 0.0) > SATURATED_SHARE:
            return f"worker {p.get('worker_id')} used {share:.0%} of a core"
        if host.get("cores"):
            used = hosts[host.get("name") or "?"]
            used[0] += cpu.get("share_mean") or 0.0
            used[1] = host["cores"]
    for name, (used, n) in sorted(hosts.items()):
        if used > SATURATED_SHARE * n:
            return f"its workers on {name} used {used:.2f} of its {n:g} cores"
    return None


def _start_delays(runs: Sequence[Observed]) -> dict[str, Any]:
    """Each worker's start delay as the run's shared part plus its own (see the module's doc)."""
    per_run = [
        [d for p in run.payloads if (d := (p.get("process") or {}).get("start_delay_ms")) is not None] for run in runs
    ]
    per_run = [delays for delays in per_run if delays]
    if not per_run:
        return {}
    medians = [statistics.median(delays) for delays in per_run]
    early = max(m - d for m, delays in zip(medians, per_run, strict=True) for d in delays)
    own = [d - m + early for m, delays in zip(medians, per_run, strict=True) for d in delays]
    return {
        "worker_start_shared": empirical(_histogram_ms(max(0.0, m - early) for m in medians)),
        "worker_start": empirical(_histogram_ms(own)),
    }


def _histogram_ms(values: Iterable[float]) -> HdrHistogram:
    h = new_histogram()
    for v in values:
        h.record_value(to_us(v / 1000.0))
    return h


def _clock_spread(payloads: Sequence[Mapping[str, Any]]) -> float:
    hosts = {(p.get("host") or {}).get("name") for p in payloads}
    if len(hosts) == 1 and None not in hosts:
        return 0.0  # one machine, one clock
    offsets = [abs(o) for p in payloads if (o := p.get("clock_offset_ms")) is not None]
    return round(max(offsets, default=0.0), 3)


HEADER = """\
# Fitted by `startline calibrate` from {n} run(s): {sources}
# Each latency: {q} evenly spaced quantiles of every observed round trip, in ms.
# Not observable from a run, left at the simulator's defaults: visibility (0.5), stamp and
# commit (at visibility), spawn (no cost), monotonic_drift_ppm (0).
"""


NESTED = ("control", "control_loaded", "release_queue")
"""Profile keys whose value is a table of latencies (each written as its own TOML table)."""


def to_toml(profile: Mapping[str, Any], sources: Sequence[str]) -> str:
    """The profile as TOML: its top-level figures, then one table per latency with its samples
    wrapped ten to a line. (Written here rather than with tomli-w, which puts each of an array's
    items on its own line: 2,000 lines for one profile.)"""
    lines = [HEADER.format(n=len(sources), sources=", ".join(sources), q=QUANTILES).rstrip("\n")]
    tables = {k: v for k, v in profile.items() if isinstance(v, Mapping)}
    lines += [f"{k} = {_value(v)}" for k, v in profile.items() if k not in tables]
    for key, table in tables.items():
        models = table.items() if key in NESTED else [(None, table)]
        for sub, model in models:
            lines += ["", f"[{key}.{sub}]" if sub else f"[{key}]"]
            for k, v in model.items():
                if isinstance(v, list):
                    rows = [", ".join(_value(x) for x in v[i : i + 10]) for i in range(0, len(v), 10)]
                    lines += [f"{k} = [", *(f"    {row}," for row in rows), "]"]
                else:
                    lines.append(f"{k} = {_value(v)}")
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    return json.dumps(v)  # a string, a number: TOML and JSON write them alike
