"""Runs you keep (issue 27, parts 1 and 2): every run registers itself in a catalogue — SQLite in
STARTLINE_HOME, or a shared PostgreSQL results database — that `startline runs` lists, tags and
names baselines in, never failing a run; and `compare` on groups of runs, judged by a bootstrap
interval of the change."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from startline.catalogue import entry_of, open_catalogue
from startline.catalogue.commands import register_run
from startline.catalogue.store import FILE
from startline.testing import run_cli
from startline.views.compare import Band
from startline.views.groups import (
    IMPROVED,
    NO_CHANGE,
    REGRESSED,
    TOO_NOISY,
    bootstrap_interval,
    compare_groups,
    judge,
)
from tests.test_report import browse, external_references

QUICK = """
name = "kept"
workers = 2
connections_per_worker = 2
warmup_s = 0
measurement_s = 0.5

[start]
lead_ms = 300

[[operations]]
name = "nap"
call = "startline.backends.memory.ops:sleep_ms"
params.ms = { type = "int", min = 1, max = 2 }
"""


def summary(run_id: str, qps: float, p99: float, errors: int = 0, status: str = "COMPLETED") -> dict:
    """A summary.json as `compare` and the catalogue read it (the figures they use)."""
    ops = int(qps * 10)
    return {
        "schema_version": 1,
        "run_id": run_id,
        "scenario": "kept",
        "start_strategy": "scheduled",
        "status": status,
        "verdict": "passed",
        "start_time": 1_700_000_000.0 + len(run_id),
        "workers": [{"worker_id": "w000"}],
        "config": {"scenario": {"name": "kept", "workers": 1}},
        "start": {"skew_ms": 1.5, "lag_ms": {"p50": 1.0, "p99": 2.0, "max": 2.5}},
        "phases": {
            "MEASUREMENT": {
                "ops": ops,
                "errors": errors,
                "qps": qps,
                "latency_ms": {"p50": p99 / 3, "p95": p99 / 1.5, "p99": p99, "max": p99 * 2},
            }
        },
    }


def write_run(root: Path, s: dict) -> Path:
    d = root / s["run_id"]
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(s))
    return d


# ---- the catalogue -------------------------------------------------------------------------------


def test_a_run_registers_itself_and_runs_lists_tags_baselines_and_forgets_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = os.environ | {"STARTLINE_HOME": str(home)}
    (tmp_path / "s.toml").write_text(QUICK)
    done = run_cli(
        "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "a"), "--run-id", "kept-a1", "--tag", "nightly",
        timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "warning:" not in done.stderr
    listed = json.loads(run_cli("runs", "list", "--json", timeout=60, env=env).stdout)
    (kept,) = listed
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert kept["run_id"] == "kept-a1" and kept["tags"] == ["nightly"] and kept["status"] == "COMPLETED"
    assert kept["directory"] == str((tmp_path / "a").resolve())
    assert kept["figures"]["qps"] == s["phases"]["MEASUREMENT"]["qps"]
    assert kept["figures"]["p99_ms"] == s["phases"]["MEASUREMENT"]["latency_ms"]["p99"]
    table = run_cli("runs", "list", "--name", "kept", timeout=60, env=env)
    assert table.returncode == 0 and "kept-a1" in table.stdout and "nightly" in table.stdout
    assert "no kept runs matching" in run_cli("runs", "list", "--tag", "weekly", timeout=60, env=env).stdout
    assert "no kept runs matching" in run_cli("runs", "list", "--since", "2099-01-01", timeout=60, env=env).stdout
    assert run_cli("runs", "tag", "kept-a", "weekly", timeout=60, env=env).returncode == 0  # (a prefix names it)
    assert run_cli("runs", "baseline", "main", "kept-a1", timeout=60, env=env).returncode == 0
    shown = json.loads(run_cli("runs", "show", "kept-a1", "--json", timeout=60, env=env).stdout)
    assert shown["tags"] == ["nightly", "weekly"] and shown["baselines"] == ["main"]
    # `compare --baseline` finds the baseline's runs in the catalogue (one a side: as always)
    same = run_cli("compare", "--baseline", "main", str(tmp_path / "a"), timeout=60, env=env)
    assert same.returncode == 0, same.stdout[-2000:] + same.stderr[-2000:]
    gone = run_cli("runs", "rm", "kept-a1", "--delete-files", timeout=60, env=env)
    assert gone.returncode == 0 and not (tmp_path / "a").exists()
    assert json.loads(run_cli("runs", "list", "--json", timeout=60, env=env).stdout) == []


def test_runs_commands_on_an_empty_catalogue_say_so_in_one_line(tmp_path: Path) -> None:
    env = os.environ | {"STARTLINE_HOME": str(tmp_path / "empty")}
    assert "no kept runs in" in run_cli("runs", "list", timeout=60, env=env).stdout
    assert json.loads(run_cli("runs", "list", "--json", timeout=60, env=env).stdout) == []
    for args in (("runs", "show", "x"), ("runs", "tag", "x", "t"), ("runs", "rm", "x"), ("runs", "baseline", "b", "x")):
        refused = run_cli(*args, timeout=60, env=env)
        assert refused.returncode == 2 and "no kept run" in refused.stderr, args
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    missing = run_cli("compare", "--baseline", "none", str(tmp_path), timeout=60, env=env)
    assert missing.returncode == 2 and "no baseline of that name" in missing.stderr


def test_a_corrupt_catalogue_is_one_warning_and_the_run_still_passes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / FILE).write_bytes(b"not a database, " * 100)
    (tmp_path / "s.toml").write_text(QUICK)
    env = os.environ | {"STARTLINE_HOME": str(home)}
    done = run_cli("run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "a"), timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (warning,) = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: the run was not kept in the catalogue") and FILE in warning
    assert (tmp_path / "a" / "summary.json").exists()


def test_a_locked_catalogue_is_waited_for_then_a_warning_never_a_hang(tmp_path: Path, monkeypatch) -> None:
    from startline.catalogue import store

    monkeypatch.setenv("STARTLINE_HOME", str(tmp_path))
    open_catalogue().close()
    holder = sqlite3.connect(tmp_path / FILE, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.2)
    warning = register_run(summary("r1", 100, 10), tmp_path, (), None)
    assert warning is not None and "locked" in warning
    holder.execute("ROLLBACK")
    assert register_run(summary("r1", 100, 10), tmp_path, (), None) is None  # and once it is free


REGISTER = """
import sys
from pathlib import Path
from startline.catalogue import entry_of, open_catalogue
from tests.test_catalogue import summary
c = open_catalogue(sys.argv[1])
for k in range(40):
    c.register(entry_of(summary(f"{sys.argv[2]}-{k}", 100.0 + k, 10.0), Path(".")), ["both"])
