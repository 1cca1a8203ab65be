"""startline: coordinate distributed database benchmarks and measure how together they started.

The public face: load a ``Scenario``, run it (``run_in_process`` for one process on
the memory backend), read the summary. The core lives in ``engine``; backends in
``backends``.
"""

from engine.model import ControlEvent, EventType, Phase, RunStatus, WorkerStatus
from engine.orchestrator import Orchestrator, write_summary
from engine.scenario import ConfigError, OperationSpec, ParamSpec, ScaleStep, Scenario, StartOptions
from engine.worker import Worker
from startline.inprocess import InProcessRun, run_in_process, run_in_process_async

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ControlEvent",
    "EventType",
    "InProcessRun",
    "OperationSpec",
    "Orchestrator",
    "ParamSpec",
    "Phase",
    "RunStatus",
    "ScaleStep",
    "Scenario",
    "StartOptions",
    "Worker",
    "WorkerStatus",
    "__version__",
    "run_in_process",
    "run_in_process_async",
    "write_summary",
]
