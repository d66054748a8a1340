"""TensorFlow 2 as written today without Keras' training loop: `tf.Variable`s, the forward pass in
`tf.nn` ops, and one `tf.function` training step with a `GradientTape`.

Backends `tf` (`TfAdapter`: graph mode, TF's own kernels, oneDNN/Eigen on the CPU) and `tf-xla`
(`TfXlaAdapter`: the same step in `tf.function(jit_compile=True)`, compiled by XLA).

The forward is functional: each LAYERS function creates (and binds) its layer's tf.Variables and
returns a block `block(x, training) -> x`; the traced forward composes the blocks.

Layout: data NHWC inside, kernels HWIO, dense kernels (in, out): backends/common/layout.py's
ChannelsLast (the first dense kernel after a flatten has its rows permuted instead of transposing
activations). 'same' padding in the spec is TF's own; explicit padding goes to tf.nn.conv2d as an
explicit padding list.

Semantics kept identical to the suite's (PyTorch's) definitions, written out in TF ops:
- optimizers (OPTIMIZERS): sgd p -= lr*g; momentum v = mu*v + g, p -= lr*v; nesterov
  p -= lr*(g + mu*v); adam with bias-corrected m and v and eps outside the square root; rmsprop
  v = rho*v + (1-rho)*g^2, p -= lr*g/(sqrt(v)+eps); adadelta with eps inside both roots; lr the
  schedule's for the update (_lr, from the step counter);
- max-norm: Keras' MaxNorm formula, assigned inside the tf.function step after the update;
- batchnorm: normalizes with the biased batch variance (tf.nn.moments) and keeps the UNBIASED
  running variance with PyTorch's momentum meaning (exactly the canonical state);
- loss: mean sparse softmax cross-entropy from logits.

This module imports only NumPy at import time; TensorFlow is imported in build().
"""
import numpy as np

from backends.common import schedule, tables
from backends.common.adapter import TableAdapter
from backends.common.layout import ChannelsLast, max_norm_axes, nchw_to_nhwc
from backends.common.padding import conv_padding
from backends.common.walker import walk
from backends.tf_common import (check_tf_device, set_tf_threads, tf_activations,
                                tf_device_peak_bytes, tf_environment, tf_gpu_details)
from models.spec import MAX_NORM_EPS, init_weights


# --- the spec, layer by layer: tf.Variables and blocks(x, training) -----------------------------

def _variable(a, name, trainable=True):
    """A tf.Variable holding canonical parameter `name`'s initial value in the native layout."""
    value = a.layout.to_native(name, a.initial[name])
    var = a.tf.Variable(value, trainable=trainable, name=name.replace(".", "_"))
    a.bindings.bind(name, var, a.layout.layout(name))
    return var


def _kernel(a, layer):
    """The layer's kernel (max-norm constrained if the spec says so) and bias (or None)."""
    kernel = _variable(a, layer.name + ".weight")
    if layer.max_norm is not None:
        a.max_norms.append((kernel, layer.max_norm, max_norm_axes(len(kernel.shape), True)))
    return kernel, _variable(a, layer.name + ".bias") if layer.use_bias else None


def _with_bias_and_activation(a, op, bias, function):
    tf, act = a.tf, tables.activation(a, function)

    def block(x, training):
        x = op(x)
        if bias is not None:
            x = tf.nn.bias_add(x, bias)
        return x if act is None else act(x)
    return block


def _conv2d(a, step):
    layer, tf = step.layer, a.tf
    kernel, bias = _kernel(a, layer)
    pad = conv_padding(layer)
    padding = {"same": "SAME", "valid": "VALID"}.get(pad.mode)
    if padding is None:
        (pt, pb), (pl, pr) = pad.pads
        padding = [[0, 0], [pt, pb], [pl, pr], [0, 0]]
    strides = [1] + list(layer.stride) + [1]
    return _with_bias_and_activation(
        a, lambda x: tf.nn.conv2d(x, kernel, strides=strides, padding=padding), bias,
        layer.activation)


def _dense(a, step):
    kernel, bias = _kernel(a, step.layer)
    return _with_bias_and_activation(a, lambda x: a.tf.matmul(x, kernel), bias,
                                     step.layer.activation)


def _pool(op):
    def build(a, step):
        ksize, strides = list(step.layer.size), list(step.layer.stride)
        return lambda x, training: op(a.tf)(x, ksize=ksize, strides=strides, padding="VALID")
    return build


