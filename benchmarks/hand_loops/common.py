"""What every hand-written loop shares: the same MNIST batches the suite trains on.

Uses the project's own loader (checksum-verified, same directory resolution as the CLI), so a hand
loop and its adapter see the same data. Python 3.6-compatible (the CNTK loop imports it).
"""
import os
import sys

# the one place the hand loops (and benchmarks/tf_op_profile.py), run as scripts, put the repo on
# sys.path: importing this module is enough
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


def adapter_step_runner(adapter, batches):
    """steps(n) -> per-step ns of n adapter.train_step calls, timed as the harness times them."""
    from backends.base import clock_ns

    def steps(n):
        times = []
        for i in range(n):
            x, y = batches[i % len(batches)]
            t = clock_ns()
            adapter.train_step(x, y)
            times.append(clock_ns() - t)
        return times
    return steps


def interleave(runners, warmup, rounds, steps):
    """Warm every runner up, then alternate blocks of `steps` steps for `rounds` rounds (the order
    flips each round), so each side sees the same machine state; returns {name: [step ns]}."""
    for run in runners.values():
        run(warmup)
    times = dict((name, []) for name in runners)
    names = list(runners)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].extend(runners[name](steps))
    return times


def add_loop_arguments(p, rounds=10, steps=20):
    """The options every interleaved hand loop takes."""
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--steps", type=int, default=steps, help="steps per block")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--vs-adapter", action="store_true")
