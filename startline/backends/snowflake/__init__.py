"""Snowflake backend through ``snowflake-connector-python``: a control pool and a benchmark pool.

Blocking connector calls run in threads (``trio.to_thread.run_sync``) under a
``CapacityLimiter`` per pool. Authentication is the connector's own: a
``connection_name`` from ``connections.toml``; credentials are never logged or stored.
"""

from startline.backends.snowflake.control import SnowflakeControlPlane
from startline.backends.snowflake.target import SnowflakeTarget

__all__ = ["SnowflakeControlPlane", "SnowflakeTarget"]
