"""Parameter pools and distributions: a samples drawn once from the target and walked by every
connection without collisions, zipf / hotspot / weighted draws at their frequencies, all seeded,
bad specs refused naming the field; live on SQLite and PostgreSQL with worker processes."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from startline.engine.scenario import ConfigError, OperationSpec, ParamSpec, Scenario
from startline.engine.workload import ParamSource, sample_values, walk
from startline.testing import run_cli


@given(size=st.integers(1, 5000), connections=st.integers(1, 200), data=st.data())
def test_stride_walks_never_collide_across_connections_within_a_pass(size, connections, data):
    connections = min(connections, size)
    per_pass = max(1, size // connections)
    step = data.draw(st.integers(0, per_pass - 1))
    taken = [walk(c, connections, size, step) for c in range(connections)]
    assert len(set(taken)) == connections
    assert all(0 <= i < size for i in taken)


def _source(seed: int = 1) -> ParamSource:
    return ParamSource(random.Random(seed), slot=0)


def _draws(spec: dict, n: int, seed: int = 1) -> list:
    op = OperationSpec("q", call="x:y", params={"x": ParamSpec(**spec)})
    src = _source(seed)
    return [src.draw(op)["x"] for _ in range(n)]


def test_zipf_frequencies_follow_one_over_rank_to_the_s():
    n, s, draws = 50, 1.1, 200_000
    got = Counter(_draws({"type": "zipf", "min": 10, "max": 10 + n - 1, "s": s}, draws))
    total = sum(k**-s for k in range(1, n + 1))
    for rank in (1, 2, 3, 5, 10):
        expected = draws * rank**-s / total
        assert got[10 + rank - 1] == pytest.approx(expected, rel=0.05), rank
    assert min(got) >= 10 and max(got) <= 10 + n - 1


def test_zipf_beyond_a_table_draws_rank_one_and_two_at_their_frequencies_without_a_table():
    """Over more than ZIPF_MAX_KEYS keys (the table's limit was 1,000,000: issue 24) YCSB's
    generator: ranks 1 and 2 exactly 1/ζ(n, s) and 2^-s/ζ(n, s), all draws in range."""
    from startline.engine.distributions import zeta

    n, s, draws = 50_000_000, 0.99, 100_000
    got = Counter(_draws({"type": "zipf", "min": 1, "max": n, "s": s}, draws))
    z = zeta(n, s)
    assert got[1] / draws == pytest.approx(1 / z, rel=0.05)
    assert got[2] / draws == pytest.approx(2**-s / z, rel=0.08)
    assert min(got) >= 1 and max(got) <= n and len(got) > draws / 3  # a long tail, not a few keys


def test_zeta_beyond_the_exact_sum_matches_the_sum_and_ycsbs_precomputed_constant():
    import math

    from startline.engine.distributions import EXACT_ZETA, YCSB_ITEM_COUNT, YCSB_ZETAN, zeta

    for theta in (0.5, 0.99, 1.0, 1.2):
        n = EXACT_ZETA * 3
        assert zeta(n, theta) == pytest.approx(math.fsum(k**-theta for k in range(1, n + 1)), rel=1e-12)
    assert zeta(YCSB_ITEM_COUNT, 0.99) == pytest.approx(YCSB_ZETAN, rel=1e-10)


@given(lo=st.integers(-1000, 1000), size=st.integers(1, 100_000), seed=st.integers(0, 2**32))
def test_scrambled_zipf_stays_in_range_and_its_hottest_keys_are_ycsbs(lo, size, seed):
    """YCSB's scrambled zipfian: rank r of 10^10 lands on lo + fnvhash64(r) mod size — the
    hottest key is rank 0's, with at least its share 1/ZETAN (collisions only add to it)."""
    from startline.engine.distributions import YCSB_ZETAN, fnv64

    draws = 4000
    got = Counter(_draws({"type": "scrambled_zipf", "min": lo, "max": lo + size - 1}, draws, seed=seed))
    assert min(got) >= lo and max(got) <= lo + size - 1
    hottest = lo + fnv64(0) % size
    assert got[hottest] / draws > 0.6 / YCSB_ZETAN  # 3.8 %: far above a uniform key's share
    if size >= 1000:  # hot keys are not neighbours: the two hottest ranks land apart
        assert abs((lo + fnv64(1) % size) - hottest) > 1 or fnv64(1) % size == fnv64(0) % size


def test_fnv64_is_ycsbs_fnvhash64():
    """YCSB's Utils.fnvhash64: 64-bit FNV-1a over the long's 8 bytes, low byte first, made
    non-negative by Java's Math.abs — against FNV-1a over bytes, itself checked on the
    published test vector (FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c)."""
    from startline.engine.distributions import fnv64

    def fnv1a(data: bytes) -> int:
        h = 0xCBF29CE484222325
        for byte in data:
            h = ((h ^ byte) * 0x100000001B3) & ((1 << 64) - 1)
        return h

    assert fnv1a(b"a") == 0xAF63DC4C8601EC8C
    for v in (0, 1, 255, 256, 10**10, 2**40 + 7):
        h = fnv1a(v.to_bytes(8, "little"))
        assert fnv64(v) == abs(h - (1 << 64) if h >> 63 else h)


@settings(max_examples=20)
@given(a=st.sampled_from([15, 255, 1023]), hi=st.integers(10, 300), c=st.integers(0, 255), seed=st.integers(0, 99))
def test_nurand_follows_tpccs_definition(a, hi, c, seed):
    """NURand(A, x, y) = (((random(0, A) | random(x, y)) + C) mod (y − x + 1)) + x: the exact
    distribution for small ranges, against the draws."""
    lo = 1
    draws = 3000
    got = Counter(_draws({"type": "nurand", "a": a, "min": lo, "max": hi, "c": c}, draws, seed=seed))
    assert min(got) >= lo and max(got) <= hi
    width = hi - lo + 1
    exact: Counter[int] = Counter()
    for r1 in range(a + 1):
        for r2 in range(lo, hi + 1):
            exact[(((r1 | r2) + c) % width) + lo] += 1
    total = (a + 1) * width
    top = max(exact, key=exact.__getitem__)
    assert got[top] / draws == pytest.approx(exact[top] / total, abs=0.03)  # the most likely value


def test_hotspot_gives_its_hot_set_its_share():
    draws = 100_000
    values = _draws({"type": "hotspot", "min": 1, "max": 1000, "hot_fraction": 0.1, "hot_share": 0.8}, draws)
    hot = sum(1 for v in values if v <= 100)
    assert hot / draws == pytest.approx(0.8, abs=0.01)
    assert min(values) >= 1 and max(values) <= 1000 and len(set(values)) > 900


def test_weighted_draws_follow_their_weights_and_a_zero_weight_never_comes():
    got = Counter(_draws({"type": "weighted", "values": ["a", "b", "c"], "weights": [3, 1, 0]}, 40_000))
    assert set(got) == {"a", "b"} and got["a"] / got["b"] == pytest.approx(3, rel=0.05)


def test_the_same_seed_draws_the_same_values():
    spec = {"type": "zipf", "min": 1, "max": 1000, "s": 0.9}
    assert _draws(spec, 100, seed=7) == _draws(spec, 100, seed=7) != _draws(spec, 100, seed=8)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "zipf", "min": 1}, "max"),
        ({"type": "nurand", "min": 1, "max": 3000}, "a"),
        ({"type": "scrambled_zipf", "min": 1}, "max"),
        ({"type": "hotspot", "min": 1, "max": 9, "hot_share": 0.5}, "hot_fraction"),
        ({"type": "hotspot", "min": 1, "max": 9, "hot_fraction": 1.5, "hot_share": 0.5}, "hot_fraction"),
        ({"type": "weighted", "values": [1, 2], "weights": [1]}, "weights"),
        ({"type": "weighted", "values": [1, 2], "weights": [0, 0]}, "weights"),
        ({"type": "sample"}, "sql"),
    ],
)
def test_a_bad_distribution_is_refused_naming_its_field(spec, field):
    with pytest.raises(ConfigError) as err:
        Scenario.from_dict({"operations": [{"name": "q", "call": "x:y", "params": {"x": spec}}]})
    assert err.value.field == f"operations[0].params.x.{field}"


