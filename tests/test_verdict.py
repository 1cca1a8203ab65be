"""The verdict and the exit code: 0 only for a completed run that passed its checks; errors keep
what they said (summary.json, the printed summary, failures.csv)."""

from __future__ import annotations

import csv
import functools
import json

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from startline.engine.model import RunStatus
from startline.engine.scenario import Checks
from startline.engine.verdict import (
    EXIT_CHECKS_FAILED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    evaluate,
    exit_code,
    qps_held,
    verdict,
)
from startline.inprocess import run_in_process_async
from startline.testing import run_cli, scenario

cli = functools.partial(run_cli, timeout=120)

statuses = st.sampled_from([str(s) for s in RunStatus])
phase_blocks = st.fixed_dictionaries(
    {}, optional={"MEASUREMENT": st.fixed_dictionaries({"ops": st.integers(0, 10**9), "errors": st.integers(0, 10**9)})}
)
checks = st.builds(Checks, max_error_rate=st.floats(0, 1), min_operations=st.integers(0, 10**6))


@given(status=statuses, phases=phase_blocks, limits=checks)
def test_exit_0_iff_completed_with_enough_operations_and_an_error_rate_within_the_limit(status, phases, limits):
    block = phases.get("MEASUREMENT", {"ops": 0, "errors": 0})
    ops, errors = block["ops"], block["errors"]
    rate = errors / (ops + errors) if ops + errors else 0.0
    passes = ops >= limits.min_operations and rate <= limits.max_error_rate
    code = exit_code(status, verdict(status, evaluate(limits, phases)))
    if status != "COMPLETED":
        assert code == EXIT_RUN_FAILED
    else:
        assert code == (EXIT_OK if passes else EXIT_CHECKS_FAILED)


@given(phases=phase_blocks)
def test_a_run_with_no_successful_operation_never_passes_the_default_checks(phases):
    phases = {"MEASUREMENT": {"ops": 0, "errors": phases.get("MEASUREMENT", {}).get("errors", 0)}}
    assert verdict("COMPLETED", evaluate(Checks(), phases)) == "failed"


FAILING = """
name = "failing"
workers = 1
connections_per_worker = 2
measurement_s = 0.5
target = "sqlite:///{out}/data.db"
setup = ["CREATE TABLE IF NOT EXISTS present (k INTEGER)"]

[start]
strategy = "poll"
poll_interval_ms = 20

[[operations]]
name = "missing"
sql = "SELECT * FROM absent_table"
"""


def test_a_run_whose_every_operation_fails_exits_1_and_says_what_the_errors_said(tmp_path):
    path = tmp_path / "failing.toml"
    path.write_text(FAILING.format(out="{out}"))
    out = tmp_path / "out"
    proc = cli("run", str(path), "--out", str(out))
    assert proc.returncode == 1, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["verdict"]) == ("COMPLETED", "failed")
    assert {c["name"]: c["ok"] for c in summary["checks"]} == {
        "min_operations": False,
        "max_error_rate": False,
        "unfinished": True,
        "all_failing": False,
    }
    (failure,) = summary["failures"]
    assert failure["operation"] == "missing" and failure["count"] == sum(
        b["errors"] for b in summary["phases"].values()
    )
    assert summary["phases"]["MEASUREMENT"]["errors"] > 0
    assert "no such table: absent_table" in failure["messages"][0]["message"]
    assert failure["first_seen"] <= failure["last_seen"]
    assert "no such table: absent_table" in proc.stdout and "verdict: failed" in proc.stdout
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["operation"] == "missing" and "absent_table" in rows[0]["message"]
    # every interval, errors per kind included, in intervals.csv (one row per interval x kind)
    with open(out / "intervals.csv", newline="") as f:
        intervals = list(csv.DictReader(f))
    assert [r["kind"] for r in intervals] == ["all", "missing"] * len(summary["timeseries"])
    per_kind = [r for r in intervals if r["kind"] == "missing"]
    assert sum(int(r["errors"]) for r in per_kind) == failure["count"]
    assert all(r["ops"] == "0" and r["p99_ms"] == "0.0" for r in per_kind)
    # the report is written for a failing run too, saying there is no latency to draw
    report = (out / "report.html").read_text()
    assert '<span class="failed">failed</span>' in report and 'id="chart-latency" class="none"' in report


