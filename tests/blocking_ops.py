"""Operations for the live tests that misbehave on purpose (imported by worker processes as
``tests.blocking_ops``)."""

from __future__ import annotations

import os
import time

import trio


async def block_once(marker: str, block_ms: float, ms: float) -> None:
    """The first call on the host (whichever process creates ``marker`` first) blocks its event loop
    with ``time.sleep`` for ``block_ms`` — the mistake a user makes with a synchronous call in async
    code; every other call takes ``ms`` milliseconds, as an operation should."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        await trio.sleep(ms / 1000.0)
    else:
        time.sleep(block_ms / 1000.0)  # blocks the loop: no heartbeat, no other connection


async def spin(ms: float) -> None:
    """An operation that keeps the worker's CPU busy for ``ms`` (a client that is the limit)."""
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass
    await trio.lowlevel.checkpoint()
