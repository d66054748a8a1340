"""The machine's fp32 matmul peak, measured: `python -m bench.peak` prints one JSON object.

Run as its own process with the run's thread budget, so the figure matches what the backends get.
Every GEMM library this interpreter has is tried, interleaved (NumPy's BLAS, then torch's, round
after round, so a slow minute of the machine touches both): the peak is the best of all, and the
record says which library and kernel produced it. One library's figure alone understates a
machine whose NumPy BLAS runs older kernels (OpenBLAS' Haswell code on an AVX-512 CPU).
"""
import json
import sys
import time

import numpy as np

N, ROUNDS, CALLS = 1024, 5, 4


def _numpy_gemm(n):
    rng = np.random.RandomState(0)
    a, b = rng.rand(n, n).astype("float32"), rng.rand(n, n).astype("float32")
    out = np.empty((n, n), "float32")
    return lambda: np.matmul(a, b, out=out)


def _torch_gemm(n):
    import torch

    a = torch.rand(n, n, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    b = torch.rand(n, n, dtype=torch.float32, generator=torch.Generator().manual_seed(1))
    out = torch.empty(n, n)
    return lambda: torch.mm(a, b, out=out)


def _numpy_library():
    try:
        from threadpoolctl import threadpool_info

        blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if blas:
            i = blas[0]
            return "numpy %s: %s %s (%s kernels)" % (np.__version__, i.get("internal_api"),
                                                     i.get("version"), i.get("architecture"))
    except Exception:
        pass
    return "numpy %s" % np.__version__


def _torch_library():
    import torch

    from backends.torch_backend import _torch_blas

    return "torch %s: %s (%s kernels)" % (torch.__version__, _torch_blas(torch),
                                          torch.backends.cpu.get_cpu_capability())


def libraries():
    """{library description: a function making one n x n GEMM call} for what is importable."""
    found = {_numpy_library(): _numpy_gemm}
    try:
        found[_torch_library()] = _torch_gemm
    except ImportError:
        pass
    return found


def measure(n=N, rounds=ROUNDS, calls=CALLS):
    """{"gflops": best of all, "library": whose, "by_library": {library: best GFLOP/s}}."""
    gemms = dict((name, make(n)) for name, make in libraries().items())
    best = dict((name, float("inf")) for name in gemms)
    for gemm in gemms.values():
        gemm()  # warm-up: thread pools, page faults
    for _ in range(rounds):
        for name, gemm in gemms.items():
            for _ in range(calls):
                t0 = time.perf_counter()
                gemm()
                best[name] = min(best[name], time.perf_counter() - t0)
    by_library = dict((name, 2.0 * n ** 3 / s / 1e9) for name, s in best.items())
    top = max(by_library, key=by_library.get)
    return {"gflops": by_library[top], "library": top, "by_library": by_library,
            "method": "float32 %d^3 GEMM, best of %d calls per library, %d interleaved rounds"
                      % (n, rounds * calls, rounds)}


def matmul_peak_gflops(n=N):
    """The best NumPy GEMM alone (what the conformance and microbenchmark helpers use)."""
    return measure(n)["by_library"][_numpy_library()]


if __name__ == "__main__":
    json.dump(measure(), sys.stdout)