c.close()
"""


def test_two_processes_registering_at_once_both_land(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", REGISTER, url, name], cwd=Path(__file__).parent.parent)
        for name in ("p1", "p2")
    ]
    assert [p.wait(120) for p in procs] == [0, 0]
    c = open_catalogue(url)
    try:
        assert len(c.entries(tag="both")) == 80
    finally:
        c.close()


def test_a_shared_results_database_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(QUICK)
    done = run_cli(
        "run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "a"), "--results", postgres_url, "--tag", "team",
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "warning:" not in done.stderr, done.stderr[-2000:]
    c = open_catalogue(postgres_url)
    try:
        (kept,) = c.entries(tag="team")
        c.register(entry_of(summary("kept-b", 100, 10), tmp_path), ["team"], registered_at=1.0)
        c.set_baseline("pg", [kept.run_id, "kept-b"])
        assert {e.run_id for e in c.baseline("pg")} == {kept.run_id, "kept-b"}
    finally:
        c.close()
    listed = run_cli("runs", "list", "--json", "--results", postgres_url, timeout=60)
    assert {r["run_id"] for r in json.loads(listed.stdout)} == {kept.run_id, "kept-b"}


# ---- groups of runs ------------------------------------------------------------------------------

P99_BAND = Band("latency p99 ms", 25, 50, higher_is_worse=True)
QPS_BAND = Band("qps", 10, 20, higher_is_worse=False)


@pytest.mark.parametrize(
    ("interval", "band", "expected"),
    [
        ((55.0, 80.0), P99_BAND, REGRESSED),  # the whole interval beyond +50 %
        ((40.0, 80.0), P99_BAND, TOO_NOISY),  # straddles +50 %
        ((-10.0, 30.0), P99_BAND, NO_CHANGE),  # within ±50 %
        ((-80.0, -60.0), P99_BAND, IMPROVED),
        ((-30.0, -25.0), QPS_BAND, REGRESSED),  # throughput: down is worse
        ((-25.0, 5.0), QPS_BAND, TOO_NOISY),
        ((22.0, 40.0), QPS_BAND, IMPROVED),
    ],
)
def test_an_interval_is_judged_against_the_band_as_documented(interval, band, expected) -> None:
    assert judge(interval, band) == expected


@pytest.mark.parametrize(("runs", "at_least"), [(3, 0.80), (5, 0.90), (10, 0.90)])
def test_the_interval_covers_the_true_change_at_about_its_stated_rate_on_synthetic_groups(runs, at_least) -> None:
    """95 % stated; measured here on 200 pairs of normal groups (5 % shift, 10 % spread): about
    87 % with 3 runs a side (the bootstrap of three is short of its level, as README says), 97 %
    with 5 and 10. The floor leaves room for the 200 pairs' own error."""
    rng = random.Random(runs)
    covered = 0
    for trial in range(200):
        mu, sigma = rng.uniform(50, 500), rng.uniform(0.02, 0.15)
        a = [rng.gauss(mu, sigma * mu) for _ in range(runs)]
        b = [rng.gauss(mu * 1.05, sigma * mu) for _ in range(runs)]
        lo, hi = bootstrap_interval(a, b, False, trial, resamples=1000)
        covered += lo <= 5.0 <= hi
    assert covered / 200 >= at_least


