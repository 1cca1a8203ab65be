"""Faults with real processes on SQLite: a worker killed with SIGKILL, the orchestrator killed
and restarted, Ctrl-C (once and twice) to `startline run`, SIGTERM to a worker."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from startline.testing import CLI, ROOT, LiveRun, faulty


def live_run(tmp_path, run_id, *, workers=3, measurement_s=6.0, idle_s=30.0, policy="continue") -> LiveRun:
    config = tmp_path / f"{run_id}.toml"
    config.write_text(faulty(workers=workers, measurement_s=measurement_s, idle_s=idle_s, policy=policy))
    return LiveRun(config, tmp_path / "out", run_id, workers)


@pytest.mark.parametrize("policy", ["continue", "fail"])
def test_a_worker_killed_mid_run_is_dead_and_the_run_ends_per_policy(tmp_path, policy):
    run = live_run(tmp_path, f"kill-{policy}", policy=policy).start()
    run.wait_until("MEASUREMENT", run.measuring)
    time.sleep(1.0)  # at least one flush of measured operations
    run.kill("w001")
    code, err, summary = run.finish()
    entries = {w["worker_id"]: w for w in summary["workers"]}
    assert entries["w001"]["status"] == "DEAD", err[-2000:]
    assert entries["w001"]["ops"] > 0  # what it measured up to its last flush is kept
    assert all(entries[w]["status"] == "COMPLETED" and entries[w]["ops"] > 0 for w in ("w000", "w002"))
    if policy == "continue":
        assert (code, summary["status"]) == (0, "COMPLETED")
    else:
        assert (code, summary["status"]) == (3, "FAILED")
        assert summary["reason"] == "worker_lost"
    dead = run.query("SELECT STATUS FROM WORKER_HEARTBEATS WHERE WORKER_ID = 'w001'")
    assert dead == [("DEAD",)]


def test_workers_outlive_a_killed_orchestrator_and_a_restart_fails_the_run_cleanly(tmp_path):
    run = live_run(tmp_path, "orphan", workers=2, measurement_s=60.0, idle_s=3.0).start()
    run.wait_until("MEASUREMENT", run.measuring)
    time.sleep(1.0)
    assert run.orchestrator is not None
    run.orchestrator.send_signal(signal.SIGKILL)
    run.orchestrator.wait(timeout=30)
    # Each worker notices RUN_STATUS going stale, stops, publishes, and exits with 3 (failed).
    assert [p.wait(timeout=60) for p in run.procs.values()] == [3, 3]
    for wid in run.procs:
        own = json.loads((run.out / f"worker-{wid}.json").read_text())
        assert own["failure"] == "orchestrator_lost"
        assert sum(own["metrics"]["ops"].values()) > 0
    stored = {w: json.loads(p) for w, p in run.query("SELECT WORKER_ID, PAYLOAD FROM TEST_RESULTS")}
    assert {w: p["status"] for w, p in stored.items()} == {"w000": "FAILED", "w001": "FAILED"}
    # A restarted orchestrator (same command, same run id) fails the orphaned run cleanly.
    again = run.start_orchestrator(tmp_path / "again")
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 3, err[-2000:]
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["status"] == "FAILED" and summary["reason"] == "orchestrator_lost"
    assert sum(w["ops"] for w in summary["workers"]) == sum(sum(p["metrics"]["ops"].values()) for p in stored.values())
    assert run.query("SELECT STATUS FROM RUN_STATUS") == [("FAILED",)]
    seqs = [s for (s,) in run.query("SELECT SEQUENCE_ID FROM RUN_CONTROL_EVENTS ORDER BY SEQUENCE_ID")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_restart_of_a_live_or_finished_run_is_refused_with_exit_2(tmp_path):
    run = live_run(tmp_path, "twice", workers=1, measurement_s=1.0).start()
    code, err, _ = run.finish()
    assert code == 0, err[-2000:]
    again = run.start_orchestrator(tmp_path / "again")
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 2
    assert "already ended" in err and "Traceback" not in err


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_cancels_the_run_and_writes_what_was_measured(tmp_path, presses):
    config = tmp_path / "cancel.toml"
    config.write_text(faulty(workers=2, measurement_s=60.0, idle_s=30.0, policy="continue"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [*CLI, "run", str(config), "--out", str(out), "--control", f"sqlite:///{out}/control.db"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    probe = LiveRun(config, out, "", 2)
    probe.wait_until("MEASUREMENT", lambda: probe.query("SELECT 1 FROM RUN_STATUS WHERE PHASE = 'MEASUREMENT'"))
    time.sleep(1.5)
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    _stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr[-2000:]
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["reason"]) == ("CANCELLED", "user_requested")
    assert summary["phases"]["MEASUREMENT"]["ops"] > 0
    assert probe.query("SELECT STATUS FROM RUN_STATUS") == [("CANCELLED",)]
    # Worker processes were told (STOP, or SIGTERM after a forced stop) and flushed before exiting.
    for wid in ("w000", "w001"):
        own = json.loads((out / f"worker-{wid}.json").read_text())
        assert sum(own["metrics"]["ops"].values()) > 0


def test_sigterm_to_a_worker_drains_it_and_flushes_its_results(tmp_path):
    run = live_run(tmp_path, "term", workers=2, measurement_s=8.0).start()
    run.wait_until("MEASUREMENT", run.measuring)
    time.sleep(1.0)
    run.procs["w000"].send_signal(signal.SIGTERM)
    assert run.procs["w000"].wait(timeout=30) == 0
    own = json.loads((run.out / "worker-w000.json").read_text())
    assert own["status"] == "COMPLETED" and sum(own["metrics"]["ops"].values()) > 0
    code, err, summary = run.finish()
    assert code == 0, err[-2000:]
    entries = {w["worker_id"]: w for w in summary["workers"]}
    assert entries["w000"]["ops"] == sum(own["metrics"]["ops"].values())
