"""Built-in workloads (issue 24): a scenario's ``[workload]`` table names one and its options,
and the scenario gets that workload's operations; ``startline init`` makes and loads its tables.

pgbench's two built-in scripts, exactly (PostgreSQL's ``pgbench`` documentation and source,
``tpcb-like`` and ``select-only``): the tables ``pgbench_branches``, ``pgbench_tellers``,
``pgbench_accounts``, ``pgbench_history``; at scale s, s branches, 10·s tellers and 100,000·s
accounts, every balance 0; ``aid`` uniform in [1, 100,000·s], ``bid`` in [1, s], ``tid`` in
[1, 10·s], ``delta`` in [−5,000, 5,000]. So tables made by ``pgbench -i -s S`` serve them as
they are, and figures sit beside pgbench's. (pgbench's ``-i`` makes ``filler`` columns of 84
and 88 blank characters; ``init`` makes them too, on PostgreSQL.)
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

import attrs

from startline.engine.distributions import fnv64, printable
from startline.workloads import tpcc


class WorkloadError(ValueError):
    """A ``[workload]`` table's problem: ``field`` (dotted) and what is wrong (``Scenario.from_dict``
    says it as a ``ConfigError``; this module does not import the scenario's)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


ACCOUNTS_PER_SCALE, TELLERS_PER_SCALE = 100_000, 10
MAX_SCALE = 100_000


@attrs.frozen
class Table:
    """One table of a workload: its DDL per dialect, and its rows (generated, never held whole)."""

    name: str
    ddl: Mapping[str, str]
    """dialect (``postgresql``, ``sqlite``) → CREATE TABLE."""
    columns: tuple[str, ...]
    count: int
    rows: Callable[[], Iterator[tuple[Any, ...]]]
    indexes: tuple[str, ...] = ()
    """CREATE INDEX statements (the same in every dialect), made after the rows are in."""
    generate: Mapping[str, str] = attrs.field(factory=dict)
    """dialect → one ``INSERT … SELECT`` that makes the rows on the server (Snowflake's
    ``GENERATOR``), instead of sending them."""

    def key(self, dialect: str) -> bool:
        """Whether the table has a primary key (a Snowflake hybrid table needs one)."""
        return "PRIMARY KEY" in self.ddl.get(dialect, "")


@attrs.frozen
class Workload:
    name: str
    summary: str
    options: Mapping[str, Any]
    """Its options and their defaults."""
    operations: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
    tables: Callable[[Mapping[str, Any]], list[Table]]
    check: Callable[[Any], Awaitable[list[dict[str, Any]]]] | None = None
    """After a run: the workload's consistency conditions on the target, through a session
    (``query(sql, params)``): each ``{name, ok, checked, detail}``."""
    rate: tuple[str, str] | None = None
    """(operation, name): the workload's throughput figure, that operation's rate per minute
    in MEASUREMENT (TPC-C's tpmC)."""
    targets: tuple[str, ...] = ("postgresql", "sqlite", "snowflake")
    """The target schemes it runs on."""


def _scale(options: Mapping[str, Any]) -> int:
    scale = options.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise WorkloadError("workload.scale", f"must be an integer in [1, {MAX_SCALE:,}] (got {scale!r})")
    return scale


