"""TensorFlow Estimator: `tf.estimator.Estimator` with a `model_fn` of tf.compat.v1.layers.

The idiom of the TF tutorial net of the 2018 posts (cnn_mnist.py), on tensorflow-cpu 2.15.1 (the
last release that ships tf.estimator; tox env `tf_legacy`). The network (the LAYERS table), the
layout conversions and the optimizer conversions are those of backends/tf_layers_backend.py (read
its docstring): this adapter is a TfGraphAdapter whose model_fn calls its `network` and `minimize`.
This module adds the Estimator machinery:

  * input: in epoch mode, an `input_fn` returning `tf.data.Dataset.from_generator` over the
    harness's batches, in the harness's order (no shuffle, no repeat, no prefetch: one batch per
    step); in step mode, an `input_fn` returning placeholders that the driving hook feeds with the
    batch of each train_step call (see below);
  * step times: a `SessionRunHook`, perf_counter_ns in before_run and after_run, the loss fetched
    through `SessionRunArgs`. It is the first hook with per-step work, so its interval holds the
    other hooks' before_run work (NanTensorHook, CheckpointSaverHook's fetch of the global step) and
    the whole `session.run`, input pipeline included;
  * checkpoints: Estimator state lives in checkpoints (the session is rebuilt from the latest one on
    every train/predict call). RunConfig sets no summaries, no step logging and
    `save_checkpoints_steps` far beyond any run, so the CheckpointSaverHook writes only when the
    session is created and when train() ends, never inside the timed steps. (With no saving at all
    the Estimator would throw the trained weights away when train() returns.) model_dir is a
    temporary directory removed by close();
  * set_weights writes a complete checkpoint (weights in TF layout, fresh optimizer slots, global
    step 0) built from the same model_fn; get_weights reads `estimator.get_variable_value` (the
    bindings' handles are the TF variable names).

With TrainConfig.mode "epoch", train_epoch is the idiom: ONE `estimator.train(input_fn)` call over
the epoch's batches, step times from the hook (the generator's batch slicing and its py_func hop
inside them, as in any from_generator pipeline); a mid-epoch evaluation (the
harness's on_step, called from the hook's after_run) first has the hook write a checkpoint with the
Estimator's own saver in the running session, then Estimator.predict reads it, as the Estimator's
train-and-evaluate loop reads its checkpoints; both are outside the step times and the epoch's
training time. With mode "step" (the harness-timed train_step
loop, the default, also what the conformance checks call) train_step keeps one `estimator.train`
call running in a background thread and drives it one step per call: its hook feeds the batch
through SessionRunArgs(feed_dict=...) (the Estimator's FeedFnHook mechanism), after_run returns the
loss and waits for the next batch. So a step is one MonitoredSession step of a live training run
(all Estimator hooks included), not a graph rebuild, and no Python runs inside it.
predict/get_weights during a live run first make it write a checkpoint between two steps (the
Estimator reads weights only from checkpoints); set_weights, train_epoch and close end it (train()
returns and saves its final checkpoint).
"""
import os
import queue
import shutil
import tempfile
import threading

import numpy as np

from backends.base import Adapter, clock_ns
from backends.tf_layers_backend import (OPTIMIZER_NAMES, TfGraphAdapter, mean_cross_entropy,
                                        tf_environment)

#: save_checkpoints_steps: larger than any run, so checkpoints are written only at session
#: creation and at the end of train()
NEVER = 10 ** 12


