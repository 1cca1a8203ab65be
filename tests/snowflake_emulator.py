"""The Snowflake emulator the tests talk to: fakesnow's HTTP server (the real connector on
loopback), and one thing it does not have — INFORMATION_SCHEMA's QUERY_HISTORY_BY_WAREHOUSE table
function, as its page documents it
(https://docs.snowflake.com/en/sql-reference/functions/query_history):

- the rows are those of ``ROWS`` (a table a test creates with the function's documented output
  columns and fills with the history it wants Snowflake to have kept);
- ``WAREHOUSE_NAME => 'name'``: the warehouse's statements only (a name in double quotes inside
  the single ones keeps its case; otherwise it is an unquoted identifier, case-insensitive);
- ``END_TIME_RANGE_START`` / ``END_TIME_RANGE_END``: statements that completed in that range
  (without an end, those still running too — ``END_TIME`` 1970-01-01 here as there);
- ``RESULT_LIMIT`` (1 to 10000, default 100): applied before the query's own WHERE, keeping the
  statements with the most recent end time.

Run as ``python -m tests.snowflake_emulator --port PORT`` (what ``conftest.fakesnow_home`` does)."""

from __future__ import annotations

import sys

import sqlglot
from sqlglot import exp

ROWS = "EMULATOR.INFORMATION_SCHEMA_FUNCTIONS.QUERY_HISTORY"
"""Where the emulated function reads the account's query history from."""
FUNCTIONS = {"QUERY_HISTORY_BY_WAREHOUSE"}


def _name(value: exp.Expression) -> str:
    """WAREHOUSE_NAME's value as the object's name: '"My WH"' keeps its case, 'my_wh' is MY_WH."""
    text = value.name
    return text[1:-1] if text.startswith('"') and text.endswith('"') else text.upper()


def query_history_function(expression: exp.Expression) -> exp.Expression:
    """``TABLE([db.]INFORMATION_SCHEMA.QUERY_HISTORY_BY_WAREHOUSE(k => v, …))`` as the subquery
    over ``ROWS`` its documentation describes; any other expression as it is."""
    if not isinstance(expression, exp.TableFromRows):
        return expression
    call = expression.this
    while isinstance(call, exp.Dot):
        call = call.expression
    if not (isinstance(call, exp.Anonymous) and str(call.this).upper() in FUNCTIONS):
        return expression
    args = {str(kw.this.name).upper(): kw.expression for kw in call.expressions if isinstance(kw, exp.Kwarg)}
    if "WAREHOUSE_NAME" not in args:
        raise ValueError("the emulated QUERY_HISTORY_BY_WAREHOUSE needs WAREHOUSE_NAME (no CURRENT_WAREHOUSE here)")
    limit = int(args["RESULT_LIMIT"].name) if "RESULT_LIMIT" in args else 100
    if not 1 <= limit <= 10000:
        raise ValueError("RESULT_LIMIT must be between 1 and 10000")
    where = [f"WAREHOUSE_NAME = '{_name(args['WAREHOUSE_NAME'])}'"]
    if "END_TIME_RANGE_START" in args:
        where.append(f"END_TIME >= {args['END_TIME_RANGE_START'].sql('snowflake')}")
    if "END_TIME_RANGE_END" in args:
        where.append(f"END_TIME <= {args['END_TIME_RANGE_END'].sql('snowflake')}")
        where.append("END_TIME > TO_TIMESTAMP_LTZ('1970-01-02 00:00:00 +0000')")  # finished ones only
    query = f"SELECT * FROM {ROWS} WHERE {' AND '.join(where)} ORDER BY END_TIME DESC LIMIT {limit}"
    return exp.Subquery(this=sqlglot.parse_one(query, read="snowflake"))


def main() -> int:
    import fakesnow.cli
    from fakesnow.cursor import FakeSnowflakeCursor

    transform = FakeSnowflakeCursor._transform

    def with_functions(self: FakeSnowflakeCursor, expression: exp.Expression, params: object) -> exp.Expression:
        return transform(self, expression.transform(query_history_function, copy=False), params)

    FakeSnowflakeCursor._transform = with_functions  # type: ignore[method-assign]
    return fakesnow.cli.main(["-s", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
