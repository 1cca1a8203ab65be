"""Where kept runs are listed: a SQLite file in the user's data directory (``STARTLINE_HOME``
overrides it), or a results database a team shares by URL (``--results postgresql://…`` or
``snowflake://CONNECTION?database=…&schema=…``). Three
tables: the runs (``Entry``: who, when, status, key figures, directory), their tags, and named
baselines (sets of runs). Every call is short and synchronous (the CLI's, and one at a run's end)."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from startline.catalogue.entry import FIGURES, Entry

FILE = "catalogue.sqlite"
BUSY_TIMEOUT_S = 10.0
"""A catalogue another process is writing is waited for this long (then: a warning, never a hang)."""

COLUMNS = ("RUN_ID", "NAME", "SCENARIO_HASH", "STARTED_AT", "STATUS", "VERDICT", "DIRECTORY", "REGISTERED_AT")
FIGURE_COLUMNS = tuple(f.upper() for f in FIGURES)
DDL = (
    "CREATE TABLE IF NOT EXISTS STARTLINE_RUNS (RUN_ID VARCHAR(200) PRIMARY KEY, NAME VARCHAR(500) NOT NULL, "
    "SCENARIO_HASH VARCHAR(16), STARTED_AT DOUBLE PRECISION, STATUS VARCHAR(20), VERDICT VARCHAR(20), "
    "DIRECTORY VARCHAR(4000), REGISTERED_AT DOUBLE PRECISION, "
    + ", ".join(f"{c} DOUBLE PRECISION" for c in FIGURE_COLUMNS)
    + ")",
    "CREATE TABLE IF NOT EXISTS STARTLINE_RUN_TAGS (RUN_ID VARCHAR(200), TAG VARCHAR(200), PRIMARY KEY (RUN_ID, TAG))",
    "CREATE TABLE IF NOT EXISTS STARTLINE_BASELINES (NAME VARCHAR(200), RUN_ID VARCHAR(200), "
    "PRIMARY KEY (NAME, RUN_ID))",
)


class CatalogueError(Exception):
    """The catalogue cannot be opened, read or written, or holds no such run: one line."""


def home() -> Path:
    """``STARTLINE_HOME``, else the user's data directory (``$XDG_DATA_HOME/startline``,
    ``~/.local/share/startline``; macOS: ``~/Library/Application Support/startline``)."""
    if os.environ.get("STARTLINE_HOME"):
        return Path(os.environ["STARTLINE_HOME"])
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "startline"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "startline"


def where(results: str | None) -> str:
    """What ``open_catalogue(results)`` opens, for messages (a password in a URL is not shown)."""
    if results is None:
        return str(home() / FILE)
    if "@" in results and "://" in results:
        scheme, rest = results.split("://", 1)
        return f"{scheme}://…@{rest.rsplit('@', 1)[1]}"
    return results


SQLITE, POSTGRES, SNOWFLAKE = "sqlite", "postgresql", "snowflake"


@attrs.define(eq=False)
class Catalogue:
    conn: Any
    dialect: str = SQLITE

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.dialect == POSTGRES else text

    def _upsert(self, cur: Any, table: str, keys: Sequence[str], cols: Sequence[str], values: Sequence[Any]) -> None:
        """Insert a row, or update its other columns where one with the same ``keys`` is (Snowflake
        keeps no primary key: MERGE there, ON CONFLICT elsewhere)."""
        rest = [c for c in cols if c not in keys]
        if self.dialect == SNOWFLAKE:
            source = ", ".join(f"? AS {c}" for c in cols)
            on = " AND ".join(f"T.{k} = S.{k}" for k in keys)
            matched = f"WHEN MATCHED THEN UPDATE SET {', '.join(f'{c} = S.{c}' for c in rest)} " if rest else ""
            cur.execute(
                f"MERGE INTO {table} T USING (SELECT {source}) S ON {on} {matched}"
                f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join(f'S.{c}' for c in cols)})",
                tuple(values),
            )
            return
        action = f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in rest)}" if rest else "DO NOTHING"
        cur.execute(
            self._sql(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
                f"ON CONFLICT ({', '.join(keys)}) {action}"
            ),
            tuple(values),
        )

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        cur = self.conn.cursor()
        try:
            if self.dialect == SQLITE:
                cur.execute("BEGIN IMMEDIATE")
            yield cur
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            cur.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(self._sql(sql), tuple(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def create(self) -> None:
        with self._writing() as cur:
            for sql in DDL:
                cur.execute(sql)

    def register(self, entry: Entry, tags: Iterable[str] = (), registered_at: float = 0.0) -> None:
        """Add the run, or update it (a run registered again: its status, figures and directory
        as they are now), and its tags."""
        cols = (*COLUMNS, *FIGURE_COLUMNS)
        values = (
            entry.run_id,
            entry.name,
            entry.scenario_hash,
            entry.started_at,
            entry.status,
            entry.verdict,
            entry.directory,
            registered_at,
            *(entry.figures.get(f) for f in FIGURES),
        )
        with self._writing() as cur:
            self._upsert(cur, "STARTLINE_RUNS", ("RUN_ID",), cols, values)
            for tag in tags:
                self._upsert(cur, "STARTLINE_RUN_TAGS", ("RUN_ID", "TAG"), ("RUN_ID", "TAG"), (entry.run_id, tag))

    def entries(self, name: str | None = None, tag: str | None = None, since: float | None = None) -> list[Entry]:
        """The kept runs, oldest first (by START_TIME; never started: by registration)."""
        sql = f"SELECT {', '.join((*COLUMNS, *FIGURE_COLUMNS))} FROM STARTLINE_RUNS R WHERE 1 = 1"
        params: list[Any] = []
        if name is not None:
            sql += " AND NAME = ?"
            params.append(name)
        if tag is not None:
            sql += " AND EXISTS (SELECT 1 FROM STARTLINE_RUN_TAGS T WHERE T.RUN_ID = R.RUN_ID AND T.TAG = ?)"
            params.append(tag)
        if since is not None:
            sql += " AND COALESCE(STARTED_AT, REGISTERED_AT) >= ?"
            params.append(since)
        sql += " ORDER BY COALESCE(STARTED_AT, REGISTERED_AT), RUN_ID"
        return [_entry(row) for row in self._rows(sql, params)]

    def find(self, ref: str) -> Entry:
        """The run whose id is ``ref``, or the one run whose id starts with it."""
        sql = f"SELECT {', '.join((*COLUMNS, *FIGURE_COLUMNS))} FROM STARTLINE_RUNS WHERE RUN_ID = ?"
        rows = self._rows(sql, (ref,))
        if not rows:
            escaped = ref.replace("!", "!!").replace("%", "!%").replace("_", "!_")
            rows = self._rows(sql.replace("RUN_ID = ?", "RUN_ID LIKE ? ESCAPE '!'"), (escaped + "%",))
        if len(rows) != 1:
            why = "no kept run" if not rows else f"{len(rows)} kept runs"
            raise CatalogueError(f"{ref}: {why} has that id{' prefix' if rows else ''} (`startline runs list`)")
        return _entry(rows[0])

    def tags_of(self, run_id: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT TAG FROM STARTLINE_RUN_TAGS WHERE RUN_ID = ? ORDER BY TAG", (run_id,))]

    def baselines_of(self, run_id: str) -> list[str]:
        sql = "SELECT NAME FROM STARTLINE_BASELINES WHERE RUN_ID = ? ORDER BY NAME"
        return [r[0] for r in self._rows(sql, (run_id,))]

    def add_tags(self, run_id: str, tags: Iterable[str]) -> None:
        with self._writing() as cur:
            for tag in tags:
                self._upsert(cur, "STARTLINE_RUN_TAGS", ("RUN_ID", "TAG"), ("RUN_ID", "TAG"), (run_id, tag))

    def set_baseline(self, name: str, run_ids: Sequence[str]) -> None:
        """The baseline ``name`` is these runs (replacing what it was)."""
        with self._writing() as cur:
            cur.execute(self._sql("DELETE FROM STARTLINE_BASELINES WHERE NAME = ?"), (name,))
            for run_id in dict.fromkeys(run_ids):
                cur.execute(self._sql("INSERT INTO STARTLINE_BASELINES (NAME, RUN_ID) VALUES (?, ?)"), (name, run_id))

    def baseline(self, name: str) -> list[Entry]:
        sql = (
            f"SELECT {', '.join(f'R.{c}' for c in (*COLUMNS, *FIGURE_COLUMNS))} FROM STARTLINE_RUNS R "
            "JOIN STARTLINE_BASELINES B ON B.RUN_ID = R.RUN_ID WHERE B.NAME = ? "
            "ORDER BY COALESCE(R.STARTED_AT, R.REGISTERED_AT), R.RUN_ID"
        )
        found = [_entry(row) for row in self._rows(sql, (name,))]
        if not found:
            raise CatalogueError(f"{name}: no baseline of that name (`startline runs baseline {name} RUN…`)")
        return found

    def remove(self, run_id: str) -> None:
        with self._writing() as cur:
            for table in ("STARTLINE_RUN_TAGS", "STARTLINE_BASELINES", "STARTLINE_RUNS"):
                cur.execute(self._sql(f"DELETE FROM {table} WHERE RUN_ID = ?"), (run_id,))

    def close(self) -> None:
        self.conn.close()


def _entry(row: Sequence[Any]) -> Entry:
    fixed = dict(zip(COLUMNS, row[: len(COLUMNS)], strict=True))
    return Entry(
        run_id=fixed["RUN_ID"],
        name=fixed["NAME"],
        scenario_hash=fixed["SCENARIO_HASH"] or "",
        started_at=fixed["STARTED_AT"],
        status=fixed["STATUS"] or "?",
        verdict=fixed["VERDICT"],
        directory=fixed["DIRECTORY"] or "",
        figures=dict(zip(FIGURES, row[len(COLUMNS) :], strict=True)),
    )


def open_catalogue(results: str | None = None) -> Catalogue:
    """The catalogue at ``results`` (None: the SQLite file in ``home()``; ``sqlite:///PATH``;
    ``postgresql://…`` with the ``postgres`` extra), its tables made if missing."""
    try:
        if results is None or results.startswith("sqlite:///"):
            path = home() / FILE if results is None else Path(results.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            catalogue = Catalogue(_Autocommit(conn))
        elif results.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError:
                raise CatalogueError(
                    "a PostgreSQL results database needs the postgres extra: pip install 'startline[postgres]'"
                ) from None
            catalogue = Catalogue(psycopg.connect(results, connect_timeout=10), POSTGRES)
        elif results.startswith("snowflake://"):
            from startline.backends.snowflake.conn import SnowflakeSettings
            from startline.urls import parse_url

            settings = SnowflakeSettings.from_url(
                parse_url(results, "--results"), default_schema="PUBLIC", in_context=True
            )
            catalogue = Catalogue(settings.connect(), SNOWFLAKE)
        else:
            raise CatalogueError(
                f"{where(results)}: give sqlite:///PATH, postgresql://… or snowflake://… for --results"
            )
        catalogue.create()
        return catalogue
    except CatalogueError:
        raise
    except Exception as exc:
        raise CatalogueError(f"{where(results)}: {type(exc).__name__}: {exc}") from None


@attrs.define
class _Autocommit:
    """A SQLite connection in autocommit mode whose writes the catalogue brackets itself
    (``BEGIN IMMEDIATE``: the write lock taken at once, so two processes registering at once
    wait for each other instead of failing on an upgrade)."""

    conn: sqlite3.Connection

    def cursor(self) -> sqlite3.Cursor:
        return self.conn.cursor()

    def commit(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()
