"""Control-plane calls that survive trouble: a timeout per call, retries with capped exponential
backoff and jitter, and a participant's view of its control-plane health.

A call is retried while the current outage is shorter than the tolerance; past it, the call
raises ``ControlPlaneError`` and the caller fails truthfully. An outage is judged for the
participant (every call failing) and for each kind of call (``read_events``, ``append_event``,
…) on its own: a kind that keeps failing while others succeed (a table dropped or damaged
mid-run) ends the participant after the same tolerance. Logical refusals
(``ControlPlaneConflict``) are never retried.
"""

from __future__ import annotations

import random
import types
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from startline.engine.counting import QUERY_METHODS
from startline.engine.model import RunState, RunStatus
from startline.engine.ports import (
    CALL_DEADLINE,
    ControlPlane,
    ControlPlaneConflict,
    ControlPlaneError,
    ControlPlaneTraits,
)
from startline.engine.scenario import Scenario


def single_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (Trio nurseries wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@attrs.frozen
class RetryPolicy:
    """How long one call may take, how retries back off, and how long an outage is tolerated."""

    timeout_s: float = 10.0
    base_s: float = 0.1
    cap_s: float = 2.0
    tolerance_s: float = 20.0

    @classmethod
    def of(cls, sc: Scenario) -> RetryPolicy:
        return cls(sc.control_timeout_s, sc.retry_base_ms / 1000.0, sc.retry_cap_ms / 1000.0, sc.outage_tolerance_s)


def backoff_s(attempt: int, base_s: float, cap_s: float, u: float) -> float:
    """The wait before retry ``attempt`` (0-based): ``min(cap, base·2^attempt)`` with "equal
    jitter" — uniformly in its upper half (``u`` in [0, 1)), so retries spread but never bunch at 0."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 60))
    return ceiling * (0.5 + 0.5 * u)


FIRST_CONTACT_S = 5.0
"""Until its first successful call, a participant rides out at most this much (then exit 2: a
control plane never reached is more often misconfigured than down)."""
KEEP_OUTAGES = 64
"""Outages a ``Health`` remembers (older ones no longer matter to any liveness judgement)."""


@attrs.frozen
class HealthStatistics:
    """A frozen snapshot of a participant's control-plane health (trio time)."""

    calls: int
    failures: int
    retries: int
    failing_since: float | None
    longest_outage_s: float
    last_error: str | None
    outages: tuple[tuple[float, float], ...]
    failing_kinds: Mapping[str, float]
    """Kind of call → trio time it began failing (and has not succeeded since)."""

    def to_payload(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "failures": self.failures,
            "retries": self.retries,
            "longest_outage_s": round(self.longest_outage_s, 6),
            "last_error": self.last_error,
        }


@attrs.define
class Health:
    """One participant's control-plane health (trio time): healthy unless a call is failing now."""

    calls: int = 0
    failures: int = 0
    retries: int = 0
    failing_since: float | None = None
    longest_outage_s: float = 0.0
    last_error: str | None = None
    outages: list[tuple[float, float]] = attrs.Factory(list)  # the last few (first failure, recovery)
    failing_kinds: dict[str, float] = attrs.Factory(dict)

    @property
    def healthy(self) -> bool:
        return self.failing_since is None

    def failed(self, began: float, now: float, error: BaseException, kind: str = "") -> float:
        """Record a call of ``kind`` begun at ``began`` that failed at ``now``; returns how long the
        current outage has lasted: the participant's (every call failing) or this kind's (its calls
        failing while others may succeed), whichever is longer. An outage starts when its first
        failing call began (a call that hangs until its timeout was unanswered from its start)."""
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if self.failing_since is None:
            self.failing_since = began
        since = self.failing_kinds.setdefault(kind, began)
        return now - min(self.failing_since, since)

    def abandoned(self, kind: str, since: float) -> None:
        """A call of ``kind`` was cancelled while it retried an outage it had opened: nobody is
        trying that kind any more, so its outage ends here (the next failure starts a new one;
        else a lone failure much later would add to this one)."""
        if self.failing_kinds.get(kind) == since:
            del self.failing_kinds[kind]

    def succeeded(self, now: float, kind: str = "") -> None:
        self.calls += 1
        self.failing_kinds.pop(kind, None)
        if self.failing_since is not None:
            self.longest_outage_s = max(self.longest_outage_s, now - self.failing_since)
            self.outages = [*self.outages[-(KEEP_OUTAGES - 1) :], (self.failing_since, now)]
            self.failing_since = None

    def unreachable_s(self, lo: float, hi: float) -> float:
        """How much of [lo, hi] this participant spent unable to reach the control plane: a silence
        it observed then is its own, not the other side's."""
        spans = [*self.outages, (self.failing_since, hi)] if self.failing_since is not None else self.outages
        return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in spans)

    def forgive(self) -> None:
        """Count the next failure as the start of a new outage (a last attempt after giving up)."""
        self.failing_since = None
        self.failing_kinds.clear()

    def statistics(self) -> HealthStatistics:
        return HealthStatistics(
            self.calls,
            self.failures,
            self.retries,
            self.failing_since,
            self.longest_outage_s,
            self.last_error,
            tuple(self.outages),
            types.MappingProxyType(dict(self.failing_kinds)),
        )


