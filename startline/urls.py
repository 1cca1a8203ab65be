"""Connection URLs for the two roles: ``--control`` and ``--target``.

``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``;
``snowflake://CONNECTION_NAME[?database=DB&schema=SCHEMA]``;
``postgresql://[user@]host[:port]/db[?options]`` (libpq's own URL: PG* variables, ``~/.pgpass``
and service files fill what it leaves out). ``{out}`` in a URL is the run's output directory.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import attrs

from startline.engine.scenario import ConfigError

SCHEMES = ("memory", "sqlite", "snowflake", "postgresql")


@attrs.frozen
class Url:
    scheme: str
    path: Path | None = None
    connection: str | None = None
    options: dict[str, str] = attrs.field(factory=dict, eq=False)

    @property
    def in_process(self) -> bool:
        return self.scheme == "memory"


def parse_url(text: str, field: str, out: Path | None = None) -> Url:
    """Parse and check a URL; a problem is a ``ConfigError`` naming ``field``."""
    raw = text.replace("{out}", str(out)) if out is not None else text
    if "://" not in raw:
        raise ConfigError(field, f"{text!r} is not a URL (expected one of {', '.join(s + '://' for s in SCHEMES)})")
    scheme, rest = raw.split("://", 1)
    if scheme == "memory":
        if rest:
            raise ConfigError(field, f"memory:// takes nothing after it (got {text!r})")
        return Url("memory")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(field, f"expected sqlite:///relative.db or sqlite:////absolute.db (got {text!r})")
        path = Path(rest[1:])
        if not path.parent.is_dir():
            raise ConfigError(field, f"directory {path.parent} does not exist (for {text!r})")
        return Url("sqlite", path=path)
    if scheme == "snowflake":
        parts = urlsplit(raw)
        name = parts.netloc
        if not name:
            raise ConfigError(field, f"expected snowflake://CONNECTION_NAME (got {text!r})")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - {"database", "schema", "warehouse", "role", "hybrid"}
        if unknown:
            raise ConfigError(field, f"unknown option {sorted(unknown)[0]!r} in {text!r}")
        return Url("snowflake", connection=name, options=options)
    if scheme in ("postgresql", "postgres"):
        return Url("postgresql", connection=raw)
    raise ConfigError(field, f"unknown scheme {scheme!r} in {text!r} (expected one of {', '.join(SCHEMES)})")
