"""The measurement loop, run inside a worker: data, order, epochs, clocks. The adapter only trains.

What is timed: each optimizer step, from handing a ready batch to the adapter until its loss is
back as a Python float (the device sync point). Batch slicing, evaluation and logging are outside
the clock. The first step (graph building / compilation) and the next `warmup_steps` are kept in
the record but excluded from the step statistics.

3.6-compatible: CNTK's worker runs this too.
"""
import gc
import math
import time

import numpy as np

from backends.base import Adapter, Unsupported
from bench import inject, memory
from bench.data import Mnist, at_resolution, batches, epoch_order, order_digest
from models.spec import init_weights, weights_digest


class NonFiniteLoss(ArithmeticError):
    """The training loss became NaN or infinite: the run diverged. The backend ends `failed`
    with this reason (its figures would mean nothing); the other backends still run."""


def _check_finite(loss, step, config):
    if not math.isfinite(loss):
        raise NonFiniteLoss("loss became %s at step %d (the training diverged: lr %g, %s); fix: "
                            "lower --lr" % ("nan" if loss != loss else "inf", step, config.lr,
                                            config.optimizer))


def evaluate(adapter, x, y, batch_size, dtype="float32"):
    """Test loss (mean softmax cross-entropy) and accuracy from the adapter's logits; x: uint8
    images, made floats one batch at a time."""
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        batch = Mnist.to_input(x[i:i + batch_size], dtype)
        logits = np.asarray(adapter.predict(batch), dtype=np.float64)
        yb = y[i:i + batch_size]
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        total_loss -= float(logp[np.arange(len(yb)), yb].sum())
        correct += int((logits.argmax(axis=1) == yb).sum())
    return total_loss / len(y), correct / float(len(y))


def _prepare_gc():
    """The same garbage-collector state for every backend before its first step: a full
    collection, then (3.7+) everything alive moved out of the collector's sight, so collections
    during training only walk what training allocates. The collector stays on, as in users' code."""
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    return [s["collections"] for s in gc.get_stats()]


def _gc_report(before):
    """What the collector did from the first step to the end (evaluations included)."""
    after = [s["collections"] for s in gc.get_stats()]
    return {"enabled": gc.isenabled(), "collected_before_training": True,
            "frozen": hasattr(gc, "freeze"),
            "collections_during_training": [b - a for a, b in zip(before, after)]}


def _evaluate_apart(adapter, x, y, config, peaks):
    """An evaluation, its memory peak kept apart from training's."""
    peaks.evaluation_starts()
    try:
        return evaluate(adapter, x, y, config.eval_batch_size, config.dtype)
    finally:
        peaks.evaluation_ends()


