"""The NumPy reference: forward, backward and optimizer step written from scratch. The oracle.

Its layers (backends/numpy_layers.py) are built from the spec by the same walker as every
adapter's (backends/common/walker.py), through the LAYERS table below, with two look-ahead
fusions: a conv followed by a max-pool computes only what the pool reads (and its relu is applied
by the pool, on the smaller map). Every other backend is checked against this file, and this file
is checked against central finite differences (tests/), so it depends on no framework.

The interface is canonical (NCHW in, OIHW kernels, flatten in C,H,W order); conversion to the
layers' NHWC happens at the edges.

Semantics that the frameworks share and this file must match:
- the loss is the batch mean of softmax cross-entropy; optimizers follow PyTorch's formulas
  (momentum: v = mu*v + g, p -= lr*v; Nesterov p -= lr*(g + mu*v); Adam and RMSProp with eps
  outside the square root; Adadelta with eps inside both), at the schedule's lr for each update;
- a max-norm constraint (models/spec.py: ModelSpec.max_norms) rescales the constrained kernels
  after every update, as Keras' MaxNorm does.

3.6 / NumPy 1.19-compatible (it may run beside the CNTK worker).
"""
from collections import OrderedDict

import numpy as np

from backends.base import Unavailable, Unsupported
from backends.common import schedule
from backends.common.adapter import TableAdapter, max_norm_numpy
from backends.common.walker import walk
# the layer classes (also imported from here by the tests)
from backends.numpy_conv import AvgPool2D, Conv2D, MaxPool2D, _Buffers  # noqa: F401
from backends.numpy_layers import Activation, BatchNorm, Dense, Dropout, Flatten  # noqa: F401


# --- loss and optimizers -----------------------------------------------------------------------

