"""After a run of a built-in workload (issue 24): its consistency conditions checked on the
target (TPC-C's 1–4) and its own throughput figure (tpmC), into summary.json's ``workload``
block; a condition that does not hold is a failed check (``workload.NAME``), so the verdict
fails. A check that cannot run is said, and judges nothing: the run's figures stand as measured."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from startline.engine.files import write_summary
from startline.engine.model import Phase
from startline.engine.ports import Target
from startline.engine.scenario import Scenario
from startline.engine.standard import Workload, workload
from startline.engine.verdict import FAILED, Check

CHECK_WAIT_S = 300.0
"""How long the checks may take (on a large database, a scan of every order line)."""


def workload_rate(found: Workload, summary: dict[str, Any]) -> dict[str, float]:
    """The workload's throughput figure: its operation's MEASUREMENT rate per minute."""
    if found.rate is None:
        return {}
    op, name = found.rate
    kind = summary.get("phases", {}).get(str(Phase.MEASUREMENT), {}).get("by_kind", {}).get(op)
    return {name: round(float(kind["qps"]) * 60, 1)} if kind and kind.get("qps") is not None else {}


def judged(summary: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with the ``workload`` block, its conditions among the checks and the verdict failed
    when one does not hold."""
    conditions = block.get("checks") or []
    checks = [
        Check(
            f"workload.{c['name']}",
            c["ok"],
            0 if c["ok"] else 1,
            0,
            c["detail"],
        ).to_dict()
        for c in conditions
    ]
    verdict = FAILED if any(not c["ok"] for c in conditions) else summary["verdict"]
    return {**summary, "workload": block, "checks": [*summary.get("checks", ()), *checks], "verdict": verdict}


async def check_workload(
    target: Target, scenario: Scenario, out: Path, summary: dict[str, Any], say: Callable[[str], None]
) -> dict[str, Any]:
    """The summary with its workload's block (written to OUT/summary.json); unchanged when the
    scenario names no built-in workload or nothing was summarised."""
    if scenario.workload is None or not summary:
        return summary
    found = workload(scenario.workload)
    block: dict[str, Any] = {"name": found.name, **workload_rate(found, summary)}
    if found.check is not None:
        try:
            with trio.fail_after(CHECK_WAIT_S):
                session = await target.open_session("checks", 0)
                try:
                    block["checks"] = await found.check(session)
                finally:
                    with trio.move_on_after(5, shield=True):
                        await session.close()
        except Exception as exc:  # the database's state is unknown, not inconsistent: say so, judge nothing
            block["checks"], block["checks_error"] = None, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            say(f"{found.name} consistency not checked: {block['checks_error']}")
    summary = judged(summary, block)
    write_summary(out, summary)
    return summary
