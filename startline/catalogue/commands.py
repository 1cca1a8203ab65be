"""``startline runs …``: the kept runs — list, show, tag, name a baseline, forget one."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from startline.catalogue.entry import FIGURES, Entry
from startline.catalogue.store import Catalogue, CatalogueError, open_catalogue, where

T = TypeVar("T")
RESULTS_HELP = (
    "The catalogue: sqlite:///PATH, postgresql://… or snowflake://… (a results database a team shares); default the "
    "SQLite file in STARTLINE_HOME (or the user's data directory). Also $STARTLINE_RESULTS."
)
results_option = click.option("--results", default=None, envvar="STARTLINE_RESULTS", help=RESULTS_HELP)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)  # (one line, never wrapped)
    sys.exit(2)


def _with(results: str | None, use: Callable[[Catalogue], T]) -> T:
    try:
        catalogue = open_catalogue(results)
    except CatalogueError as exc:
        _fail(f"--results: {exc}")
    try:
        return use(catalogue)
    except CatalogueError as exc:
        _fail(str(exc))
    finally:
        catalogue.close()


def parse_since(text: str, now: float) -> float:
    """``--since``: a date (``2026-12-01``), an instant (``2026-12-01T12:00``, UTC unless it says),
    or an age (``30m``, ``12h``, ``7d``)."""
    age = re.fullmatch(r"(\d+(?:\.\d+)?)([mhd])", text.strip())
    if age:
        return now - float(age.group(1)) * {"m": 60, "h": 3600, "d": 86400}[age.group(2)]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a date (2026-12-01), an instant or an age (7d, 12h)") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _fig(v: float | None) -> str:
    return "-" if v is None else f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"


@click.group("runs")
def runs() -> None:
    """The runs kept in the catalogue: every `startline run` registers itself there (by default
    a SQLite file in STARTLINE_HOME or the user's data directory; --results for a shared one)."""


@runs.command("list")
@click.option("--name", default=None, help="Only runs of this scenario name.")
@click.option("--tag", default=None, help="Only runs with this tag.")
@click.option("--since", default=None, help="Only runs started since: a date, an instant, or an age (7d, 12h).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one list) instead of a table.")
@results_option
def list_runs(name: str | None, tag: str | None, since: str | None, as_json: bool, results: str | None) -> None:
    """The kept runs, oldest first: id, scenario, start, status, verdict, key figures."""
    after = None if since is None else parse_since(since, time.time())
    found = _with(results, lambda c: [(e, c.tags_of(e.run_id)) for e in c.entries(name, tag, after)])
    if as_json:
        click.echo(json.dumps([e.to_dict() | {"tags": tags} for e, tags in found], indent=2))
        return
    if not found:
        click.echo(f"no kept runs{' matching' if name or tag or since else ''} in {where(results)}")
        return
    table = Table(title=f"kept runs ({where(results)})")
    for col in ("run id", "name", "started (UTC)", "status", "verdict", "qps", "p99 ms", "errors", "skew ms", "tags"):
        table.add_column(col, justify="right" if col in ("qps", "p99 ms", "errors", "skew ms") else "left")
    for e, tags in found:
        rate = e.figures.get("error_rate")
        table.add_row(
            e.run_id,
            e.name,
            _when(e.started_at),
            e.status,
            e.verdict or "-",
            _fig(e.figures.get("qps")),
            _fig(e.figures.get("p99_ms")),
            "-" if rate is None else f"{rate:.2%}",
            _fig(e.figures.get("skew_ms")),
            ", ".join(tags),
        )
    Console(width=max(120, Console().width)).print(table)


@runs.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@results_option
def show_run(run: str, as_json: bool, results: str | None) -> None:
    """One kept run (its id, or a prefix of it naming one run)."""

    def read(c: Catalogue) -> tuple[Entry, list[str], list[str]]:
        e = c.find(run)
        return e, c.tags_of(e.run_id), c.baselines_of(e.run_id)

    e, tags, baselines = _with(results, read)
    if as_json:
        click.echo(json.dumps(e.to_dict() | {"tags": tags, "baselines": baselines}, indent=2))
        return
    rows: list[tuple[str, Any]] = [
        ("run id", e.run_id),
        ("name", e.name),
        ("scenario hash", e.scenario_hash),
        ("started (UTC)", _when(e.started_at)),
        ("status", e.status),
        ("verdict", e.verdict or "-"),
        ("directory", e.directory + ("" if Path(e.directory, "summary.json").exists() else "  (gone)")),
        ("tags", ", ".join(tags) or "-"),
        ("baselines", ", ".join(baselines) or "-"),
        *((f, _fig(e.figures.get(f))) for f in FIGURES),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")


@runs.command("tag")
@click.argument("run")
@click.argument("tags", nargs=-1, required=True)
@results_option
def tag_run(run: str, tags: tuple[str, ...], results: str | None) -> None:
    """Add TAGS to a kept run."""

    def tag(c: Catalogue) -> str:
        e = c.find(run)
        c.add_tags(e.run_id, tags)
        return e.run_id

    click.echo(f"{_with(results, tag)}: tagged {', '.join(tags)}")


@runs.command("baseline")
@click.argument("name")
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@results_option
def baseline(name: str, run_refs: tuple[str, ...], results: str | None) -> None:
    """Name a set of kept runs NAME (replacing what NAME was): `compare --baseline NAME RUN…`
    judges runs against them."""

    def keep(c: Catalogue) -> list[str]:
        ids = [c.find(r).run_id for r in run_refs]
        c.set_baseline(name, ids)
        return ids

    ids = _with(results, keep)
    click.echo(f"baseline {name}: {len(ids)} runs ({', '.join(ids)})")


@runs.command("trend")
@click.argument("name")
@click.option("--html", "html_path", required=True, type=click.Path(dir_okay=False), help="Write the page here.")
@click.option("--tag", default=None, help="Only runs with this tag.")
@results_option
def trend(name: str, html_path: str, tag: str | None, results: str | None) -> None:
    """Scenario NAME's key figures over its kept runs (baselines' runs marked), as one
    self-contained HTML page."""
    from startline.views import html as htmlreport

    if not htmlreport.available():
        _fail(f"--html: {htmlreport.PLOT_EXTRA}")

    def read(c: Catalogue) -> tuple[list[Entry], list[str]]:
        found = c.entries(name=name, tag=tag)
        return found, [e.run_id for e in found if c.baselines_of(e.run_id)]

    found, marked = _with(results, read)
    if not found:
        _fail(f"{name}: no kept runs of that scenario{' with that tag' if tag else ''} (`startline runs list`)")
    try:
        wrote = htmlreport.write_trend(Path(html_path), name, [e.to_dict() for e in found], marked)
    except OSError as exc:
        _fail(f"--html: cannot write {html_path}: {exc.strerror or exc}")
    click.echo(f"wrote {wrote} ({len(found)} runs)")


@runs.command("rm")
@click.argument("run")
@click.option("--delete-files", is_flag=True, help="Also delete the run's directory (only if it holds that run).")
@results_option
def remove(run: str, delete_files: bool, results: str | None) -> None:
    """Forget a kept run (its directory stays unless --delete-files)."""

    def forget(c: Catalogue) -> Entry:
        e = c.find(run)
        c.remove(e.run_id)
        return e

    e = _with(results, forget)
    directory = Path(e.directory)
    if delete_files:
        try:
            held = json.loads((directory / "summary.json").read_text()).get("run_id")
        except (OSError, ValueError):
            held = None
        if held != e.run_id:
            _fail(f"{directory}: not deleted: it does not hold run {e.run_id} (forgotten from the catalogue)")
        shutil.rmtree(directory)
        click.echo(f"{e.run_id}: forgotten, {directory} deleted")
    else:
        click.echo(f"{e.run_id}: forgotten ({directory} kept)")


def register_run(summary: dict[str, Any], directory: Path, tags: tuple[str, ...], results: str | None) -> str | None:
    """Keep a finished run in the catalogue; the warning line when it cannot (never the run's failure)."""
    from startline.catalogue.entry import entry_of

    try:
        catalogue = open_catalogue(results)
        try:
            catalogue.register(entry_of(summary, directory), tags, registered_at=time.time())
        finally:
            catalogue.close()
    except Exception as exc:  # a figure about the run's bookkeeping, never the run's result
        message = str(exc) if isinstance(exc, CatalogueError) else f"{where(results)}: {type(exc).__name__}: {exc}"
        return f"warning: the run was not kept in the catalogue: {message}"
    return None
