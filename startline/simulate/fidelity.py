"""How a predicted figure is judged against live runs (``benchmarks/fidelity.py``): a figure
whose two live halves (even runs, odd runs) already disagree is under-sampled — more live runs
are needed before the simulator can be said to miss it — and a figure whose halves agree holds
when predicted / live lies within ``BAND``."""

from __future__ import annotations

import enum

AGREEMENT = 0.05
"""The live halves agree when they differ by at most this share of their mean."""
BAND = (0.85, 1.15)
"""predicted / live within this: the simulator predicts the figure."""


class Judged(enum.StrEnum):
    HOLDS = "holds"
    MISS = "miss"
    UNDER_SAMPLED = "under-sampled"


def disagreement(a: float, b: float) -> float:
    """How far apart two halves' figures are, as a share of their mean (0 when both are 0)."""
    mean = (a + b) / 2
    if mean == 0:
        return 0.0 if a == b else float("inf")
    return abs(a - b) / abs(mean)


def halves_agree(a: float, b: float, within: float = AGREEMENT) -> bool:
    return disagreement(a, b) <= within


def judge(live: float, predicted: float, halves: tuple[float, float], within: float = AGREEMENT) -> Judged:
    """A predicted figure against the live one (over every predicted run), given the figure of each
    live half: under-sampled while the halves disagree, else holds or misses by ``BAND``."""
    if not halves_agree(*halves, within=within):
        return Judged.UNDER_SAMPLED
    if live == 0:
        return Judged.HOLDS if predicted == 0 else Judged.MISS
    lo, hi = BAND
    return Judged.HOLDS if lo <= predicted / live <= hi else Judged.MISS
