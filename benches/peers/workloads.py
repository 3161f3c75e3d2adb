"""The reference workloads shared by every peer script (see ../shared/peers/README.md).

Copied unchanged from ../shared/peers/workloads.py.
"""
import statistics, time

import numpy as np


def two_moons(rng, n, noise=0.05):
    """Two interleaving half circles: t ~ U(0, pi), one moon per fair coin, N(0, noise^2) jitter."""
    t = rng.uniform(0.0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], axis=1) + noise * rng.standard_normal((n, 2))
    return pts.astype(np.float32)


def timeit(fn, min_time=0.5, repeats=7):
    """Median seconds per call over `repeats` rounds, each round long enough to be timed."""
    fn(); fn()  # warm up (compilation, caches)
    t0 = time.perf_counter(); fn(); one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_time / repeats / one))
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        rounds.append((time.perf_counter() - t0) / inner)
    return statistics.median(rounds)
