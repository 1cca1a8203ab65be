"""Worker processes: the command line a worker is started with, a worker process spawned and
ended here (SIGTERM to drain, a second to force, then SIGKILL), and ``startline worker``'s life in
a process (``join_as_worker``): find the run, check its SQL and calls are allowed, run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import trio

from startline.compose import open_control, open_target
from startline.engine.follow import wait_for_run
from startline.engine.resilience import ResilientControlPlane
from startline.engine.scenario import ConfigError, Scenario
from startline.engine.together import worker_id
from startline.engine.worker import Worker
from startline.engine.workload import resolve_call
from startline.live.watchdog import LoopWatchdog
from startline.urls import Url, parse_url

WORKER_END_GRACE_S = 2.0
"""Between the signals that end a worker process: SIGTERM, SIGTERM (forced), SIGKILL."""


def worker_command(scenario: Scenario, run_id: str, index: int, results: Path) -> list[str]:
    """The command line of worker ``index`` of a run."""
    return command_line(worker_args(scenario, run_id, index), results)


def command_line(args: list[str], results: Path) -> list[str]:
    """``python -m startline.cli worker ARGS --results RESULTS`` (not the `startline` script, so it
    works wherever this interpreter does: here, or on a Dask worker)."""
    return [sys.executable, "-m", "startline.cli", "worker", *args, "--results", str(results)]


def worker_args(scenario: Scenario, run_id: str, index: int) -> list[str]:
    """``startline worker``'s arguments for worker ``index`` of a run (without ``--results``; the
    control and target URLs travel in its environment, ``url_env``)."""
    return [
        "--run-id",
        run_id,
        "--worker-id",
        worker_id(index),
        "--index",
        str(index),
        # the scenario came from a file the user passed to `run`: its SQL and calls are theirs to
        # allow — its SQL pinned by hash (a control plane rewritten meanwhile is refused)
        "--code-hash",
        code_hash(scenario),
        *(a for module in call_modules(scenario) for a in ("--allow-call", module)),
    ]


def code_hash(scenario: Scenario) -> str:
    """The SHA-256 of what a worker would run for a scenario: each operation's name, SQL,
    ``call`` and transaction steps (``startline check FILE`` prints it; ``startline worker
    --code-hash`` pins it)."""
    code = [
        [op.name, op.sql, op.call if isinstance(op.call, str) else None]
        + ([[[step.sql, list(step.into)] for step in op.transaction]] if op.transaction else [])
        for op in scenario.operations
    ]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()


def check_sql_allowed(scenario: Scenario, allow_sql: bool, pinned: str | None) -> None:
    """SQL from the control plane is code too (a SQLite target writes files with it; any target
    runs what it says with the worker's credentials): a worker runs a scenario's SQL operations
    only if its operator allowed them — ``--allow-sql`` (whoever writes the control plane is
    trusted) or ``--code-hash`` naming exactly this scenario's code (``code_hash``)."""
    if pinned is not None:
        if pinned != code_hash(scenario):
            raise ConfigError(
                "--code-hash",
                f"the run's operations are not the ones this worker was started for (their code hash is "
                f"{code_hash(scenario)}, not {pinned}): the control plane holds another scenario",
            )
        return
    with_sql = [op.name for op in scenario.operations if op.sql or op.transaction]
    if with_sql and not allow_sql:
        raise ConfigError(
            "--allow-sql",
            f"the run's scenario runs SQL from the control plane (operations {', '.join(with_sql)}), which this "
            f"worker does not allow: start it with --allow-sql if you trust whoever writes the control plane, "
            f"or --code-hash {code_hash(scenario)} (`startline check FILE` prints a scenario file's)",
        )


def call_modules(scenario: Scenario) -> list[str]:
    """The modules the scenario's ``call`` operations import (code every worker would run), the
    built-in workloads' aside."""
    modules = {op.call.partition(":")[0] for op in scenario.operations if isinstance(op.call, str)}
    return sorted(m for m in modules if not _under(m, BUILT_IN_CALLS))


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


BUILT_IN_CALLS = ("startline.workloads",)
"""The built-in workloads' transactions (TPC-C's): allowed to every worker without --allow-call."""


def check_calls_allowed(scenario: Scenario, allowed: tuple[str, ...]) -> None:
    """A worker takes its scenario from the control plane: anyone who can write RUN_STATUS could
    make it import code. It runs only functions defined in modules under a prefix given with
    ``--allow-call`` (or the built-in workloads' package): the module named, and the function found
    there (a dotted path through an allowed module's imports, ``allowed.module:trio.run_process``,
    reaches code defined elsewhere)."""

    def allows(module: str) -> bool:
        return _under(module, (*allowed, *BUILT_IN_CALLS))

    for module in call_modules(scenario):
        if not allows(module):
            raise ConfigError(
                "--allow-call",
                f"the run's scenario calls code from module {module!r}, which this worker does not allow: "
                f"start it with --allow-call {module} if you trust the run's control plane",
            )
    for i, op in enumerate(scenario.operations):
        if isinstance(op.call, str):
            defined = getattr(resolve_call(op.call, f"operations[{i}].call"), "__module__", None) or "?"
            if not allows(defined):
                raise ConfigError(
                    "--allow-call",
                    f"the run's scenario calls {op.call!r}, a function defined in module {defined!r}, which this "
                    "worker does not allow",
                )


async def worker_process(scenario: Scenario, run_id: str, index: int, out: Path) -> None:
    """Run worker ``index`` as a child process, logging to OUT/worker-ID.log. Cancelled, it is
    sent SIGTERM (drain and flush), then killed (trio.run_process's own escalation).

    Each worker leads a session of its own (``start_new_session``), as each PostgreSQL backend
    does (its ``setsid``): where Linux groups a session's processes for the CPU (autogroup, on
    by default on most distributions), workers sharing the orchestrator's session got one
    group's share together against every backend's own at the release, and a database server
    on the same cores held them back (4 × 4 on PostgreSQL, 2 cores: lag p50 2.3–2.4 ms, 1.1–1.3
    in sessions of their own; benchmarks/RESULTS.md). Its signals come from the orchestrator
    (SIGTERM, ``_end_worker``), not from the terminal's process group."""
    wid = worker_id(index)
    cmd = worker_command(scenario, run_id, index, out / f"worker-{wid}.json")
    with open(out / f"worker-{wid}.log", "wb") as log:
        await trio.run_process(
            cmd,
            stdout=log,
            stderr=log,
            check=False,
            env=worker_env(time.time(), url_env(scenario)),
            deliver_cancel=_end_worker,
            start_new_session=True,
        )


LAUNCHED_AT = "STARTLINE_LAUNCHED_AT"
"""The environment variable a launcher sets to the host's time (epoch seconds) it started a worker at."""


CONTROL_ENV, TARGET_ENV = "STARTLINE_CONTROL", "STARTLINE_TARGET"
"""The environment variables ``startline worker`` reads its ``--control`` and ``--target`` from
when they are not given: a spawned worker's URLs (with any password in them) travel there, not on
its command line, which every user of the host can read (``ps``)."""


def url_env(scenario: Scenario) -> dict[str, str]:
    """The control and target URLs of a spawned worker, as environment variables."""
    return {CONTROL_ENV: scenario.control, TARGET_ENV: scenario.target}


def worker_env(launched: float, urls: dict[str, str]) -> dict[str, str]:
    """A worker process's environment: this one's, its URLs (``url_env``), unbuffered output, and
    when it was launched on this host's clock (the worker measures its own start delay from it)."""
    return {**os.environ, **urls, "PYTHONUNBUFFERED": "1", LAUNCHED_AT: repr(launched)}


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


def open_files_to_hard_limit() -> None:
    """Let this process open as many files as its hard limit allows: each target connection is a
    socket or a file (a SQLite one three), and a soft limit of 1,024 — many systems' default —
    would end a worker of a thousand connections in ``Too many open files`` (Go's runtime does
    the same at start)."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # (a platform that refuses: the soft limit stays, and a run past it says so)


async def join_as_worker(
    control_url: Url,
    target: str | None,
    run_id: str,
    wid: str,
    index: int,
    group: str,
    allow_call: tuple[str, ...] = (),
    *,
    allow_sql: bool = False,
    pinned: str | None = None,
    signals: bool = True,
) -> dict[str, Any]:
    """A worker process's life: find the run, open the target, run; SIGINT or SIGTERM drains it.
    Returns its results payload."""
    from startline.backends.system import SystemClock

    open_files_to_hard_limit()

    cp = open_control(control_url)
    # The first read rides out what a shared control plane does while others create it (a
    # SQLite file locked for a moment): retried like every other call of the worker's.
    run = await wait_for_run(ResilientControlPlane(cp), run_id)
    scenario = Scenario.from_dict(run.scenario)
    check_sql_allowed(scenario, allow_sql, pinned)
    check_calls_allowed(scenario, allow_call)
    tgt = open_target(parse_url(target or scenario.target, "target"), scenario)
    w = Worker(
        cp, tgt, SystemClock(), run_id, wid, index=index, group=group, scenario=scenario, launched_at=launched_at()
    )
    if not signals:
        return await w.run()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(LoopWatchdog().pulse)

            async def on_term() -> None:
                first = True
                async for _ in received:
                    if first:
                        w.request_drain()  # drain, flush, publish, exit
                        first = False
                    else:
                        w.force_stop()  # end within 2 s with what it has

            nursery.start_soon(on_term)
            payload = await w.run()
            nursery.cancel_scope.cancel()
    return payload
