"""SQLite backend: the control plane and a SQL target on local files (WAL, busy timeout)."""

from startline.backends.sqlite.control import SqliteControlPlane
from startline.backends.sqlite.target import SqliteTarget

__all__ = ["SqliteControlPlane", "SqliteTarget"]
