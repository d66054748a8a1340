"""The NumPy reference's convolution and pooling layers (im2col GEMMs on NHWC maps), with the
scratch buffers they reuse across steps. See backends/numpy_layers.py for the semantics.

3.6 / NumPy 1.19-compatible (it may run beside the CNTK worker).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided


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


class AvgPool2D(object):
    """The mean of each window (no padding); the gradient is spread evenly over the window."""

    def __init__(self, layer, bufs):
        self.layer = layer
        self.ph, self.pw = layer.size
        self.sh, self.sw = layer.stride
        self.bufs = bufs
        self.names = []

    def _taps(self, oh, ow):
        for i in range(self.ph):
            for j in range(self.pw):
                yield (slice(None), slice(i, i + self.sh * (oh - 1) + 1, self.sh),
                       slice(j, j + self.sw * (ow - 1) + 1, self.sw), slice(None))

    def forward(self, x, params, train):
        n, h, w, c = x.shape
        oh = (h - self.ph) // self.sh + 1
        ow = (w - self.pw) // self.sw + 1
        out = self.bufs.get(self.layer.name + ".out", (n, oh, ow, c), zero=True)
        for sl in self._taps(oh, ow):
            out += x[sl]
        out *= x.dtype.type(1.0 / (self.ph * self.pw))
        self.xshape = x.shape
        return out

    def backward(self, dy, grads):
        n, oh, ow, c = dy.shape
        dx = self.bufs.get(self.layer.name + ".dx", self.xshape, zero=True)
        share = dy * dy.dtype.type(1.0 / (self.ph * self.pw))
        for sl in self._taps(oh, ow):
            dx[sl] += share
        return dx
