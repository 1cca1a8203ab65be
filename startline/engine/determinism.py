"""Same seed, same simulation: the one place that reaches into Trio's scheduler.

Trio runs each batch of tasks that woke together in an order drawn from a module-level
``random.Random`` (``trio._core._run._r``: it reverses or shuffles the batch). That is private
to Trio, so it is touched here only, checked first, and a Trio release that moves it fails
loudly (and ``tests/test_simulate.py`` says so) instead of making simulations silently
depend on the process they run in.
"""

from __future__ import annotations

import random
import sys
import threading

import trio

SIMULATION = threading.Lock()
"""Held while a simulation runs in a process that may run others at once (a Dask worker's
threads): the simulator seeds process-wide random state (Trio's scheduler)."""


class SchedulerHookMoved(RuntimeError):
    """This Trio keeps its scheduler's random source somewhere startline does not know."""


def scheduler_random() -> random.Random:
    """Trio's scheduler's random source."""
    try:
        import trio._core._run as run_module

        rng = run_module._r
    except (ImportError, AttributeError) as exc:
        raise SchedulerHookMoved(
            f"trio {trio.__version__} moved its scheduler's random source (trio._core._run._r): "
            "simulations would not be deterministic; update startline/engine/determinism.py"
        ) from exc
    if not isinstance(rng, random.Random):
        raise SchedulerHookMoved(f"trio._core._run._r is a {type(rng).__name__}, not a random.Random")
    return rng


def seed_everything(seed: int) -> None:
    """Seed Trio's scheduler and the global ``random``: nothing in a simulated run then depends
    on the process it runs in, or on what ran before it."""
    scheduler_random().seed(seed)
    random.seed(seed)


def on_virtual_time() -> bool:
    """Whether this Trio run's clock is a ``MockClock`` (virtual time) — without importing
    ``trio.testing``, which imports pytest when it is installed (0.14 s a process: every CLI
    command and worker paid it). A MockClock is made from ``trio.testing``: had none imported it,
    there is none."""
    testing = sys.modules.get("trio.testing")
    return testing is not None and isinstance(trio.lowlevel.current_clock(), testing.MockClock)