def test_checks_can_be_loosened_in_the_scenario(tmp_path):
    path = tmp_path / "failing.toml"
    path.write_text(FAILING.format(out="{out}") + "\n[checks]\nmax_error_rate = 1.0\nmin_operations = 0\n")
    proc = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"] == "passed"


def test_a_full_disk_is_one_line_and_exit_3_with_nothing_half_written(tmp_path):
    import resource
    import signal
    import subprocess

    from startline.testing import CLI, ROOT
    from tests.test_scenario_cli import GOOD

    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    out = tmp_path / "out"

    def small_files():  # files past 4 KiB cannot grow, as on a full disk (EFBIG, not a signal)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run(
        [*CLI, "run", str(path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "summary.json" in proc.stderr
    assert not (out / "summary.json").exists()  # not there rather than half there
    assert not list(out.glob(".summary.json.*"))  # no temporary file left behind


def qps_result(reason, qps, connections, target=300.0):
    return {"mode": "qps", "result": {"target_qps": target, "qps": qps, "connections": connections, "reason": reason}}


@pytest.mark.parametrize(
    ("reason", "qps", "connections", "ok"),
    [
        ("settled", 298.0, 3, True),
        ("nearest_whole_count", 330.0, 3, True),  # the target lies between 2 and 3 connections' qps
        ("nearest_whole_count", 375.0, 4, False),  # issue 22: held 375 qps against 100000, passed
        ("not_settled", 14.0, 1, False),  # issue 22: still moving at 14 qps, passed
        (None, None, None, False),  # issue 22: no reading at all (snapshot 5 s, control 10 s), passed
        ("bounds_limit_reached", 120.0, 4, False),
    ],
)
def test_the_target_qps_check_passes_only_a_held_target(reason, qps, connections, ok):
    target = 100000.0 if qps == 375.0 else 300.0
    (check, *_) = evaluate(
        Checks(), {"MEASUREMENT": {"ops": 100, "errors": 0}}, qps_result(reason, qps, connections, target)
    )
    assert check.name == "target_qps" and check.ok is ok, check.detail


@given(
    target=st.floats(10, 1e5),
    per_connection=st.floats(1, 1e4),
    connections=st.integers(1, 64),
    reason=st.sampled_from(["settled", "nearest_whole_count", "not_settled", "bounds_limit_reached"]),
)
def test_a_qps_run_whose_held_qps_misses_the_target_by_more_than_one_connection_never_passes(
    target, per_connection, connections, reason
):
    qps = per_connection * connections
    (check, *_) = evaluate(
        Checks(), {"MEASUREMENT": {"ops": 1, "errors": 0}}, qps_result(reason, qps, connections, target)
    )
    if abs(qps - target) > per_connection * (1 + 1e-9):
        assert not check.ok
    if reason in ("not_settled", "bounds_limit_reached"):
        assert not check.ok


def find_max(*steps):
    return {"mode": "find_max", "steps": list(steps), "result": {}}


def step(connections, qps, error_rate, stable):
    return {"connections": connections, "qps": qps, "error_rate": error_rate, "stable": stable}


def test_find_max_judges_its_error_rate_at_the_best_stable_step_not_the_overload_past_the_knee():
    """Issue 22 #6: a find_max whose knee is found by errors exited 1 — the default max_error_rate
    judged the deliberate overload steps in MEASUREMENT."""
    measured = {"MEASUREMENT": {"ops": 1000, "errors": 400}}  # 29 % errors, all past the knee
    knee = find_max(step(2, 200, 0.0, True), step(4, 390, 0.001, True), step(8, 300, 0.4, False))
    checks = {c.name: c for c in evaluate(Checks(), measured, knee)}
    assert checks["max_error_rate"].ok and checks["max_error_rate"].value == 0.001
    erring = find_max(step(2, 200, 0.05, True), step(4, 210, 0.3, False))
    assert not {c.name: c for c in evaluate(Checks(), measured, erring)}["max_error_rate"].ok
    nothing = find_max(step(2, 10, 0.5, False))
    assert not {c.name: c for c in evaluate(Checks(), measured, nothing)}["max_error_rate"].ok
    closed = {c.name: c for c in evaluate(Checks(), measured, {"mode": "concurrency"})}
    assert not closed["max_error_rate"].ok  # any other mode: MEASUREMENT as a whole


def test_a_rate_run_that_offered_less_than_its_plan_fails_planned_rate():
    """Issue 22 #3: rate mode with a DEAD worker offered 1,483 of 2,000 scheduled operations and passed."""

    def rate_run(offered):
        load = {"mode": "rate", "result": {"rate": 200.0, "planned": 2000.0}}
        (check, *_) = evaluate(Checks(), {"MEASUREMENT": {"ops": offered, "errors": 0, "offered": offered}}, load)
        return check

    assert rate_run(2000).ok and rate_run(1950).ok
    short = rate_run(1483)
    assert short.name == "planned_rate" and not short.ok, short.detail


@given(
    rate=st.floats(1, 5000),
    first=st.floats(1, 5000),
    at=st.floats(0.1, 20),
    ramp=st.floats(0.1, 20),
    length=st.floats(1, 60),
)
def test_the_planned_offers_are_the_area_under_the_rate_plan(rate, first, at, ramp, length):
    from startline.engine.loadcontrol import planned_offers, rate_at, rate_plan
    from startline.engine.scenario import LoadOptions, RateStage

    stages = [RateStage(duration_s=at, rate=first), RateStage(duration_s=ramp, rate=rate)]
    load = LoadOptions(mode="rate", rate=rate, stages=stages)
    plan = rate_plan(load)
    n = 20_000
    riemann = sum(rate_at(load.rate, plan, (i + 0.5) * length / n) for i in range(n)) * length / n
    assert planned_offers(load, 0.0, length) == pytest.approx(riemann, rel=1e-3, abs=1e-6)


def test_an_operation_left_running_at_the_drain_is_recorded_and_fails_the_run():
    """Issue 22 #4: operations cancelled at the drain were recorded nowhere — a hanging statement
    beside fast ones passed `max < 1000`. Now each is an ``unfinished`` error of its kind and the
    ``unfinished`` check fails the run (on virtual time: the hang is a 10-minute sleep, which every
    connection meets within its first few hundred operations)."""
    sleep = "startline.backends.memory.ops:sleep_ms"
    ops = [
        {"name": "fast", "weight": 50, "call": sleep, "params": {"ms": {"type": "int", "min": 5, "max": 5}}},
        {"name": "hang", "weight": 1, "call": sleep, "params": {"ms": {"type": "int", "min": 600_000, "max": 600_000}}},
    ]
    sc = scenario(operations=ops, drain_timeout_s=1.0, measurement_s=5.0)
    run = trio.run(run_in_process_async, sc, clock=trio.testing.MockClock(autojump_threshold=0))
    summary = run.summary
    hung = sum(b["errors_by_category"].get("unfinished", 0) for b in summary["phases"].values())
    assert hung == sc.total_connections
    check = {c["name"]: c for c in summary["checks"]}["unfinished"]
    assert not check["ok"] and check["value"] == hung and summary["verdict"] == "failed"
    (failure,) = [f for f in summary["failures"] if f["category"] == "unfinished"]
    assert failure["operation"] == "hang" and failure["count"] == hung


def test_a_run_whose_operations_all_finish_passes_the_unfinished_check():
    def unfinished(phases):
        return {c.name: c for c in evaluate(Checks(), phases)}["unfinished"]

    assert unfinished({"MEASUREMENT": {"ops": 10, "errors": 0, "errors_by_category": {}}}).ok
    failing = {"COOLDOWN": {"errors_by_category": {"unfinished": 2}}, "MEASUREMENT": {"ops": 10, "errors": 0}}
    assert not unfinished(failing).ok


FAIL = "startline.backends.memory.ops:fail_if"


def _failing_run(ops: list[dict], **kw):
    sc = scenario(operations=ops, measurement_s=60.0, **kw)
    return trio.run(run_in_process_async, sc, clock=trio.testing.MockClock(autojump_threshold=0)).summary


def _kind(name: str, weight: float, fail_below: int) -> dict:
    """A kind whose operations fail when a value drawn from 0..99 is under ``fail_below``."""
    return {
        "name": name,
        "weight": weight,
        "call": FAIL,
        "params": {
            "value": {"type": "int", "min": 0, "max": 99},
            "below": {"type": "choice", "values": [fail_below]},
            "ms": {"type": "choice", "values": [5]},
        },
    }


def test_a_run_whose_every_operation_of_a_kind_fails_stops_in_seconds_with_the_first_error():
    """Issue 22 #18: 86,759 errors in 18 s of a missing table, and the run went on to its end. Every
    attempt of one kind failing for `stop_after_failing_s` (10 s) stops it — completed, failed
    (exit 1), the first error in its detail — even when the kind is a small share of the mix."""
    for ops in ([_kind("doomed", 1, 100)], [_kind("fine", 50, 0), _kind("doomed", 1, 100)]):
        summary = _failing_run(ops)
        assert (summary["status"], summary["reason"], summary["verdict"]) == ("COMPLETED", "all_failing", "failed")
        assert "'doomed'" in summary["detail"] and "InjectedError" in summary["detail"], summary["detail"]
        assert summary["stopped_at"] - summary["start_time"] < 1.0 + 10.0 + 2.0  # warmup + the limit + a beat
        check = {c["name"]: c for c in summary["checks"]}["all_failing"]
        assert not check["ok"] and "doomed" in check["detail"]


def test_a_kind_that_fails_often_but_not_always_does_not_stop_the_run():
    summary = _failing_run([_kind("flaky", 1, 90)], checks={"max_error_rate": 1.0})
    assert summary["reason"] is None and summary["verdict"] == "passed"
    assert {c["name"]: c["ok"] for c in summary["checks"]}["all_failing"]


def test_stop_after_failing_s_0_lets_a_hopeless_run_go_on_and_the_check_still_fails_it():
    summary = _failing_run([_kind("doomed", 1, 100)], checks={"stop_after_failing_s": 0})
    assert summary["reason"] is None and summary["stopped_at"] - summary["start_time"] >= 61.0
    assert summary["verdict"] == "failed"
    assert not {c["name"]: c["ok"] for c in summary["checks"]}["all_failing"]


def test_a_qps_controller_hunting_between_the_two_counts_around_its_target_held_it():
    """The qps example failed on a busy host: 6 connections read 272.5 of 300 (within one
    connection's share), the controller stepped to 7 and the run ended — hunting between the whole
    counts around the target, not running away. One connection's step from a reading within a
    share passes; a bigger step, or a reading further off, does not."""

    def held(qps, read_with, to):
        result = {"target_qps": 300.0, "qps": qps, "connections": to, "read_with": read_with, "reason": "not_settled"}
        return qps_held(result)

    assert held(272.5, 6, 7).ok and "hunting" in held(272.5, 6, 7).detail
    assert not held(272.5, 6, 8).ok  # two connections at once: still looking
    assert not held(200.0, 6, 7).ok  # 100 qps off with 33 qps a connection
    assert not held(14.0, 4, 5).ok  # the 14 qps against its target
