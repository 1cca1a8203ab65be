"""HDR histograms: merged exactly, percentiles within HDR precision of the union's."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from startline.engine.connection import Tally
from startline.engine.metrics import (
    HIGHEST_US,
    MESSAGE_CHARS,
    MESSAGES_KEPT,
    PERCENTILES,
    Recorder,
    add_into,
    bucket_index,
    cleared,
    decode,
    error_message,
    fold_counts,
    latency_block,
    merge_failures,
    merge_histograms,
    merge_phase_blocks,
    new_histogram,
)
from startline.engine.model import Phase
from startline.engine.scenario import OperationSpec
from startline.engine.schedule import PhaseWindows
from startline.engine.summary import merge_timeseries

Q = (OperationSpec("q", call="x:y"),)
WINDOWS = PhaseWindows(start=0.0, measure=10.0, cooldown=1000.0, end=1000.0)
"""WARMUP [0, 10), MEASUREMENT [10, 1000)."""


def tally(recorder: Recorder | None = None) -> Tally:
    """What a connection records with: the hot loop's own recording path."""
    return Tally(recorder or Recorder(), Q, WINDOWS)


latencies = st.lists(st.integers(1, 10_000_000), min_size=0, max_size=200)


@given(parts=st.lists(latencies, min_size=1, max_size=8), p=st.sampled_from([50, 90, 95, 99, 99.9, 100]))
def test_merged_percentiles_equal_those_of_the_union_within_hdr_precision(parts, p):
    recorders = []
    for part in parts:
        r = Recorder()
        t = tally(r)
        for us in part:
            t.ok(0, 10.0, 10.0 + us / 1e6)
        t.close()
        recorders.append(r)
    union = [us for part in parts for us in part]
    merged = merge_phase_blocks([r.to_payload() for r in recorders], {"MEASUREMENT": 1.0})
    if not union:
        assert merged["MEASUREMENT"]["ops"] == 0
        return
    # Exact: the merge equals one histogram fed every sample.
    single = new_histogram()
    for us in union:
        single.record_value(us)
    encs = [r.to_payload()["histograms"]["MEASUREMENT"]["q"] for r in recorders if r.histograms]
    m = merge_histograms(encs)
    assert m.get_total_count() == len(union)
    assert m.get_value_at_percentile(p) == single.get_value_at_percentile(p)
    # Within HDR precision (3 significant digits) of the exact percentile of the union, by
    # HDR's own rank rule (the rounded rank, not the ceiling of nearest-rank).
    ordered = sorted(union)
    exact = ordered[min(len(ordered), max(1, int(p / 100 * len(ordered) + 0.5))) - 1]
    got = merged["MEASUREMENT"]["latency_ms"]
    key = {50: "p50", 90: "p90", 95: "p95", 99: "p99", 99.9: "p999", 100: "max"}[p]
    assert abs(got[key] * 1000 - exact) <= exact * 1e-3 + 1
    assert merged["MEASUREMENT"]["ops"] == len(union)


def test_errors_are_counted_by_phase_and_category():
    r = Recorder()
    t = tally(r)
    t.failed(0, 10.0, 10.5, "Timeout")
    t.failed(0, 11.0, 11.5, "Timeout")
    t.failed(0, 9.0, 9.5, "Refused")
    t.close()
    merged = merge_phase_blocks([r.to_payload(), r.to_payload()], {"MEASUREMENT": 2.0, "WARMUP": 1.0})
    assert merged["MEASUREMENT"]["errors"] == 4
    assert merged["MEASUREMENT"]["errors_by_category"] == {"Timeout": 4}
    assert merged["WARMUP"]["errors_by_category"] == {"Refused": 2}


def test_error_messages_are_kept_per_operation_and_category_with_counts_and_first_and_last_seen():
    r = Recorder()
    for k in range(MESSAGES_KEPT + 3):
        r.add_error(Phase.MEASUREMENT, "database", "read", f"no such table: t{k}", at=float(k))
    r.add_error(Phase.MEASUREMENT, "database", "read", "no such table: t0", at=50.0)
    r.add_error(Phase.WARMUP, "timeout", "write", "slow", at=1.5)
    (read, write) = r.to_payload(lambda t: t + 1000.0)["failures"]
    assert (read["operation"], read["category"], read["count"]) == ("read", "database", MESSAGES_KEPT + 4)
    assert (read["first_seen"], read["last_seen"]) == (1000.0, 1050.0)
    assert len(read["messages"]) == MESSAGES_KEPT  # distinct ones past the limit are counted, not kept
    assert read["messages"][0] == {"message": "no such table: t0", "count": 2}
    assert write["count"] == 1 and write["messages"] == [{"message": "slow", "count": 1}]
    merged = merge_failures([r.to_payload(), r.to_payload()])
    assert [(m["operation"], m["count"], m["workers"]) for m in merged] == [
        ("read", 2 * (MESSAGES_KEPT + 4), 2),
        ("write", 2, 2),
    ]
    assert merged[0]["messages"][0] == {"message": "no such table: t0", "count": 4}


