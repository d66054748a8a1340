"""Keras 3: the spec as a `keras.Sequential` (channels_last), trained the Keras way, on any of
Keras' backends: `keras` (TensorFlow), `keras-torch` and `keras-jax`.

The Keras backend is a process-wide choice made when keras is first imported: the registry sets
KERAS_BACKEND in the worker's environment, and build() refuses to run when keras was already
imported with another backend.

Training modes (TrainConfig.mode):
- "step": `model.train_on_batch` per harness step (timed by the harness, the default
  Adapter.train_epoch). train_on_batch resets the metrics first, so its loss is this batch's loss
  (the loss tracker's sum/count of one batch: exact for power-of-two batch sizes, within one
  rounding otherwise).
- "epoch": `model.fit` over the harness's batches, in the harness's order: they are concatenated
  into NHWC arrays and fit(x, y, batch_size=len(first batch), shuffle=False, epochs=1, verbose=0)
  slices them back into exactly those batches (the idiom, and as fast as a hand-written fit; batches
  of unequal sizes go through a generator instead). Per-step times come from a Callback
  (on_train_batch_begin/end with the suite's clock). fit's `logs["loss"]` is a running mean over
  the epoch, NOT the batch loss, so the model is compiled with one extra metric, `batch_loss`,
  which stores (assigns, not averages) the compiled loss function's value on this step's logits:
  that value is what on_step receives. It costs one more softmax cross-entropy over (batch, 10)
  logits per step. The concatenation happens before fit, outside the per-step times (inside the
  epoch's wall time).

Sameness with the suite (PyTorch's definitions):
- layout: data NHWC, conv kernels HWIO (Keras' own); the first dense kernel after a flatten gets
  its rows permuted at the boundary (TF flattens (H, W, C), the canonical order is (C, H, W)):
  `backends.tf_backend.TfLayout`;
- padding: spec 'same' is Keras' 'same'; explicit padding is a ZeroPadding2D before a 'valid' conv;
- optimizers: sgd and momentum are keras.optimizers.SGD (Keras keeps m = mu*m - lr*g, p += m:
  the same iterates as v = mu*v + g, p -= lr*v for a constant lr, up to rounding; checked: float64
  losses agree with the NumPy reference to 1e-15 over 100 steps). For float64 on the TensorFlow
  backend the momentum is handed over as np.float64: Keras casts it with ops.cast, which there
  rounds a Python float to float32 first (mu would be 0.8999999762, ~1e-8 relative drift per step).
  Keras' Adam adds eps to sqrt(v) of the UNcorrected v (in PyTorch terms eps*sqrt(1-beta2^t)),
  Keras' RMSprop puts eps INSIDE the square root; so both are implemented here exactly in
  PyTorch's form as small keras.optimizers.Optimizer subclasses (PyTorchAdam, PyTorchRMSprop);
- batchnorm: keras momentum = 1 - spec momentum, epsilon = spec eps. DIFFERENCE, kept as Keras
  does it: Keras updates moving_variance with the BIASED batch variance, the canonical state (and
  PyTorch, the NumPy reference, the `tf` adapter) the unbiased one (x n/(n-1), n = values per
  channel in the batch). Normalization in training is identical; running_var after training
  differs by a relative ~1/n of the batch part (torch_bn, batch 128: n = 100352 and 25088), and so
  do eval-mode logits, slightly;
- loss: SparseCategoricalCrossentropy(from_logits=True), mean over the batch;
- dtype: keras.config.set_floatx(config.dtype) before anything is built, and the dtype passed to
  every layer, the loss and the metric (the optimizer's learning rate follows floatx). keras-jax
  turns on jax_enable_x64 for float64. PATCH, float64 on keras-torch and keras-jax only: Keras 3.15's
  type promotion (keras.src.backend.common.dtypes.result_type, which ops.matmul, add, ... use)
  maps float64 -> float32 on every backend but TensorFlow "to align with JAX's default", so a
  float64 model computes its matmuls in float32 (measured: 1e-7 logits error, 1e-4 on a 1600-term
  dot product). For float64 runs the adapter sets that table's float64 entry back to float64
  (BIT64_TO_BIT32_DTYPE["float64"] = "float64"), recorded in environment() as
  float64_promotion_patch; float32 runs use Keras untouched.

Threads: TensorFlow intra/inter-op pools (set before TF runs an op), torch.set_num_threads /
set_num_interop_threads, and for JAX (XLA has no thread-count flag) the process' CPU affinity is
narrowed to `threads` cores before jax starts, which sizes XLA's CPU thread pool.
"""
import os
import sys
import warnings
from collections import OrderedDict

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported, clock_ns
from backends.tf_backend import (TfLayout, check_tf_device, nchw_to_nhwc, set_tf_threads,
                                 tf_device_peak_bytes, tf_environment, tf_gpu_details)


