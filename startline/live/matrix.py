"""``startline matrix MATRIX.toml --out DIR``: one scenario run live over a grid of its keys
(HammerDB's autopilot, FlakeBench's table-type comparisons) — every combination a *cell*, each
cell ``repeats`` times, the runs in rounds (every cell once a round) in a seeded order so that a
machine's drift hits every cell alike, ``cooldown_s`` between runs. Each run is a real
``startline run`` of its own (its directory DIR/runs/CELL-rREPEAT, registered in the catalogue
tagged with the matrix and its cell); a matrix stopped (Ctrl-C, a crash) is resumed by the same
command: the runs already done are kept and skipped. DIR/cells.csv holds each cell's median and
spread of the key figures, written from the kept runs alone (the same runs, the same bytes), and
DIR/report.html draws them.

The spec, the plan and the cells table are pure (``Matrix``, ``plan``, ``cells``); ``run_matrix``
does the running."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from startline.catalogue.entry import entry_of
from startline.engine.files import write_atomic, write_json
from startline.engine.scenario import ConfigError, Scenario, with_overrides

KEYS = {"name", "scenario", "repeats", "cooldown_s", "seed", "grid"}
DONE = ("COMPLETED", "FAILED")
"""A run that ended so is kept on resume (a failed run is a result); any other is run again."""
CELL_FIGURES = ("qps", "p50_ms", "p95_ms", "p99_ms", "error_rate", "skew_ms")


def toml_value(value: Any) -> str:
    """A grid value as ``run --set`` reads it (a TOML value)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ConfigError("grid", f"{value!r}: a grid value is a string, a number, a boolean or an array of them")