def test_an_error_message_is_one_line_named_by_its_type_and_cut():
    assert error_message(ValueError("a\n  b")) == "ValueError: a b"
    assert error_message(KeyError()) == "KeyError"
    assert len(error_message(RuntimeError("x" * 10_000))) == MESSAGE_CHARS


def test_interval_counts_are_taken_once():
    r = Recorder()
    t = tally(r)
    for i in (0, 0, 1, 2):
        t.ok(0, i + 0.5, i + 0.501)
    t.close()
    z = {"errors": 0, "connections": 0}
    assert r.take_intervals(2) == [{"interval": 0, "ops": 2} | z, {"interval": 1, "ops": 1} | z]
    assert r.take_intervals(2) == []
    assert r.take_intervals(math.inf) == [{"interval": 2, "ops": 1} | z]


def test_every_interval_is_taken_zeros_included_with_the_most_connections_running_in_it():
    r = Recorder()
    r.note_connections(0, 4)
    r.add_interval(0, 10, 0)
    r.note_connections(2, 8)  # scaled up in interval 2, down in 3
    r.note_connections(3, 2)
    r.add_interval(5, 3, 1)
    got = r.take_intervals(6)
    assert [(x["interval"], x["ops"], x["connections"]) for x in got] == [
        (0, 10, 4),
        (1, 0, 4),
        (2, 0, 8),
        (3, 0, 8),
        (4, 0, 2),
        (5, 3, 2),
    ]
    r.add_interval(1, 5, 0)  # held by a connection until now: late, counted, no second connection count
    assert r.take_intervals(6) == [{"interval": 1, "ops": 5, "errors": 0}]


def test_the_time_series_has_every_interval_up_to_the_last_reported_and_counts_a_retried_append_once():
    snaps = [
        ("w0", {"n": 1, "intervals": [{"interval": 0, "ops": 5, "errors": 0, "connections": 2}]}),
        ("w0", {"n": 1, "intervals": [{"interval": 0, "ops": 5, "errors": 0, "connections": 2}]}),
        ("w1", {"n": 1, "intervals": [{"interval": 3, "ops": 1, "errors": 1, "connections": 1}]}),
    ]
    series = merge_timeseries(snaps, 0.5)
    assert [(x["t_s"], x["ops"], x["errors"], x["connections"]) for x in series] == [
        (0.0, 5, 0, 2),
        (0.5, 0, 0, 0),
        (1.0, 0, 0, 0),
        (1.5, 1, 1, 1),
    ]


def test_an_operation_counts_in_measurement_only_if_it_began_and_ended_inside_it():
    r = Recorder()
    t = tally(r)
    t.ok(0, 9.9, 10.1)  # straddles the start of MEASUREMENT: WARMUP
    t.ok(0, 10.0, 10.2)  # wholly inside: MEASUREMENT
    t.ok(0, 999.9, 1000.1)  # straddles its end: after it (DONE here, no COOLDOWN)
    counts = {phase: h.get_total_count() for (_, phase), h in r.histograms.items()}
    assert counts == {Phase.WARMUP: 1, Phase.MEASUREMENT: 1, Phase.DONE: 1}
    assert r.operations() == 3


def test_an_offset_error_bar_holds_rtt_resolution_and_the_spread_of_good_samples() -> None:
    from startline.engine.clocksync import best_offset

    # (wall send, trio send, server, trio receive, wall receive): RTTs 2, 3 and 10 ms
    samples = [(0.0, 0.0, 0.0011, 0.002, 0.002), (1.0, 1.0, 1.0019, 1.003, 1.003), (2.0, 2.0, 2.009, 2.010, 2.010)]
    est = best_offset(samples, resolution_s=0.001)
    assert est.rtt_s == pytest.approx(0.002)
    # offsets of the good samples (RTT <= 4 ms): 0.1 ms and 0.4 ms → spread 0.15 ms; the 10 ms one is left out
    assert est.spread_s == pytest.approx(0.00015)
    assert est.uncertainty_s == pytest.approx(0.001 + 0.001 + 0.00015)


