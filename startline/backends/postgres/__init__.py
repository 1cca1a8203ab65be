"""PostgreSQL as control plane (with push: LISTEN/NOTIFY) and as target, through psycopg 3
(extra ``startline[postgres]``); a local server for trying it: ``server`` (extra
``startline[postgres-server]``)."""

from startline.backends.postgres.control import PostgresControlPlane
from startline.backends.postgres.target import PostgresTarget

__all__ = ["PostgresControlPlane", "PostgresTarget"]
