"""TensorFlow 2 as written today without Keras' training loop: a `tf.Module` holding `tf.Variable`s,
the forward pass in `tf.nn` ops, and one `tf.function` training step with a `GradientTape`.

Backends `tf` (`TfAdapter`: graph mode, TF's own kernels, oneDNN/Eigen on the CPU) and `tf-xla`
(`TfXlaAdapter`: the same step in `tf.function(jit_compile=True)`, compiled by XLA).

Layout: data NHWC inside, kernels HWIO, dense kernels (in, out). The canonical layout flattens
(C, H, W) where TF flattens (H, W, C): instead of transposing activations, the rows of the first
dense kernel after a flatten (and any 1-D batchnorm vectors between the two) are permuted at
set_weights/get_weights (`TfLayout`, shared with backends/keras_backend.py). 'same' padding in the
spec is TF's own; explicit padding goes to tf.nn.conv2d as an explicit padding list.

Semantics kept identical to the suite's (PyTorch's) definitions, written out in TF ops:
- optimizers: sgd p -= lr*g; momentum v = mu*v + g, p -= lr*v; adam with bias-corrected m and v
  and eps outside the square root; rmsprop v = rho*v + (1-rho)*g^2, p -= lr*g/(sqrt(v)+eps);
- batchnorm: normalizes with the biased batch variance (tf.nn.moments) and keeps the UNBIASED
  running variance with PyTorch's momentum meaning (exactly the canonical state);
- loss: mean sparse softmax cross-entropy from logits.

This module imports only NumPy at import time (TfLayout is used by the Keras adapters under the
jax and torch backends too); TensorFlow is imported in build().
"""
import os
from collections import OrderedDict

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported


# --- canonical <-> TF layout (NumPy only) -------------------------------------------------------

class TfLayout(object):
    """Converts canonical parameters to TF's NHWC-world layout and back.

    conv kernels OIHW <-> HWIO; dense kernels are (in, out) in both; the first dense kernel after a
    flatten of a (C, H, W) map has its rows permuted from (c, h, w) order to (h, w, c) order, and so
    do the per-feature vectors of any 1-D batchnorm between that flatten and that dense layer.
    """

    def __init__(self, spec):
        self.spec = spec
        self.row_perm = {}  # canonical name -> permutation p: tf_value = canonical_value[p]
        self.conv = set()
        perm = None
        in_shape = spec.input_shape
        for layer, shape in zip(spec.layers, spec.shapes):
            if layer.kind == "conv2d":
                self.conv.add(layer.name + ".weight")
            elif layer.kind == "flatten" and len(in_shape) == 3:
                c, h, w = in_shape
                p = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
                perm = None if c == 1 else p  # one channel: (c,h,w) and (h,w,c) orders coincide
            elif layer.kind == "batchnorm" and perm is not None:
                for field in ("gamma", "beta", "running_mean", "running_var"):
                    self.row_perm[layer.name + "." + field] = perm
            elif layer.kind == "dense":
                if perm is not None:
                    self.row_perm[layer.name + ".weight"] = perm
                perm = None
            in_shape = shape

    def to_tf(self, name, value):
        value = np.asarray(value)
        if name in self.conv:
            return np.ascontiguousarray(value.transpose(2, 3, 1, 0))
        if name in self.row_perm:
            return np.ascontiguousarray(value[self.row_perm[name]])
        return value

    def from_tf(self, name, value):
        """A fresh C-contiguous array the caller owns (never a view of a framework buffer)."""
        value = np.asarray(value)
        if name in self.conv:
            return np.array(value.transpose(3, 2, 0, 1), order="C", copy=True)
        if name in self.row_perm:
            out = np.empty_like(value)
            out[self.row_perm[name]] = value
            return out
        return np.array(value, order="C", copy=True)


def nchw_to_nhwc(x, dtype):
    """Canonical NCHW batch -> contiguous NHWC (a free reshape when C == 1)."""
    x = np.asarray(x, dtype=dtype)
    if x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def set_tf_threads(tf, threads):
    """intra- and inter-op pools of TF; must run before TF executes its first op."""
    if not threads:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # the runtime already started in this process
        return "could not set TF threads (%s)" % exc
    return None


def tf_environment(tf):
    info = {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)")}
    try:
        build = tf.sysconfig.get_build_info()
        info["tf_build"] = {k: build[k] for k in ("is_cuda_build", "is_rocm_build") if k in build}
    except Exception:  # pragma: no cover - informational only
        pass
    return info