class TfEstimatorAdapter(TfGraphAdapter):
    name = "tf-estimator"
    epoch_idiom = "Estimator.train"

    def build(self):
        self.prepare()
        tf, cfg = self.tf, self.config
        self.model_dir = tempfile.mkdtemp(prefix="convbench-estimator-")
        if self.device != "/cpu:0":
            self.config_proto.allow_soft_placement = True
        run_config = tf.estimator.RunConfig(
            model_dir=self.model_dir, tf_random_seed=cfg.seed, session_config=self.config_proto,
            save_checkpoints_steps=NEVER, save_checkpoints_secs=None, save_summary_steps=None,
            log_step_count_steps=None, keep_checkpoint_max=1)
        self.estimator = tf.estimator.Estimator(model_fn=self._model_fn, config=run_config)
        self.live = None
        self.epoch_timer = None  # the hook of a running epoch-mode train() call
        self._checkpoint_graph()  # runs the model_fn once: an Unsupported optimizer shows here

    # -- the Estimator pieces -------------------------------------------------------------------
    def _model_fn(self, features, labels, mode):
        tf = self.tf
        keys = tf.estimator.ModeKeys
        with tf.device(self.device):
            logits = self.network(features["x"], training=(mode == keys.TRAIN))
            if mode == keys.PREDICT:
                return tf.estimator.EstimatorSpec(mode, predictions={"logits": logits})
            loss = mean_cross_entropy(tf, labels, logits)
            if mode == keys.EVAL:
                accuracy = tf.compat.v1.metrics.accuracy(labels, tf.argmax(logits, axis=1))
                return tf.estimator.EstimatorSpec(mode, loss=loss,
                                                  eval_metric_ops={"accuracy": accuracy})
            global_step = tf.compat.v1.train.get_global_step()
            train_op = self.minimize(loss, global_step=global_step)
            return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)

    def _input_fn(self, generator):
        tf = self.tf
        c, h, w = self.spec.input_shape
        signature = ({"x": tf.TensorSpec([None, c, h, w], self.dtype)},
                     tf.TensorSpec([None], tf.int64))

        def input_fn():
            return tf.data.Dataset.from_generator(generator, output_signature=signature)
        return input_fn

    def _feed(self, x, y):
        return ({"x": np.asarray(x, dtype=self.config.dtype)}, np.asarray(y, dtype=np.int64))

    def _hook(self, callback):
        return _StepTimer(self.tf, callback)

    # -- training -------------------------------------------------------------------------------
    def train_epoch(self, batches, on_step):
        if self.config.mode != "epoch":  # "step": the harness-timed train_step loop
            return Adapter.train_epoch(self, batches, on_step)
        self._end_live()

        def generator():
            for x, y in batches:
                yield self._feed(x, y)

        self.epoch_timer = self._hook(on_step)
        try:
            self.estimator.train(self._input_fn(generator), hooks=[self.epoch_timer])
        finally:
            self.epoch_timer = None

    def train_step(self, x, y):
        if self.live is None or not self.live.alive():
            self.live = _LiveTrain(self)
        return self.live.step(self._feed(x, y))

    def _end_live(self):
        if self.live is not None:
            live, self.live = self.live, None
            live.finish()

    def _checkpoint_now(self):
        """Make the latest checkpoint hold the current state: the live run saves between steps;
        inside an epoch-mode train() call (on_step evaluating mid-epoch) its hook saves."""
        if self.live is not None:
            self.live.save()
        if self.epoch_timer is not None:
            self.epoch_timer.save(self.model_dir)

    # -- weights --------------------------------------------------------------------------------
    def _checkpoint_graph(self):
        """A training graph of the model_fn (same variable names as the Estimator's)."""
        tf = self.tf
        graph = tf.compat.v1.Graph()
        with graph.as_default():
            tf.compat.v1.train.get_or_create_global_step()
            c, h, w = self.spec.input_shape
            x = tf.compat.v1.placeholder(self.dtype, [None, c, h, w])
            y = tf.compat.v1.placeholder(tf.int64, [None])
            self._model_fn({"x": x}, y, tf.estimator.ModeKeys.TRAIN)
        return graph

    def set_weights(self, params):
        self._end_live()
        self.pending = {}  # TF variable name -> value in TF layout, filled by write_param
        self.bindings.set_all(params)
        self._write_checkpoint(self.pending)

    def write_param(self, handle, value):
        self.pending[handle] = value

    def _write_checkpoint(self, values):
        """The model_dir's only checkpoint: `values`, fresh optimizer state, global step 0."""
        tf = self.tf
        graph = self._checkpoint_graph()
        with graph.as_default():
            variables = dict((v.op.name, v) for v in tf.compat.v1.global_variables())
            feed, assigns = {}, []
            for var_name, value in values.items():
                var = variables[var_name]
                ph = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape)
                feed[ph] = value
                assigns.append(var.assign(ph, read_value=False))
            init = tf.compat.v1.global_variables_initializer()
            saver = tf.compat.v1.train.Saver(sharded=True, save_relative_paths=True)
            with tf.compat.v1.Session(graph=graph, config=self.config_proto) as session:
                session.run(init)  # fresh optimizer state and global step 0
                session.run(assigns, feed)
                _empty_dir(self.model_dir)
                saver.save(session, os.path.join(self.model_dir, "model.ckpt"), global_step=0)

    def get_weights(self):
        self._checkpoint_now()
        return self.bindings.get_all()

    def read_param(self, handle):
        return self.estimator.get_variable_value(handle)

    def predict(self, x):
        self._checkpoint_now()
        tf = self.tf
        x = np.asarray(x, dtype=self.config.dtype)
        step = max(1, self.config.eval_batch_size)
        c, h, w = self.spec.input_shape

        def generator():
            for i in range(0, len(x), step):
                yield {"x": x[i:i + step]}

        def input_fn():
            return tf.data.Dataset.from_generator(
                generator, output_signature={"x": tf.TensorSpec([None, c, h, w], self.dtype)})

        chunks = [p["logits"] for p in self.estimator.predict(
            input_fn, predict_keys="logits", yield_single_examples=False)]
        return np.concatenate(chunks, axis=0)

    def environment(self):
        info = tf_environment(self.tf, self.config.threads, self.config_proto,
                              "tf.estimator.Estimator(model_fn of tf.compat.v1.layers), "
                              "input_fn = Dataset.from_generator, step times from a SessionRunHook")
        info["device_name"] = self.device
        info["optimizer"] = OPTIMIZER_NAMES.get(self.config.optimizer, self.config.optimizer)
        info["checkpoints"] = "at session creation and at the end of each train() call only"
        return info

    def close(self):
        self._end_live()
        model_dir = getattr(self, "model_dir", None)
        if model_dir:
            shutil.rmtree(model_dir, ignore_errors=True)
            self.model_dir = None


