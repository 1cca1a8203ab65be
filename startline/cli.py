"""The ``startline`` command line: the composition root that picks backends for the engine."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import trio
from rich.console import Console
from rich.markup import escape

from startline import api
from startline.catalogue.commands import register_run, results_option, runs
from startline.engine.files import write_atomic, write_json, write_summary
from startline.engine.ports import ControlPlaneConflict, ControlPlaneError
from startline.engine.scenario import ConfigError, LoadMode, Scenario, Strategy
from startline.engine.together import worker_ids
from startline.engine.verdict import EXIT_CHECKS_FAILED, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, exit_code
from startline.live import check as live_check
from startline.live import run as live_run
from startline.live import workers as live_workers
from startline.live.outdir import claim_out
from startline.urls import parse_url
from startline.views import html as htmlreport
from startline.views.rows import SPREAD_COLUMNS, simulated_load_rows, simulated_start_rows
from startline.views.terminal import print_summary

if TYPE_CHECKING:
    from startline.simulate.models import Profile

err = Console(stderr=True)


def fail_usage(message: str) -> NoReturn:
    """One clear line on stderr and exit code 2: bad usage or configuration."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(EXIT_USAGE)


ID_CHARS = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _id_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Run and worker ids: 1 to 128 letters, digits or ``_.:-`` (they name files and log lines)."""
    if value is not None and not ID_CHARS.fullmatch(value):
        raise click.BadParameter("must be 1 to 128 letters, digits, '_', '.', ':' or '-'")
    return value


def fail_run(message: str) -> NoReturn:
    """One line on stderr and exit code 3: the run (or this worker) failed."""
    err.print(f"[bold red]failed:[/] {escape(message)}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(EXIT_RUN_FAILED)


def load_scenario(path: str, settings: tuple[str, ...] = ()) -> Scenario:
    try:
        return Scenario.from_toml(path, parse_settings(settings))
    except ConfigError as exc:
        fail_usage(f"{path}: {exc}" if exc.field else str(exc))


def parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    """``--set KEY=VALUE``: a dotted scenario key and a TOML value (``8``, ``2.5``, ``true``,
    ``"text"``, ``[1, 2]``); a value that is not TOML is a string."""
    import tomllib

    out: dict[str, Any] = {}
    for item in settings:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            fail_usage(f"--set: expected KEY=VALUE, such as connections_per_worker=8 (got {item!r})")
        try:
            out[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text.strip()
    return out


def workload_options(name: str, scale: int | None, option: tuple[str, ...]) -> dict[str, Any]:
    """A ``[workload]`` table from the flags: ``--scale N`` and ``--option KEY=VALUE`` (a whole
    number is an integer), checked by the workload itself."""
    options: dict[str, Any] = {"name": name} | ({"scale": scale} if scale is not None else {})
    for item in option:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            fail_usage(f"--option: expected KEY=VALUE (got {item!r})")
        options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value
    return options


OPTION_HELP = "A workload option KEY=VALUE, e.g. records=100000 (`startline workloads` lists them); repeatable."


def workload_scenario(
    name: str | None,
    options: dict[str, Any],
    target: str | None,
    workers: int,
    connections_per_worker: int,
    warmup_s: float,
    measurement_s: float,
) -> Scenario | None:
    """``run --workload NAME``'s scenario (None without --workload)."""
    if name is None:
        return None
    if target is None:
        fail_usage("--target: --workload runs on a target: give its URL (postgresql://…, sqlite:///…)")
    try:
        return Scenario.from_dict(
            {
                "name": name,
                "workload": options,
                "workers": workers,
                "connections_per_worker": connections_per_worker,
                "warmup_s": warmup_s,
                "measurement_s": measurement_s,
                "control": "sqlite:///{out}/control.db",
                "target": target,
            }
        )
    except ConfigError as exc:
        fail_usage(str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="startline")
def main() -> None:
    """Coordinate distributed database benchmarks: start together, change load together,
    stop together, and measure how far apart it really happened."""


main.add_command(runs)


