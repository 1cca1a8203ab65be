"""Processes and signals: ``startline run``'s orchestration of a live run (setup, the worker
processes it spawns and how it ends them, progress, Ctrl-C) and ``startline worker``'s life in
a process. The CLI parses and prints; this module runs."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import trio
from rich.console import Console

from startline.engine.model import StopReason
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import ControlPlaneError
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.summary import merge_timeseries
from startline.engine.together import worker_id
from startline.engine.workload import draw_pools
from startline.urls import Url, parse_url

WORKER_EXIT_GRACE_S = 30.0
"""How long `run` waits for its worker processes after the summary before ending them."""
WORKER_END_GRACE_S = 2.0
"""Between the signals that end a worker process: SIGTERM, SIGTERM (forced), SIGKILL."""

err = Console(stderr=True)


async def orchestrate(
    scenario: Scenario,
    control_url: Url,
    target_url: Url,
    out: Path,
    run_id: str,
    spawn: bool,
    console: Console,
    progress_every_s: float = 5.0,
    spawn_on: str | None = None,
    after: AfterRun | None = None,
) -> dict[str, Any]:
    """Set up the target, then run the scenario: in this process on a memory control plane, or
    as the orchestrator of ``scenario.workers`` worker processes (``spawn``) or of workers started
    elsewhere. Ctrl-C (or SIGTERM) stops the run; a second one forces the stop."""
    from startline.backends.system import SystemClock
    from startline.compose import open_control, open_target
    from startline.inprocess import run_in_process_async

    target = open_target(target_url, scenario)
    title = (
        f"{scenario.name}: {scenario.workers} workers × {scenario.connections_per_worker} connections, "
        f"{scenario.start.strategy} start"
    )
    if control_url.in_process:
        if scenario.setup and not await _interruptible(lambda: _setup(target, scenario, console)):
            raise RunCancelled("cancelled during setup: nothing was run")
        scenario = await draw_pools(target, scenario)

        async def watch(orchestrator: Orchestrator) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(display, orchestrator, console, f"{title} (in process)", progress_every_s)
                await on_signals(orchestrator)

        done = await run_in_process_async(scenario, target=target, out=out, run_id=run_id, watch=watch)
        return done.summary
    orchestrator = Orchestrator(open_control(control_url), SystemClock(), scenario, run_id, out)
    summary: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signals, orchestrator, after)
        # The run is created (or a restart adopts it, or it is refused) before the target is
        # touched: a refused run never sets up, a restart neither sets up nor spawns again.
        await orchestrator.prepare()
        fresh = orchestrator.adopted is None
        if fresh and (scenario.setup or scenario.unresolved_pools):

            async def setup_and_pools() -> None:
                if scenario.setup:
                    await _setup(target, scenario, console)
                if scenario.unresolved_pools:
                    await orchestrator.publish_scenario(await draw_pools(target, scenario))

            await orchestrator.while_prepared(setup_and_pools)
        async with trio.open_nursery() as procs:
            if spawn and fresh and not orchestrator.stop_requested:
                if spawn_on is not None:
                    from startline.cluster import spawn_on_dask

                    procs.start_soon(spawn_on_dask, spawn_on, scenario, run_id, out, console)
                else:
                    for i in range(scenario.workers):
                        procs.start_soon(worker_process, scenario, run_id, i, out)
            statements = await _statement_watch(target, console)
            async with trio.open_nursery() as inner:
                inner.start_soon(display, orchestrator, console, title, progress_every_s)
                if statements is not None:
                    inner.start_soon(statements.at_measurement, orchestrator.measurement_began)
                summary = await orchestrator.run()
                if after is not None:
                    after.over, after.waiting = True, procs.cancel_scope
                inner.cancel_scope.cancel()
            if statements is not None:
                with trio.move_on_after(30):
                    written = await statements.end(out)
                    if written is not None:
                        console.print(f"pg_stat_statements per phase: {written}", highlight=False)
            # Workers exit by themselves once their results are in; past the grace (at once after a
            # forced stop) they get SIGTERM, which makes a worker drain and flush, then SIGKILL.
            grace = 0.0 if orchestrator.forced else WORKER_EXIT_GRACE_S
            # (a signal since the summary has set it to then already: the earlier deadline stands)
            procs.cancel_scope.deadline = min(procs.cancel_scope.deadline, trio.current_time() + grace)
        nursery.cancel_scope.cancel()
    return summary


async def _statement_watch(target: Any, console: Console) -> Any:
    """A PostgreSQL target's pg_stat_statements watch, when the target has the extension."""
    if not target.traits.statement_stats:
        return None
    from startline.backends.postgres.statements import StatementWatch

    watch = StatementWatch(target)
    try:
        return watch if await watch.begin(console) else None
    except Exception as exc:  # a figure about the target, never a reason to fail the run
        console.print(f"pg_stat_statements not read: {type(exc).__name__}: {exc}", highlight=False)
        return None


