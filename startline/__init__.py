"""startline: coordinate distributed database benchmarks and measure how together they started.

The public face: load a ``Scenario``, run it as ``startline run`` does (``run``, or
``run_async`` inside a Trio program: worker processes, Dask, or tasks of this process), join a
run as a worker from a Trio program (``join_run``), or run it in one ``trio.run`` on the memory
backend (``run_in_process``); read the summary. The core lives in ``startline.engine``; the
backends in ``startline.backends``; the simulator in ``startline.simulate``.

Names are imported on first use (PEP 562), so that a worker process or a simulation
that needs only ``startline.engine`` does not pay for the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "startline.engine.scenario",
    "ControlEvent": "startline.engine.model",
    "EventType": "startline.engine.model",
    "InProcessRun": "startline.inprocess",
    "OperationSpec": "startline.engine.scenario",
    "Orchestrator": "startline.engine.orchestrator",
    "ParamSpec": "startline.engine.scenario",
    "Phase": "startline.engine.model",
    "RunCancelled": "startline.api",
    "RunResult": "startline.api",
    "RunStatus": "startline.engine.model",
    "ScaleStep": "startline.engine.scenario",
    "Scenario": "startline.engine.scenario",
    "StartOptions": "startline.engine.scenario",
    "StopReason": "startline.engine.model",
    "Worker": "startline.engine.worker",
    "WorkerStatus": "startline.engine.model",
    "join_run": "startline.api",
    "run": "startline.api",
    "run_async": "startline.api",
    "run_in_process": "startline.inprocess",
    "run_in_process_async": "startline.inprocess",
    "write_summary": "startline.engine.files",
}

__all__ = [
    "ConfigError",
    "ControlEvent",
    "EventType",
    "InProcessRun",
    "OperationSpec",
    "Orchestrator",
    "ParamSpec",
    "Phase",
    "RunCancelled",
    "RunResult",
    "RunStatus",
    "ScaleStep",
    "Scenario",
    "StartOptions",
    "StopReason",
    "Worker",
    "WorkerStatus",
    "__version__",
    "join_run",
    "run",
    "run_async",
    "run_in_process",
    "run_in_process_async",
    "write_summary",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'startline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # pragma: no cover
    from startline.api import RunCancelled, RunResult, join_run, run, run_async
    from startline.engine.files import write_summary
    from startline.engine.model import ControlEvent, EventType, Phase, RunStatus, StopReason, WorkerStatus
    from startline.engine.orchestrator import Orchestrator
    from startline.engine.scenario import ConfigError, OperationSpec, ParamSpec, ScaleStep, Scenario, StartOptions
    from startline.engine.worker import Worker
    from startline.inprocess import InProcessRun, run_in_process, run_in_process_async
