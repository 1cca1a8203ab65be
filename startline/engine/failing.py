"""A run that cannot succeed: every attempt of one operation kind failing for
``[checks] stop_after_failing_s`` (a missing table, a parameter the SQL needs and the scenario does
not define). Read from the workers' snapshots (``FailingWatch``); ``Steering.watch_failing`` stops the run on
its answer, and ``verdict.all_failing_check`` fails a kind that never succeeded in MEASUREMENT."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from startline.engine.metrics import decode

MIN_FAILURES = 10
"""At least this many failures, none succeeding, before a kind is judged failing: a rarely drawn
kind that failed once or twice in the window is not a run that cannot succeed."""

ALL_KINDS = ""
"""The kind counts are kept under when a run ships no per-kind figures (``interval_latency`` off)."""


@attrs.define
class FailingWatch:
    """The workers' snapshots read as they arrive (each once: a retried append counts once), kept
    as successes and errors per interval and operation kind for the last intervals asked about."""

    seen: set[tuple[str, int]] = attrs.Factory(set)
    ops: dict[int, dict[str, int]] = attrs.Factory(lambda: defaultdict(lambda: defaultdict(int)))
    errors: dict[int, dict[str, int]] = attrs.Factory(lambda: defaultdict(lambda: defaultdict(int)))
    firsts: dict[str, tuple[int, str]] = attrs.Factory(dict)
    """kind → (interval, what its first error said), the earliest any worker shipped."""

    def add(self, snapshots: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for worker, snap in snapshots:
            key = (worker, int(snap.get("n", 0)))
            if key in self.seen:
                continue
            self.seen.add(key)
            for item in snap.get("intervals", ()):
                i = item["interval"]
                if "kinds" in item:
                    for kind, enc in item["kinds"].items():
                        self.ops[i][kind] += decode(enc).get_total_count()
                    for kind, n in item.get("kind_errors", {}).items():
                        self.errors[i][kind] += n
                else:
                    self.ops[i][ALL_KINDS] += item.get("ops", 0)
                    self.errors[i][ALL_KINDS] += item.get("errors", 0)
                for kind, message in item.get("first_errors", {}).items():
                    if kind not in self.firsts or i < self.firsts[kind][0]:
                        self.firsts[kind] = (i, message)

    def failing(self, first: int, last: int) -> tuple[str, int, str] | None:
        """The kind every attempt of which failed in intervals ``first..last`` (at least
        ``MIN_FAILURES`` errors, no success), its error count and first error; ``None`` when
        each kind tried succeeded at least once. Intervals before ``first`` are forgotten."""
        for i in [i for i in (*self.ops, *self.errors) if i < first]:
            self.ops.pop(i, None)
            self.errors.pop(i, None)
        ops: dict[str, int] = defaultdict(int)
        errors: dict[str, int] = defaultdict(int)
        for i in range(first, last + 1):
            for k, n in self.ops.get(i, {}).items():
                ops[k] += n
            for k, n in self.errors.get(i, {}).items():
                errors[k] += n
        failing = sorted(k for k, n in errors.items() if n >= MIN_FAILURES and ops[k] == 0)
        if not failing:
            return None
        kind = failing[0]
        return kind, errors[kind], self.firsts.get(kind, (0, "?"))[1]
