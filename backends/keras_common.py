"""What the Keras adapters (backends/keras_backend.py) share whatever Keras' backend: the spec as
a `keras.Sequential` (LAYERS), keras.optimizers (OPTIMIZERS), compile, train_on_batch / fit, and
weights through the bindings. The subclasses supply the backend-specific hooks (framework set-up
before `import keras`, Keras patches after it, device peak memory, environment fields).

Imports only NumPy at import time; keras is imported in build(), after the backend is chosen.
"""
import os
import sys
import warnings

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported
from backends.common import schedule, tables
from backends.common.adapter import TableAdapter
from backends.common.layout import ChannelsLast, nchw_to_nhwc
from backends.common.padding import conv_padding
from backends.common.precision import precision_environment
from backends.common.walker import walk
from backends.keras_parts import batch_loss_metric, pytorch_optimizers, step_clock
from models.spec import init_weights


# --- the spec, layer by layer: keras.layers (dtype explicit on each, so dtypes never mix) -------

def _conv2d(a, step):
    layer, L, dt = step.layer, a.keras.layers, a.layer_dtype
    pad = conv_padding(layer)
    blocks = []
    if pad.mode == "explicit":  # Keras' Conv2D pads 'valid' or 'same' only
        blocks.append(L.ZeroPadding2D(pad.pads, name=layer.name + "_pad", dtype=dt))
    conv = L.Conv2D(layer.filters, layer.kernel, strides=layer.stride,
                    padding="valid" if pad.mode == "explicit" else pad.mode,
                    activation=_act(a, layer.activation), use_bias=layer.use_bias,
                    kernel_constraint=_max_norm(a, layer, [0, 1, 2]), name=layer.name, dtype=dt)
    _bind_kernel(a, layer, conv)
    return blocks + [conv]


def _dense(a, step):
    layer = step.layer
    dense = a.keras.layers.Dense(layer.units, activation=_act(a, layer.activation),
                                 use_bias=layer.use_bias, kernel_constraint=_max_norm(a, layer, 0),
                                 name=layer.name, dtype=a.layer_dtype)
    _bind_kernel(a, layer, dense)
    return dense


def _max_norm(a, layer, axis):
    """Keras' own MaxNorm: applied by the optimizer after every update (HWIO: axes 0, 1, 2)."""
    if layer.max_norm is None:
        return None
    return a.keras.constraints.MaxNorm(max_value=layer.max_norm, axis=axis)


def _bind_kernel(a, layer, keras_layer):
    _bind(a, layer.name + ".weight", keras_layer, "kernel")
    if layer.use_bias:
        _bind(a, layer.name + ".bias", keras_layer, "bias")


def _bind(a, name, keras_layer, attr):
    # (layer, attribute): the variable is read when used (the layer is built with the model)
    a.bindings.bind(name, (keras_layer, attr), a.layout.layout(name))


def _pool(cls):
    def build(a, step):
        return getattr(a.keras.layers, cls)(step.layer.size, strides=step.layer.stride,
                                            padding="valid", name=step.layer.name,
                                            dtype=a.layer_dtype)
    return build


def _dropout(a, step):
    layer, cfg = step.layer, a.config
    if not (cfg.dropout and layer.rate > 0):
        return None
    # each Dropout layer's own seed: keras.utils.set_random_seed would import TensorFlow under
    # every backend
    return a.keras.layers.Dropout(layer.rate, seed=cfg.seed + step.index, name=layer.name,
                                  dtype=a.layer_dtype)


def _batchnorm(a, step):
    layer = step.layer
    bn = a.keras.layers.BatchNormalization(axis=-1, momentum=1.0 - layer.momentum,
                                           epsilon=layer.eps, name=layer.name,
                                           dtype=a.layer_dtype)
    for field, attr in (("gamma", "gamma"), ("beta", "beta"), ("running_mean", "moving_mean"),
                        ("running_var", "moving_variance")):
        _bind(a, layer.name + "." + field, bn, attr)
    return bn


