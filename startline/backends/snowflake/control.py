"""The control plane on Snowflake: HYBRID tables (plain tables where hybrid ones are not
available), qmark binding, instants from ``CURRENT_TIMESTAMP()`` as UTC epoch seconds."""

from __future__ import annotations

import logging
from typing import Any

import snowflake.connector.errors

from startline.backends.snowflake.conn import ConnectionFailed, SnowflakeExecutor, SnowflakeSettings
from startline.backends.sqlcontrol import Dialect, SqlControlPlane, create_tables, execute

log = logging.getLogger("startline.snowflake")


def create_table(conn: Any, sql: str) -> bool:
    """``sql`` (a CREATE [HYBRID] TABLE) run; a HYBRID table the account refuses is made a plain
    table with the same columns. Whether the table made is hybrid."""
    try:
        execute(conn, sql)
        return "HYBRID" in sql
    except snowflake.connector.errors.ProgrammingError:
        if "HYBRID" not in sql:
            raise
        log.info("hybrid tables unavailable; creating a plain table instead")
        execute(conn, sql.replace("CREATE HYBRID TABLE", "CREATE TABLE"))
        return False


_SCHEMA = (
    "CREATE DATABASE IF NOT EXISTS {DATABASE}",
    "CREATE SCHEMA IF NOT EXISTS {DATABASE}.{SCHEMA}",
    *create_tables(
        "CREATE HYBRID TABLE IF NOT EXISTS", {"text": "VARCHAR", "real": "DOUBLE", "int": "INTEGER"}, keys_required=True
    ),
)


def snowflake_dialect(settings: SnowflakeSettings) -> Dialect:
    from startline.backends.snowflake.conn import identifier

    db, schema = identifier(settings.database, "database"), identifier(settings.schema, "schema")
    return Dialect(
        now="(DATE_PART(EPOCH_MICROSECOND, CURRENT_TIMESTAMP()) / 1000000.0)",
        schema=tuple(s.replace("{DATABASE}", db).replace("{SCHEMA}", schema) for s in _SCHEMA),
        upsert_heartbeat="""MERGE INTO {WORKER_HEARTBEATS} AS T USING (SELECT ? AS RUN_ID, ? AS WORKER_ID,
            ? AS STATUS, ? AS PHASE, ? AS ACTIVE_CONNECTIONS, ? AS APPLIED_SEQUENCE_ID, ? AS WORKER_GROUP,
            ? AS INCARNATION) AS S
            ON T.RUN_ID = S.RUN_ID AND T.WORKER_ID = S.WORKER_ID
            WHEN MATCHED AND T.INCARNATION = S.INCARNATION THEN UPDATE SET
              STATUS = CASE WHEN T.STATUS = 'DEAD' THEN 'DEAD' ELSE S.STATUS END,
              PHASE = S.PHASE, LAST_HEARTBEAT = {NOW}, HEARTBEAT_COUNT = T.HEARTBEAT_COUNT + 1,
              ACTIVE_CONNECTIONS = S.ACTIVE_CONNECTIONS, APPLIED_SEQUENCE_ID = S.APPLIED_SEQUENCE_ID,
              WORKER_GROUP = S.WORKER_GROUP
            WHEN NOT MATCHED THEN INSERT (RUN_ID, WORKER_ID, STATUS, PHASE, LAST_HEARTBEAT, HEARTBEAT_COUNT,
              ACTIVE_CONNECTIONS, APPLIED_SEQUENCE_ID, WORKER_GROUP, INCARNATION) VALUES (S.RUN_ID, S.WORKER_ID,
              S.STATUS, S.PHASE, {NOW}, 1, S.ACTIVE_CONNECTIONS, S.APPLIED_SEQUENCE_ID, S.WORKER_GROUP,
              S.INCARNATION)""",
        upsert_result="""MERGE INTO {TEST_RESULTS} AS T USING (SELECT ? AS RUN_ID, ? AS WORKER_ID, ? AS STATUS,
            ? AS PAYLOAD, ? AS INCARNATION) AS S ON T.RUN_ID = S.RUN_ID AND T.WORKER_ID = S.WORKER_ID
            WHEN MATCHED AND T.INCARNATION = S.INCARNATION AND T.STATUS NOT IN ('COMPLETED', 'FAILED') THEN
              UPDATE SET STATUS = S.STATUS, PAYLOAD = S.PAYLOAD, UPDATED_AT = {NOW}
            WHEN NOT MATCHED THEN INSERT (RUN_ID, WORKER_ID, STATUS, PAYLOAD, UPDATED_AT, INCARNATION)
              VALUES (S.RUN_ID, S.WORKER_ID, S.STATUS, S.PAYLOAD, {NOW}, S.INCARNATION)""",
        begin="BEGIN",
        table=settings.qualified,
        errors=(snowflake.connector.errors.Error, ConnectionFailed),
    )


class SnowflakeControlPlane(SqlControlPlane):
    """The five control tables in DATABASE.SCHEMA, through one control-pool connection."""

    def __init__(self, settings: SnowflakeSettings) -> None:
        super().__init__(
            SnowflakeExecutor(settings, {"USE_CACHED_RESULT": False}),
            snowflake_dialect(settings),
            f"snowflake://{settings.connection_name}",
        )
        self.settings = settings

    @classmethod
    def from_url(cls, url: Any) -> SnowflakeControlPlane:
        return cls(SnowflakeSettings.from_url(url))

    def create_schema(self, conn: Any, statements: list[str]) -> None:
        """HYBRID tables where the account has them; plain tables (same columns) where not."""
        for sql in statements:
            create_table(conn, sql)

    async def close(self) -> None:
        await self.executor.close()  # type: ignore[attr-defined]
