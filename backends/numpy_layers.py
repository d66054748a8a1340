"""The NumPy reference's layers: one small class per layer kind, forward and backward side by side
(conv and pooling in backends/numpy_conv.py, the rest here).

Inside, spatial activations are NHWC: im2col then gathers contiguous channel runs and a conv is one
GEMM whose output is already NHWC (no transposes on the hot path). Large buffers are reused across
steps: fresh multi-MB arrays cost page faults on every step. backends/numpy_ref.py walks the spec
with these (its LAYERS table) and trains them.

Semantics that the frameworks share and this file must match:
- max-pool sends a window's gradient to its FIRST maximum in row-major order (ties are common on
  MNIST's flat background); average pooling spreads it evenly over the window;
- batchnorm normalizes with the biased batch variance and keeps an unbiased running variance.

3.6 / NumPy 1.19-compatible (it may run beside the CNTK worker).
"""
import numpy as np



class Dense(object):
    def __init__(self, layer, bufs, need_input_grad):
        self.layer = layer
        self.names = [layer.name + ".weight"] + ([layer.name + ".bias"] if layer.use_bias else [])
        self.need_input_grad = need_input_grad

    def forward(self, x, params, train):
        out = x.dot(params[self.names[0]])
        if len(self.names) > 1:
            out += params[self.names[1]]
        out = _activate(out, self.layer.activation)
        self.cache = (x, out, params)
        return out

    def backward(self, dy, grads):
        x, out, params = self.cache
        dy = _activate_backward(dy, out, self.layer.activation)
        grads[self.names[0]] = x.T.dot(dy)
        if len(self.names) > 1:
            grads[self.names[1]] = dy.sum(axis=0)
        return dy.dot(params[self.names[0]].T) if self.need_input_grad else None


class Activation(object):
    def __init__(self, layer):
        self.function = layer.function
        self.names = []

    def forward(self, x, params, train):
        self.out = _activate(x, self.function)
        return self.out

    def backward(self, dy, grads):
        return _activate_backward(dy, self.out, self.function)


def _activate(x, function):
    if function == "relu":
        return np.maximum(x, 0)
    if function == "tanh":
        return np.tanh(x)
    return x


def _activate_backward(dy, out, function):
    if function == "relu":
        return dy * (out > 0)
    if function == "tanh":
        return dy * (1 - out * out)
    return dy


class Flatten(object):
    """NHWC inside, but the canonical flatten order is (C, H, W)."""
    names = []

    def forward(self, x, params, train):
        self.shape = x.shape
        if x.ndim == 4:
            x = x.transpose(0, 3, 1, 2)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, grads):
        if len(self.shape) == 4:
            n, h, w, c = self.shape
            return dy.reshape(n, c, h, w).transpose(0, 2, 3, 1)
        return dy.reshape(self.shape)


class Dropout(object):
    """Inverted dropout with a mask drawn from the adapter's seeded generator."""
    names = []

    def __init__(self, layer, rng, enabled):
        self.rate = layer.rate
        self.rng = rng
        self.enabled = enabled

    def forward(self, x, params, train):
        self.mask = None
        if not (train and self.enabled and self.rate > 0):
            return x
        keep = 1.0 - self.rate
        self.mask = (self.rng.random_sample(x.shape) < keep).astype(x.dtype) / x.dtype.type(keep)
        return x * self.mask

    def backward(self, dy, grads):
        return dy if self.mask is None else dy * self.mask


class BatchNorm(object):
    """Per-channel (last axis inside: NHWC or (N, F)) batch normalization."""

    def __init__(self, layer):
        self.layer = layer
        n = layer.name
        self.names = [n + ".gamma", n + ".beta"]
        self.state_names = (n + ".running_mean", n + ".running_var")

    # Statistics and the backward reductions accumulate in float64: in float32 the backward's
    # mean-subtractions cancel badly (a 1-3% gradient error on torch_bn, measured), which the
    # frameworks avoid; results are cast back to the run's dtype.
    def forward(self, x, params, train):
        gamma, beta = params[self.names[0]], params[self.names[1]]
        axes = tuple(range(x.ndim - 1))
        if train:
            mean = x.mean(axis=axes, dtype=np.float64)
            xc = x - mean.astype(x.dtype)
            var = np.square(x - mean).mean(axis=axes)
            count = x.size // x.shape[-1]
            m = self.layer.momentum
            rm, rv = self.state_names
            params[rm] = ((1 - m) * params[rm] + m * mean).astype(x.dtype)
            params[rv] = ((1 - m) * params[rv] + m * var * count / max(count - 1, 1)).astype(x.dtype)
        else:
            mean, var = params[self.state_names[0]], params[self.state_names[1]]
            xc = x - mean
        inv_std = (1.0 / np.sqrt(np.asarray(var, np.float64) + self.layer.eps)).astype(x.dtype)
        xhat = xc * inv_std
        self.cache = (xhat, inv_std, gamma, axes)
        return xhat * gamma + beta

    def backward(self, dy, grads):
        xhat, inv_std, gamma, axes = self.cache
        g_gamma = (dy * xhat).sum(axis=axes, dtype=np.float64)
        g_beta = dy.sum(axis=axes, dtype=np.float64)
        grads[self.names[0]] = g_gamma.astype(dy.dtype)
        grads[self.names[1]] = g_beta.astype(dy.dtype)
        count = dy.size // dy.shape[-1]
        # dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))
        dx = dy - (g_beta / count).astype(dy.dtype) - xhat * (g_gamma / count).astype(dy.dtype)
        return dx * (gamma * inv_std)