def _bounded(options: Mapping[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise WorkloadError(f"workload.{name}", f"must be an integer in [{lo:,}, {hi:,}] (got {value!r})")
    return value


def _pgbench_params(scale: int) -> dict[str, Any]:
    return {
        "aid": {"type": "int", "min": 1, "max": ACCOUNTS_PER_SCALE * scale},
        "bid": {"type": "int", "min": 1, "max": scale},
        "tid": {"type": "int", "min": 1, "max": TELLERS_PER_SCALE * scale},
        "delta": {"type": "int", "min": -5000, "max": 5000},
    }


def tpcb_operations(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """pgbench's ``tpcb-like``: five statements in one transaction."""
    return [
        {
            "name": "tpcb",
            "transaction": [
                {"sql": "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid"},
                {"sql": "SELECT abalance FROM pgbench_accounts WHERE aid = :aid"},
                {"sql": "UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid"},
                {"sql": "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid"},
                {
                    "sql": "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                    "VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP)"
                },
            ],
            "params": _pgbench_params(_scale(options)),
        }
    ]


def select_only_operations(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """pgbench's ``select-only``: one read of an account's balance."""
    aid = _pgbench_params(_scale(options))["aid"]
    return [{"name": "select", "sql": "SELECT abalance FROM pgbench_accounts WHERE aid = :aid", "params": {"aid": aid}}]


async def tpcb_check(session: Any) -> list[dict[str, Any]]:
    """After a ``tpcb`` run: every balance table agrees with the history (each transaction adds
    its delta to one account, teller and branch and writes it to the history)."""
    ((a, b, t, h),) = await session.query(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), "
        "(SELECT sum(tbalance) FROM pgbench_tellers), (SELECT coalesce(sum(delta), 0) FROM pgbench_history)",
        {},
    )
    ok = a == b == t == h
    detail = f"sum(abalance) {a}, sum(bbalance) {b}, sum(tbalance) {t}, sum(history.delta) {h}"
    return [{"name": "balances", "ok": ok, "checked": 4, "detail": detail + (" agree" if ok else " disagree")}]


def _numbers(count: int) -> str:
    """Snowflake: ``count`` rows numbered 1…count in a column ``n`` (``SEQ4`` may skip numbers;
    ``ROW_NUMBER`` over it does not)."""
    return f"(SELECT ROW_NUMBER() OVER (ORDER BY SEQ4()) AS n FROM TABLE(GENERATOR(ROWCOUNT => {count})))"


def pgbench_tables(options: Mapping[str, Any]) -> list[Table]:
    scale = _scale(options)
    accounts = ACCOUNTS_PER_SCALE * scale
    tellers = TELLERS_PER_SCALE * scale
    pg, lite, sf = "postgresql", "sqlite", "snowflake"
    return [
        Table(
            "pgbench_branches",
            {
                pg: "CREATE TABLE pgbench_branches (bid int NOT NULL PRIMARY KEY, bbalance int, filler char(88)) "
                "WITH (fillfactor = 100)",
                lite: "CREATE TABLE pgbench_branches (bid INTEGER PRIMARY KEY, bbalance INTEGER, filler TEXT)",
                sf: "CREATE TABLE pgbench_branches (bid int NOT NULL PRIMARY KEY, bbalance int, filler char(88))",
            },
            ("bid", "bbalance"),
            scale,
            lambda: ((b, 0) for b in range(1, scale + 1)),
            generate={sf: f"INSERT INTO pgbench_branches (bid, bbalance) SELECT n, 0 FROM {_numbers(scale)}"},
        ),
        Table(
            "pgbench_tellers",
            {
                pg: "CREATE TABLE pgbench_tellers (tid int NOT NULL PRIMARY KEY, bid int, tbalance int, "
                "filler char(84)) WITH (fillfactor = 100)",
                lite: "CREATE TABLE pgbench_tellers (tid INTEGER PRIMARY KEY, bid INTEGER, tbalance INTEGER, "
                "filler TEXT)",
                sf: "CREATE TABLE pgbench_tellers (tid int NOT NULL PRIMARY KEY, bid int, tbalance int, "
                "filler char(84))",
            },
            ("tid", "bid", "tbalance"),
            tellers,
            lambda: ((t, (t - 1) // TELLERS_PER_SCALE + 1, 0) for t in range(1, tellers + 1)),
            generate={
                sf: "INSERT INTO pgbench_tellers (tid, bid, tbalance) "
                f"SELECT n, FLOOR((n - 1) / {TELLERS_PER_SCALE}) + 1, 0 FROM {_numbers(tellers)}"
            },
        ),
        Table(
            "pgbench_accounts",
            {
                pg: "CREATE TABLE pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, "
                "filler char(84)) WITH (fillfactor = 100)",
                lite: "CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER, abalance INTEGER, "
                "filler TEXT)",
                sf: "CREATE TABLE pgbench_accounts (aid int NOT NULL PRIMARY KEY, bid int, abalance int, "
                "filler char(84))",
            },
            ("aid", "bid", "abalance", "filler"),
            accounts,
            lambda: ((a, (a - 1) // ACCOUNTS_PER_SCALE + 1, 0, "") for a in range(1, accounts + 1)),
            generate={
                sf: "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) "
                f"SELECT n, FLOOR((n - 1) / {ACCOUNTS_PER_SCALE}) + 1, 0, '' FROM {_numbers(accounts)}"
            },
        ),
        Table(
            "pgbench_history",
            {
                pg: "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, "
                "filler char(22))",
                lite: "CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, "
                "mtime TEXT, filler TEXT)",
                sf: "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, "
                "filler char(22))",
            },
            ("tid", "bid", "aid", "delta", "mtime"),
            0,
            lambda: iter(()),
        ),
    ]


YCSB_OPTIONS = {"records": 1000, "fields": 10, "field_length": 100}
"""YCSB's ``recordcount``, ``fieldcount``, ``fieldlength`` defaults."""
YCSB_MIXES: dict[str, tuple[str, dict[str, float], str]] = {
    "a": ("update heavy: reads and updates 50/50", {"read": 0.5, "update": 0.5}, "zipfian"),
    "b": ("read mostly: reads and updates 95/5", {"read": 0.95, "update": 0.05}, "zipfian"),
    "c": ("read only", {"read": 1.0}, "zipfian"),
    "d": (
        "read latest: reads and inserts 95/5, the newest records read most",
        {"read": 0.95, "insert": 0.05},
        "latest",
    ),
    "e": ("short ranges: scans of 1-100 records and inserts 95/5", {"scan": 0.95, "insert": 0.05}, "zipfian"),
    "f": ("read-modify-write: reads and read-modify-writes 50/50", {"read": 0.5, "read_modify_write": 0.5}, "zipfian"),
}
YCSB_MAX_SCAN = 100
"""Workload E's ``maxscanlength`` (scan lengths uniform in [1, it])."""


def _ycsb_sizes(options: Mapping[str, Any]) -> tuple[int, int, int]:
    return (
        _bounded(options, "records", 1000, 1, 10**10),
        _bounded(options, "fields", 10, 1, 100),
        _bounded(options, "field_length", 100, 0, 100_000),
    )


def ycsb_operations(letter: str) -> Callable[[Mapping[str, Any]], list[dict[str, Any]]]:
    _, mix, distribution = YCSB_MIXES[letter]

    def operations(options: Mapping[str, Any]) -> list[dict[str, Any]]:
        records, fields, length = _ycsb_sizes(options)
        if distribution == "latest":
            key = {"type": "latest", "min": 0, "follows": "insert.key", "hashed": True}
        else:
            key = {"type": "scrambled_zipf", "min": 0, "max": records - 1, "hashed": True}
        names = [f"field{i}" for i in range(fields)]
        where = "WHERE ycsb_key = 'user' || :key"
        read = f"SELECT * FROM usertable {where}"
        cases = ", ".join(f"{n} = CASE :field WHEN {i} THEN :value ELSE {n} END" for i, n in enumerate(names))
        update = f"UPDATE usertable SET {cases} {where}"
        one_field = {
            "field": {"type": "int", "min": 0, "max": fields - 1},
            "value": {"type": "string", "length": length},
        }
        ops = {
            "read": {"sql": read, "params": {"key": key}},
            "update": {"sql": update, "params": {"key": key, **one_field}},
            "insert": {
                "sql": f"INSERT INTO usertable (ycsb_key, {', '.join(names)}) "
                f"VALUES ('user' || :key, {', '.join(':' + n for n in names)})",
                "params": {
                    "key": {"type": "sequence", "start": records, "hashed": True},
                    **{n: {"type": "string", "length": length} for n in names},
                },
            },
            "scan": {
                "sql": "SELECT * FROM usertable WHERE ycsb_key >= 'user' || :key ORDER BY ycsb_key LIMIT :count",
                "params": {"key": key, "count": {"type": "int", "min": 1, "max": YCSB_MAX_SCAN}},
            },
            "read_modify_write": {
                "transaction": [{"sql": read}, {"sql": update}],
                "params": {"key": key, **one_field},
            },
        }
        return [{"name": name, "weight": weight, **ops[name]} for name, weight in mix.items()]

    return operations


def ycsb_tables(options: Mapping[str, Any]) -> list[Table]:
    records, fields, length = _ycsb_sizes(options)
    names = [f"field{i}" for i in range(fields)]

    def rows() -> Iterator[tuple[Any, ...]]:
        rng = random.Random(0)
        for n in range(records):
            yield (f"user{fnv64(n)}", *(printable(rng, length) for _ in names))

    return [
        Table(
            "usertable",
            {
                "postgresql": f"CREATE TABLE usertable (ycsb_key varchar(255) PRIMARY KEY, "
                f"{', '.join(n + ' text' for n in names)})",
                "sqlite": f"CREATE TABLE usertable (ycsb_key TEXT PRIMARY KEY, "
                f"{', '.join(n + ' TEXT' for n in names)})",
                "snowflake": f"CREATE TABLE usertable (ycsb_key varchar(255) NOT NULL PRIMARY KEY, "
                f"{', '.join(n + ' varchar' for n in names)})",
            },
            ("ycsb_key", *names),
            records,
            rows,
        )
    ]


TPCC_OPTIONS = {"warehouses": 1, "items": 100_000, "customers": 3000, "think_times": False}
"""TPC-C's scale (warehouses) and sizes (items; customers per district), and whether each
terminal keys and thinks (clause 5.2.5's times)."""


def _tpcc_sizes(options: Mapping[str, Any]) -> tuple[int, int, int]:
    return (
        _bounded(options, "warehouses", 1, 1, 100_000),
        _bounded(options, "items", tpcc.ITEMS, 1, tpcc.ITEMS),
        _bounded(options, "customers", tpcc.CUSTOMERS, 10, tpcc.CUSTOMERS),
    )


def tpcc_operations(options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The five transactions as ``call`` operations, the standard mix; conflicts retried."""
    warehouses, items, customers = _tpcc_sizes(options)
    think = options.get("think_times", False)
    if not isinstance(think, bool):
        raise WorkloadError("workload.think_times", f"must be true or false (got {think!r})")
    one = {"warehouses": warehouses, "items": items, "customers": customers}
    params = {
        "w": {"type": "connection", "min": 1, "max": warehouses},
        "seed": {"type": "int", "min": 0, "max": 2**62},
        **{k: {"type": "choice", "values": [v]} for k, v in one.items()},
    }
    return [
        {
            "name": name,
            "weight": weight,
            "call": f"startline.workloads.tpcc:{name}",
            "params": params,
            "max_tries": 10,
            **({"think_time_ms": tpcc.THINK_MS[name]} if think else {}),
        }
        for name, weight in tpcc.MIX.items()
    ]


def tpcc_tables(options: Mapping[str, Any]) -> list[Table]:
    warehouses, items, customers = _tpcc_sizes(options)
    counts = tpcc.counts(warehouses, items, customers)
    return [
        Table(
            name,
            {dialect: tpcc.ddl(name, dialect) for dialect in ("postgresql", "sqlite")},
            tpcc.columns(name),
            counts[name],
            functools.partial(tpcc.rows, name, warehouses, items, customers),
            tpcc.INDEXES.get(name, ()),
        )
        for name in tpcc.TABLES
    ]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "tpcb",
            "pgbench's TPC-B-like transaction (five statements), on pgbench's tables",
            {"scale": 1},
            tpcb_operations,
            pgbench_tables,
            tpcb_check,
        ),
        Workload(
            "select-only",
            "pgbench's select-only script: one account's balance by primary key",
            {"scale": 1},
            select_only_operations,
            pgbench_tables,
        ),
        *(
            Workload(
                f"ycsb-{letter}",
                f"YCSB core workload {letter.upper()}: {summary}",
                YCSB_OPTIONS,
                ycsb_operations(letter),
                ycsb_tables,
            )
            for letter, (summary, _, _) in YCSB_MIXES.items()
        ),
        Workload(
            "tpcc",
            "TPC-C-like (not audited): five transactions 45/43/4/4/4, consistency checked after",
            TPCC_OPTIONS,
            tpcc_operations,
            tpcc_tables,
            tpcc.check,
            ("new_order", "tpmC"),
            ("postgresql", "sqlite"),
        ),
    )
}


def workload(options: Mapping[str, Any]) -> Workload:
    """The workload a ``[workload]`` table names (``ConfigError`` naming ``workload.name`` or the
    option that is not one of its own)."""
    name = options.get("name")
    found = WORKLOADS.get(name) if isinstance(name, str) else None
    if found is None:
        raise WorkloadError("workload.name", f"unknown workload {name!r} (known: {', '.join(sorted(WORKLOADS))})")
    for key in options:
        if key != "name" and key not in found.options:
            known = ", ".join(["name", *sorted(found.options)])
            raise WorkloadError(f"workload.{key}", f"unknown option of {found.name} (known: {known})")
    return found


def expand(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A scenario table with a ``[workload]``: its operations filled in (a scenario read back from
    a run, which holds both, must hold the workload's own)."""
    options = data.get("workload")
    if options is None:
        return data
    if not isinstance(options, Mapping):
        raise WorkloadError("workload", f"must be a table (got {options!r})")
    generated = workload(options).operations(options)
    given = data.get("operations")
    if given is None:
        return {**data, "operations": generated}
    names = [op.get("name") if isinstance(op, Mapping) else op.name for op in given]
    if names != [op["name"] for op in generated]:  # (a scenario read back holds the workload's own)
        raise WorkloadError("operations", "give operations or a [workload], not both")
    return data
