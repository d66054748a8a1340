"""The NumPy reference: forward, backward and optimizer step written from scratch. The oracle.

One small class per layer, forward and backward side by side. Every other backend is checked
against this file, and this file is checked against central finite differences (tests/), so it
depends on no framework.

Inside, spatial activations are NHWC: im2col then gathers contiguous channel runs and a conv is one
GEMM whose output is already NHWC (no transposes on the hot path). The interface is canonical
(NCHW in, OIHW kernels, flatten in C,H,W order); conversion happens at the edges. Large buffers
are reused across steps: fresh multi-MB arrays cost page faults on every step.

Semantics that the frameworks share and this file must match:
- max-pool sends a window's gradient to its FIRST maximum in row-major order (ties are common on
  MNIST's flat background);
- the loss is the batch mean of softmax cross-entropy; optimizers follow PyTorch's formulas
  (momentum: v = mu*v + g, p -= lr*v; Adam and RMSProp with eps outside the square root);
- batchnorm normalizes with the biased batch variance and keeps an unbiased running variance.

3.6 / NumPy 1.19-compatible (it may run beside the CNTK worker).
"""
from collections import OrderedDict

import numpy as np
from numpy.lib.stride_tricks import as_strided

from backends.base import Adapter, Unavailable, Unsupported


