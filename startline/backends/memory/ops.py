"""Ready-made operations for the memory target (``call = "startline.backends.memory.ops:sleep_ms"``)."""

from __future__ import annotations

import trio


async def noop() -> None:
    """Yield to the scheduler and return: measures the harness itself."""
    await trio.lowlevel.checkpoint()


async def sleep_ms(ms: float) -> None:
    """Stand-in for a query that takes ``ms`` milliseconds."""
    await trio.sleep(ms / 1000.0)


class InjectedError(Exception):
    """The error ``fail_if`` raises: categorised as ``InjectedError``."""


async def fail_if(value: int, below: int, ms: float = 0.0) -> None:
    """Take ``ms`` milliseconds, then fail when ``value < below`` (an error rate of your choosing)."""
    await trio.sleep(ms / 1000.0)
    if value < below:
        raise InjectedError(f"{value} < {below}")