def test_the_same_groups_give_the_same_interval() -> None:
    a, b = [100.0, 104.0, 97.0], [120.0, 118.0, 125.0]
    assert bootstrap_interval(a, b, False, 7) == bootstrap_interval(a, b, False, 7)


def test_groups_of_runs_compared_from_the_command_line(tmp_path: Path) -> None:
    steady = [write_run(tmp_path, summary(f"a{k}", 1000 + k * 5, 10.0 + k * 0.1)) for k in range(4)]
    slower = [write_run(tmp_path, summary(f"b{k}", 1000 - k * 5, 20.0 + k * 0.2)) for k in range(4)]
    noisy = [write_run(tmp_path, summary(f"c{k}", 1000, v)) for k, v in enumerate((8.0, 30.0, 11.0, 14.0))]
    regressed = run_cli(
        "compare", "--json", str(tmp_path / "g.json"), "--html", str(tmp_path / "g.html"),
        *map(str, steady), "--", *map(str, slower), timeout=60,
    )  # fmt: skip
    assert regressed.returncode == 1, regressed.stdout[-2000:] + regressed.stderr[-2000:]
    assert "regressed" in regressed.stdout
    judged = {r["figure"]: r for r in json.loads((tmp_path / "g.json").read_text())["rows"]}
    p99 = judged["latency p99 ms"]
    assert p99["verdict"] == "regressed" and p99["low"] > 50 and len(p99["base"]) == 4
    assert judged["qps"]["verdict"] == "no change detected"
    page = (tmp_path / "g.html").read_text()
    assert external_references(page) == []
    dom = browse(tmp_path / "g.html", tmp_path, "--dump-dom")
    assert dom.returncode == 0 and 'id="chart-groups"' in dom.stdout and "regressed" in dom.stdout
    unclear = run_cli("compare", *map(str, steady), "--", *map(str, noisy), timeout=60)
    assert unclear.returncode == 0 and "too noisy to say" in unclear.stdout, unclear.stdout[-2000:]
    two = run_cli("compare", *map(str, steady[:2]), "--", *map(str, slower[:2]), timeout=60)
    assert two.returncode == 0 and "nothing judged" in two.stdout  # (medians only below 3 a side)
    failed = write_run(tmp_path, summary("f0", 1000, 10.0, status="FAILED"))
    mixed = run_cli("compare", "--force", *map(str, steady[:3]), "--", str(failed), *map(str, steady[3:]), timeout=60)
    assert mixed.returncode == 1  # a candidate that did not complete holds nothing up