def check_tf_device(tf, device):
    if device == "cuda":
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            raise Unavailable("no CUDA device: tf.config.list_physical_devices('GPU') is empty "
                              "(TensorFlow %s; the tf env installs the CPU-only tensorflow-cpu "
                              "wheel); run on a GPU machine with tensorflow[and-cuda], or with "
                              "--device cpu" % tf.__version__)
        return "/GPU:0"
    return "/CPU:0"


def tf_device_peak_bytes(tf, tf_device):
    """Peak bytes of TF's allocator on the GPU (None on the CPU)."""
    if not tf_device.startswith("/GPU"):
        return None
    return int(tf.config.experimental.get_memory_info(tf_device.lstrip("/"))["peak"])


def tf_gpu_details(tf, tf_device):
    """GPU name and compute capability as TF reports them ({} on the CPU)."""
    if not tf_device.startswith("/GPU"):
        return {}
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return {"gpu_name": details.get("device_name", ""),
            "compute_capability": details.get("compute_capability")}


# --- the adapter --------------------------------------------------------------------------------

class TfAdapter(Adapter):
    name = "tf"
    framework = "tensorflow"
    jit_compile = False

    def build(self):
        import tensorflow as tf

        self.tf = tf
        cfg = self.config
        self.thread_note = set_tf_threads(tf, cfg.threads)
        self.tf_device = check_tf_device(tf, cfg.device)
        if cfg.optimizer not in ("sgd", "momentum", "adam", "rmsprop"):
            raise Unsupported("optimizer %r" % cfg.optimizer)
        self.np_dtype = np.dtype(cfg.dtype)
        self.dtype = tf.as_dtype(cfg.dtype)
        tf.random.set_seed(cfg.seed)  # dropout masks (not shared with other backends)
        self.layout = TfLayout(self.spec)

        spec = self.spec
        init = _initial(spec, cfg)
        self.vars = OrderedDict()
        with tf.device(self.tf_device):
            for name, info in spec.params().items():
                value = self.layout.to_tf(name, init[name])
                self.vars[name] = tf.Variable(value, trainable=info.trainable,
                                              name=name.replace(".", "_"))
            self.trainable = [(n, v) for n, v in self.vars.items() if spec.params()[n].trainable]
            self.slots = self._make_slots()
            self.step_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")

        c, h, w = spec.input_shape
        x_spec = tf.TensorSpec([None, h, w, c], self.dtype)
        y_spec = tf.TensorSpec([None], tf.int64)
        self._train = tf.function(self._train_step, input_signature=[x_spec, y_spec],
                                  jit_compile=self.jit_compile)
        self._predict = tf.function(lambda x: self._forward(x, False), input_signature=[x_spec],
                                    jit_compile=self.jit_compile)

    def _make_slots(self):
        tf, opt = self.tf, self.config.optimizer
        names = {"sgd": (), "momentum": ("v",), "adam": ("m", "v"), "rmsprop": ("v",)}[opt]
        return OrderedDict(
            (n, tuple(tf.Variable(tf.zeros_like(v), trainable=False) for _ in names))
            for n, v in self.trainable)

    # -- the network in tf.nn ops ----------------------------------------------------------------
    def _forward(self, x, training):
        tf, cfg, v = self.tf, self.config, self.vars
        in_shape = self.spec.input_shape
        for layer, shape in zip(self.spec.layers, self.spec.shapes):
            kind = layer.kind
            if kind == "conv2d":
                if layer.padding_mode == "same":
                    pad = "SAME"
                elif layer.padding_mode == "valid":
                    pad = "VALID"
                else:
                    (pt, pb), (pl, pr) = layer.padding
                    pad = [[0, 0], [pt, pb], [pl, pr], [0, 0]]
                x = tf.nn.conv2d(x, v[layer.name + ".weight"], strides=[1] + list(layer.stride) + [1],
                                 padding=pad)
                if layer.use_bias:
                    x = tf.nn.bias_add(x, v[layer.name + ".bias"])
                x = tf_activate(tf, x, layer.activation)
            elif kind == "maxpool2d":
                x = tf.nn.max_pool2d(x, ksize=list(layer.size), strides=list(layer.stride),
                                     padding="VALID")
            elif kind == "flatten":
                x = tf.reshape(x, [-1, int(np.prod(shape))])
            elif kind == "dense":
                x = tf.matmul(x, v[layer.name + ".weight"])
                if layer.use_bias:
                    x = tf.nn.bias_add(x, v[layer.name + ".bias"])
                x = tf_activate(tf, x, layer.activation)
            elif kind == "dropout":
                if training and cfg.dropout and layer.rate > 0:
                    x = tf.nn.dropout(x, rate=layer.rate)
            elif kind == "batchnorm":
                x = self._batchnorm(x, layer, training)
            elif kind == "activation":
                x = tf_activate(tf, x, layer.function)
            else:
                raise Unsupported("layer kind %r" % kind)
            in_shape = shape
        return x

    def _batchnorm(self, x, layer, training):
        tf, v = self.tf, self.vars
        n = layer.name
        gamma, beta = v[n + ".gamma"], v[n + ".beta"]
        rm, rv = v[n + ".running_mean"], v[n + ".running_var"]
        if training:
            axes = list(range(len(x.shape) - 1))
            mean, var = tf.nn.moments(x, axes=axes)  # biased batch variance: normalizes
            count = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            m = layer.momentum
            rm.assign((1 - m) * rm + m * mean)
            # the running variance is unbiased (PyTorch's rule, the canonical state)
            rv.assign((1 - m) * rv + m * var * count / tf.maximum(count - 1, 1))
        else:
            mean, var = rm, rv
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, layer.eps)

    # -- training --------------------------------------------------------------------------------
    def _train_step(self, x, y):
        tf = self.tf
        variables = [v for _, v in self.trainable]
        with tf.GradientTape() as tape:
            logits = self._forward(x, True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        grads = tape.gradient(loss, variables)
        self._apply(grads)
        return loss

    def _apply(self, grads):
        """The suite's optimizer formulas (docs/results-schema.md#optimizers), in TF ops."""
        tf, c = self.tf, self.config
        t = self.step_count.assign_add(1)
        if c.optimizer == "adam":
            tt = tf.cast(t, tf.float64)
            bc1 = tf.cast(1 - tf.pow(tf.constant(c.beta1, tf.float64), tt), self.dtype)
            bc2 = tf.cast(1 - tf.pow(tf.constant(c.beta2, tf.float64), tt), self.dtype)
        for (name, p), g in zip(self.trainable, grads):
            slots = self.slots[name]
            if c.optimizer == "sgd":
                p.assign_sub(c.lr * g)
            elif c.optimizer == "momentum":
                v = slots[0].assign(slots[0] * c.momentum + g)
                p.assign_sub(c.lr * v)
            elif c.optimizer == "adam":
                m = slots[0].assign(c.beta1 * slots[0] + (1 - c.beta1) * g)
                v = slots[1].assign(c.beta2 * slots[1] + (1 - c.beta2) * g * g)
                p.assign_sub(c.lr * (m / bc1) / (tf.sqrt(v / bc2) + c.eps))
            else:  # rmsprop
                v = slots[0].assign(c.rho * slots[0] + (1 - c.rho) * g * g)
                p.assign_sub(c.lr * g / (tf.sqrt(v) + c.eps))

    def train_step(self, x, y):
        x = nchw_to_nhwc(x, self.np_dtype)
        y = np.asarray(y, dtype=np.int64)
        with self.tf.device(self.tf_device):
            loss = self._train(x, y)
        return float(loss)  # .numpy(): waits for the step, the timing sync point

    def predict(self, x):
        with self.tf.device(self.tf_device):
            return self._predict(nchw_to_nhwc(x, self.np_dtype)).numpy()

    # -- weights ---------------------------------------------------------------------------------
    def set_weights(self, params):
        missing = sorted(set(self.vars) - set(params))
        if missing:
            raise ValueError("set_weights: missing %s" % ", ".join(missing))
        for name, var in self.vars.items():
            var.assign(self.layout.to_tf(name, np.asarray(params[name], dtype=self.np_dtype)))
        # fresh optimizer state for fresh weights
        for slots in self.slots.values():
            for s in slots:
                s.assign(self.tf.zeros_like(s))
        self.step_count.assign(0)

    def get_weights(self):
        return OrderedDict((name, self.layout.from_tf(name, var.numpy()))
                           for name, var in self.vars.items())

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


def tf_activate(tf, x, function):
    """The spec's activation in tf ops (also used by benchmarks/bench_layers.py)."""
    if function == "relu":
        return tf.nn.relu(x)
    if function == "tanh":
        return tf.tanh(x)
    return x


def _initial(spec, cfg):
    from models.spec import init_weights
    return init_weights(spec, seed=cfg.seed, dtype=cfg.dtype)
