"""What every hand-written loop shares: the same MNIST batches the suite trains on.

Uses the project's own loader (checksum-verified, same directory resolution as the CLI), so a hand
loop and its adapter see the same data. Python 3.6-compatible (the CNTK loop imports it).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def load_batches(n_batches, batch_size, dtype):
    """The first n_batches * batch_size MNIST training images (NCHW, [0, 1]) and labels."""
    import numpy as np
    from bench.data import Mnist

    n = n_batches * batch_size
    m = Mnist()
    x = Mnist.to_input(m.train_images[:n], dtype)
    y = m.train_labels[:n].astype(np.int64)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def add_step_summary(out, names, times_ns, first_s, build_s, flops, batch_size, vs_adapter):
    """Per side: median step ms, first-step and build seconds, GFLOP/s; then the adapter/hand ratio."""
    import numpy as np

    for name in names:
        med = float(np.median(times_ns[name])) / 1e6
        out[name + "_median_step_ms"] = med
        out[name + "_first_step_s"] = first_s[name]  # tracing / compilation included
        out[name + "_build_s"] = build_s[name]
        if flops:
            out[name + "_gflops"] = flops * batch_size / (med * 1e-3) / 1e9
    out["median_step_ms"] = out["hand_median_step_ms"]
    if vs_adapter:
        out["adapter_over_hand"] = out["adapter_median_step_ms"] / out["hand_median_step_ms"]
    return out
