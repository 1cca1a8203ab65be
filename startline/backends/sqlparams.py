"""Scenario SQL names its parameters (``:id``); drivers bind positionally (``?`` for SQLite's and
Snowflake's qmark style, ``%s`` for psycopg). The rewrite is lexical and leaves alone what is
not SQL code: string literals (``'…'``, with ``''`` inside), quoted identifiers (``"…"``), line
and block comments, PostgreSQL's dollar-quoted strings (``$tag$…$tag$``) and ``::`` casts. For
``%s`` every other ``%`` is doubled, since psycopg reads the whole text as a format.

Four lexical rules do not need a SQL parser: a tokenizer such as sqlglot's would need the right
dialect per target for the same answer, and this runs once per distinct statement (cached).
"""

from __future__ import annotations

import functools
import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


@functools.lru_cache(maxsize=1024)
def positional(sql: str, marker: str = "?") -> tuple[str, tuple[str, ...]]:
    """``sql`` with each ``:name`` outside literals, identifiers and comments replaced by
    ``marker``, and the names in order (a name may repeat). With ``marker="$n"`` (PostgreSQL's
    numbered parameters, for a prepared statement) each name is ``$k``, the same ``k`` every time it
    appears, and the names are each given once, ``$1``'s first."""
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(sql)
    percent, numbered = marker == "%s", marker == "$n"
    while i < n:
        c = sql[i]
        if c in ("'", '"'):  # a literal or a quoted identifier; a doubled quote stays inside
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            out.append(_escaped(sql[i : j + 1], percent))
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(_escaped(sql[i:j], percent))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(_escaped(sql[i:j], percent))
            i = j
        elif c == "$" and (m := _DOLLAR.match(sql, i)) and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            end = sql.find(m.group(0), m.end())
            j = n if end < 0 else end + len(m.group(0))
            out.append(_escaped(sql[i:j], percent))
            i = j
        elif c == ":":
            if sql.startswith("::", i):  # a cast
                out.append("::")
                i += 2
                continue
            m = _NAME.match(sql, i + 1)
            if m is None:
                out.append(c)
                i += 1
                continue
            name = m.group(0)
            if not numbered:
                out.append(marker)
                names.append(name)
            else:
                if name not in names:
                    names.append(name)
                out.append(f"${names.index(name) + 1}")
            i = m.end()
        else:
            out.append("%%" if percent and c == "%" else c)
            i += 1
    return "".join(out), tuple(names)


def _escaped(text: str, percent: bool) -> str:
    return text.replace("%", "%%") if percent else text