def train(adapter, spec, config, data_dir, emit, faults=None, raw_write=None):
    """Build, train and evaluate; return the worker's part of the record.

    faults: the injected faults for this worker (bench/inject.py; default: the unscoped ones);
    raw_write(bytes): the protocol channel without framing, for the garbage fault."""
    rss_start = memory.rss_mb()
    t0 = time.time()
    mnist = Mnist(data_dir)
    n_train = config.limit_train or len(mnist.train_labels)
    n_test = config.limit_test or len(mnist.test_labels)
    # the images stay uint8 (47 MB, not 188 MB of float32) and become floats one batch at a time,
    # outside the timed step, the same way for every backend
    x_train = at_resolution(mnist.train_images[:n_train], spec.input_shape)
    y_train = mnist.train_labels[:n_train].astype(np.int64)
    x_test = at_resolution(mnist.test_images[:n_test], spec.input_shape)
    y_test = mnist.test_labels[:n_test].astype(np.int64)
    data_s = time.time() - t0
    rss_after_data = memory.rss_mb()

    if config.mode == "epoch" and not adapter.epoch_idiom:
        raise Unsupported("training mode 'epoch': %s trains step by step (no epoch-level call "
                          "of its own to time); use --mode step" % adapter.name)
    adapter.check_precision()
    faults = inject.active() if faults is None else faults
    inject.wrap_adapter(adapter, faults, raw_write)
    t0 = time.time()
    adapter.build()
    init = init_weights(spec, config.seed, config.dtype)
    adapter.set_weights(init)
    build_s = time.time() - t0
    rss_after_build = memory.rss_mb()
    peaks = memory.PhasePeaks()

    step_ns, step_loss, epochs, orders = [], [], [], []
    train_wall_s = loop_s = 0.0
    steps_per_epoch = n_train // config.batch_size  # the last partial batch is dropped: equal steps
    if config.max_steps:  # the first steps of the same epoch order: the same batches as a full run
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
    if steps_per_epoch < 1:
        raise ValueError("batch size %d is larger than the %d training examples"
                         % (config.batch_size, n_train))
    eval_every = max(1, int(math.ceil(steps_per_epoch / float(max(config.evals_per_epoch, 1)))))
    curve = []
    # time to accuracy: stop at the first evaluation that reaches the target (their time excluded)
    target = {"accuracy": config.target_accuracy, "status": "not_reached", "train_s": None,
              "steps": None, "epoch": None, "evaluations": 0, "eval_s": 0.0}

    def evaluated(point, seconds):
        curve.append(point)
        target["evaluations"] += 1
        target["eval_s"] += seconds
        if (config.target_accuracy and target["status"] != "reached"
                and point["test_accuracy"] >= config.target_accuracy):
            target.update(status="reached", train_s=point["train_s"], steps=point["step"],
                          epoch=point["step"] / float(steps_per_epoch))

    for epoch in range(config.epochs):
        order = epoch_order(n_train, config.seed, epoch)
        orders.append(order)
        index_batches = batches(order, config.batch_size, drop_last=True)[:steps_per_epoch]
        if epoch == 0:  # before the training clock starts
            gc_before = _prepare_gc()
            peaks.training_starts()
        # loop0/loop1: the first step's start, the last step's end; paused_by_loop1: evaluation
        # time inside that span. The span is the framework's loop without its one-off setup and
        # teardown (Keras fit's data adapter, the Estimator's graph and session): epoch mode's figure
        state = {"wall0": time.perf_counter(), "paused": 0.0, "loop0": None, "loop1": None,
                 "paused_by_loop1": 0.0}

        def on_step(ns, loss):
            now = time.perf_counter()
            if state["loop0"] is None:
                state["loop0"] = now - ns / 1e9
            state["loop1"], state["paused_by_loop1"] = now, state["paused"]
            _check_finite(float(loss), len(step_ns) + 1, config)
            step_ns.append(int(ns))
            step_loss.append(float(loss))
            done = len(step_ns) - epoch * steps_per_epoch
            if done % 20 == 0 or done == steps_per_epoch:
                emit({"type": "progress", "epoch": epoch + 1, "epochs": config.epochs,
                      "step": done, "steps": steps_per_epoch, "loss": float(loss)})
            if done % eval_every == 0 and done < steps_per_epoch:
                # mid-epoch test accuracy for the accuracy-vs-time curve, in epoch mode from inside
                # the framework's epoch call (its callback/hook); its time is not training
                p0 = time.perf_counter()
                test_loss, test_acc = _evaluate_apart(adapter, x_test, y_test, config, peaks)
                paused = time.perf_counter() - p0
                state["paused"] += paused
                elapsed = train_wall_s + time.perf_counter() - state["wall0"] - state["paused"]
                evaluated({"epoch": epoch + 1, "step": len(step_ns), "train_s": elapsed,
                           "test_accuracy": test_acc, "test_loss": test_loss}, paused)

        def feed():
            for idx in index_batches:
                if target["status"] == "reached":  # step mode: the epoch ends here
                    return
                yield Mnist.to_input(x_train[idx], config.dtype), y_train[idx]

        if config.mode == "step":  # the harness's own loop, timing each train_step
            Adapter.train_epoch(adapter, feed(), on_step)
        else:  # the framework's own epoch loop (Keras fit, Estimator.train), timed by callbacks
            adapter.train_epoch(feed(), on_step)
        epoch_train_s = time.perf_counter() - state["wall0"] - state["paused"]
        train_wall_s += epoch_train_s
        if state["loop0"] is not None:
            loop_s += state["loop1"] - state["loop0"] - state["paused_by_loop1"]
        first = epoch * steps_per_epoch
        if target["status"] == "reached":  # mid-epoch: that evaluation is the epoch's last
            test_loss, test_acc, eval_s = curve[-1]["test_loss"], curve[-1]["test_accuracy"], 0.0
        else:
            e0 = time.perf_counter()
            test_loss, test_acc = _evaluate_apart(adapter, x_test, y_test, config, peaks)
            eval_s = time.perf_counter() - e0
            if len(step_ns) != (epoch + 1) * steps_per_epoch:
                raise RuntimeError("adapter reported %d steps in epoch %d, expected %d"
                                   % (len(step_ns) - first, epoch + 1, steps_per_epoch))
            evaluated({"epoch": epoch + 1, "step": len(step_ns), "train_s": train_wall_s,
                       "test_accuracy": test_acc, "test_loss": test_loss}, eval_s)
        epochs.append({"epoch": epoch + 1,
                       "train_loss": float(np.mean(step_loss[first:])),
                       "test_loss": test_loss, "test_accuracy": test_acc,
                       "train_s": epoch_train_s, "elapsed_s": train_wall_s, "eval_s": eval_s})
        emit({"type": "epoch", "epoch": epoch + 1, "test_accuracy": test_acc,
              "test_loss": test_loss, "train_s": epoch_train_s})
        if target["status"] == "reached":
            break

    peak_device = adapter.device_peak_bytes()
    part = {
        "gc": _gc_report(gc_before),
        "timing": {
            "step_ns": step_ns,
            "first_step_ns": step_ns[0],
            "warmup_steps": config.warmup_steps,
            "steps_per_epoch": steps_per_epoch,
            "build_s": build_s,
            "data_load_s": data_s,
            "train_s": train_wall_s,
            "loop_s": loop_s,
        },
        "step_loss": step_loss,
        "epochs": epochs,
        "curve": curve,
        "memory": {
            "peak_rss_mb": peaks.lifetime_mb(),
            "rss_start_mb": rss_start,
            "rss_after_data_mb": rss_after_data,
            "rss_after_build_mb": rss_after_build,
            "train_peak_rss_mb": peaks.train_mb,
            "eval_peak_rss_mb": peaks.eval_mb,
            "training_mb": (peaks.train_mb - rss_after_build
                            if peaks.train_mb is not None and rss_after_build is not None else None),
            "device_peak_mb": None if peak_device is None else peak_device / 2.0 ** 20,
        },
        "data": {
            "dir": mnist.directory, "train_examples": n_train, "test_examples": n_test,
            "order_digest": order_digest(orders), "init_weights_digest": weights_digest(init),
            "batches_per_epoch": steps_per_epoch, "dropped_per_epoch": n_train % config.batch_size,
        },
    }
    if config.target_accuracy:
        part["target"] = target
    return part


