"""The live wall clock: this host's ``time.time()``."""

from __future__ import annotations

import time


class SystemClock:
    def now(self) -> float:
        return time.time()