def _flatten(a, step):
    units = int(np.prod(step.out_shape))
    return lambda x, training: a.tf.reshape(x, [-1, units])


def _dropout(a, step):
    rate = step.layer.rate
    if not (a.config.dropout and rate > 0):
        return None
    return lambda x, training: a.tf.nn.dropout(x, rate=rate) if training else x


def _batchnorm(a, step):
    tf, layer = a.tf, step.layer
    gamma, beta = _variable(a, layer.name + ".gamma"), _variable(a, layer.name + ".beta")
    rm = _variable(a, layer.name + ".running_mean", trainable=False)
    rv = _variable(a, layer.name + ".running_var", trainable=False)
    m = layer.momentum

    def block(x, training):
        if training:
            mean, var = tf.nn.moments(x, axes=list(range(len(x.shape) - 1)))  # biased: normalizes
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            rm.assign((1 - m) * rm + m * mean)
            # the running variance is unbiased (PyTorch's rule, the canonical state)
            rv.assign((1 - m) * rv + m * var * count / tf.maximum(count - 1, 1))
        else:
            mean, var = rm, rv
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, layer.eps)
    return block


def _activation(a, step):
    act = tables.activation(a, step.layer.function)
    return None if act is None else (lambda x, training: act(x))


# --- the suite's optimizer formulas (docs/results-schema.md#optimizers) in TF ops ---------------
# Each returns (slot names, apply(t, [(param, grad, slots)])), t the 1-based step count.

def _lr(a, t):
    """The schedule's lr for update t (backends/common/schedule.py, k = t - 1), in TF ops."""
    tf, c = a.tf, a.config
    if c.schedule == "constant":
        return c.lr
    k = tf.cast(t - 1, a.dtype)
    lr = tf.constant(c.lr, a.dtype)
    if c.schedule == "time":
        return lr / (1.0 + tf.constant(c.decay, a.dtype) * k)
    if c.schedule == "step":
        return lr * tf.pow(tf.constant(c.gamma, a.dtype), tf.floor(k / float(c.decay_steps)))
    steps = tf.constant(float(c.decay_steps), a.dtype)  # cosine
    return lr * (0.5 * (1.0 + tf.cos(tf.constant(np.pi, a.dtype) * tf.minimum(k, steps) / steps)))


def _sgd(a):
    def apply(t, updates):
        lr = _lr(a, t)
        for p, g, _ in updates:
            p.assign_sub(lr * g)
    return (), apply


def _momentum(a, nesterov=False):
    mu = a.config.momentum

    def apply(t, updates):
        lr = _lr(a, t)
        for p, g, (v,) in updates:
            v = v.assign(v * mu + g)
            p.assign_sub(lr * (g + mu * v if nesterov else v))
    return ("v",), apply


def _adam(a):
    tf, c = a.tf, a.config

    def apply(t, updates):
        lr = _lr(a, t)
        tt = tf.cast(t, tf.float64)
        bc1 = tf.cast(1 - tf.pow(tf.constant(c.beta1, tf.float64), tt), a.dtype)
        bc2 = tf.cast(1 - tf.pow(tf.constant(c.beta2, tf.float64), tt), a.dtype)
        for p, g, (m, v) in updates:
            m = m.assign(c.beta1 * m + (1 - c.beta1) * g)
            v = v.assign(c.beta2 * v + (1 - c.beta2) * g * g)
            p.assign_sub(lr * (m / bc1) / (tf.sqrt(v / bc2) + c.eps))
    return ("m", "v"), apply


def _rmsprop(a):
    tf, c = a.tf, a.config

    def apply(t, updates):
        lr = _lr(a, t)
        for p, g, (v,) in updates:
            v = v.assign(c.rho * v + (1 - c.rho) * g * g)
            p.assign_sub(lr * g / (tf.sqrt(v) + c.eps))
    return ("v",), apply


def _adadelta(a):
    tf, c = a.tf, a.config

    def apply(t, updates):
        lr = _lr(a, t)
        for p, g, (v, u) in updates:
            v = v.assign(c.rho * v + (1 - c.rho) * g * g)
            d = tf.sqrt(u + c.eps) / tf.sqrt(v + c.eps) * g
            u.assign(c.rho * u + (1 - c.rho) * d * d)
            p.assign_sub(lr * d)
    return ("v", "u"), apply


# --- the adapter --------------------------------------------------------------------------------

