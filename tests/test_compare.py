"""``startline compare``: key figures side by side, regression bands (warn/fail), a refusal for
runs of different scenarios unless forced, exit 1 on a failing band."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from startline.testing import run_cli
from startline.views.compare import (
    DEFAULT_BANDS,
    FAIL,
    OK,
    WARN,
    Band,
    CompareError,
    bands_with,
    change,
    compare,
    read_summary,
    same_scenario,
)


def summary(qps: float, p95: float, p99: float, ops: int = 1000, errors: int = 0, **extra: Any) -> dict[str, Any]:
    latency = {"p50": p95 / 2, "p90": p95, "p95": p95, "p99": p99, "p999": p99, "max": p99, "mean": p95 / 2}
    return {
        "scenario": "s",
        "start_strategy": "scheduled",
        "status": "COMPLETED",
        "workers": [{}, {}],
        "start": {"skew_ms": 1.0, "lag_ms": {"min": 0.5, "p50": 1.0, "p99": 2.0, "max": 2.0}},
        "phases": {
            "MEASUREMENT": {
                "ops": ops,
                "errors": errors,
                "qps": qps,
                "latency_ms": latency,
                "by_kind": {"read": {"ops": ops, "qps": qps, "latency_ms": latency}},
            }
        },
    } | extra


def test_the_seed_systems_bands_mark_warn_and_fail_in_both_directions() -> None:
    base = summary(1000, 10, 20)
    rows = {r.figure: r for r in compare(base, summary(850, 13, 26), DEFAULT_BANDS, ("a", "b")).rows}
    assert rows["qps"].verdict == WARN and rows["qps"].change == pytest.approx(-15)
    assert rows["latency p95 ms"].verdict == WARN and rows["latency p99 ms"].verdict == WARN
    assert rows["read: qps"].verdict == WARN  # a kind's figure takes its figure's band
    assert rows["start skew ms"].verdict is None  # shown, not banded
    worse = compare(base, summary(700, 15, 31, ops=900, errors=100), DEFAULT_BANDS, ("a", "b"))
    by = {r.figure: r.verdict for r in worse.rows}
    assert by["qps"] == by["latency p95 ms"] == by["latency p99 ms"] == by["error rate"] == FAIL
    assert worse.verdict == FAIL
    better = compare(base, summary(2000, 5, 10), DEFAULT_BANDS, ("a", "b"))
    assert better.verdict == OK  # faster and quicker is never a regression


def test_the_cost_per_1k_ops_is_banded_when_the_base_was_priced_and_a_candidate_without_it_fails() -> None:
    priced = {"cost": {"credits": 1.0, "currency_amount": 3.0, "per_1k_ops": 0.03}}
    base = summary(1000, 10, 20, **priced)
    dearer = summary(1000, 10, 20, cost=priced["cost"] | {"per_1k_ops": 0.0345})
    rows = {r.figure: r for r in compare(base, dearer, DEFAULT_BANDS, ("a", "b")).rows}
    assert rows["cost per 1k ops"].change == pytest.approx(15) and rows["cost per 1k ops"].verdict == WARN
    assert (
        compare(base, summary(1000, 10, 20), DEFAULT_BANDS, ("a", "b")).verdict == FAIL
    )  # not enriched: not shown to hold
    assert "cost per 1k ops" not in {
        r.figure for r in compare(summary(1, 1, 1), summary(1, 1, 1), DEFAULT_BANDS, ("a", "b")).rows
    }
    (band,) = [b for b in bands_with(("cost.per_1k_ops=5:8",)) if b.figure == "cost per 1k ops"]
    assert (band.warn, band.fail) == (5, 8)


@given(st.floats(1, 1e6), st.floats(-99, 500))
def test_a_band_fails_exactly_when_the_change_the_wrong_way_exceeds_its_fail_limit(base: float, pct: float) -> None:
    band = Band("latency p99 ms", 25, 50, higher_is_worse=True)
    candidate = base * (1 + pct / 100)
    moved = change(base, candidate, band.points)
    assert moved is not None
    assert (band.judge(base, candidate) == FAIL) == (moved > 50)
    assert (band.judge(base, candidate) == OK) == (moved <= 25)


def test_runs_of_different_scenarios_are_not_compared_unless_forced(tmp_path: Path) -> None:
    assert same_scenario(summary(1, 1, 1), summary(1, 1, 1)) is None
    assert "scenario" in (same_scenario(summary(1, 1, 1), summary(1, 1, 1, scenario="other")) or "")
    assert "workers" in (same_scenario(summary(1, 1, 1), summary(1, 1, 1, workers=[{}])) or "")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(summary(1000, 10, 20)))
    b.write_text(json.dumps(summary(1000, 10, 20, scenario="other")))
    refused = run_cli("compare", str(a), str(b), timeout=60)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--force" in refused.stderr
    forced = run_cli("compare", str(a), str(b), "--force", timeout=60)
    assert forced.returncode == 0, forced.stderr


def test_compare_exits_1_on_a_failing_band_and_writes_json(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b.json"
    a.mkdir()
    (a / "summary.json").write_text(json.dumps(summary(1000, 10, 20)))  # a run's directory works too
    b.write_text(json.dumps(summary(1000, 10, 40)))
    proc = run_cli("compare", str(a), str(b), "--json", str(tmp_path / "c.json"), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "latency p99 ms" in proc.stdout and "fail" in proc.stdout
    (result,) = json.loads((tmp_path / "c.json").read_text())
    assert result["verdict"] == FAIL
    loosened = run_cli("compare", str(a), str(b), "--band", "p99=150:200", timeout=60)
    assert loosened.returncode == 0, loosened.stdout


def test_a_bad_band_or_a_missing_run_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CompareError):
        bands_with(["p42=1:2"])
    with pytest.raises(CompareError):
        bands_with(["p99=5:1"])
    assert {b.figure: (b.warn, b.fail) for b in bands_with(["p99=30:60"])}["latency p99 ms"] == (30, 60)
    proc = run_cli("compare", str(tmp_path / "nope"), str(tmp_path / "nope2"), timeout=60)
    assert proc.returncode == 2 and "no summary.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_candidate_that_did_not_complete_or_lacks_a_figure_never_compares_ok(tmp_path: Path) -> None:
    """Issue 22 #5: a FAILED candidate (ready_timeout, no phases) compared with --force said "ok",
    exit 0, and without --force blamed the scenario ("2 workers against 0"); a NaN qps said "ok"."""
    failed = {
        "scenario": "s",
        "start_strategy": "scheduled",
        "status": "FAILED",
        "reason": "ready_timeout",
        "workers": [],
        "start": {},
        "phases": {},
    }
    assert compare(summary(1000, 10, 20), failed, DEFAULT_BANDS, ("a", "b")).verdict == FAIL
    assert "candidate run is FAILED (ready_timeout)" in (same_scenario(summary(1000, 10, 20), failed) or "")
    assert compare(summary(1000, 10, 20), summary(float("nan"), 10, 20), DEFAULT_BANDS, ("a", "b")).verdict == FAIL
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(summary(1000, 10, 20)))
    b.write_text(json.dumps(failed))
    refused = run_cli("compare", str(a), str(b), timeout=60)
    assert refused.returncode == 2 and "FAILED (ready_timeout)" in refused.stderr and "workers" not in refused.stderr
    forced = run_cli("compare", str(a), str(b), "--force", timeout=60)
    assert forced.returncode == 1 and "verdict: fail" in forced.stdout, forced.stdout


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (json.dumps(summary(1, 1, 1) | {"schema_version": 99}), "schema_version 99"),
        (json.dumps(summary(1, 1, 1) | {"phases": None}), "not a startline summary"),
        (json.dumps(summary("fast", 1, 1)), "qps: not a number"),
        ("[" * 100_000 + "]" * 100_000, "RecursionError"),
    ],
)
def test_a_summary_that_is_not_one_this_startline_wrote_is_refused_naming_why(tmp_path: Path, content, said) -> None:
    """Issue 22 #5, #14, #17: another schema version was accepted silently; "phases": null, a
    non-numeric figure, JSON nested 100,000 deep were tracebacks."""
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(CompareError, match=said):
        read_summary(str(path))


def test_compare_and_report_refuse_a_fifo_without_waiting_for_it(tmp_path: Path) -> None:
    """Issue 22 #14: a summary.json that is a FIFO blocked compare and report forever."""
    import os

    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "summary.json")
    with pytest.raises(CompareError, match="not a regular file"):
        read_summary(str(run))
    proc = run_cli("report", str(run), timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_directory_named_like_mathtext_is_drawn_as_text(tmp_path: Path) -> None:
    """Issue 22 #17: `compare --html` with a run directory named `m$\\frac{1$` was a matplotlib
    mathtext traceback; run names are text."""
    a, b = tmp_path / "m$\\frac{1$", tmp_path / "b$x"
    for d, s in ((a, summary(1000, 10, 20, timeseries=[{"t_s": 0, "ops": 5}])), (b, summary(990, 10, 20))):
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(s))
    proc = run_cli("compare", str(a), str(b), "--html", str(tmp_path / "c.html"), timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "m$\\frac{1$" in (tmp_path / "c.html").read_text()


@pytest.mark.parametrize("command", ["compare", "report", "simulate", "calibrate"])
@pytest.mark.parametrize("where", ["a directory", "no such directory"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(tmp_path: Path, command: str, where: str) -> None:
    """Issue 22 #17: unwritable --json/--html/--out of compare/report/simulate/calibrate were
    tracebacks (after the work: checked before it now)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary(1000, 10, 20) | {"run_id": "r"}))
    bad = str(tmp_path) if where == "a directory" else str(tmp_path / "nowhere" / "x.out")
    args = {
        "compare": ("compare", str(run), str(run), "--html", bad),
        "report": ("report", str(run), "--out", bad),
        "simulate": ("simulate", "--seeds", "1", "--json", bad),
        "calibrate": ("calibrate", str(run), "--out", bad),
    }[command]
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    said = proc.stderr.strip().splitlines()[-1]  # (click's own usage error for a directory ends so)
    assert bad in said and ("--" in said), proc.stderr