class _Buffers(object):
    """Named scratch arrays kept across steps (reallocated only when a shape changes)."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.arrays = {}

    def get(self, key, shape, zero=False, dtype=None):
        a = self.arrays.get(key)
        dt = dtype or self.dtype
        if a is None or a.shape != tuple(shape) or a.dtype != dt:
            a = np.zeros(shape, dt) if zero else np.empty(shape, dt)
            self.arrays[key] = a
        elif zero:
            a.fill(0)
        return a


def _gather(x, dims, dest):
    """im2col: copy the strided view of x given by dims [(size, byte stride), ...] into dest."""
    shape = [d for d, _ in dims]
    view = dest.reshape(shape)
    assert np.may_share_memory(view, dest)  # a copy would be filled in vain
    view[...] = as_strided(x, shape, [st for _, st in dims])


# --- layers ------------------------------------------------------------------------------------

class Conv2D(object):
    """Convolution as one GEMM over im2col columns; bias folded in as a column of ones.

    Column matrix: one row per output position, one column per tap (i, j, c), bias last. With one
    input channel it is stored transposed, one row per tap: a tap's values for all positions are
    then runs of `ow` pixels of the image, not single pixels (MNIST's first conv).

    Output positions are in (n, y, x) order, so the output is NHWC. Below a max-pool whose windows
    tile the map, when no input gradient is needed (the first conv), they are window-major instead:
    the output is (n, pi, pj, y', x', c) with y = y' * ph + pi, x = x' * pw + pj, and each of the
    pool's taps (pi, pj) is one contiguous block instead of runs of `cout` values (seed_convnet's
    pool1, on the largest map, then takes ~40% less time). With an input gradient, col2im would pay
    for it instead.
    """

    def __init__(self, layer, in_shape, bufs, need_input_grad, fused_relu=False, crop=None,
                 window_major=None):
        self.layer = layer
        self.kh, self.kw = layer.kernel
        self.sh, self.sw = layer.stride
        self.pad = layer.padding
        self.cin = in_shape[0]
        self.cout = layer.filters
        self.bufs = bufs
        self.need_input_grad = need_input_grad
        # conv+relu followed by max-pool: the pool applies the relu on its 4x smaller output
        # (max and relu commute; ties resolve to the same first maximum, see MaxPool2D)
        self.activation = "linear" if fused_relu else layer.activation
        # followed by a max-pool: compute only the rows and columns its windows read (a 2x2 pool
        # of an 11x11 map reads 10x10); the rest would get no gradient anyway
        self.crop = crop
        self.window_major = window_major  # the pool's (ph, pw), or None
        self.names = [layer.name + ".weight"] + ([layer.name + ".bias"] if layer.use_bias else [])

    def _wmat(self, params):
        """(kh*kw*cin [+1], cout): rows in the (i, j, c) order of the im2col columns, bias last."""
        w = params[self.names[0]]
        k = self.kh * self.kw * self.cin
        wmat = self.bufs.get(self.layer.name + ".wmat", (k + (len(self.names) > 1), self.cout))
        wmat[:k] = w.transpose(2, 3, 1, 0).reshape(k, self.cout)
        if len(self.names) > 1:
            wmat[k] = params[self.names[1]]
        return wmat

    def forward(self, x, params, train):
        (pt, pb), (pl, pr) = self.pad
        if pt or pb or pl or pr:
            n, h, w, c = x.shape
            xp = self.bufs.get(self.layer.name + ".xpad", (n, h + pt + pb, w + pl + pr, c), zero=True)
            xp[:, pt:pt + h, pl:pl + w, :] = x
            x = xp
        n, h, w, c = x.shape
        oh = (h - self.kh) // self.sh + 1
        ow = (w - self.kw) // self.sw + 1
        if self.crop is not None:
            oh, ow = min(oh, self.crop[0]), min(ow, self.crop[1])
        k = self.kh * self.kw * c
        bias = len(self.names) > 1
        s = x.strides  # (size, stride) of each index of the columns, as a view of x
        if self.window_major is None:
            positions = [(n, s[0]), (oh, self.sh * s[1]), (ow, self.sw * s[2])]
        else:
            ph, pw = self.window_major
            positions = [(n, s[0]), (ph, self.sh * s[1]), (pw, self.sw * s[2]),
                         (oh // ph, ph * self.sh * s[1]), (ow // pw, pw * self.sw * s[2])]
        taps = [(self.kh, s[1]), (self.kw, s[2]), (c, s[3])]
        if c == 1:  # tap-major (k [+1], positions); `cols` below is its transposed view
            cols_t = self.bufs.get(self.layer.name + ".cols_t", (k + bias, n * oh * ow))
            _gather(x, taps + positions, cols_t[:k])
            if bias:
                cols_t[k] = 1
            cols = cols_t.T
        else:
            cols = self.bufs.get(self.layer.name + ".cols", (n * oh * ow, k + bias))
            _gather(x, positions + taps, cols[:, :k])
            if bias:
                cols[:, k] = 1
        out = self.bufs.get(self.layer.name + ".out", (n * oh * ow, self.cout))
        np.matmul(cols, self._wmat(params), out=out)
        out = out.reshape([d for d, _ in positions] + [self.cout])
        if self.activation == "relu":
            np.maximum(out, 0, out=out)
        elif self.activation == "tanh":
            np.tanh(out, out=out)
        self.cache = (cols, x.shape, out if self.activation != "linear" else None, params)
        return out

    def backward(self, dy, grads):
        cols, xshape, act_out, params = self.cache
        if self.activation == "relu":
            dy = dy * (act_out > 0)
        elif self.activation == "tanh":
            dy = dy * (1 - act_out * act_out)
        cout = self.cout
        d2 = dy.reshape(-1, cout)  # rows in the order of the columns' rows, whatever the layout
        gw = cols.T.dot(d2)  # (k [+1], cout)
        k = self.kh * self.kw * self.cin
        grads[self.names[0]] = gw[:k].reshape(self.kh, self.kw, self.cin, cout).transpose(3, 2, 0, 1)
        if len(self.names) > 1:
            grads[self.names[1]] = gw[k].copy()
        if not self.need_input_grad:
            return None
        n, oh, ow = dy.shape[:3]  # NHWC here: window-major outputs need no input gradient
        # col2im, one tap at a time: dcols[t] = dy . W_t^T is an NHWC block (n, oh, ow, cin), so
        # each add below moves runs of ow*cin values (one GEMM over k columns would leave runs of
        # cin, and the adds, not the GEMM, would dominate)
        w = params[self.names[0]]
        wt = w.transpose(2, 3, 0, 1).reshape(self.kh * self.kw, cout, self.cin)
        dcols = self.bufs.get(self.layer.name + ".dcols", (self.kh * self.kw, n * oh * ow, self.cin))
        np.matmul(d2, wt, out=dcols)
        dcols = dcols.reshape(self.kh * self.kw, n, oh, ow, self.cin)
        dx = self.bufs.get(self.layer.name + ".dx", xshape, zero=True)
        for i in range(self.kh):
            for j in range(self.kw):
                dx[:, i:i + self.sh * (oh - 1) + 1:self.sh,
                   j:j + self.sw * (ow - 1) + 1:self.sw, :] += dcols[i * self.kw + j]
        (pt, pb), (pl, pr) = self.pad
        return dx[:, pt:xshape[1] - pb, pl:xshape[2] - pr, :]


class MaxPool2D(object):
    """Max over each window; the gradient goes to the window's first maximum (row-major).

    Input NHWC (n, h, w, c), or window-major (n, ph, pw, oh, ow, c) from the conv below (see
    Conv2D), where tap (i, j) of every window is x[:, i, j]. Output NHWC.
    """

    def __init__(self, layer, bufs, fused_relu=False):
        self.layer = layer
        self.ph, self.pw = layer.size
        self.sh, self.sw = layer.stride
        self.bufs = bufs
        self.fused_relu = fused_relu
        self.window_major = False  # set by forward from the input's layout
        self.names = []

    def _slices(self, oh, ow):
        """(k, index of tap k of every window in the input), k = i * pw + j: row-major order."""
        for i in range(self.ph):
            for j in range(self.pw):
                if self.window_major:
                    yield i * self.pw + j, (slice(None), i, j)
                    continue
                yield (i * self.pw + j, (slice(None), slice(i, i + self.sh * (oh - 1) + 1, self.sh),
                                         slice(j, j + self.sw * (ow - 1) + 1, self.sw), slice(None)))

    def forward(self, x, params, train):
        self.window_major = x.ndim == 6
        if self.window_major:
            n, _, _, oh, ow, c = x.shape
        else:
            n, h, w, c = x.shape
            oh = (h - self.ph) // self.sh + 1
            ow = (w - self.pw) // self.sw + 1
        out = self.bufs.get(self.layer.name + ".out", (n, oh, ow, c))
        index = np.uint8 if self.ph * self.pw <= 256 else np.int32
        arg = self.bufs.get(self.layer.name + ".arg", (n, oh, ow, c), dtype=index)
        better = self.bufs.get(self.layer.name + ".better", (n, oh, ow, c), dtype=index)
        for k, sl in self._slices(oh, ow):
            if k == 0:
                out[...] = x[sl]
                arg.fill(0)
            else:
                np.greater(x[sl], out, out=better)  # strict: an equal later value never wins
                # k only grows, so "arg = k where better" is arg = max(arg, k * better):
                # two passes over small integers, ~10x faster than np.copyto(arg, k, where=better)
                np.multiply(better, k, out=better)
                np.maximum(arg, better, out=arg)
                np.maximum(out, x[sl], out=out)
        if self.fused_relu:
            np.maximum(out, 0, out=out)
        self.cache = (x.shape, arg, out)
        return out

    def backward(self, dy, grads):
        xshape, arg, out = self.cache
        n, oh, ow, c = dy.shape
        overlapping = self.sh < self.ph or self.sw < self.pw
        tiled = self.window_major or (
            (self.sh, self.sw) == (self.ph, self.pw) and (oh * self.sh, ow * self.sw) == xshape[1:3])
        dx = self.bufs.get(self.layer.name + ".dx", xshape, zero=not tiled)
        hit = self.bufs.get(self.layer.name + ".hit", dy.shape, dtype=bool)
        if self.fused_relu:  # relu'(max) = 0 where the window's maximum is <= 0
            positive = self.bufs.get(self.layer.name + ".positive", dy.shape, dtype=bool)
            np.greater(out, 0, out=positive)
        if overlapping:
            part = self.bufs.get(self.layer.name + ".part", dy.shape)
        for k, sl in self._slices(oh, ow):
            np.equal(arg, k, out=hit)
            if self.fused_relu:
                np.logical_and(hit, positive, out=hit)
            if overlapping:  # an input position can be the maximum of several windows
                np.multiply(dy, hit, out=part)
                dx[sl] += part
            else:  # each input position belongs to at most one window: write, don't accumulate
                np.multiply(dy, hit, out=dx[sl])
        return dx


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


class Optimizer(object):
    """SGD, SGD with momentum, Adam and RMSProp in PyTorch's formulation, on a dict of arrays."""

    def __init__(self, config):
        self.c = config
        self.state = {}
        self.t = 0

    def step(self, params, grads):
        c = self.c
        self.t += 1
        for name, g in grads.items():
            p = params[name]
            if c.optimizer == "sgd":
                p -= c.lr * g
            elif c.optimizer == "momentum":
                v = self.state.get(name)
                v = g.copy() if v is None else v * c.momentum + g
                self.state[name] = v
                p -= c.lr * v
            elif c.optimizer == "adam":
                m, v = self.state.get(name, (np.zeros_like(p), np.zeros_like(p)))
                m = c.beta1 * m + (1 - c.beta1) * g
                v = c.beta2 * v + (1 - c.beta2) * g * g
                self.state[name] = (m, v)
                mhat = m / (1 - c.beta1 ** self.t)
                vhat = v / (1 - c.beta2 ** self.t)
                p -= (c.lr * mhat / (np.sqrt(vhat) + c.eps)).astype(p.dtype)
            elif c.optimizer == "rmsprop":
                v = self.state.get(name, np.zeros_like(p))
                v = c.rho * v + (1 - c.rho) * g * g
                self.state[name] = v
                p -= (c.lr * g / (np.sqrt(v) + c.eps)).astype(p.dtype)
            else:
                raise Unsupported("optimizer %r" % c.optimizer)


