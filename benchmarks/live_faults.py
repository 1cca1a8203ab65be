"""Live reliability on this machine (SQLite control plane and target, real worker processes):

1. worker-loss detection: SIGKILL one worker mid-measurement and time how long until
   WORKER_HEARTBEATS says DEAD (goal: <= k2·h + one status read after its last heartbeat);
2. the largest control-plane outage survived without losing a result: another process holds
   the control database's write lock (BEGIN EXCLUSIVE) for L seconds mid-measurement, and the
   run must end COMPLETED with every worker's operations in the summary;
3. a damaged control table: RUN_CONTROL_EVENTS dropped mid-measurement; time until each worker
   process has given up (its results file written) and until the orchestrator has (goal: a
   worker within T_out + one poll + the drain + 1 s of the damage).

    .venv/bin/python benchmarks/live_faults.py [--kills 5] [--outages 1,2,3,4,5,6] [--broken 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from startline.testing import LiveRun, faulty

HEARTBEAT_S, DEAD_AFTER = 0.5, 4


def config(tmp: Path, name: str, measurement_s: float, extra: str = "") -> Path:
    text = faulty(workers=3, measurement_s=measurement_s, idle_s=30.0, policy="continue")
    path = tmp / f"{name}.toml"
    path.write_text(text.replace('name = "faulty"', f'name = "faulty"\n{extra}'))
    return path


def detection(tmp: Path, i: int) -> dict[str, float]:
    run = LiveRun(config(tmp, f"kill{i}", 8.0), tmp / f"kill{i}", f"kill{i}", 3).start()
    run.wait_until("MEASUREMENT", run.measuring)
    time.sleep(1.0 + 0.1 * i)  # a different phase of the heartbeat each time
    killed = run.kill("w001")
    dead_seen = None
    while dead_seen is None and time.time() - killed < 30:
        if run.query("SELECT 1 FROM WORKER_HEARTBEATS WHERE WORKER_ID = 'w001' AND STATUS = 'DEAD'"):
            dead_seen = time.time()
        time.sleep(0.005)
    (last,) = run.query("SELECT LAST_HEARTBEAT FROM WORKER_HEARTBEATS WHERE WORKER_ID = 'w001'")[0]
    code, _err, summary = run.finish()
    assert dead_seen is not None and code == 0, (code, summary.get("status"))
    last_s = _epoch(last)
    return {"kill_to_dead_s": dead_seen - killed, "last_beat_to_dead_s": dead_seen - last_s}


def _epoch(value: object) -> float:
    """LAST_HEARTBEAT as stored by the SQLite control plane (epoch seconds or an ISO string)."""
    if isinstance(value, int | float):
        return float(value)
    from datetime import UTC, datetime

    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()


def outage(tmp: Path, seconds: float, tolerance: float) -> dict[str, object]:
    extra = f"outage_tolerance_s = {tolerance}\ncontrol_timeout_s = 1.0\nretry_cap_ms = 500"
    run = LiveRun(config(tmp, f"out{seconds}", 6.0 + seconds, extra), tmp / f"out{seconds}", f"o{seconds}", 3)
    run.start().wait_until("MEASUREMENT", run.measuring)
    time.sleep(1.0)

    def hold() -> None:
        db = sqlite3.connect(run.control, timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        db.execute("COMMIT")
        db.close()

    locker = threading.Thread(target=hold)
    locker.start()
    locker.join()
    code, _err, summary = run.finish(timeout=300)
    own = [json.loads((run.out / f"worker-w{i:03d}.json").read_text()) for i in range(3)]
    measured = sum(sum(p["metrics"]["ops"].values()) for p in own)
    in_summary = sum(w["ops"] for w in summary.get("workers", []))
    return {
        "outage_s": seconds,
        "status": summary.get("status"),
        "workers": sorted({w["status"] for w in summary.get("workers", [])}),
        "exit": code,
        "missing_from_summary": measured - in_summary,  # each worker's --results file has them all
        "survived": code == 0 and measured == in_summary,
    }


def broken(tmp: Path, i: int, tolerance: float) -> dict[str, object]:
    extra = f"outage_tolerance_s = {tolerance}\ncontrol_timeout_s = 1.0\nretry_cap_ms = 500"
    run = LiveRun(config(tmp, f"broken{i}", 8.0, extra), tmp / f"broken{i}", f"b{i}", 3)
    run.start().wait_until("MEASUREMENT", run.measuring)
    time.sleep(1.0 + 0.1 * i)
    damaged = time.monotonic()  # from the start of the DROP: it waits for the write lock as everyone does
    db = sqlite3.connect(run.control, timeout=30)
    db.execute("DROP TABLE RUN_CONTROL_EVENTS")
    db.commit()
    db.close()
    drop_s = time.monotonic() - damaged
    ended: dict[str, float] = {}
    while len(ended) < 3 and time.monotonic() - damaged < 120:
        for wid, proc in run.procs.items():
            if wid not in ended and proc.poll() is not None:
                ended[wid] = time.monotonic() - damaged
        time.sleep(0.01)
    assert run.orchestrator is not None
    run.orchestrator.wait(timeout=120)
    orchestrator_s = time.monotonic() - damaged
    code, _err, summary = run.finish()
    own = [json.loads((run.out / f"worker-w{k:03d}.json").read_text()) for k in range(3)]
    return {
        "drop_took_s": round(drop_s, 3),
        "workers_gave_up_s": sorted(round(v, 3) for v in ended.values()),
        "orchestrator_ended_s": round(orchestrator_s, 3),
        "status": summary.get("status"),
        "reason": summary.get("reason"),
        "exit": code,
        "results_files": sorted({p["status"] for p in own}),
        "ops_in_files": sum(sum(p["metrics"]["ops"].values()) for p in own),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--outages", default="1,2,3,4,5,6")
    ap.add_argument("--tolerance", type=float, default=5.0)
    ap.add_argument("--broken", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="startline-live-faults-"))
    try:
        kills = [detection(tmp, i) for i in range(args.kills)]
        outages = [outage(tmp, float(s), args.tolerance) for s in args.outages.split(",") if s]
        damaged = [broken(tmp, i, args.tolerance) for i in range(args.broken)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bound = DEAD_AFTER * HEARTBEAT_S
    report = {
        "detection": {
            "bound_s": f"k2·h = {bound} + one status read",
            "kill_to_dead_s": [round(k["kill_to_dead_s"], 3) for k in kills],
            "last_beat_to_dead_s": [round(k["last_beat_to_dead_s"], 3) for k in kills],
            "max_last_beat_to_dead_s": round(max((k["last_beat_to_dead_s"] for k in kills), default=0.0), 3),
        },
        "outage": {
            "outage_tolerance_s": args.tolerance,
            "runs": outages,
            "largest_survived_s": max((o["outage_s"] for o in outages if o["survived"]), default=0.0),
        },
        "broken_table": {"outage_tolerance_s": args.tolerance, "runs": damaged},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
