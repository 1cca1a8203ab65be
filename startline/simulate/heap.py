"""The C heap kept between simulated runs.

A simulated run makes and drops a few dozen HDR histograms of 190 KB each (23,552 eight-byte
counts: 1 µs to an hour at 3 significant digits). glibc's ``malloc`` gives freed memory at the
heap's top back to the system and faults it in again for the next run — about 1,000 page faults
per run of the seed-analysis sweep, 7 % of its time. Raising two of its thresholds
(``mallopt``) keeps that memory in the process for the next run: beyond what it uses, a process
keeps up to ``KEEP_BYTES`` free at its heap's top. Elsewhere (another C library, another
system) nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""``mallopt``'s parameters (glibc's ``malloc.h``)."""
KEEP_BYTES = 64 << 20
"""Free memory at the heap's top kept, not given back (glibc's default: 128 KB, raised as large
blocks are freed)."""
MMAP_ABOVE = 32 << 20
"""Blocks this large or larger are mapped on their own (and unmapped when freed); a histogram
is not (glibc's default: 128 KB, raised as such blocks are freed, to 32 MB at most)."""


@functools.cache
def keep_freed_memory() -> bool:
    """Keep freed heap memory in the process (once per process); whether it could (glibc)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError):  # no confstr name, no C library, no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