class KerasAdapter(Adapter):
    name = "keras"
    framework = "keras"
    keras_backend = "tensorflow"

    # -- backend selection, threads, device (before and around `import keras`) ------------------
    def _select_backend(self):
        want = self.keras_backend
        if "keras" in sys.modules:
            have = sys.modules["keras"].backend.backend()
            if have != want:
                raise Unavailable("keras is already imported with the %r backend in this process; "
                                  "backend %r needs KERAS_BACKEND=%s before keras is imported (the "
                                  "registry's worker_env sets it)" % (have, self.name, want))
            return
        env = os.environ.get("KERAS_BACKEND")
        if env and env != want:
            raise Unavailable("KERAS_BACKEND=%s in the environment, but backend %r needs "
                              "KERAS_BACKEND=%s" % (env, self.name, want))
        os.environ["KERAS_BACKEND"] = want

    def _prepare_framework(self):
        """Import the backend framework, set its threads and check the device. Returns notes."""
        cfg = self.config
        notes = {}
        if self.keras_backend == "tensorflow":
            import tensorflow as tf
            note = set_tf_threads(tf, cfg.threads)
            if note:
                notes["threads_note"] = note
            self.tf_device = check_tf_device(tf, cfg.device)
            if cfg.device == "cpu" and tf.config.list_physical_devices("GPU"):
                # Keras places on the GPU by default: hide it (before TF's runtime starts)
                try:
                    tf.config.set_visible_devices([], "GPU")
                except RuntimeError as exc:
                    notes["device_note"] = "could not hide the GPU: %s" % exc
        elif self.keras_backend == "torch":
            import torch
            if cfg.device == "cuda" and not torch.cuda.is_available():
                raise Unavailable("no CUDA device: torch.cuda.is_available() is False (the tf env "
                                  "installs the CPU build of torch); run on a GPU machine with a "
                                  "CUDA build of torch, or with --device cpu")
            if cfg.threads:
                torch.set_num_threads(cfg.threads)
                try:
                    torch.set_num_interop_threads(cfg.threads)
                except RuntimeError as exc:  # only settable before torch's first parallel work
                    notes["threads_note"] = "interop threads: %s" % exc
            if "keras" not in sys.modules:  # Keras' torch backend reads it at import
                os.environ["KERAS_TORCH_DEVICE"] = cfg.device
        elif self.keras_backend == "jax":
            if cfg.threads and "jax" not in sys.modules and hasattr(os, "sched_setaffinity"):
                cpus = sorted(os.sched_getaffinity(0))
                if cfg.threads < len(cpus):
                    os.sched_setaffinity(0, cpus[:cfg.threads])
                    notes["cpu_affinity"] = cpus[:cfg.threads]
            if cfg.device == "cpu" and "jax" not in sys.modules:
                os.environ["JAX_PLATFORMS"] = "cpu"  # Keras' jax backend uses the default device
            import jax
            if cfg.dtype == "float64":
                jax.config.update("jax_enable_x64", True)
            if cfg.device == "cuda":
                try:
                    jax.devices("gpu")
                except RuntimeError as exc:
                    raise Unavailable("no CUDA device: jax.devices('gpu') failed (%s; the tf env "
                                      "installs the CPU-only jaxlib); run on a GPU machine with "
                                      "jax[cuda12], or with --device cpu" % str(exc).splitlines()[0])
        return notes

    # -- build -----------------------------------------------------------------------------------
    def build(self):
        cfg = self.config
        if cfg.optimizer not in ("sgd", "momentum", "adam", "rmsprop"):
            raise Unsupported("optimizer %r" % cfg.optimizer)
        if cfg.mode not in ("step", "epoch"):
            raise Unsupported("training mode %r" % cfg.mode)
        self._select_backend()
        self.notes = self._prepare_framework()
        import keras

        self.keras = keras
        if keras.backend.backend() != self.keras_backend:
            raise Unavailable("keras imported with the %r backend, %r needs %r"
                              % (keras.backend.backend(), self.name, self.keras_backend))
        keras.config.set_floatx(cfg.dtype)
        keras.config.set_image_data_format("channels_last")
        if cfg.dtype == "float64" and self.keras_backend != "tensorflow":
            self.notes["float64_promotion_patch"] = _allow_float64_promotion()
        # dropout masks come from each Dropout layer's own seed (config.seed + layer index);
        # keras.utils.set_random_seed is not called: it imports TensorFlow under every backend
        self.np_dtype = np.dtype(cfg.dtype)
        self.layout = TfLayout(self.spec)

        self.model, self.variables = self._make_model()
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=cfg.dtype)
        self.optimizer = self._make_optimizer()
        self.optimizer.build(self.model.trainable_variables)
        self._optimizer_initial = [np.array(v.numpy()) for v in self.optimizer.variables]
        metrics = [_batch_loss_metric(keras, self.loss_fn, cfg.dtype)] if cfg.mode == "epoch" else None
        self.model.compile(optimizer=self.optimizer, loss=self.loss_fn, metrics=metrics)
        from models.spec import init_weights
        self.set_weights(init_weights(self.spec, seed=cfg.seed, dtype=cfg.dtype))

    def _make_model(self):
        keras, cfg = self.keras, self.config
        L = keras.layers
        c, h, w = self.spec.input_shape
        dt = cfg.dtype  # explicit on every layer (not only floatx), so dtypes never mix
        layers = [keras.Input(shape=(h, w, c), dtype=dt)]
        variables = OrderedDict()  # canonical name -> (layer, attribute)
        for i, layer in enumerate(self.spec.layers):
            kind = layer.kind
            if kind == "conv2d":
                if layer.padding_mode == "explicit":
                    layers.append(L.ZeroPadding2D(layer.padding, name=layer.name + "_pad", dtype=dt))
                    padding = "valid"
                else:
                    padding = layer.padding_mode
                k = L.Conv2D(layer.filters, layer.kernel, strides=layer.stride, padding=padding,
                             activation=_act(layer.activation), use_bias=layer.use_bias,
                             name=layer.name, dtype=dt)
                layers.append(k)
                variables[layer.name + ".weight"] = (k, "kernel")
                if layer.use_bias:
                    variables[layer.name + ".bias"] = (k, "bias")
            elif kind == "maxpool2d":
                layers.append(L.MaxPooling2D(layer.size, strides=layer.stride, padding="valid",
                                             name=layer.name, dtype=dt))
            elif kind == "flatten":
                layers.append(L.Flatten(name=layer.name, dtype=dt))
            elif kind == "dense":
                d = L.Dense(layer.units, activation=_act(layer.activation), use_bias=layer.use_bias,
                            name=layer.name, dtype=dt)
                layers.append(d)
                variables[layer.name + ".weight"] = (d, "kernel")
                if layer.use_bias:
                    variables[layer.name + ".bias"] = (d, "bias")
            elif kind == "dropout":
                if cfg.dropout and layer.rate > 0:
                    layers.append(L.Dropout(layer.rate, seed=cfg.seed + i, name=layer.name, dtype=dt))
            elif kind == "batchnorm":
                bn = L.BatchNormalization(axis=-1, momentum=1.0 - layer.momentum,
                                          epsilon=layer.eps, name=layer.name, dtype=dt)
                layers.append(bn)
                for field, attr in (("gamma", "gamma"), ("beta", "beta"),
                                    ("running_mean", "moving_mean"),
                                    ("running_var", "moving_variance")):
                    variables[layer.name + "." + field] = (bn, attr)
            elif kind == "activation":
                layers.append(L.Activation(layer.function, name=layer.name, dtype=dt))
            else:
                raise Unsupported("layer kind %r" % kind)
        model = keras.Sequential(layers, name=self.spec.name)
        return model, OrderedDict((n, getattr(lay, attr)) for n, (lay, attr) in variables.items())

    def _make_optimizer(self):
        keras, c = self.keras, self.config
        if c.optimizer == "sgd":
            return keras.optimizers.SGD(learning_rate=c.lr)
        if c.optimizer == "momentum":
            momentum = float(c.momentum)
            if self.keras_backend == "tensorflow" and c.dtype == "float64":
                # np.float64, a float subclass: Keras' SGD casts it with ops.cast(momentum,
                # var.dtype), which on the TensorFlow backend is tf.cast(python float) = a float32
                # constant first: float64 training would use momentum float32(0.9) = 0.8999999762
                momentum = np.float64(momentum)
            return keras.optimizers.SGD(learning_rate=c.lr, momentum=momentum)
        adam, rmsprop = _pytorch_optimizers(keras)
        if c.optimizer == "adam":
            return adam(learning_rate=c.lr, beta_1=c.beta1, beta_2=c.beta2, epsilon=c.eps)
        return rmsprop(learning_rate=c.lr, rho=c.rho, epsilon=c.eps)

    # -- weights ---------------------------------------------------------------------------------
    def set_weights(self, params):
        missing = sorted(set(self.variables) - set(params))
        if missing:
            raise ValueError("set_weights: missing %s" % ", ".join(missing))
        for name, var in self.variables.items():
            var.assign(self.layout.to_tf(name, np.asarray(params[name], dtype=self.np_dtype)))
        # fresh optimizer state for fresh weights (slots and iterations back to their start)
        for var, value in zip(self.optimizer.variables, self._optimizer_initial):
            var.assign(value)

    def get_weights(self):
        return OrderedDict((name, self.layout.from_tf(name, np.asarray(var.numpy())))
                           for name, var in self.variables.items())

    # -- training and inference ------------------------------------------------------------------
    def train_step(self, x, y):
        logs = self.model.train_on_batch(nchw_to_nhwc(x, self.np_dtype),
                                         np.asarray(y, dtype=np.int64), return_dict=True)
        return float(logs["loss"])  # logs hold NumPy values: the step has finished

    def train_epoch(self, batches, on_step):
        if self.config.mode != "epoch":
            return Adapter.train_epoch(self, batches, on_step)
        dtype = self.np_dtype
        xs, ys = [], []
        for x, y in batches:  # exactly the harness's batches, in its order
            xs.append(x)
            ys.append(np.asarray(y, dtype=np.int64))
        if not ys:
            return None
        clock = _step_clock(self.keras, on_step)
        size = len(ys[0])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            if all(len(y) == size for y in ys[:-1]) and len(ys[-1]) <= size:
                # the Keras idiom, fit on arrays: with shuffle=False its batches are the
                # consecutive batch_size slices, i.e. exactly the harness's batches
                x_all = nchw_to_nhwc(np.concatenate(xs), dtype)
                y_all = np.concatenate(ys)
                del xs[:], ys[:]
                self.model.fit(x_all, y_all, batch_size=size, epochs=1, shuffle=False, verbose=0,
                               callbacks=[clock])
            else:  # ragged batches: a generator that yields them one by one
                def harness_batches():
                    for x, y in zip(xs, ys):
                        yield nchw_to_nhwc(x, dtype), y

                self.model.fit(harness_batches(), epochs=1, steps_per_epoch=len(ys),
                               shuffle=False, verbose=0, callbacks=[clock])
        return None

    def predict(self, x):
        out = self.model.predict_on_batch(nchw_to_nhwc(x, self.np_dtype))
        return np.asarray(out)

    def device_peak_bytes(self):
        """Peak device memory of the backend framework's allocator (None on the CPU)."""
        if self.config.device != "cuda":
            return None
        if self.keras_backend == "tensorflow":
            import tensorflow as tf
            return tf_device_peak_bytes(tf, self.tf_device)
        if self.keras_backend == "torch":
            import torch
            return int(torch.cuda.max_memory_allocated())
        import jax
        stats = jax.devices("gpu")[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else int(peak)

    def environment(self):
        keras, be = self.keras, self.keras_backend
        info = {"framework": "keras", "framework_version": keras.__version__,
                "keras_backend": be, "layout": "NHWC (channels_last), kernels HWIO",
                "floatx": keras.config.floatx(), "jit_compile": bool(self.model.jit_compile),
                "train_mode": self.config.mode,
                "idiom": "keras.Sequential + compile; train_on_batch (step) / fit (epoch)"}
        if be == "tensorflow":
            import tensorflow as tf
            info["backend_version"] = tf.__version__
            info["device_name"] = self.tf_device
            info.update(tf_environment(tf))
            info.update(tf_gpu_details(tf, self.tf_device))
        elif be == "torch":
            import torch
            info["backend_version"] = torch.__version__
            from keras.src.backend.torch.core import get_device
            info["device_name"] = str(get_device())
            info["intra_op_threads"] = torch.get_num_threads()
            info["inter_op_threads"] = torch.get_num_interop_threads()
        else:
            import jax
            import jaxlib
            info["backend_version"] = "jax %s, jaxlib %s" % (jax.__version__, jaxlib.__version__)
            info["device_name"] = str(jax.devices()[0])
            info["x64"] = bool(jax.config.jax_enable_x64)
            if hasattr(os, "sched_getaffinity"):
                info["cpu_threads"] = len(os.sched_getaffinity(0))
            info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        info.update(self.notes)
        return info


class KerasTorchAdapter(KerasAdapter):
    name = "keras-torch"
    keras_backend = "torch"


class KerasJaxAdapter(KerasAdapter):
    name = "keras-jax"
    keras_backend = "jax"


def _allow_float64_promotion():
    from keras.src.backend.common import dtypes
    table = dtypes.BIT64_TO_BIT32_DTYPE
    before = table.get("float64")
    table["float64"] = "float64"
    return "keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE['float64']: %s -> float64" % before


def _act(function):
    return None if function == "linear" else function


# --- Keras classes that need keras imported (built once per process) ---------------------------

_CACHE = {}


def _batch_loss_metric(keras, loss_fn, dtype):
    """A metric whose result is the LAST batch's loss (fit's "loss" is a running mean)."""
    cls = _CACHE.get("BatchLoss")
    if cls is None:
        class BatchLoss(keras.metrics.Metric):
            def __init__(self, loss_fn, name="batch_loss", **kwargs):
                super().__init__(name=name, **kwargs)
                self.loss_fn = loss_fn
                self.value = self.add_variable(shape=(), initializer="zeros", name="value")

            def update_state(self, y_true, y_pred, sample_weight=None):
                self.value.assign(keras.ops.cast(self.loss_fn(y_true, y_pred), self.dtype))

            def result(self):
                return keras.ops.convert_to_tensor(self.value)

            def reset_state(self):
                self.value.assign(keras.ops.zeros((), dtype=self.dtype))

        cls = _CACHE["BatchLoss"] = BatchLoss
    return cls(loss_fn, dtype=dtype)


def _step_clock(keras, on_step):
    """Callback: step time from on_train_batch_begin to _end, and the batch loss from the logs."""

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = clock_ns()

        def on_train_batch_end(self, batch, logs=None):
            # a callback with batch hooks turns off Keras' async dispatch: logs arrive as Python
            # numbers, i.e. the step has finished (float() would wait for it anyway)
            loss = float(logs["batch_loss"])
            on_step(clock_ns() - self.t0, loss)

    return StepClock()


def _pytorch_optimizers(keras):
    """Adam and RMSprop in PyTorch's formulas (eps outside the square root of the corrected v)."""
    if "opt" in _CACHE:
        return _CACHE["opt"]
    ops = keras.ops

    class PyTorchAdam(keras.optimizers.Optimizer):
        """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
        p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""

        def __init__(self, learning_rate, beta_1, beta_2, epsilon, name="pytorch_adam", **kwargs):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
            self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])

        def update_step(self, gradient, variable, learning_rate):
            dt = variable.dtype
            lr = ops.cast(learning_rate, dt)
            g = ops.cast(gradient, dt)
            t = ops.cast(self.iterations + 1, dt)
            i = self._get_variable_index(variable)
            m = ops.add(ops.multiply(self.beta_1, self._m[i]), ops.multiply(1 - self.beta_1, g))
            v = ops.add(ops.multiply(self.beta_2, self._v[i]),
                        ops.multiply(ops.multiply(1 - self.beta_2, g), g))
            self.assign(self._m[i], m)
            self.assign(self._v[i], v)
            # convert_to_tensor(python float, dtype), not ops.cast: see _make_optimizer
            bc1 = ops.subtract(1, ops.power(ops.convert_to_tensor(self.beta_1, dtype=dt), t))
            bc2 = ops.subtract(1, ops.power(ops.convert_to_tensor(self.beta_2, dtype=dt), t))
            step = ops.divide(ops.multiply(lr, ops.divide(m, bc1)),
                              ops.add(ops.sqrt(ops.divide(v, bc2)), self.epsilon))
            self.assign_sub(variable, step)

        def get_config(self):
            config = super().get_config()
            config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
            return config

    class PyTorchRMSprop(keras.optimizers.Optimizer):
        """v = rho*v + (1-rho)*g^2; p -= lr * g / (sqrt(v) + eps)  (no momentum, not centered)."""

        def __init__(self, learning_rate, rho, epsilon, name="pytorch_rmsprop", **kwargs):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
            self.rho, self.epsilon = rho, epsilon

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._v = self.add_optimizer_variables(var_list, "v")

        def update_step(self, gradient, variable, learning_rate):
            dt = variable.dtype
            lr = ops.cast(learning_rate, dt)
            g = ops.cast(gradient, dt)
            i = self._get_variable_index(variable)
            v = ops.add(ops.multiply(self.rho, self._v[i]),
                        ops.multiply(ops.multiply(1 - self.rho, g), g))
            self.assign(self._v[i], v)
            self.assign_sub(variable, ops.divide(ops.multiply(lr, g),
                                                 ops.add(ops.sqrt(v), self.epsilon)))

        def get_config(self):
            config = super().get_config()
            config.update(rho=self.rho, epsilon=self.epsilon)
            return config

    _CACHE["opt"] = (PyTorchAdam, PyTorchRMSprop)
    return _CACHE["opt"]
