"""Live workers on Dask distributed (``startline run --spawn dask://HOST:PORT``, extra
``startline[cluster]``): each worker of the run is one long-running Dask task running ``startline
worker`` as a child process; its log and results come back to OUT. (Simulation seeds on Dask:
``startline.simulate.executor``.)"""

from __future__ import annotations

from typing import Any

from startline.engine.scenario import ConfigError
from startline.simulate.executor import SCHEDULER_TIMEOUT_S

SPAWN_EXTRA = "--spawn dask:// needs Dask distributed: pip install 'startline[cluster]'"


def dask_address(spawn: str) -> str:
    """``dask://HOST:PORT`` as the scheduler's ``tcp://HOST:PORT``; anything else is refused."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(spawn)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError("--spawn", f"{spawn!r} is not dask://HOST:PORT ({exc})") from None
    if not host or port is None or parts.path not in ("", "/"):
        raise ConfigError("--spawn", f"{spawn!r} is not dask://HOST:PORT (the scheduler's host and port)")
    return f"tcp://{parts.netloc}"


async def reach_scheduler(address: str, workers: int) -> None:
    """Before the run touches its target: the scheduler at ``address`` answers within seconds, and
    its cluster has a thread for each of the run's ``workers`` (each holds one for the whole run:
    with fewer, the rest would wait for a thread until ``ready_timeout``)."""
    import trio

    try:
        import distributed
    except ImportError:
        raise ConfigError("--spawn", SPAWN_EXTRA) from None
    target = dask_address(address)

    def threads() -> int:
        with distributed.Client(target, timeout=f"{SCHEDULER_TIMEOUT_S}s") as client:
            return sum(client.nthreads().values())

    try:
        found = await trio.to_thread.run_sync(threads)
    except OSError as exc:  # (a timeout included)
        raise ConfigError("--spawn", f"cannot reach the Dask scheduler at {target}: {exc}") from None
    if found < workers:
        raise ConfigError(
            "--spawn",
            f"the Dask cluster at {target} has {found} worker threads for {workers} workers: each worker holds "
            "a thread for the whole run (add Dask workers or threads, or run fewer workers)",
        )


def run_worker(args: list[str], urls: dict[str, str], launched_at: float) -> dict[str, Any]:
    """On a Dask worker: ``startline worker ARGS`` as a child process (its URLs in its environment)
    until it exits; its output, exit code, host and results file come back to the orchestrator."""
    import socket
    import subprocess
    import tempfile
    from pathlib import Path

    from startline.live.workers import command_line, worker_env

    with tempfile.TemporaryDirectory(prefix="startline-worker-") as tmp:
        results = Path(tmp) / "results.json"
        proc = subprocess.run(
            command_line(args, results),
            capture_output=True,
            text=True,
            env=worker_env(launched_at, urls),
            stdin=subprocess.DEVNULL,
        )
        return {
            "returncode": proc.returncode,
            "log": proc.stdout + proc.stderr,
            "results": results.read_text() if results.exists() else None,
            "host": socket.gethostname(),
        }


def absolute_urls(scenario: Any) -> Any:
    """The scenario with relative ``sqlite:///`` paths made absolute: a Dask worker's process
    does not share the orchestrator's working directory (it may share its file system)."""
    import attrs

    def fix(url: str) -> str:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            from pathlib import Path

            return "sqlite:///" + str(Path(url[len("sqlite:///") :]).resolve())
        return url

    return attrs.evolve(scenario, control=fix(scenario.control), target=fix(scenario.target))


async def spawn_on_dask(address: str, scenario: Any, run_id: str, out: Any, console: Any) -> None:
    """Place each of the run's workers on the Dask cluster at ``address`` (``dask://HOST:PORT``)
    as one long-running task running ``startline worker``; write each one's log and results to
    OUT as local workers' are. Cancelled (the run is over and its grace passed), the tasks are
    cancelled; a worker still running ends itself after ``run_idle_timeout_s``."""
    import time
    from pathlib import Path

    import trio

    from startline.engine.files import write_atomic
    from startline.engine.together import worker_id, worker_ids
    from startline.live.workers import url_env, worker_args

    try:
        import distributed
    except ImportError:
        raise ConfigError("--spawn", SPAWN_EXTRA) from None
    target = dask_address(address)
    try:
        client = await trio.to_thread.run_sync(lambda: distributed.Client(target, timeout=f"{SCHEDULER_TIMEOUT_S}s"))
    except OSError as exc:  # (a timeout included)
        raise ConfigError("--spawn", f"cannot reach the Dask scheduler at {target}: {exc}") from None
    sc = absolute_urls(scenario)
    urls = url_env(sc)  # (sent with each task: a Dask cluster on an untrusted network needs TLS)
    now = time.time()
    futures = [
        client.submit(run_worker, worker_args(sc, run_id, i), urls, now, key=f"startline-{run_id}-{wid}", pure=False)
        for i, wid in enumerate(worker_ids(scenario))
    ]
    console.print(f"{len(futures)} workers placed on the Dask cluster at {target}", highlight=False)

    async def collect(i: int, fut: Any) -> None:
        wid = worker_id(i)
        try:
            done = await trio.to_thread.run_sync(fut.result, abandon_on_cancel=True)
        except trio.Cancelled:
            raise
        except Exception as exc:  # the task itself failed (its Dask worker lost too often, …)
            write_atomic(Path(out) / f"worker-{wid}.log", f"the Dask task failed: {type(exc).__name__}: {exc}\n")
            return
        write_atomic(Path(out) / f"worker-{wid}.log", f"[on {done['host']}, exit {done['returncode']}]\n{done['log']}")
        if done["results"] is not None:
            write_atomic(Path(out) / f"worker-{wid}.json", done["results"])

    try:
        async with trio.open_nursery() as nursery:
            for i, fut in enumerate(futures):
                nursery.start_soon(collect, i, fut)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lambda: (client.cancel(futures), client.close()))
