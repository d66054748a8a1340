"""The hand-written tf.estimator loop for seed_convnet: model_fn of tf.compat.v1.layers, an input_fn.

What a reader of the TF Estimator tutorial (cnn_mnist.py) would write: a `model_fn` with the
layers, MomentumOptimizer.minimize(global_step=...), an `input_fn` returning
`tf.data.Dataset.from_tensor_slices((x, y)).batch(128)` over NHWC NumPy arrays, and
`estimator.train(input_fn, hooks=[timer])` with step times from a SessionRunHook (perf_counter_ns in
before_run / after_run). RunConfig as the `tf-estimator` adapter's: no summaries, no step logging,
checkpoints only at session creation and at the end of train().
It is the yardstick of the `tf-estimator` adapter (backends/tf_estimator_backend.py).

    .tox/tf_legacy/bin/python benchmarks/hand_loops/tf_estimator_loop.py
    PYTHONPATH=. .tox/tf_legacy/bin/python benchmarks/hand_loops/tf_estimator_loop.py --vs-adapter

prints one JSON object with the median step in ms. --vs-adapter alternates train() calls of the
hand loop with the adapter's train_epoch (mode "epoch": one estimator.train per call, hook-timed)
and with its train_step (mode "step": harness-timed steps of a live estimator.train), in this one
process. The first --skip steps of every train() call are left out of the medians on every side
(the first session.run of a fresh session optimizes the graph). Also reported: the median over
rounds of each round's adapter/hand ratio of median steps, and (the tightest comparison) a
lockstep run: the three train in threads that take turns step by step, so step k of each side runs
back to back under the same machine load; lockstep_*_over_hand_paired_median is the median of
those per-step ratios.
"""
import argparse
import json
import os
import shutil
import tempfile
import threading
import time

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from tf_layers_loop import load_batches


NEVER = 10 ** 12


def make_hand_estimator(tf, threads, model_dir, lr=0.05, momentum=0.9):
    def model_fn(features, labels, mode):
        layers = tf.compat.v1.layers
        net = layers.conv2d(features["x"], 32, 3, activation=tf.nn.relu)
        net = layers.max_pooling2d(net, 2, 2)
        net = layers.conv2d(net, 64, 3, activation=tf.nn.relu)
        net = layers.max_pooling2d(net, 2, 2)
        net = layers.flatten(net)
        logits = layers.dense(net, 10)
        if mode == tf.estimator.ModeKeys.PREDICT:
            return tf.estimator.EstimatorSpec(mode, predictions={"logits": logits})
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits), name="loss")
        train_op = tf.compat.v1.train.MomentumOptimizer(lr, momentum).minimize(
            loss, global_step=tf.compat.v1.train.get_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    session_config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                              inter_op_parallelism_threads=threads)
    config = tf.estimator.RunConfig(
        model_dir=model_dir, session_config=session_config, save_checkpoints_steps=NEVER,
        save_checkpoints_secs=None, save_summary_steps=None, log_step_count_steps=None,
        keep_checkpoint_max=1)
    return tf.estimator.Estimator(model_fn=model_fn, config=config)


def timer_hook(tf, record):
    class StepTimer(tf.estimator.SessionRunHook):
        def begin(self):
            self.loss = tf.compat.v1.get_default_graph().get_tensor_by_name("loss:0")

        def before_run(self, run_context):
            self.t0 = time.perf_counter_ns()
            return tf.estimator.SessionRunArgs(self.loss)

        def after_run(self, run_context, run_values):
            record(time.perf_counter_ns() - self.t0, float(run_values.results))

    return StepTimer()


