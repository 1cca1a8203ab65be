"""The verdict: did a run pass? Pure functions of the summary's MEASUREMENT block and the
scenario's ``[checks]``; the exit code follows from the run's status and the verdict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from startline.engine.model import Phase, RunStatus
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
    checks: Checks, phases: Mapping[str, Mapping[str, Any]], load: Mapping[str, Any] | None = None
) -> tuple[Check, ...]:
    """The scenario's checks on the MEASUREMENT phase (absent: nothing was measured), and in qps
    mode whether the controller held its target."""
    block = phases.get(str(Phase.MEASUREMENT), {})
    ops, errors = int(block.get("ops", 0)), int(block.get("errors", 0))
    rate = errors / (ops + errors) if ops + errors else 0.0
    result = (load or {}).get("result") or {}
    held: tuple[Check, ...] = ()
    if (load or {}).get("mode") == "qps":
        reached = result.get("reason") != "bounds_limit_reached"
        held = (
            Check(
                "target_qps",
                reached,
                result.get("qps") or 0.0,
                result.get("target_qps") or 0.0,
                f"the controller {'held' if reached else 'could not reach'} target_qps "
                f"{result.get('target_qps') or 0:g} ({result.get('qps') or 0:g} qps with "
                f"{result.get('connections')} connections)",
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
        Check(
            "max_error_rate",
            rate <= checks.max_error_rate,
            round(rate, 6),
            checks.max_error_rate,
            f"error rate {rate:.2%} in MEASUREMENT ({errors:,} of {ops + errors:,}; "
            f"at most {checks.max_error_rate:.2%})",
        ),
    )


def verdict(status: str, checks: Sequence[Check | Result]) -> str:
    """``passed`` only for a COMPLETED run whose every check and threshold holds."""
    return PASSED if status == RunStatus.COMPLETED and all(c.ok for c in checks) else FAILED


def exit_code(status: str, verdict_: str) -> int:
    """0 passed; 1 completed but failed its checks; 3 failed or cancelled."""
    if status != RunStatus.COMPLETED:
        return EXIT_RUN_FAILED
    return EXIT_OK if verdict_ == PASSED else EXIT_CHECKS_FAILED