def conform(adapter_factory, cases, arrays, emit):
    """Sameness probes for the conformance suite: the parent compares them with the oracle.

    For each case (a spec dict + config, its arrays under case["key"]), with the weights, batch and
    batches the parent sent: parameter names and shapes, a weights round trip, logits, one train
    step (loss + updated weights) from a fresh adapter, and the per-step loss of a trajectory from
    another fresh one, with its weights after the steps in case["checkpoints"].
    """
    from backends.base import Unsupported

    out = {}
    for i, case in enumerate(cases):
        key = case.get("key") or "c%d/" % i
        weights = dict((k[len(key) + 2:], v) for k, v in arrays.items() if k.startswith(key + "w/"))
        x, y = arrays[key + "x"], arrays[key + "y"]
        a = adapter_factory(case)
        try:
            a.check_precision()
            a.build()
        except Unsupported as exc:  # this model/config only: the other cases still run
            out[key + "unsupported"] = np.array(str(exc) or "not implemented")
            continue
        a.set_weights(weights)
        for name, value in a.get_weights().items():
            out[key + "rt/" + name] = np.asarray(value)  # a view of a live tensor would show
        out[key + "logits"] = np.asarray(a.predict(x))
        out[key + "loss1"] = np.array([a.train_step(x, y)])
        for name, value in a.get_weights().items():
            out[key + "step1/" + name] = np.asarray(value)
        a.close()
        if key + "xs" in arrays:
            b = adapter_factory(case)
            b.build()
            b.set_weights(weights)
            xs, ys = arrays[key + "xs"], arrays[key + "ys"]
            keep, losses = set(case.get("checkpoints", ())), []
            for s in range(len(xs)):
                losses.append(b.train_step(xs[s], ys[s]))
                if s + 1 in keep:
                    for name, value in b.get_weights().items():
                        out["%stw/%d/%s" % (key, s + 1, name)] = np.asarray(value)
            out[key + "traj"] = np.array(losses)
            b.close()
        emit({"type": "progress", "case": i + 1, "cases": len(cases)})
    return out