def _empty_dir(path):
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.remove(full)


def _StepTimer(tf, callback):
    """A SessionRunHook: callback(step_ns, loss) once per training step. While the callback
    runs, save(model_dir) writes a checkpoint of the current state with the Estimator's own saver
    (what a mid-epoch evaluation reads: Estimator.predict loads the latest checkpoint)."""

    class StepTimer(tf.estimator.SessionRunHook):
        def begin(self):
            self.loss = tf.compat.v1.get_default_graph().get_tensor_by_name("loss:0")
            self.global_step = tf.compat.v1.train.get_global_step()
            self.session = None

        def after_create_session(self, session, coord):
            self.saver = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SAVERS)[0]

        def before_run(self, run_context):
            self.t0 = clock_ns()
            return tf.estimator.SessionRunArgs(self.loss)

        def after_run(self, run_context, run_values):
            t1 = clock_ns()
            self.session = run_context.session
            try:
                callback(t1 - self.t0, float(run_values.results))
            finally:
                self.session = None

        def save(self, model_dir):
            if self.session is None:
                raise RuntimeError("a checkpoint can be written only between two training steps")
            self.saver.save(self.session, os.path.join(model_dir, "model.ckpt"),
                            global_step=self.session.run(self.global_step))

    return StepTimer()


class _LiveTrain(object):
    """One estimator.train call running in a thread, driven one step at a time by its hook.

    Its input_fn returns placeholders, and the hook feeds each step the batch the caller handed
    over (SessionRunArgs feed_dict, the Estimator's FeedFnHook mechanism): the step is one
    MonitoredSession step of a live training run, all Estimator hooks included, with no Python
    generator in the input pipeline (tf.data's from_generator costs ~0.6 ms a step here, 5% of
    seed_convnet's). Between two steps the hook waits for the caller's next command: a batch, "save"
    (write a checkpoint of the current state with the Estimator's own saver, so predict/get_weights
    can read it while training goes on), or the end (it asks the session to stop; train() returns
    and saves its final checkpoint).
    """

    def __init__(self, adapter):
        tf = adapter.tf
        self.inbox = queue.Queue()    # commands from the caller
        self.outbox = queue.Queue()   # results to the caller
        self.failure = None
        self.dirty = False            # steps since the last checkpoint
        live = self
        c, h, w = adapter.spec.input_shape
        inputs = {}

        def input_fn():
            inputs["x"] = tf.compat.v1.placeholder(adapter.dtype, [None, c, h, w], name="x")
            inputs["y"] = tf.compat.v1.placeholder(tf.int64, [None], name="y")
            return {"x": inputs["x"]}, inputs["y"]

        class LiveHook(tf.estimator.SessionRunHook):
            def begin(self):
                graph = tf.compat.v1.get_default_graph()
                self.loss = graph.get_tensor_by_name("loss:0")
                self.global_step = tf.compat.v1.train.get_global_step()

            def after_create_session(self, session, coord):
                savers = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SAVERS)
                self.saver = savers[0]  # the Estimator's (built by now)
                self.batch = self._next_batch(session)
                if self.batch is None:
                    coord.request_stop()

            def _next_batch(self, session):
                """The caller's next batch, checkpoints asked for meanwhile written; None: the end."""
                while True:
                    command, payload = live.inbox.get()
                    if command != "save":
                        return payload if command == "batch" else None
                    self.saver.save(session, os.path.join(adapter.model_dir, "model.ckpt"),
                                    global_step=session.run(self.global_step))
                    live.outbox.put(("saved", None))

            def before_run(self, run_context):
                (features, labels), self.batch = self.batch, None
                return tf.estimator.SessionRunArgs(
                    self.loss, feed_dict={inputs["x"]: features["x"], inputs["y"]: labels})

            def after_run(self, run_context, run_values):
                live.outbox.put(("loss", float(run_values.results)))
                self.batch = self._next_batch(run_context.session)
                if self.batch is None:
                    run_context.request_stop()

        def run():
            try:
                adapter.estimator.train(input_fn, hooks=[LiveHook()])
            except BaseException as exc:  # handed to the caller of step()/save()/finish()
                self.failure = exc
            finally:
                self.outbox.put(("ended", None))

        self.thread = threading.Thread(target=run, name="estimator-train", daemon=True)
        self.thread.start()

    def alive(self):
        return self.thread.is_alive()

    def _call(self, command, payload, expect):
        self.inbox.put((command, payload))
        kind, value = self.outbox.get()
        if kind != expect:
            self.thread.join()
            raise RuntimeError("estimator.train ended unexpectedly: %r" % (self.failure,)) \
                from self.failure
        return value

    def step(self, batch):
        self.dirty = True
        return self._call("batch", batch, "loss")

    def save(self):
        if self.dirty:
            self._call("save", None, "saved")
            self.dirty = False

    def finish(self):
        self.inbox.put(("end", None))
        self.thread.join()
        if self.failure is not None:
            raise self.failure
