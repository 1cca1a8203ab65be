"""In-process backend: a control plane in a Python dict (with push) and a target of async callables."""

from startline.backends.memory.clock import TrioWallClock
from startline.backends.memory.control import MemoryControlPlane, MemoryStore
from startline.backends.memory.target import CallableTarget

__all__ = ["CallableTarget", "MemoryControlPlane", "MemoryStore", "TrioWallClock"]
