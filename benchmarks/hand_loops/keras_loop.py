"""The hand-written Keras 3 loops for seed_convnet, on any Keras backend (tensorflow, torch, jax).

What a Keras user writes: a `keras.Sequential` of the layers, `compile(SGD(momentum), sparse
categorical cross-entropy from logits)`, and either
  --mode epoch: `model.fit(x, y, batch_size=128, shuffle=False, epochs=1)` on NHWC NumPy arrays, a
                step timed by a Callback from on_train_batch_begin to on_train_batch_end;
  --mode step:  `model.train_on_batch(x, y)` per batch, timed around the call.
It is the yardstick of the `keras`, `keras-torch` and `keras-jax` adapters
(backends/keras_backend.py): --vs-adapter alternates blocks of steps of the hand loop and of the
adapter in the same mode (step: train_step timed as the harness times it; epoch: train_epoch's
on_step times) in this one process, so both see the same machine state.

    .tox/tf/bin/python benchmarks/hand_loops/keras_loop.py --backend jax --mode epoch
    PYTHONPATH=. .tox/tf/bin/python benchmarks/hand_loops/keras_loop.py --backend torch --vs-adapter

prints one JSON object with the median step in ms (and GFLOP/s from models.spec flops when the repo
is importable).
"""
import argparse
import json
import os
import time

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from common import add_loop_arguments, add_step_summary, interleave, load_batches


ADAPTERS = {"tensorflow": "KerasAdapter", "torch": "KerasTorchAdapter", "jax": "KerasJaxAdapter"}


def set_threads(backend, threads):
    """Before the backend runs anything: what a user pinning the thread count would do."""
    if backend == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    elif hasattr(os, "sched_setaffinity"):  # XLA sizes its CPU pool from the usable cores
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])


class HandLoop(object):
    """`steps(n)` runs n steps (one fit over n batches, or n train_on_batch calls): times in ns."""

    def __init__(self, keras, batches, mode, lr, momentum):
        layers = keras.layers
        self.model = keras.Sequential([
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(10),
        ])
        self.model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.nhwc = [(x.reshape(-1, 28, 28, 1), y) for x, y in batches]  # its own data format
        self.mode = mode
        self.batch_size = len(batches[0][1])
        self.times = []

        class Timer(keras.callbacks.Callback):
            def on_train_batch_begin(inner, batch, logs=None):
                inner.t0 = time.perf_counter_ns()

            def on_train_batch_end(inner, batch, logs=None):
                self.times.append(time.perf_counter_ns() - inner.t0)

        self.timer = Timer()

    def steps(self, n):
        import numpy as np

        self.times = []
        chosen = [self.nhwc[i % len(self.nhwc)] for i in range(n)]
        if self.mode == "epoch":
            x = np.concatenate([b[0] for b in chosen])
            y = np.concatenate([b[1] for b in chosen])
            self.model.fit(x, y, batch_size=self.batch_size, epochs=1, shuffle=False, verbose=0,
                           callbacks=[self.timer])
        else:
            for x, y in chosen:
                t = time.perf_counter_ns()
                self.model.train_on_batch(x, y)
                self.times.append(time.perf_counter_ns() - t)
        return self.times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=sorted(ADAPTERS), default="tensorflow")
    p.add_argument("--mode", choices=("step", "epoch"), default="step")
    add_loop_arguments(p)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = args.backend
    import numpy as np

    set_threads(args.backend, args.threads)
    import keras

    batches = load_batches(args.steps, args.batch_size, "float32")
    runners, first, build = {}, {}, {}
    t0 = time.perf_counter()
    hand = HandLoop(keras, batches, args.mode, args.lr, 0.9)
    build["hand"] = time.perf_counter() - t0
    first["hand"] = hand.steps(1)[0] / 1e9  # tracing / jit compile included
    runners["hand"] = hand.steps
    flops = None
    if args.vs_adapter:
        import backends.keras_backend as kb
        from backends.base import TrainConfig, clock_ns
        from models.spec import init_weights, load_spec

        spec = load_spec("seed_convnet")
        flops = spec.flops()["train"]
        config = TrainConfig(threads=args.threads, batch_size=args.batch_size, lr=args.lr,
                             mode=args.mode)
        t0 = time.perf_counter()
        adapter = getattr(kb, ADAPTERS[args.backend])(spec, config)
        adapter.build()
        adapter.set_weights(init_weights(spec, 0, "float32"))
        build["adapter"] = time.perf_counter() - t0

        def adapter_steps(n):  # as the harness runs it: train_epoch over n batches
            times = []
            chosen = [batches[i % len(batches)] for i in range(n)]
            adapter.train_epoch(iter(chosen), lambda ns, loss: times.append(ns))
            return times

        first["adapter"] = adapter_steps(1)[0] / 1e9
        runners["adapter"] = adapter_steps

    times = interleave(runners, args.warmup, args.rounds, args.steps)
    out = {"loop": "keras_" + args.mode, "keras_backend": args.backend, "model": "seed_convnet",
           "batch_size": args.batch_size, "threads": args.threads, "keras": keras.__version__,
           "jit_compile": bool(hand.model.jit_compile), "steps_each": args.rounds * args.steps}
    add_step_summary(out, list(runners), times, first, build, flops, args.batch_size, args.vs_adapter)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
