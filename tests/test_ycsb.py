"""YCSB's core workloads (issue 24): the mixes and keys of workloads A–F, the shared insert
sequence, the ``latest`` and ``string`` generators — and every operation run against a real
SQLite usertable as ``startline init`` loads it, and the README's example from its commands."""

from __future__ import annotations

import collections
import json
import random
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.distributions import fnv64, zeta
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.standard import WORKLOADS, YCSB_MIXES
from startline.engine.workload import ParamSource
from startline.live.init import init
from startline.testing import ROOT, run_cli
from startline.urls import Url


def scenario(letter: str, **options: int) -> Scenario:
    return Scenario.from_dict({"name": "y", "workload": {"name": f"ycsb-{letter}", **options}})


def source(s: Scenario, position: int = 0, connections: int = 1, seed: int = 1) -> ParamSource:
    return ParamSource(
        random.Random(seed), slot=position, position=position, connections=connections, specs=s.param_specs
    )


def one_param(spec: dict) -> Scenario:
    return Scenario.from_dict({"name": "q", "operations": [{"name": "w", "sql": "x", "params": {"k": spec}}]})


def test_each_ycsb_workload_has_ycsbs_mix_and_hashed_keys():
    expected = {
        "a": {"read": 0.5, "update": 0.5},
        "b": {"read": 0.95, "update": 0.05},
        "c": {"read": 1.0},
        "d": {"read": 0.95, "insert": 0.05},
        "e": {"scan": 0.95, "insert": 0.05},
        "f": {"read": 0.5, "read_modify_write": 0.5},
    }
    assert set(YCSB_MIXES) == set(expected)
    for letter, mix in expected.items():
        s = scenario(letter)
        assert {op.name: op.weight for op in s.operations} == mix
        keys = {op.name: op.params["key"] for op in s.operations}
        assert all(k.hashed for k in keys.values())
        for name, key in keys.items():
            want = "sequence" if name == "insert" else "latest" if letter == "d" else "scrambled_zipf"
            assert key.type == want, (letter, name)
        assert Scenario.from_dict(s.to_dict()) == s  # read back from a run: the same scenario


@pytest.mark.parametrize(
    ("options", "field"),
    [({"records": 0}, "workload.records"), ({"fields": 101}, "workload.fields"), ({"scale": 2}, "workload.scale")],
)
def test_a_ycsb_option_out_of_range_or_not_its_own_is_refused_naming_it(options, field):
    with pytest.raises(ConfigError) as refused:
        scenario("a", **options)
    assert refused.value.field == field


@settings(max_examples=30, deadline=None)
@given(connections=st.integers(1, 12), draws=st.integers(1, 40), start=st.integers(0, 10**6))
def test_the_planned_connections_share_one_sequence_without_gaps_or_repeats(connections, draws, start):
    """Each connection's n-th draw of a ``sequence`` is start + n·C + p: together, the first n
    draws of every connection are exactly [start, start + n·C) — YCSB's insert key sequence."""
    s = one_param({"type": "sequence", "start": start})
    (op,) = s.operations
    sources = [source(s, p, connections) for p in range(connections)]
    values = [ps.draw(op)["k"] for ps in sources for _ in range(draws)]
    assert sorted(values) == list(range(start, start + draws * connections))


def test_a_connection_beyond_the_planned_ones_never_takes_a_planned_ones_value():
    s = one_param({"type": "sequence", "start": 0})
    (op,) = s.operations
    sources = [source(s, p, 4) for p in range(4)]
    planned = {ps.draw(op)["k"] for ps in sources for _ in range(1000)}
    extra = ParamSource(random.Random(1), slot=4, position=4, connections=4, planned=False, specs=s.param_specs)
    assert planned.isdisjoint(extra.draw(op)["k"] for _ in range(1000))


def test_latest_reads_the_newest_key_most_and_follows_the_inserts():
    """YCSB's skewed-latest: newest key at 1/ζ(items), the one before at 0.5^θ/ζ; never above
    the newest, never at or below ``min``; the newest moves by C keys per insert of this connection."""
    s = scenario("d", records=1000)
    read, insert = s.operations
    connections, draws = 4, 40_000
    ps = source(s, 1, connections)
    seen = collections.Counter(ps.draw(read)["key"] for _ in range(draws))
    by_key = {fnv64(n): n for n in range(1000)}
    assert set(seen) <= set(by_key)  # every read names a loaded record
    ranks = collections.Counter(999 - by_key[k] for k in seen.elements())
    z = zeta(999, 0.99)
    assert ranks[0] / draws == pytest.approx(1 / z, rel=0.08)
    assert ranks[1] / draws == pytest.approx(0.5**0.99 / z, rel=0.12)
    assert 999 not in ranks  # key 0 (rank 999): YCSB's max − zipfian(max) never reaches it
    for _ in range(3):
        ps.draw(insert)
    newest = 1000 + 3 * connections - 1
    keys = {fnv64(n): n for n in range(newest + 1)}
    drawn = [keys[ps.draw(read)["key"]] for _ in range(5000)]
    assert max(drawn) == newest and min(drawn) >= 1


