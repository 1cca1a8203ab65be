"""``startline run``'s orchestration of a live run: setup, the worker processes it spawns (or
places on Dask) and how long it waits for them, what it shows while it runs, and Ctrl-C. The CLI
parses and prints; this module runs."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from rich.console import Console

from startline.engine.loadcontrol import merged_intervals, reported_through
from startline.engine.model import StopReason, WorkerStatus
from startline.engine.orchestrator import Orchestrator
from startline.engine.ports import ControlPlane, ControlPlaneError, Target, same_clock
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.summary import merge_timeseries
from startline.engine.workload import draw_samples
from startline.live.check import reach_target
from startline.live.dashboard import Dashboard
from startline.live.serverwatch import ServerWatch, history_at_end, with_server
from startline.live.summarize import rebuilt_if_needed
from startline.live.workers import worker_process
from startline.live.workloadcheck import check_workload
from startline.urls import Url

WORKER_EXIT_GRACE_S = 30.0
"""How long `run` waits for its worker processes after the summary before ending them."""

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
    *,
    progress: Callable[[str], None] | None = None,
    signals: bool = True,
    target: Target | None = None,
    control: Callable[[str], ControlPlane] | None = None,
    dashboards: Sequence[Dashboard] = (),
) -> dict[str, Any]:
    """Set up the target, then run the scenario: in this process on a memory control plane, or
    as the orchestrator of ``scenario.workers`` worker processes (``spawn``) or of workers started
    elsewhere. Ctrl-C (or SIGTERM) stops the run; a second one forces the stop (``signals``).

    ``progress``: plain progress lines go to it (every ``progress_every_s``) instead of the console.
    ``target`` and ``control`` (each participant's handle, by name): port objects to use in this
    process instead of opening the URLs (worker processes open the URLs)."""
    from startline.backends.system import SystemClock
    from startline.compose import open_control, open_target
    from startline.inprocess import run_in_process_async

    target = target if target is not None else open_target(target_url, scenario)

    def say(line: str) -> None:
        console.print(line, highlight=False)

    title = (
        f"{scenario.name}: {scenario.workers} workers × {scenario.connections_per_worker} connections, "
        f"{scenario.start.strategy} start"
    )
    if control_url.in_process:
        if scenario.setup and not await _interruptible(lambda: _setup(target, scenario, console), signals):
            raise RunCancelled("cancelled during setup: nothing was run")
        scenario = await draw_samples(target, scenario)

        server = await ServerWatch.open(target, scenario, say)

        async def watch(orchestrator: Orchestrator) -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    display, orchestrator, console, f"{title} (in process)", progress_every_s, progress, dashboards
                )
                if server is not None:
                    nursery.start_soon(server.follow, orchestrator)
                if signals:
                    await on_signals(orchestrator)

        done = await run_in_process_async(scenario, target=target, out=out, run_id=run_id, watch=watch, control=control)
        summary = done.summary
        one_clock = same_clock(done.orchestrator.control.traits, target.traits)
        if server is not None:
            summary = with_server(out, summary, await server.finish(done.orchestrator, one_clock), None)
        history = await history_at_end(target, scenario, done.orchestrator, summary, one_clock, say)
        summary = with_server(out, summary, history, None)
        return await check_workload(target, scenario, out, summary, say)
    cp = control("orchestrator") if control is not None else open_control(control_url)
    orchestrator = Orchestrator(cp, SystemClock(), scenario, run_id, out)
    summary: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        if signals:
            nursery.start_soon(on_signals, orchestrator, after)
        # The run is created (or a restart adopts it, or it is refused) before the target is
        # touched: a refused run never sets up, a restart neither sets up nor spawns again.
        await orchestrator.prepare()
        fresh = orchestrator.adopted is None
        if fresh:

            async def setup_and_samples() -> None:
                if spawn and spawn_on is not None:  # a cluster that cannot take the workers: before the setup
                    from startline.live.dask import reach_scheduler

                    await reach_scheduler(spawn_on, scenario.workers)
                await reach_target(target, scenario, "orchestrator")  # before any worker is spawned to fail on it
                if scenario.setup:
                    await _setup(target, scenario, console)
                if scenario.undrawn_samples:
                    await orchestrator.publish_scenario(await draw_samples(target, scenario))

            await orchestrator.while_prepared(setup_and_samples)
        async with trio.open_nursery() as procs:
            if spawn and fresh and not orchestrator.stop_requested:
                if spawn_on is not None:
                    from startline.live.dask import spawn_on_dask

                    procs.start_soon(spawn_on_dask, spawn_on, scenario, run_id, out, console)
                else:
                    for i in range(scenario.workers):
                        procs.start_soon(worker_process, scenario, run_id, i, out)
            statements = await _statement_watch(target, console)
            server = await ServerWatch.open(target, scenario, say)
            async with trio.open_nursery() as inner:
                inner.start_soon(display, orchestrator, console, title, progress_every_s, progress, dashboards)
                if statements is not None:
                    inner.start_soon(statements.at_measurement, orchestrator.measurement_began)
                if server is not None:
                    inner.start_soon(server.follow, orchestrator)
                summary = await orchestrator.run()
                if after is not None:
                    after.over, after.waiting = True, procs.cancel_scope
                inner.cancel_scope.cancel()
            per_statement = None
            if statements is not None:
                with trio.move_on_after(30):
                    per_statement = await statements.end(out)
                    if per_statement is not None:
                        console.print(
                            f"pg_stat_statements per phase: {out / 'pg_stat_statements.json'}", highlight=False
                        )
            # Workers exit by themselves once their results are in; past the grace (at once after a
            # forced stop) they get SIGTERM, which makes a worker drain and flush, then SIGKILL.
            grace = 0.0 if orchestrator.forced else WORKER_EXIT_GRACE_S
            # (a signal since the summary has set it to then already: the earlier deadline stands)
            procs.cancel_scope.deadline = min(procs.cancel_scope.deadline, trio.current_time() + grace)
        if spawn and fresh:  # the workers' files are in OUT, complete
            summary = rebuilt_if_needed(out, summary, say)
        one_clock = same_clock(cp.traits, target.traits)
        block = None if server is None else await server.finish(orchestrator, one_clock)
        summary = with_server(out, summary, block, per_statement)
        history = await history_at_end(target, scenario, orchestrator, summary, one_clock, say)
        summary = with_server(out, summary, history, None)
        summary = await check_workload(target, scenario, out, summary, say)
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


async def _interruptible(work: Any, signals: bool = True) -> bool:
    """Run ``work``; Ctrl-C or SIGTERM cancels it (with ``signals``). True if it ran to the end."""
    if not signals:
        await work()
        return True
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


async def display(
    orchestrator: Orchestrator,
    console: Console,
    title: str,
    progress_every_s: float,
    progress: Callable[[str], None] | None = None,
    dashboards: Sequence[Dashboard] = (),
) -> None:
    """What a run shows while it runs: given ``progress``, a plain line to it every
    ``progress_every_s``; else on a terminal the live panel (``live.view``), otherwise a plain
    progress line every ``progress_every_s`` (0: none); nothing with ``--quiet``. A
    dashboard (``dashboards``) reads the same observer as the panel (one read of the control plane a
    second)."""
    from startline.live import view as liveview
    from startline.live.observe import Observer

    observer = Observer(orchestrator, title)
    for dashboard in dashboards:
        dashboard.observer = observer
    if dashboards:
        if progress is not None or console.quiet or not console.is_terminal:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(observer.follow)
                nursery.start_soon(functools.partial(display, orchestrator, console, title, progress_every_s, progress))
            return

    if progress is not None:
        if progress_every_s > 0:
            await progress_lines(orchestrator, progress, progress_every_s)
        return
    if console.quiet:
        return
    if console.is_terminal:
        await liveview.show(observer, console)
    elif progress_every_s > 0:
        await progress_lines(
            orchestrator,
            lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True),
            progress_every_s,
        )


async def progress_lines(orchestrator: Orchestrator, say: Callable[[str], None], every_s: float) -> None:
    """Not on a terminal (CI, a log file, a harness): one plain line every ``every_s`` seconds."""
    began = trio.current_time()
    while True:
        await trio.sleep(every_s)
        line = await progress_line(orchestrator)
        say(f"[{trio.current_time() - began:6.1f} s] {line}")


async def progress_line(orchestrator: Orchestrator) -> str:
    """One plain line for a log (pgbench ``-P`` style): the progress, then — over the intervals
    every live worker has shipped, so that a total and a rate are of the same complete intervals —
    the operations and errors so far, and the last such interval's throughput and latency."""
    line = orchestrator.progress()
    if orchestrator.start_time is None:
        return line
    try:
        snapshots = await orchestrator.read_snapshots()
    except ControlPlaneError:
        return line + "; figures: control plane unreachable"
    stats = orchestrator.statistics()
    live = [w for w, s in stats.worker_statuses.items() if s not in (WorkerStatus.DEAD, WorkerStatus.FAILED)]
    shipped = reported_through(snapshots)
    through = min((shipped.get(w, -1) for w in live), default=max(shipped.values(), default=-1))
    if through < 0:
        return f"{line}; no complete interval from every worker yet"
    iv = orchestrator.scenario.snapshot_interval_s
    rows = merge_timeseries(snapshots, iv)[: through + 1]
    ops, errors = sum(r["ops"] for r in rows), sum(r["errors"] for r in rows)
    last = merged_intervals(snapshots, through, through, iv)
    lat = last.latency_ms
    latency = f", p50 {lat['p50']:,.2f} ms, p99 {lat['p99']:,.2f} ms" if last.ops and lat["max"] > 0 else ""
    return (
        f"{line}; {ops:,} ops, {errors:,} errors in {(through + 1) * iv:g} s; "
        f"{last.ops / iv:,.0f} ops/s{latency} in the {iv:g} s to {(through + 1) * iv:g} s"
    )


def interrupted_after_the_run(exc: BaseException, after: AfterRun) -> bool:
    """Whether ``exc``, out of ``trio.run``, is a Ctrl-C that came once the run was over (its
    summary written): a ``KeyboardInterrupt``, alone or the only thing a nursery's group holds.
    A signal that arrives as the signal task is cancelled at teardown is redelivered by Trio when
    its receiver closes, and surfaces wherever Python runs the handler next — in that task, or out
    of ``trio.run``. Marks ``after.interrupted`` when so."""
    if isinstance(exc, BaseExceptionGroup):
        interrupts, rest = exc.split(KeyboardInterrupt)
        ki = interrupts is not None and rest is None
    else:
        ki = isinstance(exc, KeyboardInterrupt)
    if ki and after.over:
        after.interrupted = True
        return True
    return False


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
    try:
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
    except KeyboardInterrupt:
        # This task is cancelled only once the run is over: a Ctrl-C that arrived as it was (not
        # yet read) is redelivered by Trio as the receiver closes. It means "interrupted after
        # the run" — not a traceback and exit 1 with the summary already written.
        if after is not None:
            after.interrupted = True
