"""Shared test parts: a recording target and a control plane with delays and repeats."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from backends.memory import TrioWallClock
from engine.model import ControlEvent
from engine.scenario import OperationSpec, Scenario
from engine.workload import derive_seed

ROOT = Path(__file__).resolve().parents[1]
CLI = (sys.executable, "-m", "startline.cli")
"""The ``startline`` command as a real subprocess, whatever the PATH."""


def run_cli(*args: str, timeout: float, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``startline ARGS`` from the project root and capture its output."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=None if env is None else dict(env)
    )


CLOCK0 = TrioWallClock(epoch=0.0)
"""Virtual wall clock = trio time: control-plane instants and trio times coincide."""


@attrs.frozen
class Op:
    worker_id: str
    slot: int
    name: str
    began: float
    ended: float


@attrs.define(eq=False)
class RecordingSession:
    target: RecordingTarget
    worker_id: str
    slot: int
    tags: list[dict[str, str]] = attrs.Factory(list)

    async def execute(self, op: OperationSpec, params: Mapping[str, Any]) -> None:
        began = trio.current_time()
        try:
            await trio.sleep(params.get("ms", 0) / 1000.0)
        finally:
            self.target.ops.append(Op(self.worker_id, self.slot, op.name, began, trio.current_time()))

    async def set_phase(self, tag: Mapping[str, str]) -> None:
        self.tags.append(dict(tag))

    async def close(self) -> None:
        self.target.closed += 1


@attrs.define(eq=False)
class RecordingTarget:
    """Each operation sleeps ``params['ms']`` and is recorded (trio time, finished or cancelled)."""

    ops: list[Op] = attrs.Factory(list)
    sessions: list[RecordingSession] = attrs.Factory(list)
    closed: int = 0

    async def open_session(self, worker_id: str, index: int) -> RecordingSession:
        s = RecordingSession(self, worker_id, index)
        self.sessions.append(s)
        return s

    def error_category(self, exc: BaseException) -> str:
        return type(exc).__name__


def scenario(**overrides: Any) -> Scenario:
    """A small scenario with one sleeping operation; any field can be overridden."""
    base: dict[str, Any] = {
        "name": "t",
        "workers": 2,
        "connections_per_worker": 2,
        "warmup_s": 1.0,
        "measurement_s": 3.0,
        "operations": [
            {
                "name": "q",
                "call": "backends.memory.ops:sleep_ms",
                "params": {"ms": {"type": "int", "min": 5, "max": 50}},
            }
        ],
    }
    start = overrides.pop("start", {})
    base.update(overrides)
    base["start"] = start
    return Scenario.from_dict(base)


@attrs.define(eq=False)
class SluggishControlPlane:
    """Wraps a control plane: every call takes a drawn latency (half each way); event reads come back late,
    repeated, shuffled and cut short (a prefix of what is there), as a real poll may."""

    inner: Any
    seed: int
    max_latency_s: float = 0.05
    mangle_events: bool = True
    _n: int = 0

    def _rng(self, what: str) -> random.Random:
        self._n += 1
        return random.Random(derive_seed(self.seed, what, self._n))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name.startswith("_") or not callable(method) or name == "wait_for_change":
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            rng = self._rng(name)
            half = rng.uniform(0, self.max_latency_s) / 2  # symmetric legs: NTP's offset is exact
            await trio.sleep(half)
            result = await method(*args, **kwargs)
            await trio.sleep(half)
            if name == "read_events" and self.mangle_events:
                result = _mangle(result, rng)
            return result

        return call


def _mangle(events: list[ControlEvent], rng: random.Random) -> list[ControlEvent]:
    events = events[: rng.randint(0, len(events))] if events and rng.random() < 0.3 else list(events)
    events = events + [rng.choice(events) for _ in range(rng.randint(0, 2))] if events else events
    rng.shuffle(events)
    return events
