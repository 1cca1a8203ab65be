"""The verdict: did a run pass? Pure functions of the summary's MEASUREMENT block and the
scenario's ``[checks]``; the exit code follows from the run's status and the verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from startline.engine.loadcontrol import OFFERED_TOLERANCE, offered_enough, within_deadband
from startline.engine.metrics import UNFINISHED
from startline.engine.model import Phase, RunStatus, StopReason
from startline.engine.scenario import Checks
from startline.engine.thresholds import Result

PASSED, FAILED = "passed", "failed"
EXIT_OK, EXIT_CHECKS_FAILED, EXIT_USAGE, EXIT_RUN_FAILED = 0, 1, 2, 3


@attrs.frozen
class Check:
    """One check as summary.json shows it; ``name`` is its key in ``[checks]``."""

    name: str
    ok: bool
    value: float
    limit: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def evaluate(
    checks: Checks,
    phases: Mapping[str, Mapping[str, Any]],
    load: Mapping[str, Any] | None = None,
    failures: Sequence[Mapping[str, Any]] = (),
) -> tuple[Check, ...]:
    """The scenario's checks on the MEASUREMENT phase (absent: nothing was measured); in qps mode
    whether the controller held its target, in rate mode whether the plan was offered."""
    block = phases.get(str(Phase.MEASUREMENT), {})
    ops, errors = int(block.get("ops", 0)), int(block.get("errors", 0))
    result = (load or {}).get("result") or {}
    held: tuple[Check, ...] = ()
    if (load or {}).get("mode") == "qps":
        held = (qps_held(result),)
    elif (load or {}).get("mode") == "rate" and result.get("planned") is not None:
        planned, offered = float(result["planned"]), int(block.get("offered", 0))
        held = (
            Check(
                "planned_rate",
                offered_enough(planned, offered),
                offered,
                round(planned, 3),
                f"{offered:,} operations offered in MEASUREMENT of {planned:,.0f} the rate plan schedules "
                f"(at least {1 - OFFERED_TOLERANCE:.0%} of it, or the plan less three Poisson deviations)",
            ),
        )
    return (
        *held,
        Check(
            "min_operations",
            ops >= checks.min_operations,
            ops,
            checks.min_operations,
            f"{ops:,} successful operations in MEASUREMENT (at least {checks.min_operations:,})",
        ),
        error_check(checks.max_error_rate, ops, errors, load),
        unfinished_check(phases),
        all_failing_check(checks, phases, failures),
    )


ALL_FAILING = str(StopReason.ALL_FAILING)


def all_failing_check(
    checks: Checks, phases: Mapping[str, Mapping[str, Any]], failures: Sequence[Mapping[str, Any]]
) -> Check:
    """Every operation kind that failed succeeded at least once in MEASUREMENT: a kind that never
    did fails the run, whatever share of the mix it is (a run stopped by ``stop_after_failing_s``
    fails here too) — unless ``max_error_rate = 1`` says errors are what the run is about."""
    measured = phases.get(str(Phase.MEASUREMENT), {}).get("by_kind") or {}
    never = sorted({str(f.get("operation")) for f in failures} - {k for k, b in measured.items() if b.get("ops")})
    return Check(
        ALL_FAILING,
        not never or checks.max_error_rate >= 1.0,
        len(never),
        0,
        f"operation kinds that failed and never succeeded in MEASUREMENT: {', '.join(never)}"
        if never
        else "every operation kind that failed also succeeded in MEASUREMENT",
    )


def unfinished_check(phases: Mapping[str, Mapping[str, Any]]) -> Check:
    """No operation may be left unfinished at the drain: its latency is unknown (at least as long
    as it ran, perhaps a hang), so no latency figure or threshold of the run can speak for it."""
    n = sum(int((b.get("errors_by_category") or {}).get(UNFINISHED, 0)) for b in phases.values())
    return Check(
        UNFINISHED,
        n == 0,
        n,
        0,
        f"{n:,} operations still running when the drain timed out (their latency is unknown; "
        "raise drain_timeout_s if they were merely slow)"
        if n
        else "every operation finished before the drain ended",
    )


def error_check(limit: float, ops: int, errors: int, load: Mapping[str, Any] | None) -> Check:
    """``max_error_rate`` on MEASUREMENT — or, for find_max, on the best stable step it found: the
    steps past the knee overload the target on purpose, and their errors are how the search saw it."""
    if (load or {}).get("mode") == "find_max":
        stable = [st for st in (load or {}).get("steps") or () if st.get("stable")]
        best = max(stable, key=lambda st: st.get("qps") or 0.0, default=None)
        if best is None:
            return Check("max_error_rate", False, 1.0, limit, "find_max found no stable step to judge")
        level = best.get("connections", best.get("rate"))
        rate = float(best.get("error_rate") or 0.0)
        return Check(
            "max_error_rate",
            rate <= limit,
            round(rate, 6),
            limit,
            f"error rate {rate:.2%} at the best stable step ({level}; at most {limit:.2%}); the steps past "
            "the knee overload the target on purpose",
        )
    rate = errors / (ops + errors) if ops + errors else 0.0
    return Check(
        "max_error_rate",
        rate <= limit,
        round(rate, 6),
        limit,
        f"error rate {rate:.2%} in MEASUREMENT ({errors:,} of {ops + errors:,}; at most {limit:.2%})",
    )


def qps_held(result: Mapping[str, Any]) -> Check:
    """Whether qps control held ``target_qps``: ``settled`` (within the deadband), or holding the
    whole number of connections nearest the target, the target within one connection's share of
    the qps held (no whole count comes closer). Reaching the ceiling, still moving at the end, a
    count far from the target, or no reading at all is a miss."""
    target, qps, n = result.get("target_qps") or 0.0, result.get("qps"), result.get("connections")
    reason = result.get("reason")
    if qps is None or not n:
        ok, why = False, "no reading of the qps held (the run ended before a control interval did)"
    elif reason == "settled":
        ok = within_deadband(qps, target)
        why = "settled within the deadband" if ok else f"said settled, but {abs(qps - target):,.1f} qps from it"
    elif reason == "nearest_whole_count":
        share = qps / n
        ok = abs(qps - target) <= share
        why = (
            f"holding the nearest whole count of connections (one is {share:,.1f} qps)"
            if ok
            else f"{abs(qps - target):,.1f} qps from it, more than one connection's share ({share:,.1f} qps)"
        )
    elif reason == "bounds_limit_reached":
        ok, why = False, "could not reach it within the connection bounds"
    elif (read := result.get("read_with")) and abs(n - read) == 1 and abs(qps - target) <= qps / read:
        # the last move was one connection, from a count whose reading was within one connection's
        # share of the target: hunting between the two whole counts around it, not running away
        ok, why = True, f"hunting between the whole counts around it ({read} and {n} connections)"
    else:
        ok, why = False, "still moving when the run ended"
    held = f"{qps:g} qps with {n} connections" if qps is not None else "no reading"
    return Check("target_qps", ok, qps or 0.0, target, f"target_qps {target:g}: {held}; {why}")


def verdict(status: str, checks: Sequence[Check | Result]) -> str:
    """``passed`` only for a COMPLETED run whose every check and threshold holds."""
    return PASSED if status == RunStatus.COMPLETED and all(c.ok for c in checks) else FAILED


def exit_code(status: str, verdict_: str) -> int:
    """0 passed; 1 completed but failed its checks; 3 failed or cancelled."""
    if status != RunStatus.COMPLETED:
        return EXIT_RUN_FAILED
    return EXIT_OK if verdict_ == PASSED else EXIT_CHECKS_FAILED