class Baton(object):
    """Round-robin turns between training threads: one step at a time, never two at once."""

    def __init__(self, order):
        self.order = list(order)
        self.turn = None
        self.done = set()
        self.cv = threading.Condition()

    def start(self, name):
        with self.cv:
            self.turn = name
            self.cv.notify_all()

    def wait(self, name):
        with self.cv:
            while self.turn != name:
                self.cv.wait()

    def give(self, name):
        """`name` finished a step: the next participant still running gets the turn."""
        with self.cv:
            i = self.order.index(name)
            for k in range(1, len(self.order) + 1):
                nxt = self.order[(i + k) % len(self.order)]
                if nxt not in self.done:
                    self.turn = nxt
                    break
            self.cv.notify_all()

    def finish(self, name):
        with self.cv:
            self.done.add(name)
        if self.turn == name:
            self.give(name)


def lockstep(tf, np, hand, hand_input_fn, adapters, batches, steps, skip):
    """Hand loop and adapters train side by side in threads, taking turns step by step.

    Each side's timed interval holds only its own step (the others wait for their turn outside
    their timed intervals: in the hand hook's before_run before its clock starts, in the epoch
    adapter's on_step after its clock stopped, before the step adapter's train_step call), and
    step k of each side runs back to back, under the same machine load: the ratios are paired.
    """
    from backends.base import clock_ns

    names = ["hand"] + ["adapter_" + a.config.mode for a in adapters]
    baton = Baton(names)
    times = dict((n, []) for n in names)
    errors = []

    class GatedTimer(tf.estimator.SessionRunHook):
        def begin(self):
            self.loss = tf.compat.v1.get_default_graph().get_tensor_by_name("loss:0")

        def before_run(self, run_context):
            baton.wait("hand")
            self.t0 = time.perf_counter_ns()
            return tf.estimator.SessionRunArgs(self.loss)

        def after_run(self, run_context, run_values):
            times["hand"].append(time.perf_counter_ns() - self.t0)
            baton.give("hand")

    def cycled():
        for i in range(steps):
            yield batches[i % len(batches)]

    def guarded(name, fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # reported after the join
                errors.append((name, exc))
            finally:
                baton.finish(name)
        return threading.Thread(target=run, name=name)

    threads = []
    first_done = threading.Event()
    for adapter in adapters:
        name = "adapter_" + adapter.config.mode
        if adapter.config.mode == "epoch":
            def on_step(ns, loss, name=name):
                times[name].append(ns)
                first_done.set()
                baton.give(name)
                baton.wait(name)
            threads.append(guarded(name, lambda a=adapter, f=on_step: a.train_epoch(cycled(), f)))
        else:
            def step_loop(a=adapter, name=name):
                for x, y in cycled():
                    baton.wait(name)
                    t = clock_ns()
                    a.train_step(x, y)
                    times[name].append(clock_ns() - t)
                    baton.give(name)
            threads.append(guarded(name, step_loop))

    def hand_train():
        def input_fn():
            return hand_input_fn().repeat().take(steps)
        hand.train(input_fn, hooks=[GatedTimer()])
    threads.append(guarded("hand", hand_train))

    # the epoch adapter's first step is not gated (its first on_step is): let it run alone first
    epoch_threads = [t for t in threads if t.name == "adapter_epoch"]
    for t in epoch_threads:
        t.start()
    if epoch_threads:
        first_done.wait()
    for t in threads:
        if t not in epoch_threads:
            t.start()
    baton.start("hand")
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("lockstep: %r" % (errors,))
    out = {}
    hand_ms = np.array(times["hand"][skip:steps]) / 1e6
    out["lockstep_steps"] = len(hand_ms)
    out["lockstep_hand_median_step_ms"] = float(np.median(hand_ms))
    for name in names[1:]:
        ms = np.array(times[name][skip:steps]) / 1e6
        out["lockstep_" + name + "_median_step_ms"] = float(np.median(ms))
        out["lockstep_" + name + "_over_hand_paired_median"] = float(np.median(ms / hand_ms))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=30, help="steps per train() call")
    p.add_argument("--skip", type=int, default=3, help="steps left out at the start of each call")
    p.add_argument("--vs-adapter", action="store_true")
    p.add_argument("--lockstep-steps", type=int, default=300,
                   help="with --vs-adapter: steps of the lockstep comparison (0: none)")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import warnings
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed.*")
    import numpy as np
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    batches = load_batches(args.steps, args.batch_size, "float32")
    x_nhwc = np.concatenate([x for x, _ in batches]).reshape(-1, 28, 28, 1)
    y_all = np.concatenate([y for _, y in batches])

    def hand_input_fn():
        ds = tf.data.Dataset.from_tensor_slices(({"x": x_nhwc}, y_all))
        return ds.batch(args.batch_size)

    model_dir = tempfile.mkdtemp(prefix="hand-estimator-")
    hand = make_hand_estimator(tf, args.threads, model_dir)
    times = {"hand": []}
    rounds = {"hand": []}  # per train() call: median step, for the paired ratios
    first = {}

    def run_hand(keep):
        record = []
        t0 = time.perf_counter()
        hand.train(hand_input_fn, hooks=[timer_hook(tf, lambda ns, loss: record.append(ns))])
        call_s = time.perf_counter() - t0
        if keep:
            times["hand"].extend(record[args.skip:])
            rounds["hand"].append(float(np.median(record[args.skip:])))
        return record, call_s

    record, call_s = run_hand(keep=False)
    first["hand"] = {"first_train_call_s": call_s, "first_step_ms": record[0] / 1e6}
    runners = [("hand", run_hand)]

    adapters = []
    if args.vs_adapter:
        from backends.base import TrainConfig, clock_ns
        from backends.tf_estimator_backend import TfEstimatorAdapter
        from models.spec import init_weights, load_spec

        spec = load_spec("seed_convnet")
        w0 = init_weights(spec, 0, "float32")
        for mode in ("epoch", "step"):
            config = TrainConfig(threads=args.threads, batch_size=args.batch_size, mode=mode)
            adapter = TfEstimatorAdapter(spec, config)
            adapter.build()
            adapter.set_weights(w0)
            adapters.append(adapter)
            name = "adapter_" + mode
            times[name] = []
            rounds[name] = []

            def run_adapter(keep, adapter=adapter, name=name, mode=mode):
                record = []
                t0 = time.perf_counter()
                if mode == "epoch":
                    adapter.train_epoch(iter(batches), lambda ns, loss: record.append(ns))
                else:  # the harness's step mode: it times each train_step call itself
                    for x, y in batches:
                        t = clock_ns()
                        adapter.train_step(x, y)
                        record.append(clock_ns() - t)
                call_s = time.perf_counter() - t0
                if keep:
                    kept = record[args.skip:] if mode == "epoch" else record
                    times[name].extend(kept)
                    rounds[name].append(float(np.median(kept)))
                return record, call_s

            record, call_s = run_adapter(keep=False)
            first[name] = {"first_train_call_s": call_s, "first_step_ms": record[0] / 1e6}
            runners.append((name, run_adapter))

    for r in range(args.rounds):
        for name, run in (runners if r % 2 == 0 else runners[::-1]):
            run(keep=True)

    out = {"loop": "tf-estimator", "model": "seed_convnet", "batch_size": args.batch_size,
           "threads": args.threads, "tensorflow": tf.__version__, "first": first}
    if adapters and args.lockstep_steps:
        out.update(lockstep(tf, np, hand, hand_input_fn, adapters, batches, args.lockstep_steps,
                            args.skip))
    for name in times:
        out[name + "_median_step_ms"] = float(np.median(times[name])) / 1e6
        out[name + "_steps"] = len(times[name])
    out["median_step_ms"] = out["hand_median_step_ms"]
    for name in times:
        if name != "hand":
            out[name + "_over_hand"] = out[name + "_median_step_ms"] / out["hand_median_step_ms"]
            out[name + "_over_hand_paired_median"] = float(
                np.median(np.array(rounds[name]) / np.array(rounds["hand"])))
    for adapter in adapters:
        adapter.close()
    shutil.rmtree(model_dir, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