class RunCancelled(Exception):
    """Stopped by the user before anything was measured (Ctrl-C during setup, in process)."""


async def _setup(target: Any, scenario: Scenario, console: Console) -> None:
    """The scenario's setup statements on the target; a statement that fails is bad configuration
    (one line naming it). Cancelled (Ctrl-C), the statement running is interrupted."""
    n = len(scenario.setup)
    with console.status(f"setup: {n} statement(s) on the target"):
        try:
            await target.setup(scenario.setup)
        except Exception as exc:  # (a Ctrl-C's Cancelled is not an Exception: it passes)
            raise ConfigError("setup", f"the target refused it: {type(exc).__name__}: {exc}") from exc


async def _interruptible(work: Any) -> bool:
    """Run ``work``; Ctrl-C or SIGTERM cancels it. True if it ran to the end."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            interrupted = False

            async def watch() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await work()
            nursery.cancel_scope.cancel()
    return not interrupted


async def check_connect(scenario: Scenario, control_url: Url, target_url: Url, target: Any) -> list[str]:
    """``startline check --connect``: reach the control plane and the target (``open_target``'s,
    for ``target_url``), and have the target prepare (explain) every SQL statement with sample
    parameters. What went wrong, as lines naming the field; empty when all is well."""
    import random

    from startline.compose import open_control
    from startline.engine.ports import ControlPlaneError
    from startline.engine.workload import ParamSource

    problems: list[str] = []
    if not control_url.in_process:
        cp = open_control(control_url)
        try:
            with trio.fail_after(scenario.control_timeout_s):
                await cp.server_time()
        except (ControlPlaneError, trio.TooSlowError, OSError) as exc:
            problems.append(f"control: cannot reach it: {exc or type(exc).__name__}")
        finally:
            await cp.close()
    if target.traits.checks_statements:
        params = ParamSource(random.Random(scenario.seed), slot=0)
        pooled = {(op, name) for op, name, _ in scenario.unresolved_pools}  # drawn at run time: NULL here

        def sample(op: Any) -> dict[str, Any]:
            drawn = params.draw(
                attrs.evolve(op, params={k: v for k, v in op.params.items() if (op.name, k) not in pooled})
            )
            return drawn | {k: None for k in op.params if (op.name, k) in pooled}

        statements = [
            (f"operations[{i}].sql", op.sql, sample(op))
            for i, op in enumerate(scenario.operations)
            if op.sql is not None
        ]
        for where, said in await target.check_statements(scenario.setup, statements):
            problems.append(f"{where}: the target refuses it: {said}")
    elif target_url.scheme != "memory":
        try:
            with trio.fail_after(scenario.control_timeout_s):
                session = await target.open_session("check", 0)
                await session.close()
        except Exception as exc:  # whatever the driver raises: said in one line
            problems.append(f"target: cannot reach it: {type(exc).__name__}: {exc}")
    return problems


def worker_command(scenario: Scenario, run_id: str, index: int, results: Path) -> list[str]:
    """The command line of worker ``index`` of a run (``python -m startline.cli worker ...``:
    not the `startline` script, so it works wherever this interpreter does)."""
    return [
        sys.executable,
        "-m",
        "startline.cli",
        "worker",
        *worker_args(scenario, run_id, index),
        "--results",
        str(results),
    ]


def worker_args(scenario: Scenario, run_id: str, index: int) -> list[str]:
    """``startline worker``'s arguments for worker ``index`` of a run (without ``--results``)."""
    return [
        "--control",
        scenario.control,
        "--target",
        scenario.target,
        "--run-id",
        run_id,
        "--worker-id",
        worker_id(index),
        "--index",
        str(index),
        # the scenario came from a file the user passed to `run`: its calls are theirs to allow
        *(a for module in call_modules(scenario) for a in ("--allow-call", module)),
    ]


