"""The hand-written TF2 custom training loop for seed_convnet, as TensorFlow's own guide writes it.

"Writing a training loop from scratch": Keras layers for the model, a Keras optimizer and loss,
one `@tf.function` train step with a `GradientTape`, and `for x, y in train_dataset` over a
`tf.data.Dataset.from_tensor_slices(...).batch(128)` of NHWC arrays. A step is timed from fetching
its batch to `float(loss)` (the sync point). It is the yardstick of the `tf` and `tf-xla` adapters
(backends/tf_backend.py), which build the same network from the spec in tf.nn ops.

    .tox/tf/bin/python benchmarks/hand_loops/tf_function_loop.py                 # the hand loop alone
    PYTHONPATH=. .tox/tf/bin/python benchmarks/hand_loops/tf_function_loop.py --vs-adapter [--xla]

prints one JSON object with the median step in ms (and GFLOP/s from models.spec flops when the repo
is importable). --vs-adapter alternates blocks of steps of the hand loop and of the adapter (timed
as the harness times train_step) in this one process, so both see the same machine state; --xla
compiles both steps with XLA (jit_compile=True) and compares with the `tf-xla` adapter.
"""
import argparse
import json
import os
import time

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from common import adapter_step_runner, add_loop_arguments, add_step_summary, interleave, load_batches


class HandLoop(object):
    """The guide's loop; `steps(n)` runs n steps and returns their times in ns."""

    def __init__(self, tf, keras, x_nhwc, y, batch_size, lr, momentum, xla):
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
        self.optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=momentum)
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn

        @tf.function(jit_compile=xla)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                logits = model(x, training=True)
                loss = loss_fn(y, logits)
            grads = tape.gradient(loss, model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights))
            return loss

        self.train_step = train_step
        self.dataset = tf.data.Dataset.from_tensor_slices((x_nhwc, y)).batch(batch_size)
        self.iterator = iter(self.dataset.repeat())

    def steps(self, n):
        times = []
        for _ in range(n):
            t = time.perf_counter_ns()
            x, y = next(self.iterator)
            float(self.train_step(x, y))
            times.append(time.perf_counter_ns() - t)
        return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_loop_arguments(p)
    p.add_argument("--xla", action="store_true", help="jit_compile=True (vs the tf-xla adapter)")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    batches = load_batches(args.steps, args.batch_size, "float32")
    x_nhwc = np.concatenate([x for x, _ in batches]).reshape(-1, 28, 28, 1)  # its own data format
    y_all = np.concatenate([y for _, y in batches])

    runners, first, build = {}, {}, {}
    t0 = time.perf_counter()
    hand = HandLoop(tf, keras, x_nhwc, y_all, args.batch_size, args.lr, 0.9, args.xla)
    build["hand"] = time.perf_counter() - t0
    first["hand"] = hand.steps(1)[0] / 1e9
    runners["hand"] = hand.steps
    flops = None
    if args.vs_adapter:
        from backends.base import TrainConfig, clock_ns
        from backends.tf_backend import TfAdapter, TfXlaAdapter
        from models.spec import init_weights, load_spec

        spec = load_spec("seed_convnet")
        flops = spec.flops()["train"]
        config = TrainConfig(threads=args.threads, batch_size=args.batch_size, lr=args.lr)
        t0 = time.perf_counter()
        adapter = (TfXlaAdapter if args.xla else TfAdapter)(spec, config)
        adapter.build()
        adapter.set_weights(init_weights(spec, 0, "float32"))
        build["adapter"] = time.perf_counter() - t0
        t0 = clock_ns()
        adapter.train_step(*batches[0])
        first["adapter"] = (clock_ns() - t0) / 1e9

        runners["adapter"] = adapter_step_runner(adapter, batches)

    times = interleave(runners, args.warmup, args.rounds, args.steps)
    out = {"loop": "tf_function" + ("_xla" if args.xla else ""), "model": "seed_convnet",
           "batch_size": args.batch_size, "threads": args.threads, "tensorflow": tf.__version__,
           "keras": keras.__version__, "jit_compile": bool(args.xla),
           "steps_each": args.rounds * args.steps}
    add_step_summary(out, list(runners), times, first, build, flops, args.batch_size, args.vs_adapter)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