@settings(max_examples=25, deadline=None)
@given(length=st.integers(0, 300), seed=st.integers(0, 2**32))
def test_a_string_parameter_is_printable_of_its_length_and_the_same_for_the_same_seed(length, seed):
    s = one_param({"type": "string", "length": length})
    (op,) = s.operations
    a, b = source(s, seed=seed).draw(op)["k"], source(s, seed=seed).draw(op)["k"]
    assert a == b and len(a) == length and a.isascii() and a.isprintable()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"v": {"type": "string", "hashed": True}}, "hashed"),
        ({"k": {"type": "latest", "min": 0}}, "follows"),
        ({"k": {"type": "latest", "min": 0, "follows": "w.nope"}}, "operations[0].params.k.follows"),
        ({"k": {"type": "latest", "min": 0, "follows": "w.v"}, "v": {"type": "int", "min": 0, "max": 1}}, "follows"),
    ],
)
def test_a_bad_latest_or_string_parameter_is_refused_naming_its_field(params, field):
    with pytest.raises(ConfigError) as refused:
        Scenario.from_dict({"name": "q", "operations": [{"name": "w", "sql": "x", "params": params}]})
    assert refused.value.field.endswith(field)


@pytest.mark.parametrize("letter", sorted(YCSB_MIXES))
def test_every_ycsb_operation_runs_on_the_usertable_init_loads(tmp_path, letter):
    """Each workload's operations against a real SQLite usertable: reads find their record,
    an update changes one field only, inserts add the next keys, scans return 1–100 rows in key
    order, read-modify-write reads then writes. Two connections take turns, at one pace, so D's
    ``latest`` reads only keys inserted."""
    db = tmp_path / "y.db"
    loaded = init({"name": f"ycsb-{letter}", "records": 300}, Url("sqlite", path=db), drop=False, progress=_quiet)
    assert loaded == {"usertable": 300}
    s = scenario(letter, records=300)
    sources = [source(s, 0, 2), source(s, 1, 2, seed=2)]
    counts: collections.Counter[str] = collections.Counter()
    with sqlite3.connect(db, isolation_level=None) as c:
        for op, ps in ((op, ps) for op in s.operations * 40 for ps in sources):
            params = ps.draw(op)
            steps = [op.sql] if op.sql else [step.sql for step in op.transaction]
            before = c.execute("SELECT * FROM usertable WHERE ycsb_key = ?", (f"user{params['key']}",)).fetchone()
            results = [c.execute(sql, params).fetchall() for sql in steps]
            after = c.execute("SELECT * FROM usertable WHERE ycsb_key = ?", (f"user{params['key']}",)).fetchone()
            counts[op.name] += 1
            if op.name in ("read", "read_modify_write"):
                assert results[0] == [before] and before is not None
            if op.name in ("update", "read_modify_write"):
                changed = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y]
                assert changed in ([1 + params["field"]], []) and after[1 + params["field"]] == params["value"]
            if op.name == "insert":
                assert before is None and after is not None and len(after[1]) == 100
            if op.name == "scan":
                (rows,) = results
                assert 1 <= len(rows) <= params["count"] <= 100
                assert rows[0][0] >= f"user{params['key']}" and [r[0] for r in rows] == sorted(r[0] for r in rows)
        total = c.execute("SELECT count(*) FROM usertable").fetchone()[0]
    assert total == 300 + counts["insert"] and set(counts) == {op.name for op in s.operations}


def _quiet(_table: str, _done: int, _total: int) -> None:
    pass


def test_workloads_lists_every_ycsb_workload():
    assert {f"ycsb-{x}" for x in "abcdef"} <= set(WORKLOADS)


@pytest.mark.live
def test_the_ycsb_example_runs_from_the_readmes_commands(tmp_path: Path) -> None:
    """The README's three lines for examples/ycsb-sqlite.toml, run as written (in a copy of the
    example's directory layout): init loads YCSB's usertable, the run reads and updates it."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(mkdir -p out\n[^`]*ycsb-sqlite\.toml[^`]*)```", readme)
    assert block, "the README shows the ycsb example's commands"
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "ycsb-sqlite.toml", tmp_path / "examples")
    for line in block.group(1).strip().splitlines():
        if line == "mkdir -p out":
            (tmp_path / "out").mkdir(exist_ok=True)
            continue
        prefix = ".venv/bin/startline "
        assert line.startswith(prefix), line
        proc = run_cli(*line[len(prefix) :].split(), timeout=240, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "ycsb" / "summary.json").read_text())
    assert summary["verdict"] == "passed" and summary["config"]["scenario"]["workload"]["name"] == "ycsb-a"
    kinds = summary["phases"]["MEASUREMENT"]["by_kind"]
    assert set(kinds) == {"read", "update"} and all(k["ops"] > 0 for k in kinds.values())