def call_modules(scenario: Scenario) -> list[str]:
    """The modules the scenario's ``call`` operations import (code every worker would run)."""
    return sorted({op.call.partition(":")[0] for op in scenario.operations if isinstance(op.call, str)})


def check_calls_allowed(scenario: Scenario, allowed: tuple[str, ...]) -> None:
    """A worker takes its scenario from the control plane: anyone who can write RUN_STATUS could
    make it import code. It runs only modules under a prefix given with ``--allow-call``."""
    for module in call_modules(scenario):
        if not any(module == p or module.startswith(p + ".") for p in allowed):
            raise ConfigError(
                "--allow-call",
                f"the run's scenario calls code from module {module!r}, which this worker does not allow: "
                f"start it with --allow-call {module} if you trust the run's control plane",
            )


async def worker_process(scenario: Scenario, run_id: str, index: int, out: Path) -> None:
    """Run worker ``index`` as a child process, logging to OUT/worker-ID.log. Cancelled, it is
    sent SIGTERM (drain and flush), then killed (trio.run_process's own escalation)."""
    wid = worker_id(index)
    cmd = worker_command(scenario, run_id, index, out / f"worker-{wid}.json")
    with open(out / f"worker-{wid}.log", "wb") as log:
        await trio.run_process(
            cmd,
            stdout=log,
            stderr=log,
            check=False,
            env=worker_env(time.time()),
            deliver_cancel=_end_worker,
        )


LAUNCHED_AT = "STARTLINE_LAUNCHED_AT"
"""The environment variable a launcher sets to the host's time (epoch seconds) it started a worker at."""


def worker_env(launched: float) -> dict[str, str]:
    """A worker process's environment: this one's, unbuffered output, and when it was launched
    on this host's clock (the worker measures its own start delay from it)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", LAUNCHED_AT: repr(launched)}


def launched_at() -> float | None:
    """When this worker process was launched, if its launcher said (``LAUNCHED_AT``)."""
    try:
        return float(os.environ[LAUNCHED_AT])
    except (KeyError, ValueError):
        return None


async def _end_worker(process: trio.Process) -> None:
    """A worker process that has to go: SIGTERM (drain, flush, publish), a second SIGTERM a grace
    later (end within 2 s with what it has, its results file written), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGTERM):
        process.send_signal(sig)
        with trio.move_on_after(WORKER_END_GRACE_S):
            await process.wait()
            return
    process.kill()


async def display(orchestrator: Orchestrator, console: Console, title: str, progress_every_s: float) -> None:
    """What a run shows while it runs: on a terminal the live panel (``liveview``), otherwise a
    plain progress line every ``progress_every_s`` (0: none); nothing with ``--quiet``."""
    from startline import liveview

    if console.quiet:
        return
    if console.is_terminal:
        await liveview.show(orchestrator, console, title)
    elif progress_every_s > 0:
        await progress_lines(orchestrator, console, progress_every_s)