def _activation(a, step):
    return a.keras.layers.Activation(_act(a, step.layer.function) or "linear",
                                     name=step.layer.name, dtype=a.layer_dtype)


def _act(a, function):
    return tables.activation(a, function)  # Keras' own name; None for "linear"


# --- optimizers: Keras' SGD and Adadelta; Adam and RMSprop in PyTorch's formulas (keras_parts.py);
# the learning rate a keras.optimizers.schedules object where the schedule varies --------------

def _lr(a):
    c, schedules = a.config, a.keras.optimizers.schedules
    if c.schedule == "time":  # Keras 1/2's SGD(decay=d): lr / (1 + d * iterations)
        return schedules.InverseTimeDecay(c.lr, decay_steps=1, decay_rate=c.decay)
    if c.schedule == "step":
        return schedules.ExponentialDecay(c.lr, decay_steps=c.decay_steps, decay_rate=c.gamma,
                                          staircase=True)
    if c.schedule == "cosine":
        return schedules.CosineDecay(c.lr, decay_steps=c.decay_steps, alpha=0.0)
    return c.lr


def _sgd(a, **momentum):
    return a.keras.optimizers.SGD(learning_rate=_lr(a), **momentum)


def _adam(a):
    c = a.config
    return pytorch_optimizers(a.keras)[0](learning_rate=_lr(a), beta_1=c.beta1, beta_2=c.beta2,
                                          epsilon=c.eps)


def _rmsprop(a):
    c = a.config
    return pytorch_optimizers(a.keras)[1](learning_rate=_lr(a), rho=c.rho, epsilon=c.eps)


