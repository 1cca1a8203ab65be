"""Snowflake backend through ``snowflake-connector-python``: a control pool and a benchmark pool.

Blocking connector calls run in threads (``trio.to_thread.run_sync``, reused from call to call) under a
``CapacityLimiter`` per pool (a target's: one thread per session it opened). Authentication is the connector's own: a
``connection_name`` from ``connections.toml``; credentials are never logged or stored.
"""

from startline.backends.snowflake.control import SnowflakeControlPlane
from startline.backends.snowflake.target import SnowflakeTarget

__all__ = ["SnowflakeControlPlane", "SnowflakeTarget"]