def test_a_pool_keeps_the_first_distinct_values_in_order_as_json_values():
    from decimal import Decimal

    assert sample_values([(3,), (1,), (3,), (None,), (Decimal("7"),), (Decimal("1.5"),)], 4) == [3, 1, 7, 1.5]
    assert sample_values([(True,)], 5) == ["True"]


SCENARIO = """
name = "pools"
seed = 5
workers = 2
connections_per_worker = 2
warmup_s = 0
measurement_s = 1.5
control = "{control}"
target = "{target}"
setup = [{setup}]

[start]
strategy = "poll"
poll_interval_ms = 20

[[operations]]
name = "log"
sql = "INSERT INTO seen (k, hot) VALUES (:k, :hot)"
params.k = {{ type = "sample", sql = "SELECT id FROM accounts WHERE id % 20 = 0 ORDER BY id", size = 40 }}
params.hot = {{ type = "hotspot", min = 1, max = 100, hot_fraction = 0.05, hot_share = 0.9 }}
"""

SQLITE_SETUP = """'''DROP TABLE IF EXISTS accounts; DROP TABLE IF EXISTS seen;
CREATE TABLE accounts (id INTEGER PRIMARY KEY); CREATE TABLE seen (k INTEGER, hot INTEGER);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
INSERT INTO accounts SELECT i FROM n;'''"""
POSTGRES_SETUP = """"DROP TABLE IF EXISTS accounts", "DROP TABLE IF EXISTS seen",
"CREATE TABLE accounts (id INT PRIMARY KEY)", "CREATE TABLE seen (k INT, hot INT)",
"INSERT INTO accounts SELECT g FROM generate_series(1, 5000) g\""""


