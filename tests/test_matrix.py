"""Live matrices (issue 27, part 4): a scenario over a grid of its keys, each cell a real `startline
run`, in seeded rounds; stopped by Ctrl-C and resumed by the same command, the runs done kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from startline.live.matrix import Matrix, plan
from startline.testing import CLI, ROOT, run_cli
from tests.test_catalogue import QUICK
from tests.test_report import browse, external_references

MATRIX = """
name = "mx"
scenario = "s.toml"
seed = 3

[grid]
connections_per_worker = [1, 3]
"start.strategy" = ["scheduled", "poll"]
"""


def _files(tmp_path: Path, matrix: str = MATRIX) -> Path:
    (tmp_path / "s.toml").write_text(QUICK)
    (tmp_path / "m.toml").write_text(matrix)
    return tmp_path / "m.toml"


def test_the_order_is_rounds_of_every_cell_in_a_seeded_order(tmp_path: Path) -> None:
    matrix = Matrix.from_toml(_files(tmp_path, MATRIX.replace("seed = 3", "seed = 3\nrepeats = 3")))
    order = plan(matrix)
    assert order == plan(Matrix.from_toml(tmp_path / "m.toml"))  # the same seed, the same order
    rounds = [order[k : k + 4] for k in range(0, 12, 4)]
    assert [sorted(c for c, _ in r) for r in rounds] == [[0, 1, 2, 3]] * 3  # every cell once a round
    assert [{rep for _, rep in r} for r in rounds] == [{0}, {1}, {2}]
    assert len({tuple(c for c, _ in r) for r in rounds}) > 1  # rounds in different orders


def test_a_matrix_key_the_scenario_refuses_is_one_line_naming_it(tmp_path: Path) -> None:
    _files(tmp_path, MATRIX.replace('"start.strategy"', '"start.nope"'))
    refused = run_cli("matrix", str(tmp_path / "m.toml"), "--out", str(tmp_path / "out"), timeout=60)
    assert refused.returncode == 2 and "grid.start.nope" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "out").exists()


def test_a_matrix_interrupted_after_two_runs_resumes_with_the_rest_and_keeps_them(tmp_path: Path) -> None:
    path, out = _files(tmp_path), tmp_path / "out"
    env = os.environ | {"STARTLINE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [*CLI, "matrix", str(path), "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the third run under way: Ctrl-C
        seen.append(line)
        if line.startswith("[3/4]") and line.rstrip().endswith("running"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stdout.read()
    assert proc.wait(120) == 3, "".join(seen) + rest
    assert "interrupted" in rest
    summaries = sorted(out.glob("runs/*/summary.json"))
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in summaries}
    done = {name for name, status in statuses.items() if status == "COMPLETED"}
    assert len(done) == 2 and set(statuses.values()) <= {"COMPLETED", "CANCELLED"}, statuses
    kept = {name: (out / "runs" / name / "summary.json").read_bytes() for name in done}
    resumed = run_cli("matrix", str(path), "--out", str(out), timeout=180, env=env)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "2 runs now, 2 kept from before" in resumed.stdout
    assert {name: (out / "runs" / name / "summary.json").read_bytes() for name in done} == kept  # not run again
    cells = (out / "cells.csv").read_text().splitlines()
    assert len(cells) == 5 and all(row.split(",")[3:5] == ["1", "1"] for row in cells[1:])  # each cell: its run
    once = (out / "cells.csv").read_bytes()
    again = run_cli("matrix", str(path), "--out", str(out), timeout=60, env=env)
    assert again.returncode == 0 and "0 runs now, 4 kept from before" in again.stdout
    assert (out / "cells.csv").read_bytes() == once  # from the kept runs alone: the same bytes
    listed = json.loads(run_cli("runs", "list", "--tag", "matrix:mx", "--json", timeout=60, env=env).stdout)
    assert len(listed) == 4 and {r["status"] for r in listed} == {"COMPLETED"}
    page = (out / "report.html").read_text()
    assert external_references(page) == []
    dom = browse(out / "report.html", tmp_path, "--dump-dom")
    assert dom.returncode == 0 and '<figure id="chart-matrix">' in dom.stdout
    (tmp_path / "x").mkdir()  # another matrix (another seed) into the same directory: refused
    other = _files(tmp_path / "x", MATRIX.replace("seed = 3", "seed = 4"))
    refused = run_cli("matrix", str(other), "--out", str(out), timeout=60, env=env)
    assert refused.returncode == 2 and "holds another matrix" in refused.stderr
