"""In-process backend: a control plane in a Python dict (with push) and a target of async callables."""

from backends.memory.clock import TrioWallClock
from backends.memory.control import MemoryControlPlane, MemoryStore
from backends.memory.target import CallableTarget

__all__ = ["CallableTarget", "MemoryControlPlane", "MemoryStore", "TrioWallClock"]
