"""Key distributions of the standard workloads (issue 24), each a pure function of one uniform
draw (or two) from the connection's seeded stream:

- ``zipfian``: YCSB's ``ZipfianGenerator`` (Gray et al., "Quickly generating billion-record
  synthetic databases", SIGMOD 1994): rank 0 and 1 exactly, the rest by inversion of the
  continuous approximation — any number of items, no table. Its ``zeta(n, θ)`` is summed exactly
  up to ``EXACT_ZETA`` items and by Euler–Maclaurin beyond (it matches YCSB's precomputed
  ``ZETAN`` for 10¹⁰ items to 11 digits).
- ``scrambled_zipfian``: YCSB's ``ScrambledZipfianGenerator``: a zipfian rank over 10¹⁰ items
  (θ = 0.99, YCSB's ``ZETAN``), hashed by 64-bit FNV-1a as YCSB's ``Utils.fnvhash64`` does and
  taken modulo the range — so the hot keys are spread over it, not next to each other.
- ``latest``: YCSB's ``SkewedLatestGenerator``: the newest key the most frequent, the one before
  it next, by zipfian rank over the keys there are.
- ``nurand``: TPC-C's NURand(A, x, y) = (((random(0, A) | random(x, y)) + C) mod (y − x + 1)) + x.
"""

from __future__ import annotations

import functools
import math
from random import Random

import attrs

YCSB_ITEM_COUNT = 10_000_000_000
"""The scrambled zipfian's rank space: YCSB's ``ZipfianGenerator(0, ITEM_COUNT)``."""
YCSB_ZETAN = 26.46902820178302
"""YCSB's precomputed zeta(ITEM_COUNT + 1, 0.99)."""
YCSB_THETA = 0.99
"""YCSB's zipfian constant (``zipfian`` and ``scrambled_zipf`` default to it)."""
EXACT_ZETA = 1000
"""Up to this many items zeta is summed term by term; beyond, Euler–Maclaurin."""

_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 1099511628211, (1 << 64) - 1


def zeta(n: int, theta: float) -> float:
    """Σ_{k=1..n} 1/k^θ."""
    if n <= EXACT_ZETA:
        return math.fsum(k**-theta for k in range(1, n + 1))
    m = 1000  # Euler–Maclaurin from m on: the sum to m - 1, the integral, two correction terms
    head = math.fsum(k**-theta for k in range(1, m))
    integral = math.log(n / m) if theta == 1 else (n ** (1 - theta) - m ** (1 - theta)) / (1 - theta)
    ends = (m**-theta + n**-theta) / 2
    slope = (-theta * n ** (-theta - 1) + theta * m ** (-theta - 1)) / 12
    return head + integral + ends + slope


@attrs.frozen
class Zipfian:
    """YCSB's zipfian over ``items`` ranks (0 the most frequent) with constant θ."""

    items: int
    theta: float
    zetan: float
    alpha: float
    eta: float
    second: float  # 1 + 0.5^θ: below it (in units of zetan), rank 1

    def rank(self, u: float) -> int:
        """The rank for one uniform draw ``u`` in [0, 1)."""
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self.second:
            return 1
        return min(self.items - 1, int(self.items * (self.eta * u - self.eta + 1) ** self.alpha))


@functools.lru_cache(maxsize=64)
def zipfian(items: int, theta: float = YCSB_THETA) -> Zipfian:
    """The generator for ``items`` ranks (one per process and (items, θ): zeta is computed once)."""
    zetan = YCSB_ZETAN if (items, theta) == (YCSB_ITEM_COUNT + 1, YCSB_THETA) else zeta(items, theta)
    if theta == 1.0:
        theta = 1.0 - 1e-9  # (the approximation's α = 1 / (1 − θ); θ = 1 is its limit)
    zeta2 = 1.0 + 0.5**theta
    eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / zetan) if items > 2 else 0.0
    return Zipfian(items, theta, zetan, 1.0 / (1.0 - theta), eta, zeta2)


def fnv64(value: int) -> int:
    """YCSB's ``Utils.fnvhash64``: FNV-1a over the value's 8 bytes, low first, as a Java long made
    non-negative (``Math.abs``)."""
    h = _FNV_OFFSET
    for _ in range(8):
        h = ((h ^ (value & 0xFF)) * _FNV_PRIME) & _MASK
        value >>= 8
    signed = h - (1 << 64) if h >> 63 else h
    return abs(signed)


def scrambled_zipfian(u: float, lo: int, hi: int, theta: float = YCSB_THETA) -> int:
    """YCSB's scrambled zipfian in [lo, hi] for one uniform draw ``u``."""
    rank = zipfian(YCSB_ITEM_COUNT + 1, theta).rank(u)
    return lo + fnv64(rank) % (hi - lo + 1)


def latest(u: float, lo: int, top: int, theta: float = YCSB_THETA) -> int:
    """YCSB's skewed-latest for one uniform draw ``u``: ``top`` − a zipfian rank over the
    ``top − lo`` keys above ``lo`` (YCSB's: max − zipfian(max), so ``lo`` itself never comes);
    ``top`` when there is no key above ``lo``."""
    items = top - lo
    if items <= 0:
        return top
    return top - zipfian(items, theta).rank(u)


PRINTABLE = bytes(32 + b % 95 for b in range(256))
"""A random byte → a printable ASCII character."""


def printable(rng: Random, length: int) -> str:
    """``length`` printable characters (YCSB's random field values: ``string`` parameters)."""
    return rng.randbytes(length).translate(PRINTABLE).decode("ascii")


def nurand(rng: Random, a: int, lo: int, hi: int, c: int) -> int:
    """TPC-C's NURand(A, x, y) with run constant C (clause 2.1.6)."""
    return (((rng.randint(0, a) | rng.randint(lo, hi)) + c) % (hi - lo + 1)) + lo