@main.command()
@click.argument("config", type=click.Path(), required=False)
@click.option("--workload", default=None, help="Run a built-in workload (`startline workloads`) instead of CONFIG.")
@click.option("--scale", type=int, default=None, help="With --workload: its scale (default 1).")
@click.option("--option", "option", multiple=True, metavar="KEY=VALUE", help="With --workload: " + OPTION_HELP)
@click.option("--workers", type=click.IntRange(1, 10_000), default=2, show_default=True, help="With --workload.")
@click.option(
    "--connections-per-worker", type=click.IntRange(1, 100_000), default=4, show_default=True, help="With --workload."
)
@click.option("--warmup-s", type=click.FloatRange(0, 86_400), default=5.0, show_default=True, help="With --workload.")
@click.option(
    "--measurement-s", type=click.FloatRange(0.1, 86_400), default=30.0, show_default=True, help="With --workload."
)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default="out/run",
    show_default=True,
    help="Directory for summary.json, worker logs and (by default) the SQLite files.",
)
@click.option("--control", default=None, help="Control-plane URL (default: the scenario's `control`).")
@click.option("--target", default=None, help="Target URL (default: the scenario's `target`).")
@click.option("--no-spawn", is_flag=True, help="Start no worker processes; wait for workers started elsewhere.")
@click.option(
    "--spawn",
    "spawn_on",
    default=None,
    metavar="dask://HOST:PORT",
    help="Place the workers on a Dask cluster (one long-running task each) instead of local processes.",
)
@click.option("--run-id", default=None, callback=_id_option, help="Run id (default: scenario name + random suffix).")
@click.option("--quiet", is_flag=True, help="Print only the path of summary.json.")
@click.option("--overwrite", is_flag=True, help="Reuse an --out that holds another run's summary.")
@click.option(
    "--progress-every",
    type=click.FloatRange(0, 3600),
    default=5.0,
    show_default=True,
    help="Not on a terminal: a progress line every this many seconds (0: none).",
)
@click.option(
    "--no-report",
    is_flag=True,
    help="Write no OUT/report.html (no plotting; summary.json and the CSV files are written as always).",
)
@click.option("--tag", "tags", multiple=True, help="Tag the run in the catalogue (`startline runs`); repeatable.")
@results_option
@click.option(
    "--dashboard",
    "dashboard_at",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve a live page of the run (and /metrics) on HOST (default 127.0.0.1):PORT while it runs "
    "(extra startline[dashboard]); a non-loopback HOST needs a token (--dashboard-token, or one is printed).",
)
@click.option("--dashboard-token", default=None, help="The token a non-loopback dashboard requires (?token=…).")
@click.option(
    "--dashboard-linger",
    type=click.FloatRange(0, 86_400),
    default=0.0,
    show_default=True,
    help="Keep the dashboard up this many seconds after the run (its verdict and report on the page).",
)
@click.option(
    "--metrics",
    "metrics_at",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve /metrics (OpenMetrics, for Prometheus) alone on HOST:PORT while the run runs.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Set a scenario key over CONFIG's: a dotted name and a TOML value (connections_per_worker=8, "
    'load.rate=200, start.strategy="poll"); repeatable.',
)
def run(
    config: str | None,
    workload: str | None,
    scale: int | None,
    option: tuple[str, ...],
    workers: int,
    connections_per_worker: int,
    warmup_s: float,
    measurement_s: float,
    out: str,
    control: str | None,
    target: str | None,
    no_spawn: bool,
    spawn_on: str | None,
    run_id: str | None,
    quiet: bool,
    overwrite: bool,
    progress_every: float,
    no_report: bool,
    tags: tuple[str, ...],
    results: str | None,
    dashboard_at: str | None,
    dashboard_token: str | None,
    dashboard_linger: float,
    metrics_at: str | None,
    settings: tuple[str, ...],
) -> None:
    """Run the scenario in CONFIG (or a built-in --workload on --target) and write OUT/summary.json.

    With --workload no file is needed: the workload's operations, --workers ×
    --connections-per-worker connections, --warmup-s and --measurement-s, a SQLite control plane in
    OUT unless --control is given (load its tables first: `startline init WORKLOAD --target URL`).

    With a memory control plane the workers are tasks of this process; otherwise this
    process orchestrates and starts the scenario's `workers` as processes
    (`startline worker ...`), logging to OUT/worker-ID.log.

    Exit codes: 0 completed and passed its [checks], 1 completed but failed them, 2 bad usage or
    config, 3 the run failed or was cancelled.
    """
    options = workload_options(workload, scale, option) if workload is not None else {}
    scenario = workload_scenario(workload, options, target, workers, connections_per_worker, warmup_s, measurement_s)
    if scenario is None:
        if config is None:
            fail_usage("give a scenario file (CONFIG) or --workload NAME")
        scenario = load_scenario(config, settings)
    elif settings:
        fail_usage("--set: sets keys of a scenario file (CONFIG); --workload takes its own flags")
    elif config is not None:
        fail_usage("give a scenario file (CONFIG) or --workload NAME, not both")
    out_dir = Path(out)
    try:
        if spawn_on is not None and (not spawn_on.startswith("dask://") or no_spawn):
            why = "expected dask://HOST:PORT" if not spawn_on.startswith("dask://") else "needs worker processes"
            raise ConfigError("--spawn", f"{why} (got {spawn_on!r}{', with --no-spawn' if no_spawn else ''})")
        spawn = spawn_on or ("none" if no_spawn else "processes")
        prepared = api.prepare(scenario, out_dir, control=control, target=target, spawn=spawn, run_id=run_id)
    except ConfigError as exc:
        fail_usage(f"{config}: {exc}" if config is not None else str(exc))
    try:
        lock = claim_out(out_dir, prepared.run_id, overwrite)
    except ConfigError as exc:
        fail_usage(str(exc))
    resolved, control_url, target_url, run_id = prepared.scenario, prepared.control, prepared.target, prepared.run_id
    servers = _dashboards(dashboard_at, dashboard_token, metrics_at, out_dir)
    console = Console(stderr=True, quiet=quiet)
    if not quiet:  # on stdout, before anything can fail: stderr keeps a failure to its one line
        again = f"after a crash, the same command with --run-id {run_id} fails the run cleanly"
        click.echo(f"run id {run_id} (in {out_dir / 'run_id'}; {again})")
    after = live_run.AfterRun()
    path = str(out_dir / "summary.json")
    try:  # (one handler from the run's end on: a Ctrl-C anywhere after it keeps its result)
        report: str | None = None
        try:
            orchestrate = functools.partial(
                live_run.orchestrate,
                resolved,
                control_url,
                target_url,
                out_dir,
                run_id,
                not no_spawn,
                console,
                progress_every,
                spawn_on,
                after,
            )
            if servers:
                served = functools.partial(_write_report, out_dir, console=console) if not no_report else None
                summary, report = trio.run(_served, servers, orchestrate, served, dashboard_linger, console)
            else:
                summary = trio.run(orchestrate)
        except BaseException as exc:
            if live_run.interrupted_after_the_run(exc, after):  # the summary is on disk: the run's result stands
                summary = json.loads((out_dir / "summary.json").read_text())
            elif isinstance(exc, KeyboardInterrupt):  # before the run's own signal handling was in place
                fail_run("cancelled before the run started")
            else:
                if isinstance(exc, Exception):
                    _fail_known(exc, config)
                raise
        finally:
            lock.close()
        if after.interrupted:  # a Ctrl-C once the run was over, while its worker processes ended
            raise KeyboardInterrupt
        if not servers and not no_report:
            report = _write_report(out_dir, summary, console)
        if quiet:
            click.echo(path)
        else:
            print_summary(summary, Console(width=max(110, Console().width)), path, report)
        warning = register_run(summary, out_dir, tags, results)
        if warning is not None:
            click.echo(warning, err=True)  # (one line, never wrapped)
    except KeyboardInterrupt:  # the run is over and summary.json complete: its exit code stands
        # taken: a second (or redelivered) SIGINT must not kill the exit — once Python finalizes,
        # SIGINT is back at its default action and the process would die of it, exit code −2
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not os.path.exists(path):  # (a Ctrl-C as a failed run was reported: it stays failed)
            fail_run("cancelled before the run wrote its summary")
        summary = json.loads((out_dir / "summary.json").read_text())
        err.print(f"interrupted after the run: the report is not written; {path} is complete", highlight=False)
        # and out at once: a Ctrl-C still in flight could otherwise end the interpreter's own
        # shutdown by SIGINT (seen: exit −2 after this line, under repeated Ctrl-C)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code(summary["status"], summary["verdict"]))
    sys.exit(exit_code(summary["status"], summary["verdict"]))


def _dashboards(at: str | None, token: str | None, metrics_at: str | None, out: Path) -> list[Any]:
    """The servers ``--dashboard`` and ``--metrics`` ask for (none: neither given)."""
    if at is None and metrics_at is None:
        if token is not None:
            fail_usage("--dashboard-token: goes with --dashboard")
        return []
    from startline.live import dashboard

    if not dashboard.available():
        fail_usage(f"--dashboard: {dashboard.EXTRA}" if at else f"--metrics: {dashboard.EXTRA}")
    try:
        servers = []
        if at is not None:
            host, port = dashboard.parse_bind(at, "--dashboard")
            servers.append(dashboard.Dashboard(host=host, port=port, out=out, token=token))
        if metrics_at is not None:
            host, port = dashboard.parse_bind(metrics_at, "--metrics")
            servers.append(dashboard.Dashboard(host=host, port=port, out=out, page=False, token=token))
    except ConfigError as exc:
        fail_usage(str(exc))
    return servers


async def _served(
    servers: list[Any],
    orchestrate: Callable[..., Any],
    write_report: Callable[[dict[str, Any]], str | None] | None,
    linger_s: float,
    console: Console,
) -> tuple[dict[str, Any], str | None]:
    """The run with its dashboards up: they start before it (their addresses printed), show its
    verdict and report once it is over (the report written meanwhile, in a thread), stay
    ``linger_s`` more, and stop — with the run, on a failure or Ctrl-C too (no port left bound)."""
    async with trio.open_nursery() as nursery:
        for server in servers:
            try:
                url = await nursery.start(server.serve)
            except OSError as exc:
                raise ConfigError("--dashboard" if server.page else "--metrics", f"cannot listen: {exc}") from None
            console.print(f"{'dashboard' if server.page else 'metrics'}: {url}", highlight=False, soft_wrap=True)
        summary = await orchestrate(dashboards=servers)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:  # (the run's own are gone)

            async def last_part() -> None:
                report = None if write_report is None else await trio.to_thread.run_sync(write_report, summary)
                for server in servers:
                    server.finish(summary, report is not None)
                if linger_s > 0:
                    console.print(f"dashboard up {linger_s:g} s more (Ctrl-C ends it)", highlight=False)
                    await trio.sleep(linger_s)
                done.append(report)
                ending.cancel()

            done: list[str | None] = []
            with trio.CancelScope() as ending:
                nursery.start_soon(last_part)
                async for _ in signals:  # Ctrl-C: the dashboard ends now; the run's result stands
                    break
        nursery.cancel_scope.cancel()
        report = done[0] if done else None
    return summary, report