@attrs.frozen
class Matrix:
    name: str
    scenario: Path
    """The scenario file, absolute."""
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    """(dotted scenario key, its values), in the file's order."""
    repeats: int = 1
    cooldown_s: float = 0.0
    seed: int = 0

    @classmethod
    def from_toml(cls, path: Path) -> Matrix:
        """Read and check a matrix file: every cell's scenario is built (a key or value the
        scenario refuses is a ``ConfigError`` naming it, before anything runs)."""
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("MATRIX", f"no matrix file at {path}") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError("MATRIX", f"cannot read {path}: {exc}") from None
        unknown = sorted(set(data) - KEYS)
        if unknown:
            raise ConfigError(unknown[0], f"unknown key (known: {', '.join(sorted(KEYS))})")
        if "scenario" not in data or not isinstance(data["scenario"], str):
            raise ConfigError("scenario", "give the scenario file to run (a path, relative to the matrix file)")
        grid = data.get("grid")
        if not isinstance(grid, dict) or not grid:
            raise ConfigError("grid", "give the keys to vary and their values: [grid] connections_per_worker = [4, 8]")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key}", "give a non-empty array of values")
            for v in values:
                toml_value(v)
        repeats, cooldown, seed = data.get("repeats", 1), data.get("cooldown_s", 0.0), data.get("seed", 0)
        if not isinstance(repeats, int) or isinstance(repeats, bool) or not 1 <= repeats <= 1000:
            raise ConfigError("repeats", f"{repeats!r}: a whole number from 1 to 1000")
        if not isinstance(cooldown, int | float) or isinstance(cooldown, bool) or not 0 <= cooldown <= 86_400:
            raise ConfigError("cooldown_s", f"{cooldown!r}: seconds from 0 to 86400")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError("seed", f"{seed!r}: a whole number")
        matrix = cls(
            name=str(data.get("name") or path.stem),
            scenario=(path.parent / data["scenario"]).resolve(),
            grid=tuple((k, tuple(v)) for k, v in grid.items()),
            repeats=repeats,
            cooldown_s=float(cooldown),
            seed=seed,
        )
        base = tomllib.loads(_read_scenario(matrix.scenario))
        for cell in matrix.cells():
            try:
                Scenario.from_dict(with_overrides(base, cell))
            except ConfigError as exc:
                where = next((f"grid.{k}" for k in cell if exc.field == k or exc.field.startswith(k + ".")), None)
                raise ConfigError(where or exc.field, f"{exc.message} (in the cell {cell_label(cell)})") from None
        return matrix

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of the grid's values, the first key varying slowest."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in self.grid))]

    def fingerprint(self) -> str:
        """What makes two matrices the same one (resuming another into DIR is refused)."""
        text = json.dumps(
            {"scenario": str(self.scenario), "grid": self.grid, "repeats": self.repeats, "seed": self.seed},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_scenario(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError("scenario", f"cannot read {path}: {exc.strerror or exc}") from None


def cell_label(cell: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in cell.items())


def cell_id(index: int) -> str:
    return f"c{index:03d}"


def plan(matrix: Matrix) -> list[tuple[int, int]]:
    """The runs in order, as (cell index, repeat): ``repeats`` rounds, each every cell once in an
    order drawn from ``seed`` (a round's order differs from the next's)."""
    rng, count = random.Random(matrix.seed), len(matrix.cells())
    order = []
    for repeat in range(matrix.repeats):
        cells = list(range(count))
        rng.shuffle(cells)
        order += [(cell, repeat) for cell in cells]
    return order


def run_dir(out: Path, cell: int, repeat: int) -> Path:
    return out / "runs" / f"{cell_id(cell)}-r{repeat}"


def status_of(directory: Path) -> str | None:
    """The run's status as its summary.json says (None: no summary, or one that cannot be read)."""
    try:
        return json.loads((directory / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def cells(matrix: Matrix, summaries: Mapping[tuple[int, int], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each cell's row: its grid values, its runs kept and completed, and of each of
    ``CELL_FIGURES`` over its completed runs the median, minimum and maximum."""
    rows = []
    for index, cell in enumerate(matrix.cells()):
        kept = [summaries[(index, r)] for r in range(matrix.repeats) if (index, r) in summaries]
        completed = [s for s in kept if s.get("status") == "COMPLETED"]
        row: dict[str, Any] = {"cell": cell_id(index), **cell, "runs": len(kept), "completed": len(completed)}
        for figure in CELL_FIGURES:
            values = [v for s in completed if (v := entry_of(s, Path(".")).figures.get(figure)) is not None]
            row[f"{figure}_median"] = statistics.median(values) if values else None
            row[f"{figure}_min"] = min(values) if values else None
            row[f"{figure}_max"] = max(values) if values else None
        rows.append(row)
    return rows


def cells_csv(matrix: Matrix, rows: Sequence[Mapping[str, Any]]) -> str:
    """``cells`` as CSV text (numbers with 6 significant digits: the same runs, the same bytes)."""
    columns = [
        "cell",
        *(k for k, _ in matrix.grid),
        "runs",
        "completed",
        *(f"{f}_{s}" for f in CELL_FIGURES for s in ("median", "min", "max")),
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if (v := row[c]) is None else f"{v:.6g}" if isinstance(v, float) else v for c in columns])
    return buf.getvalue()


@attrs.define
class Progress:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    child: subprocess.Popen[bytes] | None = None
    """The run under way (a Ctrl-C is passed on to it, once)."""
    passed_on: bool = False

    def on_sigint(self, _signum: int, _frame: Any) -> None:
        """Ctrl-C: stop after the run under way, which is told to cancel itself."""
        self.interrupted = True
        self.pass_on()

    def pass_on(self) -> None:
        if self.interrupted and not self.passed_on and self.child is not None and self.child.poll() is None:
            self.passed_on = True
            self.child.send_signal(signal.SIGINT)


def run_matrix(
    matrix: Matrix,
    out: Path,
    results: str | None,
    say: Callable[[str], None],
    extra: Sequence[str] = (),
) -> Progress:
    """Run the matrix's runs not done yet in DIR (``out``), then write cells.csv and report.html.
    A Ctrl-C stops after the run under way, which it cancels (that run is run again on resume)."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "matrix.json"
    fingerprint = matrix.fingerprint()
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            raise ConfigError("--out", f"{out} holds another matrix ({meta.get('name')}): give another directory")
    else:
        meta = {"name": matrix.name, "fingerprint": fingerprint, "token": secrets.token_hex(3)}
        write_json(meta_path, meta | {"scenario": str(matrix.scenario), "grid": [list(g) for g in matrix.grid]})
    order, grid = plan(matrix), matrix.cells()
    progress = Progress()
    previous = signal.signal(signal.SIGINT, progress.on_sigint)
    try:
        for n, (cell, repeat) in enumerate(order):
            directory = run_dir(out, cell, repeat)
            label = f"[{n + 1}/{len(order)}] {cell_id(cell)} ({cell_label(grid[cell])}) repeat {repeat}"
            if status_of(directory) in DONE:
                progress.skipped += 1
                continue
            if progress.done and matrix.cooldown_s and not progress.interrupted:
                say(f"cooling down {matrix.cooldown_s:g} s")
                until = time.monotonic() + matrix.cooldown_s
                while time.monotonic() < until and not progress.interrupted:
                    time.sleep(min(0.1, until - time.monotonic()))
            if progress.interrupted:
                break
            say(f"{label}: running")
            code = _one_run(matrix, meta, grid[cell], cell, repeat, directory, results, extra, progress)
            if progress.interrupted:
                say(f"{label}: interrupted ({status_of(directory) or 'no summary'}; run again on resume)")
                break
            progress.done += 1
            progress.failed += code != 0
            say(f"{label}: {status_of(directory) or 'no summary'} (exit {code})")
    finally:
        signal.signal(signal.SIGINT, previous)
    write_cells(matrix, out)
    return progress


def _one_run(
    matrix: Matrix,
    meta: Mapping[str, Any],
    keys: Mapping[str, Any],
    cell: int,
    repeat: int,
    directory: Path,
    results: str | None,
    extra: Sequence[str],
    progress: Progress,
) -> int:
    settings = [f"--set={key}={toml_value(value)}" for key, value in keys.items()]
    command = [
        sys.executable,
        "-m",
        "startline.cli",
        "run",
        str(matrix.scenario),
        *settings,
        "--out",
        str(directory),
        "--run-id",
        f"{matrix.name}-{meta['token']}-{cell_id(cell)}-r{repeat}",
        "--tag",
        f"matrix:{matrix.name}",
        "--tag",
        f"cell:{cell_id(cell)}",
        "--overwrite",
        "--quiet",
        "--no-report",
        *(("--results", results) if results else ()),
        *extra,
    ]
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.log", "w") as log:
        # its own session: a Ctrl-C at the terminal reaches the matrix alone, which passes it on
        progress.child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        progress.passed_on = False
        progress.pass_on()  # (a Ctrl-C that came while it was being started)
        try:
            return progress.child.wait()
        finally:
            progress.child = None


def write_cells(matrix: Matrix, out: Path) -> Path:
    """DIR/cells.csv (and DIR/report.html with the plot extra) from the runs kept in DIR."""
    summaries = {}
    for cell, repeat in plan(matrix):
        directory = run_dir(out, cell, repeat)
        if status_of(directory) in DONE:
            summaries[(cell, repeat)] = json.loads((directory / "summary.json").read_text())
    rows = cells(matrix, summaries)
    path = write_atomic(out / "cells.csv", cells_csv(matrix, rows))
    from startline.views import html as htmlreport

    if htmlreport.available():
        htmlreport.write_matrix(out / "report.html", matrix.name, [k for k, _ in matrix.grid], rows, CELL_FIGURES)
    return path
