"""Scenario files and the CLI: bad input is one line naming the field, exit code 2."""

from __future__ import annotations

import functools
import json

import pytest

from startline.engine.scenario import ConfigError, Scenario
from tests.helpers import ROOT, run_cli

GOOD = """
name = "ok"
workers = 2
connections_per_worker = 2
warmup_s = 0.2
measurement_s = 0.5

[start]
strategy = "poll"
poll_interval_ms = 20

[[operations]]
name = "q"
call = "startline.backends.memory.ops:sleep_ms"
params.ms = { type = "int", min = 1, max = 3 }
"""


cli = functools.partial(run_cli, timeout=120)


@pytest.mark.parametrize(
    ("replace", "by", "field"),
    [
        ("workers = 2", 'workers = "two"', "workers"),
        ("workers = 2", "workers = 0", "workers"),
        ("workers = 2", "workers = 2\nworkerz = 3", "workerz"),
        ('strategy = "poll"', 'strategy = "magic"', "start.strategy"),
        ("poll_interval_ms = 20", "poll_interval_ms = -5", "start.poll_interval_ms"),
        ("max = 3", "max = 0", "operations[0].params.ms.max"),
        ('call = "startline.backends.memory.ops:sleep_ms"', 'call = "nowhere.at_all:fn"', "operations[0].call"),
        ("measurement_s = 0.5", "measurement_s = 1e400", "measurement_s"),
        ("warmup_s = 0.2", "warmup_s = true", "warmup_s"),
    ],
)
def test_bad_scenario_field_exits_2_with_one_line_naming_it(tmp_path, replace, by, field):
    assert replace in GOOD
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace(replace, by))
    proc = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert field in lines[0]
    assert "Traceback" not in proc.stderr


def test_broken_toml_and_missing_file_exit_2(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("workers = [1,\n")
    for target in (path, tmp_path / "missing.toml"):
        proc = cli("run", str(target))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_run_writes_summary_and_exits_0(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(GOOD)
    proc = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "COMPLETED"
    assert summary["start"]["connections"] == 4
    assert summary["phases"]["MEASUREMENT"]["ops"] > 0
    assert "summary.json" in proc.stdout


def test_help_lists_the_commands():
    proc = cli("--help")
    assert proc.returncode == 0
    assert "run" in proc.stdout


def test_examples_load():
    for path in sorted((ROOT / "examples").glob("*.toml")):
        Scenario.from_toml(path)


def test_scenario_round_trips_through_to_dict():
    sc = Scenario.from_dict(
        {
            "operations": [{"name": "q", "call": "a:b", "params": {"x": {"type": "choice", "values": [1, 2]}}}],
            "schedule": [{"at_s": 1, "connections": 2}],
            "start": {"strategy": "push"},
        }
    )
    assert Scenario.from_dict(sc.to_dict()) == sc


def test_dead_after_must_exceed_stale_after():
    with pytest.raises(ConfigError, match="dead_after_beats"):
        Scenario.from_dict(
            {"operations": [{"name": "q", "call": "a:b"}], "stale_after_beats": 4, "dead_after_beats": 4}
        )