def softmax_cross_entropy(logits, y):
    """Mean loss over the batch and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    n = logits.shape[0]
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(n), y]))
    grad = e / s
    grad[np.arange(n), y] -= 1
    grad /= n
    return loss, grad


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop", "adadelta")


class Optimizer(object):
    """The suite's optimizers (PyTorch's formulas, docs/results-schema.md#optimizers) on a dict of
    arrays, at the learning rate of the schedule (backends/common/schedule.py) for this update."""

    def __init__(self, config):
        schedule.check(config)
        self.c = config
        self.state = {}
        self.t = 0

    def step(self, params, grads):
        c = self.c
        lr = schedule.lr_at(c, self.t)  # t updates made before this one
        self.t += 1
        for name, g in grads.items():
            p = params[name]
            if c.optimizer == "sgd":
                p -= lr * g
            elif c.optimizer in ("momentum", "nesterov"):
                v = self.state.get(name)
                v = g.copy() if v is None else v * c.momentum + g
                self.state[name] = v
                p -= lr * (g + c.momentum * v if c.optimizer == "nesterov" else v)
            elif c.optimizer == "adam":
                m, v = self.state.get(name, (np.zeros_like(p), np.zeros_like(p)))
                m = c.beta1 * m + (1 - c.beta1) * g
                v = c.beta2 * v + (1 - c.beta2) * g * g
                self.state[name] = (m, v)
                mhat = m / (1 - c.beta1 ** self.t)
                vhat = v / (1 - c.beta2 ** self.t)
                p -= (lr * mhat / (np.sqrt(vhat) + c.eps)).astype(p.dtype)
            elif c.optimizer == "rmsprop":
                v = self.state.get(name, np.zeros_like(p))
                v = c.rho * v + (1 - c.rho) * g * g
                self.state[name] = v
                p -= (lr * g / (np.sqrt(v) + c.eps)).astype(p.dtype)
            elif c.optimizer == "adadelta":  # eps inside both square roots, as every framework
                v, u = self.state.get(name, (np.zeros_like(p), np.zeros_like(p)))
                v = c.rho * v + (1 - c.rho) * g * g
                d = np.sqrt(u + c.eps) / np.sqrt(v + c.eps) * g
                u = c.rho * u + (1 - c.rho) * d * d
                self.state[name] = (v, u)
                p -= (lr * d).astype(p.dtype)
            else:
                raise Unsupported("optimizer %r" % c.optimizer)


# --- the spec, layer by layer ------------------------------------------------------------------

def _conv2d(ref, step):
    layer, spec = step.layer, ref.spec
    pool = step.next if step.next is not None and step.next.kind == "maxpool2d" else None
    fuse = layer.activation == "relu" and pool is not None
    crop = window_major = None
    if pool is not None:  # the rows/columns the pool's windows read
        ph, pw = spec.shapes[step.index + 1][1:]
        crop = ((ph - 1) * pool.stride[0] + pool.size[0], (pw - 1) * pool.stride[1] + pool.size[1])
        if tuple(pool.stride) == tuple(pool.size) and not step.needs_input_grad:
            window_major = tuple(pool.size)
    _bind(ref, layer.name, ("weight", "bias") if layer.use_bias else ("weight",))
    return Conv2D(layer, step.in_shape, ref.bufs, step.needs_input_grad, fused_relu=fuse,
                  crop=crop, window_major=window_major)


def _maxpool2d(ref, step):
    prev = step.prev
    fuse = prev is not None and prev.kind == "conv2d" and prev.activation == "relu"
    return MaxPool2D(step.layer, ref.bufs, fused_relu=fuse)


def _dense(ref, step):
    _bind(ref, step.layer.name, ("weight", "bias") if step.layer.use_bias else ("weight",))
    return Dense(step.layer, ref.bufs, step.needs_input_grad)


def _batchnorm(ref, step):
    _bind(ref, step.layer.name, ("gamma", "beta", "running_mean", "running_var"))
    return BatchNorm(step.layer)


def _bind(ref, layer_name, fields):
    for field in fields:
        name = layer_name + "." + field
        ref.bindings.bind(name, name)  # the handle is the name: the parameters are a dict


class NumpyReference(TableAdapter):
    name = "numpy"
    precision_note = "is the float32/float64 oracle: NumPy has no bfloat16 dtype"
    framework = "numpy"
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": _maxpool2d,
        "avgpool2d": lambda ref, step: AvgPool2D(step.layer, ref.bufs),
        "dense": _dense,
        "activation": lambda ref, step: Activation(step.layer),
        "flatten": lambda ref, step: Flatten(),
        "dropout": lambda ref, step: Dropout(step.layer, ref.rng, ref.config.dropout),
        "batchnorm": _batchnorm,
    }

    def build(self):
        if self.config.device != "cpu":
            raise Unavailable("the NumPy reference runs on the CPU only (asked for device %r)"
                              % self.config.device)
        if self.config.optimizer not in OPTIMIZERS:
            raise Unsupported("optimizer %r" % self.config.optimizer)
        self.dtype = np.dtype(self.config.dtype)
        self.bufs = _Buffers(self.dtype)
        self.rng = np.random.RandomState(self.config.seed + 1)  # dropout masks
        self.params = OrderedDict()
        self.new_bindings()
        self.layers = walk(self)
        self.bindings.check(self.spec.params())
        self.max_norms = [(name, c, (1, 2, 3) if len(info.shape) == 4 else (0,))
                          for (name, c), info in ((item, self.spec.params()[item[0]])
                                                  for item in self.spec.max_norms().items())]
        self.optimizer = Optimizer(self.config)

    def read_param(self, name):
        return self.params[name]

    def write_param(self, name, value):
        self.params[name] = np.array(value, dtype=self.dtype)

    def reset_optimizer(self):
        self.optimizer = Optimizer(self.config)

    def _to_internal(self, x):
        x = np.asarray(x, dtype=self.dtype)
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 else x

    def forward(self, x, train):
        h = self._to_internal(x)
        for layer in self.layers:
            h = layer.forward(h, self.params, train)
        return h

    def gradients(self, x, y):
        """Loss and canonical gradients of one batch (used by train_step and the FD tests)."""
        logits = self.forward(x, train=True)
        loss, d = softmax_cross_entropy(logits, np.asarray(y))
        grads = OrderedDict()
        for layer in reversed(self.layers):
            if d is None:  # below the first parametrized layer nothing needs a gradient
                break
            d = layer.backward(d, grads)
        return loss, grads

    def train_step(self, x, y):
        loss, grads = self.gradients(x, y)
        self.optimizer.step(self.params, grads)
        for name, c, axes in self.max_norms:
            max_norm_numpy(self.params[name], c, axes)
        return loss

    def predict(self, x):
        return np.array(self.forward(x, train=False))

    def environment(self):
        info = {"framework": "numpy", "framework_version": np.__version__,
                "layout": "NHWC inside, canonical at the boundary", "device_name": "cpu"}
        try:
            from threadpoolctl import threadpool_info
            pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
            if pools:
                info["blas"] = "%s %s (%s, %s threads)" % (
                    pools[0].get("internal_api"), pools[0].get("version"),
                    pools[0].get("architecture"), pools[0].get("num_threads"))
        except ImportError:
            pass
        return info