async def progress_lines(orchestrator: Orchestrator, console: Console, every_s: float) -> None:
    """Not on a terminal (CI, a log file): one plain line every ``every_s`` seconds."""
    began = trio.current_time()
    while True:
        await trio.sleep(every_s)
        line = await progress_line(orchestrator)
        console.print(f"[{trio.current_time() - began:6.1f} s] {line}", markup=False, highlight=False, soft_wrap=True)


async def progress_line(orchestrator: Orchestrator) -> str:
    """One plain line for a log (pgbench ``-P`` style): the progress, the operations and errors
    so far and the last complete interval's throughput, from the workers' snapshots."""
    line = orchestrator.progress()
    if orchestrator.start_time is None:
        return line
    try:
        snapshots = await orchestrator.read_snapshots()
    except ControlPlaneError:
        return line + "; figures: control plane unreachable"
    iv = orchestrator.scenario.snapshot_interval_s
    series = merge_timeseries(snapshots, iv)
    ops, errors = sum(r["ops"] for r in series), sum(r["errors"] for r in series)
    if not series:
        return f"{line}; no snapshot from the workers yet"
    last = series[-2] if len(series) > 1 else series[-1]  # the newest interval may still be arriving
    upto = series[-1]["t_s"] + iv
    return f"{line}; {ops:,} ops, {errors:,} errors in the first {upto:g} s, {last['ops'] / iv:,.0f} ops/s then"


@attrs.define
class AfterRun:
    """What a signal means once the run is over (its summary written, the worker processes not
    yet gone): stop waiting for them and skip the report (``interrupted``); the run's result stands."""

    over: bool = False
    interrupted: bool = False
    waiting: trio.CancelScope | None = None
    """The wait for the worker processes to exit, cut short by a signal."""


async def on_signals(orchestrator: Orchestrator, after: AfterRun | None = None) -> None:
    """Ctrl-C / SIGTERM: stop the run (STOP user_requested), drain, write what was measured;
    a second one forces the stop: no waiting for the drain, the summary keeps what is in. Once
    the run is over (``after``): stop waiting for the worker processes, and no report."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if after is not None and after.over:
                after.interrupted = True
                if after.waiting is not None:
                    after.waiting.deadline = trio.current_time()  # the workers get SIGTERM now
            elif orchestrator.stop_requested:
                err.print("stopping now (second signal): the summary keeps what is in", highlight=False)
                orchestrator.force_stop()
            else:
                err.print("stopping: draining the workers (Ctrl-C again to force)", highlight=False)
                orchestrator.request_stop(StopReason.USER_REQUESTED)


async def join_as_worker(
    control_url: Url,
    target: str | None,
    run_id: str,
    wid: str,
    index: int,
    group: str,
    allow_call: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A worker process's life: find the run, open the target, run; SIGINT or SIGTERM drains it.
    Returns its results payload."""
    from startline.backends.system import SystemClock
    from startline.compose import open_control, open_target
    from startline.engine.resilience import ResilientControlPlane
    from startline.engine.worker import Worker, wait_for_run

    cp = open_control(control_url)
    # The first read rides out what a shared control plane does while others create it (a
    # SQLite file locked for a moment): retried like every other call of the worker's.
    run = await wait_for_run(ResilientControlPlane(cp), run_id)
    scenario = Scenario.from_dict(run.scenario)
    check_calls_allowed(scenario, allow_call)
    tgt = open_target(parse_url(target or scenario.target, "target"), scenario)
    w = Worker(
        cp, tgt, SystemClock(), run_id, wid, index=index, group=group, scenario=scenario, launched_at=launched_at()
    )
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def on_term() -> None:
                first = True
                async for _ in signals:
                    if first:
                        w.request_drain()  # drain, flush, publish, exit
                        first = False
                    else:
                        w.force_stop()  # end within 2 s with what it has

            nursery.start_soon(on_term)
            payload = await w.run()
            nursery.cancel_scope.cancel()
    return payload