def _write_report(out_dir: Path, summary: dict[str, Any], console: Console) -> str | None:
    """OUT/report.html, or one line saying why there is none (the run's result stands either way)."""
    if not htmlreport.available():
        console.print(htmlreport.PLOT_EXTRA, highlight=False, markup=False)  # markup would eat [plot]
        return None
    try:
        return str(htmlreport.write_report(out_dir, summary))
    except Exception as exc:  # the run's result and exit code stand without its report
        console.print(f"report.html not written: {type(exc).__name__}: {exc}", highlight=False)
        return None


@main.command()
@click.argument("config", type=click.Path())
@click.option("--control", default=None, help="Control-plane URL to check (default: the scenario's `control`).")
@click.option("--target", default=None, help="Target URL to check (default: the scenario's `target`).")
@click.option(
    "--connect",
    is_flag=True,
    help="Also reach both URLs, and have a SQLite target explain every SQL statement with sample "
    "parameters (on a scratch in-memory copy with the setup applied; the file is not changed).",
)
def check(config: str, control: str | None, target: str | None, connect: bool) -> None:
    """Validate CONFIG (and its URLs) without running anything: one line, exit 0 or 2."""
    from startline.compose import open_target

    scenario = load_scenario(config)
    with tempfile.TemporaryDirectory() as out:  # stands in for {out}
        try:
            control_url = parse_url(control or scenario.control, "control", Path(out))
            target_url = parse_url(target or scenario.target, "target", Path(out))
            scenario.check_scopes(worker_ids(scenario), {"default"})
            found = open_target(target_url, scenario)  # operation kinds and setup fit it; calls import
            problems = trio.run(live_check.check_connect, scenario, control_url, target_url, found) if connect else []
        except ConfigError as exc:
            fail_usage(f"{config}: {exc}")
    if problems:
        fail_usage(f"{config}: " + "; ".join(problems))
    click.echo(
        f"{config}: ok — {scenario.name}: {describe_load(scenario)}, "
        f"{scenario.start.strategy} start, {scenario.length_s:g} s, {len(scenario.operations)} operation(s)"
        + (", both URLs reached" if connect else "")
    )
    if any(op.sql or op.call for op in scenario.operations):  # for workers started by hand
        click.echo(f"code hash {live_workers.code_hash(scenario)} (startline worker --code-hash)")


def writable(option: str, path: str | None) -> None:
    """A file an option names can be written (checked before the work that fills it): its
    directory exists and takes files, and it is not a directory itself; else one line, exit 2."""
    if not path:
        return
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        fail_usage(f"{option}: {path} is a directory")
    if not parent.is_dir():
        fail_usage(f"{option}: cannot write {path}: no directory {parent}")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        fail_usage(f"{option}: cannot write {path}: permission denied")


@contextlib.contextmanager
def writing(option: str) -> Iterator[None]:
    """A write a user's option asked for that fails anyway (a full disk): one line, exit 2."""
    try:
        yield
    except OSError as exc:
        fail_usage(f"{option}: cannot write {exc.filename or ''}: {exc.strerror or exc}".replace(" :", ":"))


def describe_load(sc: Scenario) -> str:
    """The workers and the load mode, in a few words (``check``'s line)."""
    load, w = sc.load, f"{sc.workers} workers"
    if load.mode is LoadMode.RATE:
        stages = f", {len(load.stages)} stages" if load.stages else ""
        return (
            f"{w}, open loop at {load.rate:g} ops/s ({load.arrival}{stages}), up to {sc.max_in_flight} in flight each"
        )
    if load.mode is LoadMode.QPS:
        low = load.min_connections or sc.workers
        return f"{w}, holding {load.target_qps:g} ops/s with {low}–{load.max_connections} connections"
    if load.mode is LoadMode.FIND_MAX:
        fm = load.find_max
        return f"{w}, find-max over the {fm.over} from {fm.start:g} by {fm.step:g} every {fm.step_s:g} s"
    return f"{w} × {sc.connections_per_worker} connections"


def _fail_known(exc: BaseException, config: str | None) -> None:
    """Bad configuration or an unreachable control plane: one line, exit 2 (Trio may wrap it)."""
    from startline.engine.resilience import single_leaf

    leaf = single_leaf(exc)
    if isinstance(leaf, ConfigError):
        fail_usage(f"{config}: {leaf}" if config else str(leaf))
    if isinstance(leaf, live_run.RunCancelled):
        fail_run(str(leaf))
    if isinstance(leaf, OSError) and leaf.filename is not None:  # a full disk, a file it may not write
        fail_run(f"cannot write {leaf.filename}: {leaf.strerror or leaf}")
    if isinstance(leaf, ControlPlaneConflict):  # refused: a run id taken or ended, a worker id taken
        fail_usage(str(leaf))
    if isinstance(leaf, ControlPlaneError):
        fail_usage(f"control plane: {leaf}")


