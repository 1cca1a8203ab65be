"""The ``startline`` command line: the composition root that picks backends for the engine."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any, NoReturn

import click
import trio
from rich.console import Console

from engine.scenario import ConfigError, Scenario
from startline.report import print_summary

EXIT_OK, EXIT_THRESHOLD, EXIT_USAGE, EXIT_RUN_FAILED = 0, 1, 2, 3

err = Console(stderr=True)


def fail_usage(message: str) -> NoReturn:
    """One clear line on stderr and exit code 2: bad usage or configuration."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_USAGE)


def load_scenario(path: str) -> Scenario:
    try:
        return Scenario.from_toml(path)
    except ConfigError as exc:
        fail_usage(f"{path}: {exc}" if exc.field else str(exc))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="startline")
def main() -> None:
    """Coordinate distributed database benchmarks: start together, change load together,
    stop together, and measure how far apart it really happened."""


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default="out/run",
    show_default=True,
    help="Directory for summary.json and logs.",
)
@click.option("--run-id", default=None, help="Run id (default: scenario name + random suffix).")
@click.option("--quiet", is_flag=True, help="Print only the path of summary.json.")
def run(config: str, out: str, run_id: str | None, quiet: bool) -> None:
    """Run the scenario in CONFIG and write OUT/summary.json.

    Exit codes: 0 done, 2 bad usage or config, 3 the run failed or was cancelled.
    """
    scenario = load_scenario(config)
    run_id = run_id or f"{scenario.name}-{uuid.uuid4().hex[:8]}"
    out_dir = Path(out)
    try:
        summary = trio.run(_run_in_process, scenario, out_dir, run_id, quiet)
    except ConfigError as exc:
        fail_usage(f"{config}: {exc}")
    if not quiet:
        print_summary(summary, Console(), str(out_dir / "summary.json"))
    else:
        click.echo(str(out_dir / "summary.json"))
    sys.exit(EXIT_OK if summary["status"] == "COMPLETED" else EXIT_RUN_FAILED)


async def _run_in_process(scenario: Scenario, out: Path, run_id: str, quiet: bool) -> dict[str, Any]:
    from backends.memory import CallableTarget
    from startline.inprocess import run_in_process_async

    target = CallableTarget.for_scenario(scenario)
    console = Console(stderr=True, quiet=quiet)
    total = scenario.warmup_s + scenario.measurement_s + scenario.cooldown_s
    with console.status(
        f"running {scenario.name}: {scenario.workers} workers × "
        f"{scenario.connections_per_worker} connections, {total:g} s"
    ):
        result = await run_in_process_async(scenario, target=target, out=out, run_id=run_id)
    return result.summary


if __name__ == "__main__":
    main()
