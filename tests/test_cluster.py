"""Simulation on Dask distributed: a sweep on a real local Dask cluster (worker processes on
loopback) writes the same cells.csv as local processes; a Dask worker killed mid-sweep loses
nothing (its tasks are resubmitted); fault simulation takes --cluster too; bad specs are exit 2."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from startline.testing import run_cli

pytestmark = pytest.mark.live  # processes, servers or a browser

SWEEP = (
    'name = "t"\nseeds = 8\nprofile = "snowflake-hybrid"\n[scenario]\nworkers = 3\n'
    '[grid]\n"start.strategy" = ["poll", "scheduled"]\n'
)


def _sweep(tmp_path: Path, *args: str) -> bytes:
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    proc = run_cli("sweep", str(spec), "--out", str(out), *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (out / "cells.csv").read_bytes()


def test_a_sweep_on_a_local_dask_cluster_writes_the_same_cells_as_local_processes(tmp_path):
    local = _sweep(tmp_path, "--jobs", "2")
    on_dask = _sweep(tmp_path, "--cluster", "local:2")
    assert on_dask == local
    assert local.count(b"\n") == 3  # header and two cells


def test_a_dask_worker_killed_mid_sweep_loses_nothing(tmp_path):
    import distributed

    from startline.simulate.sweep import Sweep, run_sweep

    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP.replace("seeds = 8", "seeds = 24"))
    sweep = Sweep.from_toml(spec)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)  # worker address → process id
        victim = next(iter(pids.values()))
        killed = threading.Event()

        def progress(n: int) -> None:  # after the first chunk lands, kill a worker process
            if not killed.is_set():
                killed.set()
                os.kill(victim, signal.SIGKILL)

        rows = run_sweep(sweep, 1, tmp_path / "dask", progress, chunk=4, executor=client.get_executor(pure=False))
    assert killed.is_set()
    assert [int(r["seeds"]) for r in rows] == [24, 24]
    reference = run_sweep(sweep, 2, tmp_path / "local", chunk=4)
    assert (tmp_path / "dask" / "cells.csv").read_bytes() == (tmp_path / "local" / "cells.csv").read_bytes()
    assert rows == reference


def test_fault_simulation_runs_on_a_local_dask_cluster(tmp_path):
    proc = run_cli("simulate", "--faults", "random", "--seeds", "6", "--cluster", "local:2", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "seeds run" in proc.stdout and "invariant violations" in proc.stdout


def test_a_bad_cluster_is_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    for bad, needle in (("local:0", "local:N"), ("udp://x", "expected local:N"), ("tcp://127.0.0.1:1", "cannot reach")):
        proc = run_cli("sweep", str(spec), "--out", str(tmp_path / "o"), "--cluster", bad, timeout=120)
        assert proc.returncode == 2, (bad, proc.stderr[-2000:])
        assert "--cluster" in proc.stderr and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


LIVE = """
name = "on-dask"
workers = 3
connections_per_worker = 2
warmup_s = 0
measurement_s = 2
control = "sqlite:///{out}/control.db"
target = "sqlite:///{out}/data.db"
setup = ["CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v INTEGER)", "INSERT OR IGNORE INTO kv VALUES (1, 0)"]

[start]
strategy = "scheduled"
lead_ms = 2000

[[operations]]
name = "read"
sql = "SELECT v FROM kv WHERE k = 1"
"""


def test_run_places_its_workers_on_a_dask_cluster_and_collects_their_logs_and_results(tmp_path):
    import json

    import distributed

    path = tmp_path / "live.toml"
    path.write_text(LIVE)
    out = tmp_path / "out"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None, silence_logs=50
    ) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        proc = run_cli("run", "--no-report", str(path), "--out", str(out), "--spawn", f"dask://{address}", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [w["status"] for w in summary["workers"]] == ["COMPLETED"] * 3
    assert summary["phases"]["MEASUREMENT"]["ops"] > 0
    for wid in ("w000", "w001", "w002"):
        assert (out / f"worker-{wid}.log").read_text().startswith("[on ")
        assert json.loads((out / f"worker-{wid}.json").read_text())["status"] == "COMPLETED"
    assert "placed on the Dask cluster" in proc.stderr


def test_spawn_takes_only_a_dask_url_and_a_shared_control_plane(tmp_path):
    path = tmp_path / "live.toml"
    path.write_text(LIVE)
    for args, needle in (
        (["--spawn", "k8s://x"], "expected dask://HOST:PORT"),
        (["--spawn", "dask://127.0.0.1:1", "--control", "memory://"], "needs a shared control plane"),
    ):
        proc = run_cli("run", "--no-report", str(path), "--out", str(tmp_path / "o"), *args, timeout=120)
        assert proc.returncode == 2 and "--spawn" in proc.stderr and needle in proc.stderr, proc.stderr


def test_a_sweep_on_a_scheduler_with_no_worker_says_so_instead_of_waiting_forever(tmp_path):
    """Issue 22 #15: `sweep --cluster tcp://…` on a scheduler with no workers printed nothing, forever."""
    import distributed

    spec = tmp_path / "sweep.toml"
    spec.write_text(SWEEP)
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=None, silence_logs=50) as cluster:
        proc = run_cli(
            "sweep", str(spec), "--out", str(tmp_path / "o"), "--cluster", cluster.scheduler_address, timeout=120
        )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "has no Dask worker" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_dask_cluster_that_cannot_take_the_run_fails_in_seconds_before_the_setup(tmp_path):
    """Issue 22 #16: with more workers than the cluster has threads, 60 s of "8/12 READY" then
    `ready_timeout` with no detail; an unreachable scheduler: the target's setup ran first, then a
    20 s wait; `dask://` without host and port: a traceback. Each is now one line, exit 2, before
    the target is touched."""
    import distributed

    path = tmp_path / "live.toml"
    path.write_text(LIVE)  # 3 workers
    cases = [("dask://", "is not dask://HOST:PORT"), ("dask://127.0.0.1:1", "cannot reach the Dask scheduler")]
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None, silence_logs=50
    ) as cluster:
        cases.append(("dask://" + cluster.scheduler_address.removeprefix("tcp://"), "2 worker threads for 3 workers"))
        for address, needle in cases:
            out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
            proc = run_cli("run", "--no-report", str(path), "--out", str(out), "--spawn", address, timeout=60)
            assert proc.returncode == 2, (address, proc.stdout[-2000:], proc.stderr[-2000:])
            assert needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
            assert not (out / "data.db").exists()  # the setup never ran
