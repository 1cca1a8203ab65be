"""A summary rebuilt from the workers' own results files (``OUT/worker-*.json``): when the control
plane was lost mid-run (a PostgreSQL control plane killed, a full disk), the orchestrator's
summary says what the control plane held — MEASUREMENT with 0 operations, workers RUNNING —
while each worker kept its complete measurements in its own file. ``startline run`` rebuilds by
itself once its spawned workers have exited; ``startline summarize OUT`` does it for workers
started elsewhere (their ``--results`` files copied into OUT). The rebuilt summary keeps the
run's status, reason and time series as the orchestrator saw them, says which files it read
(``rebuilt_from``), and the orchestrator's own summary stays beside it
(``summary.control-plane.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from startline.engine.files import read_worker_files, write_json, write_summary
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.summary import build_summary
from startline.live.enrich import judged_later

KEPT = "summary.control-plane.json"
"""The orchestrator's own summary, kept beside the rebuilt one."""


def counted(payload: Mapping[str, Any]) -> int:
    """The operations a worker's results file holds."""
    return int(sum((payload.get("metrics") or {}).get("ops", {}).values()))


def needs_rebuild(summary: Mapping[str, Any], payloads: Sequence[Mapping[str, Any]]) -> bool:
    """Does any worker's own file hold more operations than the summary counted for it?"""
    known = {w["worker_id"]: int(w.get("ops") or 0) for w in summary.get("workers", ())}
    return any(counted(p) > known.get(p["worker_id"], 0) for p in payloads)


def rebuild(
    prior: Mapping[str, Any],
    payloads: Sequence[Mapping[str, Any]],
    files: Sequence[str],
    server: Mapping[str, Any] | None = None,
    cost: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's summary with its measurements from the workers' files: the run's status, reason,
    detail, times and time series as the orchestrator's summary ``prior`` has them, the server's
    own figures (``server``, or ``prior``'s) — the orchestrator's, not the workers' — and what
    ``enrich`` added since (``cost``, its thresholds judged again)."""
    try:
        scenario = Scenario.from_dict(dict(prior["config"]["scenario"]))
    except (KeyError, TypeError, ConfigError) as exc:
        raise ConfigError("OUT", f"summary.json holds no scenario to rebuild with ({exc})") from None
    statuses = {w["worker_id"]: w["status"] for w in prior.get("workers", ())}
    statuses |= {p["worker_id"]: p.get("status", "?") for p in payloads}
    summary = build_summary(
        run_id=prior["run_id"],
        status=prior["status"],
        reason=prior.get("reason"),
        detail=prior.get("detail"),
        scenario=scenario,
        start_time=prior.get("start_time"),
        stopped_at=prior.get("stopped_at"),
        payloads=payloads,
        worker_statuses=statuses,
        orchestrator_queries=int((prior.get("control_plane") or {}).get("queries") or 0),
        load=prior.get("load"),
    )
    summary["timeseries"] = prior.get("timeseries", [])
    if server is not None or prior.get("server") is not None:
        summary["server"] = server if server is not None else prior["server"]
    if cost is not None:
        summary = judged_later({**summary, "cost": cost}, scenario)
    summary["rebuilt_from"] = {
        "files": list(files),
        "why": "the workers' own results files hold more than the control plane did (it was lost, or "
        "their last results never reached it); the run's status and time series are the orchestrator's",
    }
    return summary


def keep_prior(out: Path, prior: Mapping[str, Any]) -> None:
    """The orchestrator's own summary, beside the rebuilt one (kept from the first rebuild on)."""
    if not (out / KEPT).exists():
        write_json(out / KEPT, prior)


def rebuilt_if_needed(out: Path, summary: dict[str, Any], say: Any) -> dict[str, Any]:
    """After a run whose workers wrote their files into OUT: the summary rebuilt from them when
    they hold more than it counted (written, the orchestrator's kept); else ``summary``."""
    try:
        payloads = read_worker_files(out)
    except ConfigError as exc:
        say(f"the workers' results files were not read: {exc}")
        return summary
    if not summary or not needs_rebuild(summary, payloads):
        return summary
    rebuilt = rebuild(summary, payloads, [f"worker-{p['worker_id']}.json" for p in payloads])
    keep_prior(out, summary)
    write_summary(out, rebuilt)
    say(
        f"the summary was rebuilt from the workers' own results files (they hold more than the control "
        f"plane did); the orchestrator's is {out / KEPT}"
    )
    return rebuilt
