"""Where simulation seeds run: local processes or Dask distributed (extra ``startline[cluster]``).
``--cluster local:N`` starts a local cluster of N single-threaded worker processes; ``--cluster
tcp://HOST:PORT`` uses a running scheduler (any number of hosts: ``dask scheduler`` on one,
``dask worker tcp://…`` on each — or a cluster on Kubernetes from the Dask project's operator).
Work goes through the client's ``concurrent.futures`` executor, so the code that submits it is the
same as for local processes; Dask resubmits the tasks of a worker it loses.

Seeds, not workers, decide every draw: a chunk of seeds gives the same results wherever it runs
(``engine.determinism.SIMULATION`` keeps two chunks from sharing one process's random state).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any

from startline.engine.scenario import ConfigError

CLUSTER_EXTRA = "--cluster needs Dask distributed: pip install 'startline[cluster]'"
SCHEDULER_TIMEOUT_S = 5
"""How long a Dask scheduler has to answer (a scheduler that is not there fails in seconds)."""
WORKERS_TIMEOUT_S = 10
"""How long a sweep waits for a scheduler's first worker."""


class ClusterLost(Exception):
    """The Dask cluster went away while it held the work (its scheduler died)."""


@contextlib.contextmanager
def open_executor(spec: str) -> Iterator[tuple[Executor, str]]:
    """An executor on the cluster ``spec`` names (``local:N`` or ``tcp://HOST:PORT``), and a
    description for the progress line; the cluster (when started here) is closed on exit."""
    try:
        import distributed
    except ImportError:
        raise ConfigError("--cluster", CLUSTER_EXTRA) from None
    if spec.startswith("local:"):
        try:
            n = int(spec.split(":", 1)[1])
            if not 1 <= n <= 256:
                raise ValueError
        except ValueError:
            raise ConfigError("--cluster", f"local:N takes 1 to 256 workers (got {spec!r})") from None
        cluster: Any = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        )
        where = f"a local Dask cluster of {n} processes"
    elif spec.startswith(("tcp://", "tls://")):
        cluster, where = spec, f"the Dask scheduler at {spec}"
    else:
        raise ConfigError("--cluster", f"expected local:N or tcp://HOST:PORT (got {spec!r})")
    try:
        client = distributed.Client(cluster, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except OSError as exc:
        raise ConfigError("--cluster", f"cannot reach {spec}: {exc}") from None
    try:  # a scheduler with no worker would take the seeds and run none of them, silently
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (TimeoutError, OSError):
        client.close()
        raise ConfigError(
            "--cluster",
            f"{spec} has no Dask worker (waited {WORKERS_TIMEOUT_S} s): start some with `dask worker {spec}`",
        ) from None
    try:
        yield client.get_executor(pure=False), where
    except (OSError, concurrent.futures.CancelledError) as exc:  # the scheduler gone: comms closed, futures cancelled
        raise ClusterLost(f"the Dask cluster was lost mid-work ({where}): {type(exc).__name__}: {exc}") from None
    finally:
        client.close()
        if not isinstance(cluster, str):
            cluster.close()
