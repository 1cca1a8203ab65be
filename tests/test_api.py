"""The library face for real runs (``startline.api``): the README's example as a user runs it
(worker processes on SQLite files), a run joined by workers of the harness's own Trio program,
and exit codes said as exceptions and a verdict."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import startline

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## As a library") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_library_example_runs_a_multi_process_sqlite_scenario(tmp_path: Path) -> None:
    code = readme_example()
    assert "startline.run(" in code and len(code.strip().splitlines()) <= 15
    out = tmp_path / "from-python"
    code = code.replace('"out/from-python"', repr(str(out)))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "COMPLETED passed" in proc.stdout
    assert "s left" in proc.stdout  # progress lines went to print
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "COMPLETED" and summary["verdict"] == "passed"
    logs = sorted(p.name for p in out.glob("worker-*.log"))
    assert logs == [f"worker-w{i:03d}.log" for i in range(4)]  # one process per worker of quickstart.toml
    assert {w["status"] for w in summary["workers"]} == {"COMPLETED"}


SCENARIO = """
name = "joined"
seed = 3
workers = 2
connections_per_worker = 2
warmup_s = 0
measurement_s = 2
heartbeat_s = 0.5
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
setup = ["CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER); INSERT OR IGNORE INTO t VALUES (1, 0)"]
[start]
strategy = "scheduled"
lead_ms = 1500
[[operations]]
name = "read"
sql = "SELECT v FROM t WHERE id = :id"
params.id = { type = "int", min = 1, max = 1 }
[checks]
min_operations = 1
"""


async def test_a_harness_trio_program_joins_a_run_as_its_workers(tmp_path: Path) -> None:
    config = tmp_path / "joined.toml"
    config.write_text(SCENARIO)
    out = tmp_path / "out"
    out.mkdir()  # the workers' URL names a file in it
    payloads: dict[str, dict] = {}
    result: list[startline.RunResult] = []

    async def orchestrate() -> None:
        result.append(await startline.run_async(config, out, spawn="none", run_id="joined-1"))

    async def worker(i: int) -> None:
        wid = f"w{i:03d}"
        payloads[wid] = await startline.join_run(
            f"sqlite:///{out}/control.db", "joined-1", wid, index=i, allow_sql=True
        )

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(orchestrate)
            for i in range(2):
                nursery.start_soon(worker, i)
    run = result[0]
    assert (run.status, run.verdict, run.passed, run.exit_code) == ("COMPLETED", "passed", True, 0)
    assert {p["status"] for p in payloads.values()} == {"COMPLETED"}
    assert run.summary["phases"]["MEASUREMENT"]["ops"] > 0
    assert (out / "summary.json").exists()


async def test_the_library_says_exit_codes_with_exceptions_and_a_verdict(tmp_path: Path) -> None:
    config = tmp_path / "joined.toml"
    config.write_text(SCENARIO.replace("min_operations = 1", "min_operations = 1000000000"))
    with pytest.raises(startline.ConfigError, match="--spawn"):
        await startline.run_async(config, tmp_path / "a", spawn="ssh://elsewhere")
    with pytest.raises(startline.ConfigError, match="control"):
        await startline.run_async(config, tmp_path / "a", control="nosuch://x")
    out = tmp_path / "b"
    failed = await startline.run_async(config, out, control="memory://", target=f"sqlite:///{out}/data.db")
    assert (failed.status, failed.verdict, failed.passed, failed.exit_code) == ("COMPLETED", "failed", False, 1)
