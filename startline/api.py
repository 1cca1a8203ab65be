"""The library face for real runs: what ``startline run`` and ``startline worker`` do, from Python.

``run`` (blocking) and ``run_async`` (inside your own Trio program) run a scenario exactly as
``startline run`` does — the same setup, worker processes (or tasks of this process on
``memory://``, or Dask tasks with ``spawn="dask://HOST:PORT"``), files in ``out`` and summary —
and return a ``RunResult``. ``join_run`` joins a run as one worker from inside your own Trio
program, as ``startline worker`` does.

Exit codes become exceptions and a verdict: bad configuration raises ``ConfigError`` (the CLI's
exit 2), a run refused by its control plane (a run id taken or ended) raises
``ControlPlaneConflict`` (2), an unreachable control plane ``ControlPlaneError`` (2), a run cancelled
before anything was measured ``RunCancelled`` (3). A run that went ahead returns its result:
``result.passed`` (exit 0), ``result.verdict == "failed"`` (completed but failed its checks or
thresholds: 1), ``result.status`` FAILED or CANCELLED (3); ``result.exit_code`` is the CLI's.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
from rich.console import Console

from startline.engine.ports import ControlPlane, Target
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.together import worker_ids
from startline.engine.verdict import exit_code
from startline.live.outdir import claim_out
from startline.live.run import RunCancelled, orchestrate
from startline.urls import Url, parse_url

__all__ = ["RunCancelled", "RunResult", "join_run", "prepare", "run", "run_async"]


@attrs.frozen
class RunResult:
    """What a run left: its summary (as in OUT/summary.json) and where its files are."""

    summary: dict[str, Any]
    out: Path

    @property
    def status(self) -> str:
        """COMPLETED, FAILED or CANCELLED."""
        return self.summary["status"]

    @property
    def verdict(self) -> str | None:
        """``passed`` or ``failed`` for a completed run (its checks and thresholds), else None."""
        return self.summary.get("verdict")

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def exit_code(self) -> int:
        """``startline run``'s exit code for this run: 0 passed, 1 failed its checks, 3 failed."""
        return exit_code(self.status, self.verdict)


@attrs.frozen
class Prepared:
    """A live run checked before anything starts: the scenario with its URLs resolved."""

    scenario: Scenario
    control: Url
    target: Url
    run_id: str


def prepare(
    scenario: Scenario | str | Path,
    out: Path,
    *,
    control: str | None = None,
    target: str | None = None,
    spawn: str = "processes",
    run_id: str | None = None,
) -> Prepared:
    """Check a live run's arguments (``ConfigError`` naming the field): the scenario (a file is
    read), ``out`` (made if missing), the URLs (``{out}`` in them is ``out``), where the workers
    run, that every schedule step's scope names a worker or group there is."""
    sc = scenario if isinstance(scenario, Scenario) else Scenario.from_toml(str(scenario))
    try:
        out.mkdir(parents=True, exist_ok=True)  # the SQLite files under {out} go there
    except OSError as exc:
        raise ConfigError(f"--out {out}", f"cannot write there ({exc.strerror or exc})") from None
    run_id = run_id or f"{sc.name}-{uuid.uuid4().hex[:8]}"
    control_text = (control or sc.control).replace("{out}", str(out))
    target_text = (target or sc.target).replace("{out}", str(out))
    control_url = parse_url(control_text, "control", out)
    target_url = parse_url(target_text, "target", out)
    if spawn not in ("processes", "none") and not spawn.startswith("dask://"):
        raise ConfigError("--spawn", f"expected processes, none or dask://HOST:PORT (got {spawn!r})")
    if control_url.in_process or spawn != "none":  # the workers' ids and groups are known
        sc.check_scopes(worker_ids(sc), {"default"})
    if spawn.startswith("dask://") and control_url.in_process:
        raise ConfigError("--spawn", f"needs a shared control plane (got {spawn!r})")
    if spawn.startswith("dask://"):
        from startline.live.dask import dask_address

        dask_address(spawn)
    return Prepared(attrs.evolve(sc, control=control_text, target=target_text), control_url, target_url, run_id)


async def run_async(
    scenario: Scenario | str | Path,
    out: str | Path,
    *,
    control: str | None = None,
    target: str | None = None,
    spawn: str = "processes",
    run_id: str | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    progress_every_s: float = 5.0,
    signals: bool = False,
    target_object: Target | None = None,
    control_objects: Callable[[str], ControlPlane] | None = None,
    console: Console | None = None,
) -> RunResult:
    """Run ``scenario`` (a ``Scenario`` or a TOML file) as ``startline run`` does; files go to ``out``.

    ``control``/``target``: URLs instead of the scenario's. ``spawn``: ``processes`` (one worker
    process each, the default), ``none`` (wait for workers started elsewhere), or
    ``dask://HOST:PORT``; with ``memory://`` as the control plane the workers are tasks of this
    process. ``progress``: a plain line every ``progress_every_s`` (default: nothing printed).
    ``signals``: Ctrl-C and SIGTERM stop the run as the CLI's do (main thread only).
    ``target_object``/``control_objects``: port objects for this process's participants instead
    of the URLs (worker processes still open the URLs)."""
    out = Path(out)
    p = prepare(scenario, out, control=control, target=target, spawn=spawn, run_id=run_id)
    lock = claim_out(out, p.run_id, overwrite)
    try:
        summary = await orchestrate(
            p.scenario,
            p.control,
            p.target,
            out,
            p.run_id,
            spawn != "none",
            console or Console(stderr=True, quiet=True),
            progress_every_s,
            spawn if spawn.startswith("dask://") else None,
            progress=progress,
            signals=signals,
            target=target_object,
            control=control_objects,
        )
    finally:
        lock.close()
    return RunResult(summary, out)


def run(scenario: Scenario | str | Path, out: str | Path, **options: Any) -> RunResult:
    """Blocking form of ``run_async`` (it runs Trio); Ctrl-C stops the run as the CLI's does."""
    options.setdefault("signals", True)
    return trio.run(functools.partial(run_async, scenario, out, **options))


async def join_run(
    control: str,
    run_id: str,
    worker_id: str,
    *,
    target: str | None = None,
    index: int = 0,
    group: str = "default",
    allow_call: tuple[str, ...] = (),
    allow_sql: bool = False,
    code_hash: str | None = None,
) -> dict[str, Any]:
    """Join run ``run_id`` on the control plane at ``control`` as worker ``worker_id``, from inside
    your Trio program, as ``startline worker`` does: it waits for the run, runs its part and
    returns its results payload (``payload["status"]``: COMPLETED or FAILED). The run's scenario
    comes from the control plane, so what it runs is code its writer chose: its SQL operations run
    only with ``allow_sql`` or the scenario's ``code_hash``, its ``call`` operations only from
    modules under a prefix in ``allow_call``. Cancel the surrounding scope to stop it."""
    from startline.live.workers import join_as_worker

    return await join_as_worker(
        parse_url(control, "control"),
        target,
        run_id,
        worker_id,
        index,
        group,
        allow_call,
        allow_sql=allow_sql,
        pinned=code_hash,
        signals=False,
    )