def test_the_skew_error_bar_is_the_two_largest_worker_uncertainties_and_zero_for_one_worker() -> None:
    from startline.engine.summary import start_block

    def worker(firsts: dict[str, float], u: float) -> dict:
        return {"initial_connections": len(firsts), "first_query": firsts, "clock_uncertainty_ms": u}

    a, b, c = worker({"0": 10.001, "1": 10.004}, 0.2), worker({"0": 10.002}, 0.5), worker({"0": 10.003}, 0.7)
    block = start_block(10.0, [a, b, c])
    assert block["skew_ms"] == pytest.approx(3.0)
    # a's connections bound the measured skew, but b's and c's true instants may lie beyond them
    assert block["skew_uncertainty_ms"] == pytest.approx(0.5 + 0.7)
    assert block["lag_uncertainty_ms"] == 0.7
    tied = start_block(10.0, [worker({"0": 10.001}, 0.2), worker({"0": 10.001}, 0.3)])
    assert tied["skew_ms"] == 0.0 and tied["skew_uncertainty_ms"] == pytest.approx(0.5)  # a 0 bounds nothing
    assert start_block(10.0, [a])["skew_uncertainty_ms"] == 0.0  # one worker, one clock map
    assert block["witnesses"] == {}  # no host clock read (virtual time, or an older worker)


Q2 = (OperationSpec("a", call="x:y"), OperationSpec("b", call="x:y"))
samples = st.lists(
    st.tuples(st.integers(0, 1), st.floats(10.0, 15.99), st.integers(1, 5_000_000)), min_size=0, max_size=120
)


@given(workers=st.lists(samples, min_size=1, max_size=4))
def test_each_intervals_merged_histogram_per_kind_equals_the_union_of_its_samples_and_folds_into_the_run(workers):
    """Workers record each operation once, into its interval's histogram of its kind; the merge
    over workers of interval k, kind q is exactly the histogram of every sample of (k, q), and
    the run's histogram per kind (results) is the union over all intervals."""
    from startline.engine.summary import interval_kinds

    snapshots, payloads = [], []
    for w, ops in enumerate(workers):
        r = Recorder(interval_latency=True)
        t = Tally(r, Q2, WINDOWS)
        for kind, ended, us in sorted(ops, key=lambda o: o[1]):
            t.ok(kind, ended - us / 1e6 if ended - us / 1e6 >= 10.0 else 10.0, ended)
            if ended > 13.0 and not snapshots:  # a mid-run flush: intervals before 13 are taken
                t.close()
                snapshots.append((f"w{w}", {"n": 0, "intervals": r.take_intervals(13)}))
        t.close()
        snapshots.append((f"w{w}", {"n": 1, "intervals": r.take_intervals(16, final=True)}))
        payloads.append(r.to_payload())
    merged = interval_kinds(snapshots)
    for k in range(16):
        for kind, name in enumerate(("a", "b")):
            union = new_histogram()
            for ops in workers:
                for q, ended, us in ops:
                    began = ended - us / 1e6 if ended - us / 1e6 >= 10.0 else 10.0
                    if q == kind and math.floor(ended) == k:
                        union.record_value(max(1, round((ended - began) * 1e6)))
            got = merged.get(k, {}).get(name)
            assert (got.get_total_count() if got else 0) == union.get_total_count()
            if got is not None and union.get_total_count():
                assert list(got.counts) == list(union.counts) and got.get_max_value() == union.get_max_value()
    run = merge_phase_blocks(payloads, {"MEASUREMENT": 6.0})
    for name in ("a", "b"):
        expected = sum(h[name].get_total_count() for h in merged.values() if name in h)
        assert run.get("MEASUREMENT", {}).get("by_kind", {}).get(name, {}).get("ops", 0) == expected


def test_results_flushed_mid_run_hold_the_operations_of_intervals_not_yet_taken():
    r = Recorder(interval_latency=True)
    t = Tally(r, Q, WINDOWS)
    for k in range(5):
        t.ok(0, 10.0 + k, 10.5 + k)
    t.close()  # a connection's held counts, as the worker settles them before it flushes
    assert r.operations() == 5
    assert merge_phase_blocks([r.to_payload()], {"MEASUREMENT": 5.0})["MEASUREMENT"]["ops"] == 5
    r.take_intervals(13)
    assert r.operations() == 5 and sum(h.get_total_count() for h in r.histograms.values()) == 3
    assert merge_phase_blocks([r.to_payload()], {"MEASUREMENT": 5.0})["MEASUREMENT"]["ops"] == 5