@attrs.define(eq=False)
class ResilientControlPlane:
    """Wraps a control plane: every call has a timeout and is retried through short outages."""

    inner: ControlPlane
    policy: RetryPolicy = attrs.Factory(RetryPolicy)
    rng: random.Random = attrs.Factory(lambda: random.Random(0))
    health: Health = attrs.Factory(Health)
    _methods: dict[str, Callable[..., Any]] = attrs.field(init=False, factory=dict, repr=False)

    @property
    def traits(self) -> ControlPlaneTraits:
        """The wrapped control plane's: retrying changes none of them."""
        return self.inner.traits

    def __getattr__(self, name: str) -> Any:
        if name == "_methods":  # not set yet (attrs' __init__ is running)
            raise AttributeError(name)
        call = self._methods.get(name)
        if call is not None:
            return call
        method = getattr(self.inner, name)
        if name not in QUERY_METHODS or name == "wait_for_change":
            return method
        call = self._methods[name] = self._resilient(name, method)
        return call

    def _resilient(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        honours_deadline = self.inner.traits.honours_deadline

        async def call(*args: Any, **kwargs: Any) -> Any:
            attempt = 0
            opened: float | None = None  # when this call opened its kind's outage, if it did
            try:
                while True:
                    began = trio.current_time()
                    deadline = began + self.policy.timeout_s
                    # a retry of a call that must not be repeated blindly looks first
                    trying = (
                        self._landed(name, method, args, kwargs)
                        if attempt and name in LANDED
                        else method(*args, **kwargs)
                    )
                    try:
                        if honours_deadline:  # it raises trio.TooSlowError at the deadline itself
                            token = CALL_DEADLINE.set(deadline)
                            try:
                                result = await trying
                            finally:
                                CALL_DEADLINE.reset(token)
                        else:
                            with trio.fail_at(deadline):
                                result = await trying
                        if result is ALREADY_LANDED:
                            self.health.succeeded(trio.current_time(), name)
                            return None
                    except ControlPlaneConflict:
                        raise
                    except (ControlPlaneError, trio.TooSlowError) as exc:
                        if name not in self.health.failing_kinds:
                            opened = began
                        down = self.health.failed(began, trio.current_time(), exc, name)
                        wait = backoff_s(attempt, self.policy.base_s, self.policy.cap_s, self.rng.random())
                        tolerance = self.policy.tolerance_s
                        if not self.health.calls:  # never reached yet: more likely a wrong address than an outage
                            tolerance = min(tolerance, FIRST_CONTACT_S)
                        if down + wait > tolerance:
                            raise ControlPlaneError(
                                f"control plane unreachable for {down:.1f} s (tolerance {tolerance:g} s) during "
                                f"{name}: {self.health.last_error}"
                            ) from exc
                        self.health.retries += 1
                        attempt += 1
                        await trio.sleep(wait)
                        continue
                    self.health.succeeded(trio.current_time(), name)
                    return result
            except trio.Cancelled:
                if opened is not None:
                    self.health.abandoned(name, opened)
                raise

        return call

    async def _landed(
        self, name: str, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A retry of a call that must not be repeated blindly: ``ALREADY_LANDED`` if the failed
        attempt took effect, else the call's result."""
        if await LANDED[name](self.inner, *args, **kwargs):
            return ALREADY_LANDED
        return await method(*args, **kwargs)


ALREADY_LANDED = object()


async def _run_created(cp: ControlPlane, run: RunState) -> bool:
    """A retried create: is the row there the one the failed attempt wrote (not a predecessor's)?"""
    found = await cp.read_run(run.run_id)
    return (
        found is not None
        and found.status is RunStatus.PREPARED
        and found.last_sequence_id == 0
        and found.scenario == run.scenario
    )


LANDED: dict[str, Callable[..., Any]] = {"create_run": _run_created}
"""Calls a retry must not repeat blindly: first look whether the failed attempt took effect
(an append of the same event is a no-op in every backend, so needs no look)."""
