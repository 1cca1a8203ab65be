"""``startline init WORKLOAD --target URL``: make a built-in workload's tables and load them
(issue 24) — PostgreSQL by ``COPY`` (as ``pgbench -i`` does), SQLite by batched inserts in one
transaction per batch, Snowflake by ``INSERT … SELECT`` from its ``GENERATOR`` where the workload
says how (pgbench's tables) and batched inserts otherwise. Refuses tables that exist unless
``drop`` (then they are made again), so a second ``init`` never half-overwrites a loaded database."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from startline.engine.scenario import ConfigError
from startline.engine.standard import Table, WorkloadError, workload
from startline.urls import Url

BATCH = 10_000
"""Rows per progress report (and per SQLite transaction)."""

Progress = Callable[[str, int, int], None]
"""(table, rows loaded so far, rows in all)."""


def init(options: Mapping[str, Any], target: Url, *, drop: bool, progress: Progress) -> dict[str, int]:
    """Make and load the tables of the workload ``options`` names; rows loaded per table."""
    try:
        found = workload(options)
        tables = found.tables(options)
    except WorkloadError as exc:
        raise ConfigError(exc.field, exc.message) from None
    if target.scheme not in found.targets:
        raise ConfigError("--target", f"{found.name} runs on {', '.join(s + '://' for s in found.targets)} targets")
    if target.scheme == "snowflake":
        return _snowflake(tables, target, drop, progress)
    if target.scheme == "postgresql":
        return _postgres(tables, target.connection, drop, progress)
    if target.scheme == "sqlite":
        assert target.path is not None
        return _sqlite(tables, target.path, drop, progress)
    raise ConfigError(
        "--target", f"init loads postgresql://, sqlite:// and snowflake:// targets (not {target.scheme}://)"
    )


def _refuse_existing(existing: list[str]) -> None:
    if existing:
        raise ConfigError(
            "--drop", f"table {existing[0]} exists: give --drop to drop the workload's tables and make them again"
        )


def _postgres(tables: list[Table], url: str, drop: bool, progress: Progress) -> dict[str, int]:
    from startline.compose import backend

    backend("postgresql", "init")  # psycopg, or one line naming the extra
    import psycopg

    loaded: dict[str, int] = {}
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as exc:  # (a wrong host, port or database: the user's to fix)
        raise ConfigError("--target", f"cannot reach it: {' '.join(str(exc).split())}") from None
    with conn:
        existing = [t.name for t in tables if conn.execute("SELECT to_regclass(%s)", (t.name,)).fetchone()[0]]
        if not drop:
            _refuse_existing(existing)
        for t in reversed(tables):
            conn.execute(f"DROP TABLE IF EXISTS {t.name}")
        for t in tables:
            conn.execute(t.ddl["postgresql"])
            n = 0
            with conn.cursor() as cur, cur.copy(f"COPY {t.name} ({', '.join(t.columns)}) FROM STDIN") as copy:
                for row in t.rows():
                    copy.write_row(row)
                    n += 1
                    if n % BATCH == 0:
                        progress(t.name, n, t.count)
            progress(t.name, n, t.count)
            loaded[t.name] = n
            for index in t.indexes:
                conn.execute(index)
        conn.execute(f"VACUUM ANALYZE {', '.join(t.name for t in tables)}")
    return loaded


def _sqlite(tables: list[Table], path: Any, drop: bool, progress: Progress) -> dict[str, int]:
    from startline.backends.sqlite.db import connect

    loaded: dict[str, int] = {}
    conn = connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not drop:
            _refuse_existing([t.name for t in tables if t.name in names])
        for t in reversed(tables):
            conn.execute(f"DROP TABLE IF EXISTS {t.name}")
        for t in tables:
            conn.execute(t.ddl["sqlite"])
            insert = f"INSERT INTO {t.name} ({', '.join(t.columns)}) VALUES ({', '.join('?' * len(t.columns))})"
            n = 0
            for batch in _batches(t.rows(), BATCH):
                with _transaction(conn):
                    conn.executemany(insert, batch)
                n += len(batch)
                progress(t.name, n, t.count)
            if not n:
                progress(t.name, 0, 0)
            loaded[t.name] = n
            for index in t.indexes:
                conn.execute(index)
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return loaded


SNOWFLAKE_BATCH = 500
"""Rows per Snowflake INSERT: one multi-row VALUES statement with its values bound (the
connector's ``executemany`` sends one request per row to the emulator)."""


def _snowflake(tables: list[Table], target: Url, drop: bool, progress: Progress) -> dict[str, int]:
    """Tables made in the target URL's database and schema: hybrid tables (the URL's ``hybrid``,
    on unless ``hybrid=false``) for those with a primary key where the account has them, standard
    tables otherwise (a ``(standard)`` progress line says which)."""
    from startline.compose import backend

    backend("snowflake", "init")  # the connector, or one line naming the extra
    from startline.backends.snowflake.conn import ConnectionFailed, SnowflakeSettings
    from startline.backends.snowflake.control import create_table

    settings = SnowflakeSettings.from_url(target, default_schema="PUBLIC", in_context=True)
    try:
        conn = settings.connect()
    except ConnectionFailed as exc:
        raise ConfigError("--target", str(exc)) from None
    loaded: dict[str, int] = {}
    try:
        cur = conn.cursor()
        existing = []
        for t in tables:
            try:
                cur.execute(f"SELECT 1 FROM {t.name} LIMIT 0")
                existing.append(t.name)
            except Exception:  # (no such table: the connector's ProgrammingError)
                pass
        if not drop:
            _refuse_existing(existing)
        for t in reversed(tables):
            cur.execute(f"DROP TABLE IF EXISTS {t.name}")
        for t in tables:
            ddl = t.ddl["snowflake"]
            if settings.hybrid and t.key("snowflake"):
                ddl = ddl.replace("CREATE TABLE", "CREATE HYBRID TABLE", 1)
            create_table(conn, ddl)
            if "snowflake" in t.generate:
                cur.execute(t.generate["snowflake"])
                n = t.count
            else:
                one = f"({', '.join('?' * len(t.columns))})"
                n = 0
                for batch in _batches(t.rows(), SNOWFLAKE_BATCH):
                    values = ", ".join([one] * len(batch))  # one statement, its values bound
                    cur.execute(
                        f"INSERT INTO {t.name} ({', '.join(t.columns)}) VALUES {values}", [x for r in batch for x in r]
                    )
                    n += len(batch)
                    progress(t.name, n, t.count)
            progress(t.name, n, t.count)
            loaded[t.name] = n
    finally:
        conn.close()
    return loaded


def _batches(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """``rows`` in lists of ``size`` (the last shorter), never all held at once."""
    while batch := [row for _, row in zip(range(size), rows, strict=False)]:
        yield batch


@contextlib.contextmanager
def _transaction(conn: Any) -> Any:
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
