"""The hand-written TF 1.x graph loop (tf.compat.v1.layers + Session + feed_dict) for seed_convnet.

What a 2018 post's reader would write: NHWC placeholders, the tutorial's layers, MomentumOptimizer,
one `session.run([train_op, loss], feed_dict)` per step, data already in NHWC NumPy arrays.
It is the yardstick of the `tf-layers` adapter (backends/tf_layers_backend.py).

    .tox/tf_legacy/bin/python benchmarks/hand_loops/tf_layers_loop.py              # the hand loop alone
    PYTHONPATH=. .tox/tf_legacy/bin/python benchmarks/hand_loops/tf_layers_loop.py --vs-adapter

prints one JSON object with the median step in ms. --vs-adapter alternates small blocks of steps of
the hand loop and of the adapter (timed as the harness times train_step) in this one process, so
both see the same machine state, and also reports the median of the block-by-block ratios.
"""
import argparse
import json
import os
import time

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from common import load_batches


class HandLoop(object):
    def __init__(self, tf, threads, lr=0.05, momentum=0.9, dtype="float32"):
        graph = tf.Graph()
        with graph.as_default():
            self.x = tf.compat.v1.placeholder(dtype, [None, 28, 28, 1])
            self.y = tf.compat.v1.placeholder(tf.int64, [None])
            layers = tf.compat.v1.layers
            net = layers.conv2d(self.x, 32, 3, activation=tf.nn.relu)
            net = layers.max_pooling2d(net, 2, 2)
            net = layers.conv2d(net, 64, 3, activation=tf.nn.relu)
            net = layers.max_pooling2d(net, 2, 2)
            net = layers.flatten(net)
            logits = layers.dense(net, 10)
            self.loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=self.y, logits=logits))
            self.train_op = tf.compat.v1.train.MomentumOptimizer(lr, momentum).minimize(self.loss)
            init = tf.compat.v1.global_variables_initializer()
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                          inter_op_parallelism_threads=threads)
        self.session = tf.compat.v1.Session(graph=graph, config=config)
        self.session.run(init)

    def step(self, x_nhwc, y):
        _, loss = self.session.run([self.train_op, self.loss], {self.x: x_nhwc, self.y: y})
        return float(loss)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--steps", type=int, default=2, help="steps per block (small blocks: both sides "
                   "see the same machine load)")
    p.add_argument("--batches", type=int, default=20, help="distinct batches, cycled")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--vs-adapter", action="store_true")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed.*")
    import numpy as np
    import tensorflow as tf

    batches = load_batches(args.batches, args.batch_size, "float32")
    nhwc = [(x.reshape(-1, 28, 28, 1), y) for x, y in batches]  # the hand loop's own data format

    runners = {}
    first = {}
    t0 = time.perf_counter()
    hand = HandLoop(tf, args.threads)
    hand.step(*nhwc[0])
    first["hand"] = time.perf_counter() - t0
    runners["hand"] = lambda i: hand.step(*nhwc[i])
    if args.vs_adapter:
        from backends.base import TrainConfig, clock_ns  # noqa: F401
        from backends.tf_layers_backend import TfLayersAdapter
        from models.spec import init_weights, load_spec

        spec = load_spec("seed_convnet")
        config = TrainConfig(threads=args.threads, batch_size=args.batch_size)
        t0 = time.perf_counter()
        adapter = TfLayersAdapter(spec, config)
        adapter.build()
        adapter.set_weights(init_weights(spec, 0, "float32"))
        adapter.train_step(*batches[0])
        first["adapter"] = time.perf_counter() - t0
        runners["adapter"] = lambda i: adapter.train_step(*batches[i])

    for name, run in runners.items():  # warm-up
        for i in range(args.warmup):
            run(i % len(batches))
    times = dict((name, []) for name in runners)
    names = list(runners)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            run = runners[name]
            for i in range(args.steps):
                t = time.perf_counter_ns()
                run((r * args.steps + i) % len(batches))
                times[name].append(time.perf_counter_ns() - t)
    out = {"loop": "tf-layers", "model": "seed_convnet", "batch_size": args.batch_size,
           "threads": args.threads, "tensorflow": tf.__version__,
           "steps_each": args.rounds * args.steps}
    for name in names:
        out[name + "_median_step_ms"] = float(np.median(times[name])) / 1e6
        out[name + "_first_step_s"] = first[name]
    out["median_step_ms"] = out["hand_median_step_ms"]
    if args.vs_adapter:
        out["adapter_over_hand"] = out["adapter_median_step_ms"] / out["hand_median_step_ms"]
        # paired: block by block, the two sides ran back to back
        a = np.array(times["adapter"]).reshape(args.rounds, -1).sum(axis=1)
        h = np.array(times["hand"]).reshape(args.rounds, -1).sum(axis=1)
        out["adapter_over_hand_paired_median"] = float(np.median(a / h))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
