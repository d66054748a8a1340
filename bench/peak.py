"""The machine's fp32 matmul peak, measured: `python -m bench.peak` prints {"gflops": ...}.

Run as its own process with the run's thread budget, so the figure matches what the backends get.
A few 1024^3 GEMMs after a warm-up; the best of them is the attainable peak.
"""
import json
import sys
import time

import numpy as np


def matmul_peak_gflops(n=1024, repeats=10, dtype="float32"):
    rng = np.random.RandomState(0)
    a = rng.rand(n, n).astype(dtype)
    b = rng.rand(n, n).astype(dtype)
    out = np.empty((n, n), dtype)
    np.matmul(a, b, out=out)  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


if __name__ == "__main__":
    json.dump({"gflops": matmul_peak_gflops(), "method": "numpy float32 1024^3 matmul, best of 10"},
              sys.stdout)