class KerasBase(TableAdapter):
    framework = "keras"
    epoch_idiom = "model.fit"
    keras_backend = None  # KERAS_BACKEND: "tensorflow", "torch" or "jax"
    #: Model.compile's jit_compile. Keras' default "auto" resolves to False with the torch
    #: backend and with TensorFlow on a CPU-only machine, to True with jax; keras-xla sets True
    jit_compile = "auto"
    # bf16: Keras' own mixed-precision policy "mixed_bfloat16" on every layer (bf16 compute,
    # float32 variables); the input and the loss stay float32 (the loss casts the bf16 logits)
    precisions = ("full", "bf16")
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": _pool("MaxPooling2D"),
        "avgpool2d": _pool("AveragePooling2D"),
        "flatten": lambda a, step: a.keras.layers.Flatten(name=step.layer.name,
                                                          dtype=a.layer_dtype),
        "dense": _dense,
        "dropout": _dropout,
        "batchnorm": _batchnorm,
        "activation": _activation,
    }
    OPTIMIZERS = {
        "sgd": _sgd,
        "momentum": lambda a: _sgd(a, momentum=a.momentum()),
        # Keras' p += mu*m - lr*g with m = mu*m - lr*g: PyTorch's p -= lr*(g + mu*v) at constant lr
        "nesterov": lambda a: _sgd(a, momentum=a.momentum(), nesterov=True),
        "adam": _adam,
        "rmsprop": _rmsprop,
        # Keras 3's Adadelta is the original's formula (eps inside both roots); the suite's
        # config always names lr (Keras 3's default 0.001 is not Keras 1/2's 1.0)
        "adadelta": lambda a: a.keras.optimizers.Adadelta(learning_rate=_lr(a), rho=a.config.rho,
                                                          epsilon=a.config.eps),
    }
    ACTIVATIONS = {"relu": "relu", "tanh": "tanh"}

    # -- hooks of the backend-specific subclasses ------------------------------------------------
    def prepare_framework(self):
        """Before `import keras`: import the backend framework, set its threads, check the
        device. Returns notes for environment()."""
        return {}

    def configure_keras(self, keras):
        """After `import keras` (floatx set). Returns notes for environment()."""
        return {}

    def momentum(self):
        """SGD's momentum as handed to Keras."""
        return float(self.config.momentum)

    def backend_peak_bytes(self):
        """Peak device memory of the backend framework's allocator on the GPU."""
        return None

    def backend_environment(self):
        return {}

    # -- backend selection (before `import keras`) and build -------------------------------------
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

    def build(self):
        cfg = self.config
        if cfg.optimizer not in self.OPTIMIZERS:
            tables.optimizer(self)  # Unsupported, naming it, before any framework is imported
        schedule.check(cfg)
        why = schedule.unsupported_with_momentum(cfg)  # Keras' SGD: m = mu*m - lr_k*g
        if why:
            raise Unsupported(why)
        if cfg.mode not in ("step", "epoch"):
            raise Unsupported("training mode %r" % cfg.mode)
        self._select_backend()
        self.notes = self.prepare_framework()
        import keras

        self.keras = keras
        if keras.backend.backend() != self.keras_backend:
            raise Unavailable("keras imported with the %r backend, %r needs %r"
                              % (keras.backend.backend(), self.name, self.keras_backend))
        keras.config.set_floatx(cfg.dtype)
        keras.config.set_image_data_format("channels_last")
        self.notes.update(self.configure_keras(keras))
        self.np_dtype = np.dtype(cfg.dtype)
        self.layout = ChannelsLast(self.spec)

        self.new_bindings()
        c, h, w = self.spec.input_shape
        self.model = keras.Sequential([keras.Input(shape=(h, w, c), dtype=cfg.dtype)] + walk(self),
                                      name=self.spec.name)
        self.bindings.check(self.spec.params())
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=cfg.dtype)
        self.optimizer = tables.optimizer(self)
        self.optimizer.build(self.model.trainable_variables)
        self._optimizer_initial = [np.array(v.numpy()) for v in self.optimizer.variables]
        metrics = [batch_loss_metric(keras, self.loss_fn, cfg.dtype)] if cfg.mode == "epoch" else None
        self.model.compile(optimizer=self.optimizer, loss=self.loss_fn, metrics=metrics,
                           jit_compile=self.jit_compile)
        self.set_weights(init_weights(self.spec, seed=cfg.seed, dtype=cfg.dtype))

    @property
    def layer_dtype(self):
        """Every layer's dtype: floatx, or the mixed-precision policy's name."""
        return "mixed_bfloat16" if self.config.precision == "bf16" else self.config.dtype

    # -- weights and optimizer state -------------------------------------------------------------
    def read_param(self, handle):
        layer, attr = handle
        return np.asarray(getattr(layer, attr).numpy())

    def write_param(self, handle, value):
        layer, attr = handle
        getattr(layer, attr).assign(value)

    def reset_optimizer(self):
        # slots and iterations back to their start
        for var, value in zip(self.optimizer.variables, self._optimizer_initial):
            var.assign(value)

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
        clock = step_clock(self.keras, on_step)
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
        # inside fit (a mid-epoch evaluation from the step callback) Keras' JAX trainer holds the
        # current weights outside the model's variables until the epoch ends: write them back
        # first, as a Callback's `self.model` does (a no-op outside fit and on other backends)
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        out = self.model.predict_on_batch(nchw_to_nhwc(x, self.np_dtype))
        return np.asarray(out, dtype=self.np_dtype)  # bf16 logits (mixed policy) as float32

    def device_peak_bytes(self):
        """Peak device memory of the backend framework's allocator (None on the CPU)."""
        if self.config.device != "cuda":
            return None
        return self.backend_peak_bytes()

    def environment(self):
        keras = self.keras
        info = {"framework": "keras", "framework_version": keras.__version__,
                "keras_backend": self.keras_backend,
                "layout": "NHWC (channels_last), kernels HWIO",
                "floatx": keras.config.floatx(), "jit_compile": bool(self.model.jit_compile),
                "train_mode": self.config.mode,
                "idiom": "keras.Sequential + compile; train_on_batch (step) / fit (epoch)"}
        info.update(precision_environment(self.config.precision))
        info.update(self.backend_environment())
        info.update(self.notes)
        return info
