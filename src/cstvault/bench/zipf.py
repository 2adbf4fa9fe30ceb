"""Zipf-distributed ranks without numpy (the reader workload must not load it).

Devroye's rejection method ("Non-Uniform Random Variate Generation", X.6), the algorithm
numpy's `Generator.zipf` uses: P(k) = k^-a / zeta(a) for k = 1, 2, ...
"""

from __future__ import annotations

import random


def zipf(rng: random.Random, a: float) -> int:
    """One rank k >= 1 drawn with probability k^-a / zeta(a) (a > 1)."""
    am1 = a - 1.0
    b = 2.0**am1
    while True:
        u = 1.0 - rng.random()  # (0, 1]
        v = rng.random()
        x = int(u ** (-1.0 / am1))
        if x < 1 or x > 2**62:
            continue
        t = (1.0 + 1.0 / x) ** am1
        if v * x * (t - 1.0) / (b - 1.0) <= t / b:
            return x