@main.command()
@click.option(
    "--control",
    required=True,
    envvar=live_workers.CONTROL_ENV,
    help=f"Control-plane URL (sqlite:///..., snowflake://...); or ${live_workers.CONTROL_ENV}.",
)
@click.option("--run-id", required=True, callback=_id_option, help="The run to join.")
@click.option("--worker-id", required=True, callback=_id_option, help="This worker's id, unique in the run.")
@click.option(
    "--target",
    default=None,
    envvar=live_workers.TARGET_ENV,
    help=f"Target URL, or ${live_workers.TARGET_ENV} (default: the run's scenario `target`, which the control "
    "plane holds without its password: the worker then connects with its own credentials — PG* "
    "environment, ~/.pgpass, connections.toml).",
)
@click.option("--index", type=int, default=0, show_default=True, help="This worker's number (keeps sequences unique).")
@click.option("--group", default="default", show_default=True, help="Worker group (for WORKER_GROUP scaling).")
@click.option(
    "--results",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write this worker's results (JSON) here: kept even if the control plane is lost.",
)
@click.option(
    "--allow-call",
    "allow_call",
    multiple=True,
    metavar="MODULE_PREFIX",
    help="Run `call` operations from modules under this prefix (repeatable). A `call` is code "
    "execution: without this, a worker refuses a run whose scenario has one.",
)
@click.option(
    "--allow-sql",
    is_flag=True,
    help="Run the SQL operations of whatever scenario the control plane holds. SQL is code too: "
    "without this or --code-hash, a worker refuses a run whose scenario has SQL operations.",
)
@click.option(
    "--code-hash",
    "pinned",
    default=None,
    metavar="SHA256",
    help="Run only the scenario whose code hash this is (`startline check FILE` prints it): its SQL "
    "operations are allowed, any other scenario refused.",
)
def worker(
    control: str,
    run_id: str,
    worker_id: str,
    target: str | None,
    index: int,
    group: str,
    results: str | None,
    allow_call: tuple[str, ...],
    allow_sql: bool,
    pinned: str | None,
) -> None:
    """Join run RUN_ID as one worker: on this host or any other that reaches the control plane.

    SIGINT or SIGTERM makes it drain, flush its results and exit.
    Exit codes: 0 completed, 2 bad usage, 3 the worker failed (see its log).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        control_url = parse_url(control, "control")
        if control_url.in_process:
            raise ConfigError("control", "a worker process needs a shared control plane, not memory://")
    except ConfigError as exc:
        fail_usage(str(exc))
    try:
        join = functools.partial(live_workers.join_as_worker, allow_sql=allow_sql, pinned=pinned)
        payload = trio.run(join, control_url, target, run_id, worker_id, index, group, allow_call)
    except KeyboardInterrupt:  # before the worker's own signal handling was in place
        fail_run("cancelled before joining the run")
    except Exception as exc:
        _fail_known(exc, None)
        raise
    if results:
        try:
            write_json(Path(results), payload)
        except OSError as exc:
            fail_run(f"cannot write the results file {results}: {exc}")
    sys.exit(EXIT_OK if payload["status"] == "COMPLETED" else EXIT_RUN_FAILED)


def load_profile(name: str | None, path: str | None) -> Any:
    from startline.simulate.sweep import load_profile as load

    try:
        return load(name, path)
    except ConfigError as exc:
        fail_usage(str(exc))


@main.command()
@click.argument("config", required=False, type=click.Path())
@click.option(
    "--profile",
    "profile_name",
    default="snowflake-hybrid",
    show_default=True,
    help="A profile in startline/simulate/profiles (snowflake-hybrid: the seed analysis's figures; "
    "postgres: fitted from a local PostgreSQL, push included).",
)
@click.option("--profile-file", default=None, type=click.Path(dir_okay=False), help="A profile TOML file.")
@click.option("--strategy", default=None, help="Override start.strategy.")
@click.option("--workers", type=click.IntRange(1, 10_000), default=None, help="Override workers.")
@click.option("--seeds", type=click.IntRange(1, 1_000_000), default=20, show_default=True, help="Runs (seeds 0..K-1).")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the results here.")
@click.option(
    "--faults",
    type=click.Choice(["none", "random"]),
    default="none",
    show_default=True,
    help="random: whole lifecycles under random faults, each checked against the invariants.",
)
@click.option("--first-seed", type=click.IntRange(0, 2**62), default=0, show_default=True, help="Seeds start here.")
@click.option(
    "--jobs", type=click.IntRange(1, 256), default=1, show_default=True, help="Parallel processes (--faults)."
)
@click.option(
    "--cluster",
    default=None,
    metavar="local:N | tcp://HOST:PORT",
    help="With --faults random: run the seeds on Dask distributed.",
)
def simulate(
    config: str | None,
    profile_name: str,
    profile_file: str | None,
    strategy: str | None,
    workers: int | None,
    seeds: int,
    json_path: str | None,
    faults: str,
    first_seed: int,
    jobs: int,
    cluster: str | None,
) -> None:
    """Simulate CONFIG (default: the start path) on virtual time over K seeds, with a latency profile.

    Prints p50/p99/max over the seeds of detection delay, lag, skew and control-plane
    queries per worker per second, all in ground truth (the simulation knows it).

    With --faults random: whole lifecycles (default: a short busy scenario) under faults drawn
    from each seed, checked against the invariants in docs/reliability.md; a failing seed is
    printed with the command that replays it, and the exit code is 1.
    """
    writable("--json", json_path)

    from rich.progress import Progress
    from rich.table import Table

    from startline.simulate.runner import aggregate, simulate_once

    if faults == "random":
        _simulate_faults(config, strategy, workers, range(first_seed, first_seed + seeds), jobs, json_path, cluster)
        return
    profile = load_profile(profile_name, profile_file)
    from startline.simulate.sweep import START_PATH_SCENARIO

    base = load_scenario(config).to_dict() if config else dict(START_PATH_SCENARIO)
    if strategy:
        base["start"] = {**base.get("start", {}), "strategy": strategy}
    if workers:
        base["workers"] = workers
    try:
        scenario = Scenario.from_dict(base)
    except ConfigError as exc:
        fail_usage(str(exc))
    if scenario.undrawn_samples:
        op, name, _ = scenario.undrawn_samples[0]
        fail_usage(f"operations.{op}.params.{name}: a samples is drawn from a live target; simulate has none")
    results: list[dict[str, Any]] = []
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"simulating {seeds} seeds", total=seeds)
        advance = _progress_for(progress, task, seeds, "seeds simulated")  # (a plain line off a terminal)
        for seed in range(first_seed, first_seed + seeds):
            results.append(simulate_once(scenario, profile, seed) | {"seed": seed})
            advance(1)
    summary = aggregate(results, scenario, profile)
    table = Table(
        title=f"{scenario.start.strategy}, {scenario.workers} workers, profile {profile.name}, "
        f"{seeds} seeds (ground truth, and what the workers measured)"
    )
    for col in SPREAD_COLUMNS:
        table.add_column(col, justify="left" if col == "figure" else "right")
    rows = simulated_start_rows(summary)
    for name, d in rows:
        table.add_row(name, *(f"{d[k]:,.2f}" if d else "-" for k in ("p50", "p99", "max")))
    Console(width=max(100, Console().width)).print(table)
    _say_what_was_simulated_instead(scenario, profile)
    _print_simulated_load(summary["load"], scenario, seeds)
    if json_path:
        with writing("--json"):
            write_json(Path(json_path), summary)


def _say_what_was_simulated_instead(scenario: Scenario, profile: Profile) -> None:
    """A start strategy the simulated control plane cannot carry out runs as its fallback, as it
    would live on such a control plane: said, never silently (a push scenario gave poll's figures
    row for row). A profile with ``notify`` (a control plane that notifies: PostgreSQL's) runs push."""
    from startline.engine.startplan import poll_interval_s

    if scenario.start.strategy is Strategy.PUSH and profile.notify is None:
        interval = 1000 * poll_interval_s(scenario.start)
        print(
            f"note: push is simulated as poll — profile {profile.name!r} models a control plane that cannot "
            "notify (no `notify` latency; push needs PostgreSQL's LISTEN/NOTIFY: try --profile postgres), "
            f"so these are poll's figures at poll_interval_ms = {interval:g}"
        )


def _print_simulated_load(load: dict[str, Any], scenario: Scenario, seeds: int) -> None:
    """The load mode's results over the seeds, beside the target's true capacity."""
    from rich.table import Table

    if scenario.load.mode is LoadMode.CONCURRENCY and not load.get("capacity"):
        return
    table = Table(title=f"load {scenario.load.mode}, {seeds} seeds (measured by startline)")
    for col in SPREAD_COLUMNS:
        table.add_column(col, justify="left" if col == "figure" else "right")
    for name, d in simulated_load_rows(load):
        table.add_row(name, *(f"{d[k]:,.2f}" for k in ("p50", "p99", "max")))
    Console(width=max(100, Console().width)).print(table)
    cap = load.get("capacity")
    if cap:
        print(
            f"ground truth: the target serves {cap['servers']} operations at once "
            f"(the knee), at most {cap['max_qps']:,.1f} ops/s (mean service {cap['service_mean_ms']:.2f} ms)"
        )
    if load.get("reasons"):
        print("qps control ended: " + ", ".join(f"{k} ×{n}" for k, n in load["reasons"].items()))


def _simulate_faults(
    config: str | None,
    strategy: str | None,
    workers: int | None,
    seeds: range,
    jobs: int,
    json_path: str | None,
    cluster: str | None = None,
) -> None:
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from startline.simulate.faults import FAULT_SCENARIO, FaultPlan, fault_report, replay_command, run_fault_seeds

    base: dict[str, Any] = load_scenario(config).to_dict() if config else dict(FAULT_SCENARIO)
    if strategy:
        base["start"] = {**base.get("start", {}), "strategy": strategy}
    if workers:
        base["workers"] = workers
    try:
        FaultPlan.draw(seeds[0], base)  # the configuration is checked once, before any process starts
    except ConfigError as exc:
        fail_usage(f"{config or 'scenario'}: {exc}")
    began = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as progress:
        task = progress.add_task(f"{len(seeds)} seeds under random faults", total=len(seeds))
        advance = _progress_for(progress, task, len(seeds), "seeds")
        try:
            with _executor(cluster) as (executor, _):
                runs = run_fault_seeds(list(seeds), jobs, base, advance, executor=executor)
        except ConfigError as exc:
            fail_usage(str(exc))
    report = fault_report(runs) | {"wall_s": round(time.perf_counter() - began, 1)}
    table = Table(title=f"fault simulation: seeds {seeds.start}..{seeds.stop - 1}", show_header=False)
    table.add_row("seeds run", str(report["seeds"]))
    table.add_row("run statuses", ", ".join(f"{k} {v}" for k, v in report["statuses"].items()))
    table.add_row("faults injected", ", ".join(f"{k} {v}" for k, v in report["faults"].items()))
    table.add_row("invariant violations", str(report["violations"]))
    d = report["detection_s"]
    table.add_row("crash → DEAD (s)", f"n {d['n']}, p50 {d['p50']}, max {d['max']}")
    table.add_row("largest outage survived (s)", str(report["largest_outage_survived_s"]))
    table.add_row("wall time (s)", str(report["wall_s"]))
    Console(width=max(100, Console().width)).print(table)
    for r in runs:
        for v in r.violations:
            err.print(f"seed {r.seed}: {v}", highlight=False, markup=False)
        if r.violations:
            err.print(f"  replay: {replay_command(r.seed, config)}", highlight=False, markup=False)
    if json_path:
        with writing("--json"):
            write_json(Path(json_path), report)
    sys.exit(EXIT_CHECKS_FAILED if report["violations"] else EXIT_OK)


@main.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option(
    "--jobs",
    type=click.IntRange(1, 256),
    default=os.cpu_count() or 1,
    show_default="CPU count",
    help="Parallel processes.",
)
@click.option("--out", type=click.Path(file_okay=False), default="out/sweep", show_default=True)
@click.option(
    "--cluster",
    default=None,
    metavar="local:N | tcp://HOST:PORT",
    help="Run the cells on Dask distributed: a local cluster of N processes, or a running scheduler.",
)
def sweep(sweep_file: str, jobs: int, out: str, cluster: str | None) -> None:
    """Run the grid in SWEEP_FILE on the simulated backend: K seeds per cell, in parallel.

    Writes OUT/cells.csv, OUT/summary.md and PNG plots (lag against poll interval per
    strategy; start precision against control-plane cost).
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from startline.simulate.sweep import Sweep, run_sweep

    try:
        spec = Sweep.from_toml(sweep_file)
    except ConfigError as exc:
        fail_usage(f"{sweep_file}: {exc}")
    with writing("--out"):  # the directory the cells go to: made, and writable, before the work
        Path(out).mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        fail_usage(f"--out: cannot write in {out}: permission denied")
    total = spec.seeds * len(spec.cells)
    began = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{len(spec.cells)} cells × {spec.seeds} seeds", total=total)
        advance = _progress_for(progress, task, total, "simulated runs")
        try:
            with _executor(cluster) as (executor, where):
                progress.update(task, description=f"{len(spec.cells)} cells × {spec.seeds} seeds on {where}")
                run_sweep(spec, jobs, Path(out), advance, executor=executor)
        except ConfigError as exc:
            fail_usage(str(exc))
    elapsed = time.perf_counter() - began
    click.echo((Path(out) / "summary.md").read_text(encoding="utf-8"))
    names = ("cells.csv", "summary.md", "lag_vs_poll_interval.png", "precision_vs_cost.png")
    wrote = ", ".join(n for n in names if (Path(out) / n).exists())
    how = f"on {cluster}" if cluster else f"with {jobs} jobs"
    click.echo(f"{total} simulated runs in {elapsed:.1f} s {how}; wrote {out}/: {wrote}")
    if not (Path(out) / names[2]).exists():
        from startline.simulate.sweep import PLOT_EXTRA

        err.print(PLOT_EXTRA, highlight=False, markup=False)


@contextlib.contextmanager
def _executor(cluster: str | None) -> Iterator[tuple[Any, str]]:
    """The Dask cluster's executor for ``--cluster``, or (None, local processes) without it."""
    if not cluster:
        yield None, "local processes"
        return
    from startline.simulate.executor import ClusterLost, open_executor

    try:
        with open_executor(cluster) as opened:
            yield opened
    except ClusterLost as exc:
        fail_run(str(exc))


def _progress_for(progress: Any, task: Any, total: int, what: str) -> Callable[[int], None]:
    """Advance the bar on a terminal; not on one, a plain line at each tenth of the work."""
    done = [0, 0]

    def advance(n: int) -> None:
        progress.advance(task, n)
        done[0] += n
        if not err.is_terminal and done[0] * 10 // total > done[1]:
            done[1] = done[0] * 10 // total
            err.print(f"{done[0]:,} of {total:,} {what}", highlight=False)

    return advance


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out", type=click.Path(dir_okay=False), default="calibrated.toml", show_default=True, help="The profile to write."
)
@click.option("--name", default="calibrated", show_default=True, help="The profile's name.")
def calibrate(run_dirs: tuple[str, ...], out: str, name: str) -> None:
    """Fit a simulate profile to live runs: their control-plane round trips by kind, their
    operations' service times, their worker processes' start delays and late wakes.

    Each RUN_DIR is the --out of a `startline run` whose workers were processes (it holds
    worker-*.json). Then `startline simulate SCENARIO --profile-file OUT` predicts a scenario
    against what those runs saw.
    """
    from rich.table import Table

    from startline.simulate.calibrate import NOT_FITTED_WHY, Observed, fit, not_fitted, saturation, to_toml
    from startline.simulate.models import Profile

    writable("--out", out)
    try:
        runs = [Observed.read(Path(d)) for d in run_dirs]
        fitted = fit(runs, name)
        profile = Profile.from_dict(fitted, name)  # what simulate will read: checked before writing
    except ConfigError as exc:
        fail_usage(str(exc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a results file of another shape
        fail_usage(f"RUN_DIR: a worker's results file is not one this startline wrote ({type(exc).__name__}: {exc})")
    with writing("--out"):
        write_atomic(Path(out), to_toml(fitted, [r.source for r in runs]))
    table = Table(title=f"profile {name!r} from {len(runs)} run(s), {sum(len(r.payloads) for r in runs)} workers")
    for col in ("figure", "mean ms", "worst ms"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    figures = {f"control.{c}": m for c, m in profile.control.items()} | {"target": profile.target}
    optional = [k for k in NOT_FITTED_WHY if k != "target"]  # (the figures a run may not give)
    for k in optional:
        m = getattr(profile, k)
        if isinstance(m, tuple):  # release_queue: a latency per place along the release
            figures |= {f"{k}.{place}": q for place, q in enumerate(m)}
        elif isinstance(m, Mapping):  # control_loaded: a latency per call class
            figures |= {f"{k}.{c}": q for c, q in m.items()}
        elif m is not None:
            figures[k] = m
    for figure, model in figures.items():
        table.add_row(figure, f"{model.mean_s * 1000:,.3f}", f"{model.worst_s * 1000:,.3f}")
    Console(width=max(100, Console().width)).print(table)
    click.echo(f"wrote {out} (clock_spread_ms = {profile.clock_spread_ms:g})")
    for figure, why in not_fitted(fitted).items():
        click.echo(f"not fitted: {figure} ({why}): the simulator's default stands", err=True)
    for run in runs:
        if (why := saturation(run)) is not None:
            click.echo(
                f"warning: {run.source} ran short of CPU ({why}): its round trips and wakes include the "
                "wait for a core, and a profile fitted from it predicts a loaded machine's start",
                err=True,
            )


@main.command("matrix")
@click.argument("matrix_file", metavar="MATRIX.toml", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), default="out/matrix", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the cells and the order of the runs; run nothing.")
@results_option
def matrix_cmd(matrix_file: str, out: str, dry_run: bool, results: str | None) -> None:
    """Run a scenario live over a grid of its keys: MATRIX.toml names the `scenario` file, the
    `[grid]` (e.g. `connections_per_worker = [4, 8, 16]`, `target = [URL_A, URL_B]`,
    `"load.rate" = [100, 200]`), `repeats`, `cooldown_s` and the order's `seed`. Each run is a
    `startline run` of its own (OUT/runs/CELL-rN, kept in the catalogue tagged `matrix:NAME`),
    in rounds of every cell in a seeded order; the same command resumes a matrix stopped by
    Ctrl-C or a crash (runs done are kept). OUT/cells.csv: each cell's median and range of the
    key figures; OUT/report.html draws them.

    Exit codes: 0 every run passed, 1 some run failed its checks or failed, 2 bad usage or
    matrix file, 3 interrupted (run the same command to resume)."""
    from startline.live.matrix import Matrix, cell_id, cell_label, plan, run_matrix

    try:
        matrix = Matrix.from_toml(Path(matrix_file))
    except ConfigError as exc:
        fail_usage(f"{matrix_file}: {exc}")
    if dry_run:
        for n, cell in enumerate(matrix.cells()):
            click.echo(f"{cell_id(n)}: {cell_label(cell)}")
        click.echo("order: " + " ".join(f"{cell_id(c)}-r{r}" for c, r in plan(matrix)))
        return
    try:
        progress = run_matrix(matrix, Path(out), results, lambda line: click.echo(line))
    except ConfigError as exc:
        fail_usage(str(exc))
    click.echo(f"{progress.done} runs now, {progress.skipped} kept from before; cells: {Path(out) / 'cells.csv'}")
    if progress.interrupted:
        fail_run(f"interrupted: run `startline matrix {matrix_file} --out {out}` again to resume")
    sys.exit(EXIT_CHECKS_FAILED if progress.failed else EXIT_OK)


@main.command("serve")
@click.argument("run_dir", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--at", "at", default="127.0.0.1:8766", show_default=True, metavar="[HOST:]PORT")
@click.option("--token", default=None, help="The token a non-loopback address requires (default: one is printed).")
@click.option("--catalogue", is_flag=True, help="List the catalogue's kept runs too (`startline runs`).")
@results_option
def serve_cmd(run_dir: str, at: str, token: str | None, catalogue: bool, results: str | None) -> None:
    """Browse the runs under DIR in a browser: a list, each run's report, a comparison of the
    runs ticked. Read-only; Ctrl-C stops it (extra startline[dashboard])."""
    from startline.live import dashboard
    from startline.live.serve import Browser

    if not dashboard.available():
        fail_usage(f"serve: {dashboard.EXTRA}")
    try:
        host, port = dashboard.parse_bind(at, "--at")
    except ConfigError as exc:
        fail_usage(str(exc))
    browser = Browser(host=host, port=port, token=token, root=Path(run_dir), catalogue=catalogue, results=results)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            try:
                url = await nursery.start(browser.serve)
            except OSError as exc:
                raise ConfigError("--at", f"cannot listen: {exc}") from None
            click.echo(f"serving {run_dir}: {url} (Ctrl-C stops)")
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except ConfigError as exc:
        fail_usage(str(exc))
    click.echo("stopped")


class _Groups(click.Command):
    """``compare A1 A2 -- B1 B2``: what follows ``--`` is the candidate group (click would take
    it as more of the same arguments)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta["compare.group"] = tuple(args[at + 1 :])
            args = args[:at]
        return super().parse_args(ctx, args)


@main.command("compare", cls=_Groups)
@click.argument("base", type=click.Path())
@click.argument("candidates", nargs=-1, type=click.Path())
@click.option(
    "--band",
    "bands",
    multiple=True,
    metavar="NAME=WARN:FAIL",
    help="Change a regression band (qps, p95, p99, cost.per_1k_ops in per cent; error_rate in points), e.g. p99=25:50.",
)
@click.option("--force", is_flag=True, help="Compare runs of different scenarios.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False), help="Write the comparison here.")
@click.option(
    "--html",
    "html_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the comparison as a report (the runs' series overlaid) here.",
)
@click.option(
    "--baseline",
    "baseline_name",
    default=None,
    metavar="NAME",
    help="Judge the runs given against the kept baseline NAME (`startline runs baseline`).",
)
@results_option
def compare_runs(
    base: str,
    candidates: tuple[str, ...],
    bands: tuple[str, ...],
    force: bool,
    json_path: str | None,
    html_path: str | None,
    baseline_name: str | None,
    results: str | None,
) -> None:
    """Compare runs: BASE's key figures beside each CANDIDATE's, with the change and regression
    bands (defaults: qps -10 % warn / -20 % fail, p95 +20 % / +40 %, p99 +25 % / +50 %, error
    rate +1 / +5 points). Each run is its summary.json or its --out directory.

    Groups of runs — `compare A1 A2 A3 -- B1 B2 B3`, or `compare --baseline NAME B1 B2 B3` against
    a kept baseline: with 3 or more runs a side, each figure's median per side and a 95 %
    confidence interval of the change (bootstrap over runs, seeded); a band fails only when the
    whole interval lies beyond it ("regressed"; also "improved", "no change detected", "too
    noisy to say"). One run a side: as above.

    Exit codes: 0 no band failed (warnings are printed), 1 a band failed (groups: a figure
    regressed), 2 bad usage or runs of different scenarios (without --force).
    """
    from rich.table import Table

    from startline.views.compare import CompareError, bands_with, compare, read_summary, same_scenario

    writable("--json", json_path)
    writable("--html", html_path)
    group = click.get_current_context().meta.get("compare.group")
    if baseline_name is not None or group is not None:
        if baseline_name is not None and group is not None:
            fail_usage("--baseline: give --baseline NAME RUN… or A… -- B…, not both")
        if baseline_name is not None:
            from startline.catalogue import CatalogueError, open_catalogue

            try:
                catalogue = open_catalogue(results)
                try:
                    kept = [e.directory for e in catalogue.baseline(baseline_name)]
                finally:
                    catalogue.close()
            except CatalogueError as exc:
                fail_usage(f"--baseline: {exc}")
            sides = (tuple(kept), (base, *candidates))
        else:
            sides = ((base, *candidates), tuple(group or ()))
        if not sides[1]:
            fail_usage("compare: give the candidate runs after `--`")
        if len(sides[0]) > 1 or len(sides[1]) > 1:
            _compare_groups(sides, bands, force, json_path, html_path)
            return
        base, candidates = sides[0][0], sides[1]
    elif not candidates:
        fail_usage("compare: give BASE and at least one CANDIDATE (or groups: A… -- B…)")
    try:
        judged = bands_with(bands)
        runs = [read_summary(p) for p in (base, *candidates)]
        for path, other in zip(candidates, runs[1:], strict=True):
            differs = same_scenario(runs[0], other)
            if differs and not force:
                raise CompareError(path, f"not comparable with {base}: {differs} (--force compares them anyway)")
    except CompareError as exc:
        fail_usage(str(exc))
    results = [compare(runs[0], other, judged, (base, path)) for path, other in zip(candidates, runs[1:], strict=True)]
    console = Console(width=max(100, Console().width))
    styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for c in results:
        table = Table(title=f"{c.base} → {c.candidate} (status {c.status[0]} → {c.status[1]})")
        for col in ("figure", "base", "candidate", "change", "band"):
            table.add_column(col, justify="left" if col in ("figure", "band") else "right")
        for r in c.rows:
            change = "-" if r.change is None else f"{r.change:+,.1f} {'pt' if r.unit == 'points' else '%'}"
            band = f"[{styles[r.verdict]}]{r.verdict}[/]" if r.verdict else ""
            table.add_row(r.figure, _figure(r.base, r.unit), _figure(r.candidate, r.unit), change, band)
        console.print(table)
        console.print(f"verdict: [{styles[c.verdict]}]{c.verdict}[/]")
    if json_path:
        with writing("--json"):
            write_json(Path(json_path), [c.to_dict() for c in results])
    if html_path:
        if not htmlreport.available():
            fail_usage(f"--html: {htmlreport.PLOT_EXTRA}")
        labels = (base, *candidates)
        with writing("--html"):
            wrote = htmlreport.write_comparison(Path(html_path), list(zip(labels, runs, strict=True)), results)
        click.echo(f"wrote {wrote}")
    sys.exit(EXIT_CHECKS_FAILED if any(c.verdict == "fail" for c in results) else EXIT_OK)


@main.command("workloads")
def workloads_cmd() -> None:
    """List the built-in workloads a scenario can name in [workload] (and `startline init` loads)."""
    from startline.engine.standard import WORKLOADS

    for w in WORKLOADS.values():
        options = ", ".join(f"{k} = {v!r}" for k, v in w.options.items())
        click.echo(f"{w.name:<12} {w.summary} (options: {options})")


@main.command("init")
@click.argument("workload_name", metavar="WORKLOAD")
@click.option("--target", required=True, help="Target URL whose tables to make and load (postgresql://, sqlite:///).")
@click.option("--scale", type=int, default=None, help="The workload's scale (default: its own, 1).")
@click.option("--option", "option", multiple=True, metavar="KEY=VALUE", help=OPTION_HELP)
@click.option("--drop", is_flag=True, help="Drop the workload's tables first if they exist (else: refused).")
def init_cmd(workload_name: str, target: str, scale: int | None, option: tuple[str, ...], drop: bool) -> None:
    """Make WORKLOAD's tables on the target and load them (`startline workloads` lists them):
    pgbench's tables for tpcb and select-only, as `pgbench -i -s SCALE` makes them; YCSB's
    usertable for ycsb-a … ycsb-f."""
    from rich.progress import Progress

    from startline.live.init import init

    options = workload_options(workload_name, scale, option)
    try:
        url = parse_url(target, "--target")
        with Progress(transient=True, disable=not sys.stderr.isatty()) as bar:
            tasks: dict[str, Any] = {}

            def progress(table: str, done: int, total: int) -> None:
                if table not in tasks:
                    tasks[table] = bar.add_task(table, total=max(total, 1))
                bar.update(tasks[table], completed=done if total else 1)

            loaded = init(options, url, drop=drop, progress=progress)
    except ConfigError as exc:
        fail_usage(str(exc))
    except Exception as exc:  # what the database said while loading (exit 3, one line)
        fail_run(f"init {workload_name}: {type(exc).__name__}: {' '.join(str(exc).split())}")
    for table, n in loaded.items():
        click.echo(f"{table}: {n:,} rows")


@main.group("postgres")
def postgres_group() -> None:
    """A local PostgreSQL server for trying startline (PostgreSQL 16 from the pgserver wheel:
    pip install 'startline[postgres-server]')."""


def _postgres_server() -> Any:
    """``startline.backends.postgres.server``, or one line naming the extra that brings psycopg."""
    import importlib

    from startline.compose import backend

    try:
        backend("postgresql", "postgres")
    except ConfigError:
        fail_usage("a local PostgreSQL server needs psycopg and pgserver: pip install 'startline[postgres-server]'")
    return importlib.import_module("startline.backends.postgres.server")


@postgres_group.command("start")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default: a free port on 127.0.0.1.")
def postgres_start(data_dir: str, port: int | None) -> None:
    """Start a server with its data in DATA_DIR (made on first use; a server already running
    there is reused) and print its URL, for a scenario's control and target."""
    server = _postgres_server()
    try:
        local = server.start(Path(data_dir), port)
    except RuntimeError as exc:
        fail_usage(str(exc))
    click.echo(local.url)


@postgres_group.command("stop")
@click.argument("data_dir", type=click.Path(file_okay=False))
def postgres_stop(data_dir: str) -> None:
    """Stop the server whose data is in DATA_DIR."""
    server = _postgres_server()
    try:
        stopped = server.stop(Path(data_dir))
    except RuntimeError as exc:
        fail_usage(str(exc))
    click.echo(f"stopped the server of {data_dir}" if stopped else f"no server running for {data_dir}")


@main.command("enrich")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--target", help="The Snowflake target to read from (default: the run's own `target`).")
def enrich_cmd(run_dir: str, target: str | None) -> None:
    """Add what Snowflake itself recorded of a finished run to RUN_DIR: the run's statements in
    SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY (found by their QUERY_TAG) per operation kind and phase —
    server time, compilation, queueing, bytes scanned, the share of the client's statements
    matched — the warehouse's load on the run's timeline, its credits and (with `[cost]
    per_credit`) the cost per 1,000 operations. The views arrive up to hours late: run it again
    later and it fills in what was missing; what the run measured is never changed.

    Writes summary.json's `server` block and `cost`, query_history.json and report.html, and
    judges the scenario's `cost.per_1k_ops` thresholds once the cost is known (the verdict with
    them). Exit 0; 1 when such a threshold fails; 2 when RUN_DIR holds no summary, the target is
    not Snowflake, or a view is not readable by the role (one line naming it)."""
    import trio

    from startline.live.enrich import EnrichError, enrich
    from startline.views.compare import CompareError, read_summary

    out = Path(run_dir)
    try:
        if not (out / "summary.json").exists():
            raise CompareError("RUN_DIR", f"no summary.json in {run_dir}")
        summary = read_summary(str(out / "summary.json"))
        text = target or ((summary.get("config") or {}).get("scenario") or {}).get("target") or ""
        url = parse_url(text, "--target")
        if url.scheme != "snowflake":
            raise ConfigError("--target", f"enrich reads Snowflake's query history; this target is {url.scheme}://")
        enriched = trio.run(enrich, out, summary, url, click.echo)
    except CompareError as exc:
        fail_usage(f"RUN_DIR: {exc.message}")
    except (ConfigError, EnrichError) as exc:
        fail_usage(str(exc))
    console = Console(width=max(110, Console().width))
    report = _write_report(out, enriched, console)
    server = enriched["server"]
    matched = sum(row["records"] for phase in server["by_phase"].values() for row in phase.values())
    click.echo(
        f"{matched:,} of the run's statements found in QUERY_HISTORY; not attributed: "
        + ", ".join(f"{n:,} {why}" for why, n in server["not_attributed"].items())
    )
    cost = enriched.get("cost")
    if cost is not None:
        click.echo(
            f"credits {cost['credits']}"
            + (
                f", {cost['currency_amount']} {cost['currency']}, {cost['per_1k_ops']} per 1,000 operations"
                if cost["currency_amount"] is not None
                else " (no [cost] per_credit: not priced)"
            )
        )
    for t in enriched.get("thresholds", ()):
        if t["metric"].startswith("cost."):
            click.echo(f"threshold {t['metric']}: {t['threshold']} {'ok' if t['ok'] else 'FAILED'} — {t['detail']}")
    click.echo(f"summary: {out / 'summary.json'}" + (f"\nreport: {report}" if report else ""))
    click.echo(f"verdict: {enriched['verdict']}")
    if any(not t["ok"] for t in enriched.get("thresholds", ()) if t["metric"].startswith("cost.")):
        sys.exit(1)


@main.command("summarize")
@click.argument("run_dir", type=click.Path(file_okay=False))
def summarize_cmd(run_dir: str) -> None:
    """Rebuild RUN_DIR's summary from the workers' own results files (RUN_DIR/worker-*.json):
    when the control plane was lost mid-run its summary counts what the control plane held, while
    each worker kept all it measured. Copy the --results files of workers started elsewhere into
    RUN_DIR first. The orchestrator's summary is kept as summary.control-plane.json.

    Exit codes as `run`'s, from the rebuilt summary; 2 when RUN_DIR holds no summary or no
    worker's file."""
    from startline.live import summarize
    from startline.views.compare import CompareError, read_summary

    out = Path(run_dir)
    kept = out / summarize.KEPT
    try:
        if not (out / "summary.json").exists():
            raise CompareError("RUN_DIR", f"no summary.json in {run_dir}")
        prior = read_summary(str(kept if kept.exists() else out / "summary.json"))
        payloads = summarize.read_worker_files(out)
        if not payloads:
            raise CompareError("RUN_DIR", f"no worker-*.json in {run_dir}: nothing to rebuild from")
        now = read_summary(str(out / "summary.json"))  # (its server block and cost: added after the kept one)
        files = [f"worker-{p['worker_id']}.json" for p in payloads]
        rebuilt = summarize.rebuild(prior, payloads, files, now.get("server"), now.get("cost"))
    except CompareError as exc:
        fail_usage(f"RUN_DIR: {exc.message}")
    except ConfigError as exc:
        fail_usage(f"RUN_DIR: {exc}")
    summarize.keep_prior(out, prior)
    path = write_summary(out, rebuilt)
    console = Console(width=max(110, Console().width))
    report = _write_report(out, rebuilt, console)
    print_summary(rebuilt, console, str(path), report)
    click.echo(f"rebuilt from {len(payloads)} workers' results files; the orchestrator's summary: {kept}")
    sys.exit(exit_code(rebuilt["status"], rebuilt["verdict"]))


@main.command("report")
@click.argument("run_dir", type=click.Path())
@click.option("--out", "out", default=None, type=click.Path(dir_okay=False), help="Default: RUN_DIR/report.html.")
def report_cmd(run_dir: str, out: str | None) -> None:
    """Rebuild RUN_DIR/report.html from RUN_DIR/summary.json (one self-contained file: open it
    anywhere, no network needed)."""
    from startline.views.compare import CompareError, read_summary

    path = Path(run_dir) / "summary.json"
    try:
        if not path.exists():
            raise CompareError("RUN_DIR", f"no summary.json in {run_dir}")
        summary = read_summary(str(path))  # a FIFO, a huge file, deep JSON: refused in one line
    except CompareError as exc:
        fail_usage(f"RUN_DIR: {exc.message}")
    if "run_id" not in summary:
        fail_usage(f"RUN_DIR: {path} is not a startline summary")
    if not htmlreport.available():
        fail_usage(htmlreport.PLOT_EXTRA)
    target = Path(out) if out else Path(run_dir) / "report.html"
    writable("--out", str(target))
    with writing("--out"):
        click.echo(str(htmlreport.write_atomic(target, htmlreport.render(summary))))


def _compare_groups(
    sides: tuple[tuple[str, ...], tuple[str, ...]],
    bands: tuple[str, ...],
    force: bool,
    json_path: str | None,
    html_path: str | None,
) -> None:
    """``compare`` with a group of runs a side (``views/groups.py``): printed, written, exit 1 on a
    significant regression."""
    from rich.table import Table

    from startline.views.compare import CompareError, bands_with, read_summary, same_scenario
    from startline.views.groups import IMPROVED, LEVEL, MIN_RUNS, NO_CHANGE, REGRESSED, TOO_NOISY, compare_groups

    try:
        judged = bands_with(bands)
        base = [read_summary(p) for p in sides[0]]
        candidate = [read_summary(p) for p in sides[1]]
        for path, other in zip((*sides[0][1:], *sides[1]), (*base[1:], *candidate), strict=True):
            differs = same_scenario(base[0], other)
            if differs and not force:
                raise CompareError(path, f"not comparable with {sides[0][0]}: {differs} (--force compares them anyway)")
    except CompareError as exc:
        fail_usage(str(exc))
    c = compare_groups(base, candidate, judged, sides)
    console = Console(width=max(110, Console().width))
    styles = {REGRESSED: "bold red", IMPROVED: "green", NO_CHANGE: "green", TOO_NOISY: "yellow"}
    table = Table(
        title=f"{len(base)} runs → {len(candidate)} runs: medians, and the {LEVEL:.0%} interval of the change"
    )
    for col in ("figure", "base", "candidate", "change", "interval", "band"):
        table.add_column(col, justify="left" if col in ("figure", "band") else "right")
    for r in c.rows:
        unit = "pt" if r.unit == "points" else "%"
        moved = "-" if r.change is None else f"{r.change:+,.1f} {unit}"
        interval = "-" if r.low is None else f"[{r.low:+,.1f}, {r.high:+,.1f}] {unit}"
        band = f"[{styles[r.verdict]}]{r.verdict}[/]" if r.verdict else ""
        table.add_row(
            r.figure,
            f"{_figure(r.base_median, r.unit)} ({len(r.base)})",
            f"{_figure(r.candidate_median, r.unit)} ({len(r.candidate)})",
            moved,
            interval,
            band,
        )
    console.print(table)
    if min(len(base), len(candidate)) < MIN_RUNS:
        console.print(f"fewer than {MIN_RUNS} runs a side: medians only, nothing judged", highlight=False)
    console.print(f"verdict: [{'green' if c.verdict == 'ok' else 'bold red'}]{c.verdict}[/]")
    if json_path:
        with writing("--json"):
            write_json(Path(json_path), c.to_dict())
    if html_path:
        if not htmlreport.available():
            fail_usage(f"--html: {htmlreport.PLOT_EXTRA}")
        with writing("--html"):
            wrote = htmlreport.write_group_comparison(Path(html_path), c)
        click.echo(f"wrote {wrote}")
    sys.exit(EXIT_CHECKS_FAILED if c.verdict == "fail" else EXIT_OK)


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value * 100:,.2f} %" if unit == "points" else f"{value:,.2f}"


if __name__ == "__main__":
    main()
