"""Thresholds (k6-shaped pass/fail criteria): parsing that names what it refuses, evaluation on
what a run measured, windowed and whole-run agreeing when one window spans the run, and the
verdict and exit code they decide. Runs on virtual time (MockClock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.metrics import new_histogram
from startline.engine.scenario import ConfigError
from startline.engine.thresholds import Measured, ThresholdError, evaluate, judged_spans, parse
from startline.inprocess import run_in_process_async
from startline.testing import CLOCK0, RecordingTarget, run_cli, scenario

ISSUE_EXAMPLE = {
    "latency_ms": ["p(99) < 50"],
    "latency_ms{kind=q}": ["p(95) < 20", {"threshold": "p(99) < 40", "delay_abort_eval_s": 10}],
    "error_rate": ["rate < 0.01"],
    "qps": ["value > 1000"],
    "start.skew_ms": ["value < 5"],
    "latency_ms{window=10s}": ["p(95) < 100"],
}


def test_the_issues_example_parses_into_one_threshold_per_expression() -> None:
    items = parse(ISSUE_EXAMPLE)
    assert [(t.key, t.expression) for t in items][:3] == [
        ("latency_ms", "p(99) < 50"),
        ("latency_ms{kind=q}", "p(95) < 20"),
        ("latency_ms{kind=q}", "p(99) < 40"),
    ]
    by_key = {t.key: t for t in items}
    assert by_key["latency_ms{window=10s}"].window_s == 10.0 and by_key["latency_ms{kind=q}"].kind == "q"
    assert by_key["error_rate"].stat == "rate" and by_key["qps"].op == ">" and by_key["qps"].limit == 1000


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"latency": ["p(99) < 50"]}, "unknown metric"),
        ({"latency_ms": ["p99 < 50"]}, "cannot read"),
        ({"latency_ms": ["rate < 0.1"]}, "latency_ms takes p(N), avg, min, max, med"),
        ({"latency_ms": ["p(0) < 5"]}, "percentile"),
        ({"error_rate{kind=q}": ["rate < 0.1"]}, "tag"),
        ({"latency_ms{window=ten}": ["p(95) < 1"]}, "window must be a duration"),
        ({"qps{kind=q}": [{"threshold": "value > 1", "abort_on_fail": True}]}, "abort_on_fail takes"),
        ({"start.skew_ms": [{"threshold": "value < 1", "abort_on_fail": True}]}, "abort_on_fail takes"),
        ({"latency_ms": [{"threshold": "p(99) < 1", "abort_on_fail": 1}]}, "true or false"),
        ({"latency_ms": [{"threshold": "p(99) < 1", "abort": True}]}, "a table takes"),
        ({"latency_ms": []}, "must be a list"),
        ({"start.lag_ms": ["p(95) < 1"]}, "start.lag_ms takes"),
    ],
)
def test_a_malformed_threshold_is_refused_naming_it(table, needle) -> None:
    with pytest.raises(ThresholdError) as err:
        parse(table)
    key = next(iter(table))
    assert err.value.field == f'thresholds."{key}"' and needle in err.value.message


def test_a_threshold_on_a_kind_the_scenario_lacks_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        scenario(thresholds={"latency_ms{kind=nope}": ["p(99) < 5"]})
    assert err.value.field == 'thresholds."latency_ms{kind=nope}"' and "(known: q)" in err.value.message


def test_a_bad_threshold_exits_2_with_one_line_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        'name = "t"\nmeasurement_s = 1\n[thresholds]\n"latency_ms" = ["p(99) <<< 5"]\n'
        '[[operations]]\nname = "q"\ncall = "startline.backends.memory.ops:sleep_ms"\n'
        'params.ms = { type = "int", min = 1, max = 1 }\n'
    )
    proc = run_cli("check", str(cfg), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and 'thresholds."latency_ms"' in proc.stderr


latencies_ms = st.lists(st.lists(st.integers(1, 10_000), max_size=30), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(latencies_ms, st.sampled_from(["p(50)", "p(95)", "p(99.9)", "avg", "min", "max", "med"]), st.integers(1, 10_000))
def test_windowed_and_whole_run_agree_when_one_window_spans_the_run(intervals, stat, limit) -> None:
    per_interval = {}
    whole = new_histogram()
    for i, samples in enumerate(intervals):
        h = per_interval[i] = new_histogram()
        for ms in samples:
            h.record_value(ms * 1000)
            whole.record_value(ms * 1000)
    n = len(intervals)

    def windows(window_s: float, kind: str | None):
        return judged_spans(per_interval, 0, n - 1, round(window_s))  # 1 s intervals

    measured = Measured({}, {}, {None: whole}, {None: whole}, windows)
    (whole_run, windowed) = evaluate(
        parse({"latency_ms": [f"{stat} < {limit}"], f"latency_ms{{window={n}s}}": [f"{stat} < {limit}"]}), measured
    )
    assert (windowed.ok, windowed.value) == (whole_run.ok, whole_run.value)


@settings(max_examples=200, deadline=None)
@given(latencies_ms, st.integers(1, 10_000), st.integers(1, 4))
def test_a_windowed_threshold_passes_only_if_every_window_with_operations_passes(intervals, limit, per_window) -> None:
    per_interval = {}
    for i, samples in enumerate(intervals):
        h = per_interval[i] = new_histogram()
        for ms in samples:
            h.record_value(ms * 1000)
    parts = judged_spans(per_interval, 0, len(intervals) - 1, per_window)
    measured = Measured({}, {}, {}, {}, lambda _s, _k: parts)
    (result,) = evaluate(parse({f"latency_ms{{window={per_window}s}}": [f"max < {limit}"]}), measured)
    busy = [h for h in parts if h.get_total_count()]
    assert result.ok == (bool(busy) and all(h.get_max_value() / 1000 < limit for h in busy))
    assert sum(h.get_total_count() for h in parts) == sum(len(s) for s in intervals)  # windows lose nothing


def _run(**overrides):
    sc = scenario(**overrides)

    async def main():
        return await run_in_process_async(sc, target=RecordingTarget(), clock=CLOCK0)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)).summary


def test_thresholds_decide_the_verdict_and_are_listed_with_their_values() -> None:
    s = _run(
        thresholds={
            "ops": ["count > 0"],
            "error_rate": ["rate < 0.5"],
            "latency_ms{kind=q}": ["max < 1000000"],
            "start.skew_ms": ["value < 60000"],
            "latency_ms{window=1s}": ["p(99) < 1000000"],
        }
    )
    assert s["verdict"] == "passed", s["thresholds"]
    by = {(t["metric"], t["threshold"]): t for t in s["thresholds"]}
    assert by[("ops", "count > 0")]["value"] == s["phases"]["MEASUREMENT"]["ops"] > 0
    assert by[("latency_ms{window=1s}", "p(99) < 1000000")]["detail"] == "3 of 3 windows of 1 s pass"
    failing = _run(thresholds={"qps": ["value > 1e9"]})
    assert failing["status"] == "COMPLETED" and failing["verdict"] == "failed"
    (t,) = failing["thresholds"]
    assert t["ok"] is False and t["value"] == failing["phases"]["MEASUREMENT"]["qps"]
    assert all(c["ok"] for c in failing["checks"])  # the threshold alone failed it


def test_a_failed_threshold_exits_1_and_the_summary_says_which(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        'name = "t"\nworkers = 2\nconnections_per_worker = 2\nmeasurement_s = 1\n'
        '[thresholds]\n"latency_ms" = ["p(50) < 0.001"]\n"ops" = ["count > 0"]\n'
        '[[operations]]\nname = "q"\ncall = "startline.backends.memory.ops:sleep_ms"\n'
        'params.ms = { type = "int", min = 2, max = 2 }\n'
    )
    proc = run_cli("run", "--no-report", str(cfg), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "threshold latency_ms: p(50) < 0.001 FAILED" in proc.stdout
    # the end summary says the run's shape and leaves out a phase with nothing in it (no warmup)
    assert "2 workers, 4 connections; ran 1.0 s (MEASUREMENT 1.0 s)" in proc.stdout
    assert "WARMUP" not in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [t["ok"] for t in summary["thresholds"]] == [False, True]
    assert summary["thresholds"][0]["value"] >= 2.0  # a 2 ms sleep


def test_a_crossed_abort_on_fail_threshold_stops_the_run_which_completes_and_fails_it() -> None:
    """Every operation takes 5-50 ms: p(50) < 1 ms is crossed at the first interval of MEASUREMENT
    after its delay; the run stops there (THRESHOLD), COMPLETED, its verdict failed."""
    sc = {"measurement_s": 10.0, "snapshot_interval_s": 0.5}
    s = _run(
        thresholds={"latency_ms": [{"threshold": "p(50) < 1", "abort_on_fail": True, "delay_abort_eval_s": 2}]}, **sc
    )
    assert (s["status"], s["reason"], s["verdict"]) == ("COMPLETED", "threshold", "failed")
    (t,) = s["thresholds"]
    assert t["ok"] is False and t["value"] >= 5 and "after 2 s of MEASUREMENT" in t["detail"]
    assert "threshold latency_ms: p(50) < 1 crossed" in s["detail"]
    assert 2.0 <= s["phases"]["MEASUREMENT"]["duration_s"] < 5.0  # stopped (snapshots shipped, STOP sent), not 10 s
    held = _run(thresholds={"latency_ms": [{"threshold": "p(50) < 1000", "abort_on_fail": True}]}, **sc)
    assert (held["status"], held["reason"], held["verdict"]) == ("COMPLETED", None, "passed")
    assert held["phases"]["MEASUREMENT"]["duration_s"] == pytest.approx(10.0)


def test_an_abort_threshold_waits_for_its_delay_and_is_judged_at_the_end_if_it_never_came() -> None:
    s = _run(
        thresholds={"error_rate": [{"threshold": "rate > 0.5", "abort_on_fail": True, "delay_abort_eval_s": 99}]},
        measurement_s=3.0,
    )
    assert (s["status"], s["reason"], s["verdict"]) == ("COMPLETED", None, "failed")  # no error at all: 0 > 0.5 fails
    assert s["thresholds"][0]["detail"].startswith("rate of error_rate = 0")


TWO_KINDS = [
    {
        "name": "fast",
        "call": "startline.backends.memory.ops:sleep_ms",
        "params": {"ms": {"type": "int", "min": 1, "max": 1}},
    },
    {
        "name": "slow",
        "call": "startline.backends.memory.ops:sleep_ms",
        "params": {"ms": {"type": "int", "min": 30, "max": 30}},
    },
]


def test_a_windowed_threshold_on_one_kind_judges_that_kinds_windows_only() -> None:
    s = _run(
        operations=TWO_KINDS,
        thresholds={
            "latency_ms{kind=fast,window=1s}": ["max < 10"],
            "latency_ms{kind=slow,window=1s}": ["max < 10"],
            "latency_ms{window=1s}": ["max < 10"],
        },
    )
    by = {t["metric"]: t for t in s["thresholds"]}
    assert by["latency_ms{kind=fast,window=1s}"]["ok"] is True
    assert by["latency_ms{kind=fast,window=1s}"]["detail"] == "3 of 3 windows of 1 s pass"
    assert by["latency_ms{kind=slow,window=1s}"]["ok"] is False and by["latency_ms{kind=slow,window=1s}"]["value"] >= 30
    assert by["latency_ms{window=1s}"]["ok"] is False  # every kind: the slow one is in it


def test_an_abort_on_fail_threshold_on_one_kind_stops_the_run_only_when_that_kind_crosses() -> None:
    sc = {"measurement_s": 10.0, "snapshot_interval_s": 0.5, "operations": TWO_KINDS}
    fast = _run(thresholds={"latency_ms{kind=fast}": [{"threshold": "p(99) < 10", "abort_on_fail": True}]}, **sc)
    assert (fast["status"], fast["reason"], fast["verdict"]) == ("COMPLETED", None, "passed")
    slow = _run(thresholds={"latency_ms{kind=slow}": [{"threshold": "p(99) < 10", "abort_on_fail": True}]}, **sc)
    assert (slow["status"], slow["reason"], slow["verdict"]) == ("COMPLETED", "threshold", "failed")
    assert slow["phases"]["MEASUREMENT"]["duration_s"] < 5.0
