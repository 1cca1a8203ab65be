"""Pure decisions about time: the phase windows, which phase an operation belongs to,
what the orchestrator emits when, and how a ramp steps."""

from __future__ import annotations

import math

import attrs

from startline.engine.model import EventType, Phase, Scope, StopReason
from startline.engine.scenario import Scenario


@attrs.frozen
class PhaseWindows:
    """Phase boundaries on one time axis: WARMUP [start, measure), MEASUREMENT
    [measure, cooldown), COOLDOWN [cooldown, end), DONE from end."""

    start: float
    measure: float
    cooldown: float
    end: float

    @classmethod
    def from_scenario(cls, scenario: Scenario, start: float) -> PhaseWindows:
        measure = start + scenario.warmup_s
        cooldown = measure + scenario.measurement_s
        return cls(start, measure, cooldown, cooldown + scenario.cooldown_s)

    def shifted(self, delta: float) -> PhaseWindows:
        """The same windows on another clock (``delta`` = other − this)."""
        return PhaseWindows(self.start + delta, self.measure + delta, self.cooldown + delta, self.end + delta)

    def phase_at(self, t: float) -> Phase:
        if t < self.start:
            return Phase.PREPARING
        if t < self.measure:
            return Phase.WARMUP
        if t < self.cooldown:
            return Phase.MEASUREMENT
        if t < self.end:
            return Phase.COOLDOWN
        return Phase.DONE

    def attribute(self, began: float, ended: float) -> Phase:
        """The phase an operation counts in: MEASUREMENT only if it began and ended inside
        it; one that straddles a MEASUREMENT boundary counts in the other phase."""
        first, last = self.phase_at(began), self.phase_at(ended)
        if first is last:
            return first
        return last if first is Phase.MEASUREMENT else first


@attrs.frozen
class PlannedEvent:
    """An event the orchestrator will emit at control-plane instant ``at``."""

    at: float
    event_type: EventType
    phase: Phase | None = None
    connections: int | None = None
    scope: Scope = Scope.RUN
    scope_id: str | None = None
    ramp_s: float = 0.0
    reason: StopReason | None = None


def plan_events(scenario: Scenario, start_time: float) -> list[PlannedEvent]:
    """Everything after START, in emission order: phase changes, scaling steps, STOP.

    Ties keep a fixed order (phase before target before STOP), so the log is the
    same whatever order tasks wake in.
    """
    w = PhaseWindows.from_scenario(scenario, start_time)
    planned: list[tuple[float, int, int, PlannedEvent]] = []
    if scenario.warmup_s > 0:
        planned.append((w.measure, 0, 0, PlannedEvent(w.measure, EventType.SET_PHASE, phase=Phase.MEASUREMENT)))
    if scenario.cooldown_s > 0:
        planned.append((w.cooldown, 0, 0, PlannedEvent(w.cooldown, EventType.SET_PHASE, phase=Phase.COOLDOWN)))
    for i, step in enumerate(scenario.schedule):
        at = start_time + step.at_s
        if at >= w.end:
            continue
        planned.append(
            (
                at,
                1,
                i,
                PlannedEvent(
                    at,
                    EventType.SET_CONNECTIONS,
                    connections=step.connections,
                    scope=step.scope,
                    scope_id=step.scope_id,
                    ramp_s=step.ramp_s,
                ),
            )
        )
    planned.append((w.end, 2, 0, PlannedEvent(w.end, EventType.STOP, phase=Phase.DONE, reason=StopReason.COMPLETED)))
    planned.sort(key=lambda x: x[:3])
    return [p for *_, p in planned]


def ramp_steps(current: int, wanted: int, ramp_s: float) -> list[tuple[float, int]]:
    """(delay from now, connection count) steps from ``current`` to ``wanted``, one connection
    at a time, spread evenly over ``ramp_s``; the last step lands at ``ramp_s``."""
    if current == wanted or ramp_s <= 0:
        return [(0.0, wanted)]
    n = abs(wanted - current)
    sign = 1 if wanted > current else -1
    return [(ramp_s * (i + 1) / n, current + sign * (i + 1)) for i in range(n)]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def distribution(values: list[float]) -> dict[str, float] | None:
    """min, p50, p99 and max (nearest rank) of a list; None for an empty one."""
    if not values:
        return None
    return {"min": min(values), "p50": percentile(values, 50), "p99": percentile(values, 99), "max": max(values)}