def _check_pool_run(out, rows):
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "passed"
    pool = summary["config"]["scenario"]["operations"][0]["params"]["k"]["values"]
    assert pool == list(range(20, 801, 20))  # the first 40, in the query's order, stored with the run
    assert len(rows) == sum(b["ops"] for b in summary["phases"].values())
    assert {k for k, _ in rows} <= set(pool) and len({k for k, _ in rows}) == 40  # every worker walked it
    assert sum(1 for _, h in rows if h <= 5) / len(rows) == pytest.approx(0.9, abs=0.05)


def test_a_sample_pool_is_drawn_once_at_setup_and_walked_by_every_worker_on_sqlite(tmp_path):
    path = tmp_path / "pools.toml"
    path.write_text(
        SCENARIO.format(control="sqlite:///{out}/control.db", target="sqlite:///{out}/data.db", setup=SQLITE_SETUP)
    )
    proc = run_cli("run", "--no-report", str(path), "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = sqlite3.connect(tmp_path / "out" / "data.db").execute("SELECT k, hot FROM seen").fetchall()
    _check_pool_run(tmp_path / "out", rows)


def test_a_sample_pool_on_postgresql(tmp_path, postgres_url):
    path = tmp_path / "pools.toml"
    path.write_text(SCENARIO.format(control=postgres_url, target=postgres_url, setup=POSTGRES_SETUP))
    proc = run_cli("run", "--no-report", str(path), "--out", str(tmp_path / "out"), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with psycopg.connect(postgres_url) as c:
        rows = c.execute("SELECT k, hot FROM seen").fetchall()
    _check_pool_run(tmp_path / "out", rows)


def test_a_sample_whose_query_returns_nothing_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "pools.toml"
    text = SCENARIO.format(control="sqlite:///{out}/control.db", target="sqlite:///{out}/data.db", setup=SQLITE_SETUP)
    path.write_text(text.replace("WHERE id % 20 = 0", "WHERE id < 0"))
    proc = run_cli("run", "--no-report", str(path), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "operations.log.params.k" in proc.stderr and "Traceback" not in proc.stderr


def test_a_sample_pool_from_a_snowflake_target_on_the_emulator(tmp_path, fakesnow_home):
    setup = (
        '"CREATE DATABASE IF NOT EXISTS POOLS", "CREATE SCHEMA IF NOT EXISTS POOLS.PUBLIC", '
        '"CREATE OR REPLACE TABLE ACCOUNTS (ID INTEGER)", "CREATE OR REPLACE TABLE SEEN (K INTEGER, HOT INTEGER)", '
        '"INSERT INTO ACCOUNTS SELECT I FROM (WITH RECURSIVE N(I) AS '
        '(SELECT 1 UNION ALL SELECT I + 1 FROM N WHERE I < 5000) SELECT I FROM N)"'
    )
    text = SCENARIO.format(
        control="sqlite:///{out}/control.db", target="snowflake://fakesnow?database=POOLS&schema=PUBLIC", setup=setup
    )
    path = tmp_path / "pools.toml"
    path.write_text(text.replace("seen (k, hot)", "SEEN (K, HOT)"))
    proc = run_cli("run", "--no-report", str(path), "--out", str(tmp_path / "out"), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["scenario"]["operations"][0]["params"]["k"]["values"] == list(range(20, 801, 20))