def test_compare_groups_keeps_each_sides_values_and_medians() -> None:
    base = [summary(f"a{k}", q, 10.0) for k, q in enumerate((90.0, 100.0, 110.0))]
    cand = [summary(f"b{k}", q, 10.0) for k, q in enumerate((100.0, 120.0, 140.0))]
    c = compare_groups(base, cand, (QPS_BAND,), (["a"], ["b"]))
    row = next(r for r in c.rows if r.figure == "qps")
    assert (row.base, row.candidate) == ((90.0, 100.0, 110.0), (100.0, 120.0, 140.0))
    assert (row.base_median, row.candidate_median, row.change) == (100.0, 120.0, 20.0)
    assert row.low is not None and row.low <= 20.0 <= row.high


def test_a_trend_of_a_scenarios_kept_runs_with_its_baseline_marked(tmp_path: Path) -> None:
    env = os.environ | {"STARTLINE_HOME": str(tmp_path / "home")}
    url = f"sqlite:///{tmp_path / 'home' / FILE}"
    c = open_catalogue(url)
    try:
        for k in range(6):
            s = summary(f"t{k}", 1000 + 10 * k, 10.0 + k, status="COMPLETED" if k != 4 else "FAILED")
            c.register(entry_of(s, tmp_path), registered_at=float(k))
        c.register(entry_of(summary("other", 5, 5) | {"scenario": "other"}, tmp_path))
        c.set_baseline("main", ["t1", "t2"])
    finally:
        c.close()
    done = run_cli("runs", "trend", "kept", "--html", str(tmp_path / "trend.html"), timeout=60, env=env)
    assert done.returncode == 0 and "(6 runs)" in done.stdout, done.stdout + done.stderr
    page = (tmp_path / "trend.html").read_text()
    assert external_references(page) == [] and page.count(">baseline<") == 2 and "other" not in page
    dom = browse(tmp_path / "trend.html", tmp_path, "--dump-dom")
    figure = dom.stdout.split('<figure id="chart-trend">')[1].split("</figure>")[0]
    assert dom.returncode == 0 and "p99 ms" in figure and "qps" in figure
    none = run_cli("runs", "trend", "nothing", "--html", str(tmp_path / "t2.html"), timeout=60, env=env)
    assert none.returncode == 2 and "no kept runs" in none.stderr and not (tmp_path / "t2.html").exists()


def test_a_shared_results_database_on_snowflake(fakesnow_home: Path, tmp_path: Path) -> None:
    from startline.backends.snowflake.conn import SnowflakeSettings

    conn = SnowflakeSettings("fakesnow").connect()
    try:
        conn.cursor().execute("CREATE DATABASE IF NOT EXISTS RESULTS")
        conn.cursor().execute("CREATE SCHEMA IF NOT EXISTS RESULTS.PUBLIC")
    finally:
        conn.close()
    url = "snowflake://fakesnow?database=RESULTS&schema=PUBLIC"
    c = open_catalogue(url)
    try:
        c.register(entry_of(summary("nightly_1", 100, 10), tmp_path), ["team"], registered_at=1.0)
        c.register(entry_of(summary("nightly_1", 120, 9), tmp_path), ["team", "v2"], registered_at=2.0)  # again
        c.register(entry_of(summary("nightlyX2", 90, 11), tmp_path), registered_at=3.0)
        (kept,) = c.entries(tag="team")
        assert kept.run_id == "nightly_1" and kept.figures["qps"] == 120  # updated, not doubled
        assert c.tags_of("nightly_1") == ["team", "v2"]
        assert c.find("nightly_").run_id == "nightly_1"  # `_` is itself, not any character
        c.set_baseline("main", ["nightly_1", "nightlyX2"])
        assert {e.run_id for e in c.baseline("main")} == {"nightly_1", "nightlyX2"}
    finally:
        c.close()
    listed = run_cli("runs", "list", "--json", "--results", url, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["run_id"] for r in json.loads(listed.stdout)) == ["nightlyX2", "nightly_1"]


def test_since_reads_a_date_an_instant_or_an_age() -> None:
    from startline.catalogue.commands import parse_since

    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400 and parse_since("30m", now) == now - 1800
    assert parse_since("2026-12-01", now) == 1_796_083_200.0  # midnight UTC
    assert parse_since("2026-12-01T01:00+01:00", now) == 1_796_083_200.0
