"""``compare`` with groups of runs (``compare A1 A2 A3 -- B1 B2 B3``, ``compare --baseline NAME
RUN…``): two identical runs on a shared machine differ by 10–15 %, so one run against one run
either cries wolf or misses a regression. With ``MIN_RUNS`` or more runs a side, each figure's
median per side, the change of the medians, and a ``LEVEL`` confidence interval of that change —
a percentile bootstrap over runs (each side resampled with replacement, ``RESAMPLES`` times, the
random draws seeded by the figure's name: the same runs give the same interval) — judged against
the figure's band:

- *regressed*: the whole interval is worse than the band's fail limit;
- *improved*: the whole interval is better than it the other way;
- *no change detected*: the whole interval lies within ± the limit;
- *too noisy to say*: the interval straddles a limit.

Pure: summaries in, a ``GroupComparison`` out."""

from __future__ import annotations

import math
import random
import statistics
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from startline.views.compare import COMPLETED, Band, band_of, change, figures

MIN_RUNS = 3
RESAMPLES = 4000
LEVEL = 0.95
REGRESSED, IMPROVED, NO_CHANGE, TOO_NOISY = "regressed", "improved", "no change detected", "too noisy to say"


def bootstrap_interval(
    base: Sequence[float],
    candidate: Sequence[float],
    points: bool,
    seed: int,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
) -> tuple[float, float] | None:
    """The ``level`` percentile-bootstrap interval of ``change(median(base), median(candidate))``
    (None when too few resamples have a change: a base median of zero)."""
    rng = random.Random(seed)
    changes = []
    for _ in range(resamples):
        a = statistics.median(rng.choices(base, k=len(base)))
        b = statistics.median(rng.choices(candidate, k=len(candidate)))
        moved = change(a, b, points)
        if moved is not None:
            changes.append(moved)
    if len(changes) < resamples * level:
        return None
    changes.sort()
    tail = (1 - level) / 2
    lo = changes[math.floor(tail * (len(changes) - 1))]  # (the wider way on both ends)
    hi = changes[math.ceil((1 - tail) * (len(changes) - 1))]
    return lo, hi


def judge(interval: tuple[float, float], band: Band) -> str:
    """What an interval of the change says against the band's fail limit (see the module)."""
    lo, hi = interval if band.higher_is_worse else (-interval[1], -interval[0])  # (worse is positive)
    if lo > band.fail:
        return REGRESSED
    if hi < -band.fail:
        return IMPROVED
    if -band.fail <= lo and hi <= band.fail:
        return NO_CHANGE
    return TOO_NOISY


@attrs.frozen
class GroupRow:
    figure: str
    base: tuple[float, ...]
    candidate: tuple[float, ...]
    base_median: float | None
    candidate_median: float | None
    change: float | None
    """Of the medians: per cent of the base's (percentage points for a rate)."""
    low: float | None
    high: float | None
    """The interval of the change (None: fewer than ``MIN_RUNS`` runs a side have the figure)."""
    unit: str
    verdict: str | None
    """regressed, improved, no change detected, too noisy to say; None without a band or an interval."""


@attrs.frozen
class GroupComparison:
    base: tuple[str, ...]
    candidate: tuple[str, ...]
    statuses: tuple[str, ...]
    """The candidate runs' statuses."""
    rows: tuple[GroupRow, ...]
    level: float = LEVEL

    @property
    def verdict(self) -> str:
        """``fail`` when a figure regressed (significantly) or a candidate run did not complete;
        else ``ok``."""
        if any(s != COMPLETED for s in self.statuses) or any(r.verdict == REGRESSED for r in self.rows):
            return "fail"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self) | {"verdict": self.verdict}


def compare_groups(
    base: Sequence[Mapping[str, Any]],
    candidate: Sequence[Mapping[str, Any]],
    bands: Sequence[Band],
    names: tuple[Sequence[str], Sequence[str]],
) -> GroupComparison:
    """Every figure of the runs (``compare.figures``), both sides' values, medians, the change and
    its interval, judged (see the module)."""
    a = [figures(s) for s in base]
    b = [figures(s) for s in candidate]
    order = list(dict.fromkeys(k for f in (*a, *b) for k in f))
    rows = []
    for figure in order:
        xs = tuple(float(v) for f in a if (v := f.get(figure)) is not None)
        ys = tuple(float(v) for f in b if (v := f.get(figure)) is not None)
        points = figure.endswith("error rate")
        mx = statistics.median(xs) if xs else None
        my = statistics.median(ys) if ys else None
        interval = None
        if len(xs) >= MIN_RUNS and len(ys) >= MIN_RUNS:
            interval = bootstrap_interval(xs, ys, points, zlib.crc32(figure.encode()))
        band = band_of(figure, bands)
        rows.append(
            GroupRow(
                figure,
                xs,
                ys,
                mx,
                my,
                change(mx, my, points),
                None if interval is None else interval[0],
                None if interval is None else interval[1],
                "points" if points else "%",
                None if band is None or interval is None else judge(interval, band),
            )
        )
    statuses = tuple(str(s.get("status")) for s in candidate)
    return GroupComparison(tuple(names[0]), tuple(names[1]), statuses, tuple(rows))