def test_interval_histograms_are_recycled_so_a_long_run_allocates_a_few_not_one_per_interval():
    import startline.engine.metrics as metrics

    made = []
    original = metrics.new_histogram

    def counting() -> object:
        made.append(1)
        return original()

    r = Recorder(interval_latency=True)
    t = Tally(r, Q2, WINDOWS)
    metrics.new_histogram = counting
    try:
        for k in range(1000):  # 1000 intervals of MEASUREMENT, both kinds in each, taken as they close
            t.ok(0, 10.0 + k, 10.2 + k)
            t.ok(1, 10.3 + k, 10.5 + k)
            if k % 5 == 4:
                t.close()
                r.take_intervals(11 + k)
    finally:
        metrics.new_histogram = original
    assert len(made) <= 30  # 2 kinds x 5 intervals between takes, plus the run's own
    assert r.operations() == 2000
    assert sum(h.get_total_count() for h in r._recorded().values()) == 2000


@given(parts=st.lists(st.lists(st.integers(min_value=1, max_value=3_600_000_000), max_size=40), min_size=1, max_size=4))
def test_latency_block_reads_the_same_percentiles_max_and_mean_as_hdr_itself(parts):
    """The summary's one-pass reading of a histogram (merged, decoded, emptied and refilled ones
    included) gives what HDR's own iterators give."""
    merged = cleared(new_histogram())
    for values in parts:
        h = new_histogram()
        for v in values:
            h.record_value(v)
        add_into(merged, decode(h.encode().decode("ascii")))
    block = latency_block(merged)
    if not merged.get_total_count():
        assert set(block.values()) == {0.0}
        return
    for key, p in PERCENTILES:
        assert block[key] == merged.get_value_at_percentile(p) / 1000.0
    assert block["max"] == merged.get_max_value() / 1000.0
    assert block["mean"] == round(merged.get_mean_value() / 1000.0, 3)


def test_a_histogram_no_longer_referenced_is_freed_at_once_not_at_the_next_garbage_collection():
    import gc
    import weakref

    gc.disable()
    try:
        h = new_histogram()
        h.record_value(5)
        gone = weakref.ref(h)
        encoded = h.encode()  # the encoder still works through its weak reference
        del h
        assert gone() is None
        d = decode(encoded.decode("ascii"))
        counts = weakref.ref(d)
        assert d.get_total_count() == 1
        del d
        assert counts() is None
    finally:
        gc.enable()


@given(values=st.lists(st.integers(min_value=0, max_value=5_000_000_000), max_size=300), split=st.integers(0, 300))
def test_latencies_counted_by_bucket_index_and_folded_make_the_histogram_recording_each_value_makes(values, split):
    """What a connection's hot path does (count by HDR bucket index, fold once per interval, in
    two folds here) gives the same counts, min, max, mean, percentiles and encoding as
    HDR's own ``record_value`` of each value (clamped into range as ``to_us`` clamps)."""
    clamped = [min(HIGHEST_US, max(1, v)) for v in values]
    recorded, folded = new_histogram(), new_histogram()
    for v in clamped:
        recorded.record_value(v)
    for part in (values[:split], values[split:]):
        counts: dict[int, int] = {}
        for v in part:
            key = bucket_index(v)
            assert key == recorded._counts_index_for(min(HIGHEST_US, max(1, v)))
            counts[key] = counts.get(key, 0) + 1
        fold_counts(folded, counts)
        assert counts == {}
    assert folded.get_total_count() == recorded.get_total_count() == len(values)
    assert folded.get_min_value() == recorded.get_min_value()
    assert folded.get_max_value() == recorded.get_max_value()
    assert folded.get_mean_value() == recorded.get_mean_value()
    assert latency_block(folded) == latency_block(recorded)
    assert decode(folded.encode().decode("ascii")).encode() == decode(recorded.encode().decode("ascii")).encode()


@given(
    ops=st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(1, 2_000_000)), max_size=60),
    interval_latency=st.booleans(),
)
def test_a_primed_tally_records_what_an_unprimed_one_records(ops, interval_latency):
    """Issue 25: ``prime`` makes before the release what a connection's first operation made as it
    ended (the first interval's histograms, the starting phase's): the recording is the same."""
    payloads = []
    for primed in (False, True):
        r = Recorder(interval_latency=interval_latency)
        t = Tally(r, Q, WINDOWS)
        if primed:
            t.prime(-1.0)  # armed before the start
        for began, us in sorted(ops):
            t.ok(0, began, began + us / 1e6)
        t.close()
        payloads.append((r.to_payload(), r.take_intervals(1000.0, final=True)))
    assert payloads[0] == payloads[1]


def test_a_connection_added_mid_run_primes_its_own_interval_not_one_already_taken():
    r = Recorder(interval_latency=True)
    t = Tally(r, Q, WINDOWS)
    for began in (10.2, 11.5):
        t.ok(0, began, began + 0.01)
    t.close()
    r.take_intervals(12.0)  # intervals 0–11 taken
    late = Tally(r, Q, WINDOWS)
    late.prime(30.4)  # a scale-up at 30.4 s
    assert sorted(r.interval_histograms) == [30]
