"""Canonical <-> channels-last, the one converter (TensorFlow, Keras, Flax and the graph-era TF
adapters all keep data NHWC and kernels HWIO).

Canonical: data NCHW, conv kernels OIHW, dense kernels (in, out), flatten in (C, H, W) order.
Channels-last frameworks flatten (H, W, C): instead of transposing activations, the rows of the
first dense kernel after a flatten of a multi-channel map are permuted (and so are the vectors of
any 1-D batchnorm between that flatten and that dense layer).
"""
import numpy as np

from backends.common.weights import IDENTITY, Layout

#: OIHW <-> HWIO
CONV_HWIO = Layout(lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1))


def _rows(perm):
    def back(a):
        out = np.empty_like(a)
        out[perm] = a
        return out
    return Layout(lambda a: a[perm], back)


class ChannelsLast(object):
    """`layout(name)`: the Layout of canonical parameter `name` in a channels-last framework."""

    def __init__(self, spec):
        self.rules = {}
        perm = None
        in_shape = spec.input_shape
        for layer, shape in zip(spec.layers, spec.shapes):
            if layer.kind == "conv2d":
                self.rules[layer.name + ".weight"] = CONV_HWIO
            elif layer.kind == "flatten" and len(in_shape) == 3:
                c, h, w = in_shape
                p = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
                perm = None if c == 1 else p  # one channel: (c,h,w) and (h,w,c) orders coincide
            elif layer.kind == "batchnorm" and perm is not None:
                for field in ("gamma", "beta", "running_mean", "running_var"):
                    self.rules[layer.name + "." + field] = _rows(perm)
            elif layer.kind == "dense":
                if perm is not None:
                    self.rules[layer.name + ".weight"] = _rows(perm)
                perm = None
            in_shape = shape

    def layout(self, name):
        return self.rules.get(name, IDENTITY)

    def to_native(self, name, value):
        return np.ascontiguousarray(self.layout(name).to_native(np.asarray(value)))

    def from_native(self, name, value):
        return np.array(self.layout(name).from_native(np.asarray(value)), order="C", copy=True)


def nchw_to_nhwc(x, dtype):
    """Canonical NCHW batch -> contiguous NHWC (a free reshape when C == 1)."""
    x = np.asarray(x, dtype=dtype)
    if x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return x


def max_norm_axes(kernel_ndim, channels_last):
    """The axes a max-norm constraint reduces over: every axis but the output unit's.

    Canonical / channels-first conv kernels are OIHW (reduce I, H, W); HWIO reduces H, W, I; dense
    kernels are (in, out) (reduce in), or (out, in) for nn.Linear-style layouts (not handled here)."""
    if kernel_ndim == 4:
        return (0, 1, 2) if channels_last else (1, 2, 3)
    return (0,)