# --- the adapter -------------------------------------------------------------------------------

class NumpyReference(Adapter):
    name = "numpy"
    framework = "numpy"

    def build(self):
        if self.config.device != "cpu":
            raise Unavailable("the NumPy reference runs on the CPU only (asked for device %r)"
                              % self.config.device)
        self.dtype = np.dtype(self.config.dtype)
        self.bufs = _Buffers(self.dtype)
        self.rng = np.random.RandomState(self.config.seed + 1)  # dropout masks
        layers = self.spec.layers
        self.layers = []
        in_shape = self.spec.input_shape
        seen_params = False
        for i, layer in enumerate(layers):
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            prev = layers[i - 1] if i else None
            if layer.kind == "conv2d":
                pool = nxt if nxt is not None and nxt.kind == "maxpool2d" else None
                fuse = layer.activation == "relu" and pool is not None
                crop = window_major = None
                if pool is not None:  # the rows/columns the pool's windows read
                    ph, pw = self.spec.shapes[i + 1][1:]
                    crop = ((ph - 1) * pool.stride[0] + pool.size[0],
                            (pw - 1) * pool.stride[1] + pool.size[1])
                    if tuple(pool.stride) == tuple(pool.size) and not seen_params:
                        window_major = tuple(pool.size)
                self.layers.append(Conv2D(layer, in_shape, self.bufs, seen_params, fused_relu=fuse,
                                          crop=crop, window_major=window_major))
                seen_params = True
            elif layer.kind == "maxpool2d":
                fuse = prev is not None and prev.kind == "conv2d" and prev.activation == "relu"
                self.layers.append(MaxPool2D(layer, self.bufs, fused_relu=fuse))
            elif layer.kind == "dense":
                self.layers.append(Dense(layer, self.bufs, seen_params))
                seen_params = True
            elif layer.kind == "activation":
                self.layers.append(Activation(layer))
            elif layer.kind == "flatten":
                self.layers.append(Flatten())
            elif layer.kind == "dropout":
                self.layers.append(Dropout(layer, self.rng, self.config.dropout))
            elif layer.kind == "batchnorm":
                self.layers.append(BatchNorm(layer))
            else:
                raise Unsupported("layer kind %r" % layer.kind)
            in_shape = self.spec.shapes[i]
        self.optimizer = Optimizer(self.config)
        self.params = None

    def set_weights(self, params):
        expected = self.spec.params()
        missing = sorted(set(expected) - set(params))
        if missing:
            raise ValueError("set_weights: missing %s" % ", ".join(missing))
        self.params = OrderedDict((k, np.array(params[k], dtype=self.dtype)) for k in expected)
        self.optimizer = Optimizer(self.config)

    def get_weights(self):
        return OrderedDict((k, v.copy()) for k, v in self.params.items())

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