class TfAdapter(TableAdapter):
    name = "tf"
    precision_note = ("writes tf.nn ops by hand: TensorFlow's mixed-precision policy is Keras' "
                      "(the keras and keras-xla backends run --precision bf16)")
    framework = "tensorflow"
    jit_compile = False
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": _pool(lambda tf: tf.nn.max_pool2d),
        "avgpool2d": _pool(lambda tf: tf.nn.avg_pool2d),
        "flatten": _flatten,
        "dense": _dense,
        "dropout": _dropout,
        "batchnorm": _batchnorm,
        "activation": _activation,
    }
    OPTIMIZERS = {"sgd": _sgd, "momentum": _momentum, "nesterov": lambda a: _momentum(a, True),
                  "adam": _adam, "rmsprop": _rmsprop, "adadelta": _adadelta}

    def build(self):
        import tensorflow as tf

        self.tf = tf
        cfg = self.config
        self.thread_note = set_tf_threads(tf, cfg.threads)
        self.tf_device = check_tf_device(tf, cfg.device)
        self.ACTIVATIONS = tf_activations(tf)
        schedule.check(cfg)
        self.np_dtype = np.dtype(cfg.dtype)
        self.dtype = tf.as_dtype(cfg.dtype)
        slot_names, self._apply = tables.optimizer(self)  # Unsupported before any variable
        tf.random.set_seed(cfg.seed)  # dropout masks (not shared with other backends)
        self.layout = ChannelsLast(self.spec)
        self.initial = init_weights(self.spec, seed=cfg.seed, dtype=cfg.dtype)

        self.new_bindings()
        self.max_norms = []  # (kernel, c, axes): constrained after every update
        params = self.spec.params()
        with tf.device(self.tf_device):
            self.blocks = walk(self)
            self.trainable = [handle for name, (handle, _) in self.bindings.table.items()
                              if params[name].trainable]
            self.slots = [tuple(tf.Variable(tf.zeros_like(v), trainable=False) for _ in slot_names)
                          for v in self.trainable]
            self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.bindings.check(params)
        del self.initial

        c, h, w = self.spec.input_shape
        x_spec = tf.TensorSpec([None, h, w, c], self.dtype)
        y_spec = tf.TensorSpec([None], tf.int64)
        self._train = tf.function(self._train_step, input_signature=[x_spec, y_spec],
                                  jit_compile=self.jit_compile)
        self._predict = tf.function(lambda x: self._forward(x, False), input_signature=[x_spec],
                                    jit_compile=self.jit_compile)

    def _forward(self, x, training):
        for block in self.blocks:
            x = block(x, training)
        return x

    def _train_step(self, x, y):
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self._forward(x, True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, self.trainable)
        self._apply(self.step_count.assign_add(1), list(zip(self.trainable, grads, self.slots)))
        for w, c, axes in self.max_norms:  # Keras' MaxNorm, after the update
            norms = tf.sqrt(tf.reduce_sum(w * w, axis=axes, keepdims=True))
            w.assign(w * (tf.clip_by_value(norms, 0, c) / (MAX_NORM_EPS + norms)))
        return loss

    def train_step(self, x, y):
        x = nchw_to_nhwc(x, self.np_dtype)
        y = np.asarray(y, dtype=np.int64)
        with self.tf.device(self.tf_device):
            loss = self._train(x, y)
        return float(loss)  # .numpy(): waits for the step, the timing sync point

    def predict(self, x):
        with self.tf.device(self.tf_device):
            return self._predict(nchw_to_nhwc(x, self.np_dtype)).numpy()

    # -- weights and optimizer state -------------------------------------------------------------
    def read_param(self, handle):
        return handle.numpy()

    def write_param(self, handle, value):
        handle.assign(value)

    def reset_optimizer(self):
        for slots in self.slots:
            for s in slots:
                s.assign(self.tf.zeros_like(s))
        self.step_count.assign(0)

    def device_peak_bytes(self):
        return tf_device_peak_bytes(self.tf, self.tf_device)

    def environment(self):
        tf = self.tf
        info = {"framework": "tensorflow", "framework_version": tf.__version__,
                "layout": "NHWC, kernels HWIO", "device_name": self.tf_device,
                "jit_compile": bool(self.jit_compile),
                "idiom": "tf.Module-style variables + tf.nn ops, tf.function + GradientTape"}
        info.update(tf_environment(tf))
        info.update(tf_gpu_details(tf, self.tf_device))
        if self.thread_note:
            info["threads_note"] = self.thread_note
        return info


class TfXlaAdapter(TfAdapter):
    """`tf` compiled with XLA: tf.function(jit_compile=True)."""
    name = "tf-xla"
    jit_compile = True
