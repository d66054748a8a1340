"""The framework-neutral model spec: a TOML file parsed into a frozen ModelSpec.

A model is data. This module validates it, infers every shape, counts parameters and FLOPs, hashes
it, and draws the canonical initial weights every adapter starts from.

Canonical layout (every adapter converts at its own boundary):
  data NCHW; conv kernels OIHW; dense kernels (in, out); flatten in (C, H, W) order;
  batchnorm: gamma, beta, running_mean, running_var (unbiased running variance, PyTorch's rule).

This module is imported by workers that may run on CPython 3.6 (CNTK): keep it 3.6-compatible
(no dataclasses, no walrus, no builtin generics in annotations). TOML parsing happens only in the
parent (Python 3.11, tomllib); workers receive the spec as a plain dict.
"""
import hashlib
import json
import math
import os
import re
from collections import OrderedDict
from typing import NamedTuple, Optional, Tuple

import numpy as np

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
ACTIVATIONS = ("relu", "tanh", "linear")
LAYER_KINDS = ("conv2d", "maxpool2d", "avgpool2d", "dense", "dropout", "batchnorm", "flatten",
               "activation")
POOL_KINDS = ("maxpool2d", "avgpool2d")
#: Keras' epsilon in its MaxNorm constraint: w * clip(norm, 0, c) / (MAX_NORM_EPS + norm)
MAX_NORM_EPS = 1e-7
#: the largest size, shape element count or tensor: frameworks index with int32
MAX_SIZE = 2 ** 31 - 1
LAYER_NAME = re.compile(r"[A-Za-z0-9_]+\Z")  # ASCII: every framework accepts it as an op name


class SpecError(ValueError):
    """A malformed spec: the message names the file, the layer and the field."""


class Conv2D(NamedTuple):
    name: str
    filters: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[Tuple[int, int], Tuple[int, int]]  # ((top, bottom), (left, right))
    padding_mode: str  # "valid" | "same" | "explicit": kept so adapters can use their own idiom
    activation: str
    use_bias: bool
    max_norm: Optional[float] = None  # kernel constraint after every update (see max_norms)
    kind: str = "conv2d"


class MaxPool2D(NamedTuple):
    name: str
    size: Tuple[int, int]
    stride: Tuple[int, int]
    kind: str = "maxpool2d"


class AvgPool2D(NamedTuple):
    """The mean of each window (no padding, so every window has size[0] * size[1] values)."""
    name: str
    size: Tuple[int, int]
    stride: Tuple[int, int]
    kind: str = "avgpool2d"


class Dense(NamedTuple):
    name: str
    units: int
    activation: str
    use_bias: bool
    max_norm: Optional[float] = None
    kind: str = "dense"


class Dropout(NamedTuple):
    name: str
    rate: float
    kind: str = "dropout"


class BatchNorm(NamedTuple):
    name: str
    eps: float
    momentum: float  # PyTorch meaning: running = (1 - momentum) * running + momentum * batch
    kind: str = "batchnorm"


class Flatten(NamedTuple):
    name: str
    kind: str = "flatten"


class Activation(NamedTuple):
    name: str
    function: str
    kind: str = "activation"


class ParamInfo(NamedTuple):
    shape: Tuple[int, ...]
    trainable: bool


class ModelSpec(NamedTuple):
    name: str
    description: str
    source: str
    input_shape: Tuple[int, int, int]  # (C, H, W)
    num_classes: int
    init: str
    layers: tuple
    shapes: tuple  # output shape (without batch) after each layer
    # the model's own training defaults ([training] table: (key, value) pairs), used where the
    # user gives no flag; part of the run's config, not of the network (not in spec_hash)
    training: tuple = ()

    # --- derived facts -------------------------------------------------------------------
    @property
    def output_shape(self):
        return self.shapes[-1]

    def params(self):
        """OrderedDict name -> ParamInfo, in layer order, in the canonical layout."""
        out = OrderedDict()
        in_shape = self.input_shape
        for layer, shape in zip(self.layers, self.shapes):
            if layer.kind == "conv2d":
                out[layer.name + ".weight"] = ParamInfo(
                    (layer.filters, in_shape[0]) + tuple(layer.kernel), True)
                if layer.use_bias:
                    out[layer.name + ".bias"] = ParamInfo((layer.filters,), True)
            elif layer.kind == "dense":
                out[layer.name + ".weight"] = ParamInfo((in_shape[0], layer.units), True)
                if layer.use_bias:
                    out[layer.name + ".bias"] = ParamInfo((layer.units,), True)
            elif layer.kind == "batchnorm":
                c = (in_shape[0],)
                out[layer.name + ".gamma"] = ParamInfo(c, True)
                out[layer.name + ".beta"] = ParamInfo(c, True)
                out[layer.name + ".running_mean"] = ParamInfo(c, False)
                out[layer.name + ".running_var"] = ParamInfo(c, False)
            in_shape = shape
        return out

    @property
    def param_count(self):
        """Trainable parameters (what frameworks report as parameters)."""
        return sum(int(np.prod(p.shape)) for p in self.params().values() if p.trainable)

    def max_norms(self):
        """OrderedDict kernel name -> c for every kernel under a max-norm constraint.

        After every optimizer update each output unit's incoming weights (a conv filter: all of
        its I x H x W taps; a dense unit: its column of the (in, out) kernel) are rescaled, as
        Keras' MaxNorm does it: w <- w * clip(n, 0, c) / (MAX_NORM_EPS + n), n their L2 norm.
        Biases are not constrained. The reference (backends/numpy_ref.py) applies exactly this.
        """
        return OrderedDict((layer.name + ".weight", layer.max_norm) for layer in self.layers
                           if getattr(layer, "max_norm", None) is not None)

    @property
    def has_dropout(self):
        return any(layer.kind == "dropout" for layer in self.layers)

    @property
    def has_batchnorm(self):
        return any(layer.kind == "batchnorm" for layer in self.layers)

    def flops(self):
        """Multiply-adds x 2 of the conv and dense layers, per example.

        forward: the layers' GEMMs; training: forward + weight gradient + input gradient, where the
        first parametrized layer needs no input gradient. Elementwise work is not counted (the usual
        convention, and what a GEMM peak can be compared with).
        """
        forward = 0
        backward = 0
        first = True
        in_shape = self.input_shape
        for layer, shape in zip(self.layers, self.shapes):
            if layer.kind == "conv2d":
                kh, kw = layer.kernel
                f = 2 * in_shape[0] * kh * kw * shape[0] * shape[1] * shape[2]
            elif layer.kind == "dense":
                f = 2 * in_shape[0] * layer.units
            else:
                f = 0
            if f:
                forward += f
                backward += f if first else 2 * f
                first = False
            in_shape = shape
        return {"forward": forward, "train": forward + backward}

    def to_dict(self):
        """Plain JSON-able form, the only thing that crosses to a worker."""
        layers = [_layer_source(layer) for layer in self.layers]
        return OrderedDict([
            ("name", self.name), ("description", self.description), ("source", self.source),
            ("input_shape", list(self.input_shape)), ("num_classes", self.num_classes),
            ("init", self.init), ("layers", layers), ("training", OrderedDict(self.training))])

    @property
    def spec_hash(self):
        """sha256 of what defines the network (not its description), first 16 hex digits."""
        d = self.to_dict()
        for key in ("description", "source", "training"):
            d.pop(key)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def summary(self):
        """One line per layer, for `convbench list --verbose` and docs."""
        lines = ["%-10s %-10s %s" % ("input", "", "x".join(map(str, self.input_shape)))]
        for layer, shape in zip(self.layers, self.shapes):
            lines.append("%-10s %-10s %s" % (layer.name, layer.kind, "x".join(map(str, shape))))
        return "\n".join(lines)


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _layer_source(layer):
    """A layer back in its TOML form (what spec_from_dict reads), with every default explicit."""
    d = OrderedDict((k, _plain(v)) for k, v in layer._asdict().items() if k != "padding_mode")
    if d.get("max_norm", 0) is None:  # absent, as before the field existed: the hash is unchanged
        del d["max_norm"]
    if layer.kind == "conv2d":
        if layer.padding_mode in ("valid", "same"):
            d["padding"] = layer.padding_mode
        else:
            d["padding"] = [layer.padding[0][0], layer.padding[1][0]]
    return d


# --- parsing and validation --------------------------------------------------------------------

class _Fields(object):
    """Typed access to one layer's table, raising SpecError with file/layer/field context."""

    def __init__(self, table, where):
        self.table = dict(table)
        self.where = where
        self.used = {"kind", "name"}

    def fail(self, field, msg):
        raise SpecError("%s, field '%s': %s" % (self.where, field, msg))

    def get(self, field, default=None, required=False):
        self.used.add(field)
        if field not in self.table:
            if required:
                self.fail(field, "is required")
            return default
        return self.table[field]

    def int(self, field, default=None, required=False, minimum=1):
        v = self.get(field, default, required)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(field, "must be an integer, got %r" % (v,))
        if v < minimum:
            self.fail(field, "must be >= %d, got %d" % (minimum, v))
        if v > MAX_SIZE:
            self.fail(field, "must be <= %d, got %d" % (MAX_SIZE, v))
        return v

    def pair(self, field, default=None, required=False, minimum=1):
        v = self.get(field, default, required)
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                self.fail(field, "must be an integer or a list of two integers, got %r" % (v,))
            vals = tuple(v)
        else:
            vals = (v, v)
        for x in vals:
            if isinstance(x, bool) or not isinstance(x, int):
                self.fail(field, "must be an integer or a list of two integers, got %r" % (v,))
            if x < minimum or x > MAX_SIZE:
                self.fail(field, "must be between %d and %d, got %r" % (minimum, MAX_SIZE, v))
        return vals

    def float(self, field, default=None, lo=None, hi=None, required=False):
        v = self.get(field, default, required)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(field, "must be a number, got %r" % (v,))
        try:
            v = float(v)  # an int too large for a float raises OverflowError
        except OverflowError:
            v = float("inf")
        if not math.isfinite(v):
            self.fail(field, "must be a finite number, got %r" % (v,))
        if lo is not None and not (v >= lo):
            self.fail(field, "must be >= %g, got %g" % (lo, v))
        if hi is not None and not (v < hi):
            self.fail(field, "must be < %g, got %g" % (hi, v))
        return v

    def bool(self, field, default):
        v = self.get(field, default)
        if not isinstance(v, bool):
            self.fail(field, "must be true or false, got %r" % (v,))
        return v

    def choice(self, field, options, default=None):
        v = self.get(field, default)
        if v not in options:
            self.fail(field, "must be one of %s, got %r" % (", ".join(options), v))
        return v

    def finish(self):
        extra = sorted(set(self.table) - self.used)
        if extra:
            self.fail(extra[0], "unknown field (known: %s)" % ", ".join(sorted(self.used - {"kind"})))


def _conv_out(size, k, s, pad):
    return (size + pad[0] + pad[1] - k) // s + 1


def _same_padding(size, k, s):
    """TensorFlow's 'same': output ceil(size / s); the extra pixel goes to the bottom/right."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return (total // 2, total - total // 2)


def _parse_layer(table, index, in_shape, counters, where):
    if not isinstance(table, dict):
        raise SpecError("%s, layer %d: must be a table ([[layers]]), got %r" % (where, index, table))
    kind = table.get("kind")
    lw = "%s, layer %d (%s)" % (where, index, kind)
    if kind not in LAYER_KINDS:
        raise SpecError("%s, field 'kind': unknown layer kind %r (known: %s)"
                        % (lw, kind, ", ".join(LAYER_KINDS)))
    short = {"conv2d": "conv", "maxpool2d": "pool", "avgpool2d": "pool", "dense": "dense",
             "dropout": "dropout",
             "batchnorm": "bn", "flatten": "flatten", "activation": "act"}[kind]
    counters[short] = counters.get(short, 0) + 1
    name = table.get("name", "%s%d" % (short, counters[short]))
    if not isinstance(name, str) or not LAYER_NAME.match(name):
        raise SpecError("%s, field 'name': must be ASCII letters, digits and _, got %r" % (lw, name))
    lw = "%s, layer %d (%s '%s')" % (where, index, kind, name)
    f = _Fields(table, lw)
    spatial = len(in_shape) == 3

    if kind in ("conv2d",) + POOL_KINDS and not spatial:
        raise SpecError("%s: needs a (C, H, W) input, got shape %r (is a flatten before it?)"
                        % (lw, in_shape))
    if kind == "dense" and spatial:
        raise SpecError("%s: needs a flat input, got shape %r (add a flatten layer before it)"
                        % (lw, in_shape))

    if kind == "conv2d":
        filters = f.int("filters", required=True)
        kernel = f.pair("kernel", required=True)
        stride = f.pair("stride", 1)
        pad_field = f.get("padding", "valid")
        if pad_field == "valid":
            padding, mode = ((0, 0), (0, 0)), "valid"
        elif pad_field == "same":
            padding = (_same_padding(in_shape[1], kernel[0], stride[0]),
                       _same_padding(in_shape[2], kernel[1], stride[1]))
            mode = "same"
        else:
            p = f.pair("padding", minimum=0)
            padding, mode = ((p[0], p[0]), (p[1], p[1])), "explicit"
        act = f.choice("activation", ACTIVATIONS, "linear")
        layer = Conv2D(name, filters, kernel, stride, padding, mode, act, f.bool("use_bias", True),
                       _max_norm(f))
        oh = _conv_out(in_shape[1], kernel[0], stride[0], padding[0])
        ow = _conv_out(in_shape[2], kernel[1], stride[1], padding[1])
        out = (filters, oh, ow)
    elif kind in POOL_KINDS:
        size = f.pair("size", required=True)
        stride = f.pair("stride", list(size))
        layer = (MaxPool2D if kind == "maxpool2d" else AvgPool2D)(name, size, stride)
        out = (in_shape[0], _conv_out(in_shape[1], size[0], stride[0], (0, 0)),
               _conv_out(in_shape[2], size[1], stride[1], (0, 0)))
    elif kind == "dense":
        units = f.int("units", required=True)
        act = f.choice("activation", ACTIVATIONS, "linear")
        layer = Dense(name, units, act, f.bool("use_bias", True), _max_norm(f))
        out = (units,)
    elif kind == "dropout":
        layer = Dropout(name, f.float("rate", required=True, lo=0.0, hi=1.0))
        out = in_shape
    elif kind == "batchnorm":
        layer = BatchNorm(name, f.float("eps", 1e-5, lo=1e-12), f.float("momentum", 0.1, lo=0.0, hi=1.0))
        out = in_shape
    elif kind == "flatten":
        layer = Flatten(name)
        out = (_size(in_shape),)
    else:
        layer = Activation(name, f.choice("function", ACTIVATIONS[:2], None))
        out = in_shape
    f.finish()
    if any(d < 1 for d in out):
        raise SpecError("%s: output shape %r collapses to nothing (input %r)" % (lw, out, in_shape))
    if _size(out) > MAX_SIZE:
        raise SpecError("%s: output shape %r has more than %d elements" % (lw, out, MAX_SIZE))
    return layer, out


def _max_norm(f):
    """The optional `max_norm = c` of a conv2d or dense layer (a kernel constraint), or None."""
    if "max_norm" not in f.table:
        f.used.add("max_norm")
        return None
    return f.float("max_norm", lo=1e-6)


def _size(shape):
    """Element count in exact integers (np.prod wraps around in int64)."""
    n = 1
    for d in shape:
        n *= d
    return n


def spec_from_dict(data, where="<spec>"):
    """Validate a spec dict (from TOML or from a worker job) into a ModelSpec."""
    if not isinstance(data, dict):
        raise SpecError("%s: a spec must be a table, got %r" % (where, type(data).__name__))
    top = _Fields(data, where)
    top.used = set()
    name = top.get("name", required=True)
    if not isinstance(name, str) or not name:
        top.fail("name", "must be a non-empty string")
    description = top.get("description", "")
    source = top.get("source", "")
    for field, v in (("description", description), ("source", source)):
        if not isinstance(v, str):
            top.fail(field, "must be a string")
    shape = top.get("input_shape", [1, 28, 28])
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)
            or _size(shape) > MAX_SIZE):
        top.fail("input_shape", "must be three positive integers [C, H, W] (at most %d "
                 "elements), got %r" % (MAX_SIZE, shape))
    num_classes = top.int("num_classes", 10, minimum=2)
    init = top.choice("init", ("glorot_uniform", "he_normal"), "glorot_uniform")
    layers_data = top.get("layers", required=True)
    if not isinstance(layers_data, list) or not layers_data:
        top.fail("layers", "must be a non-empty list of [[layers]] tables")
    training = _parse_training(top.get("training", {}), where)
    top.finish()

    layers, shapes, counters = [], [], {}
    in_shape = tuple(shape)
    names = set()
    for i, table in enumerate(layers_data, 1):
        layer, in_shape = _parse_layer(table, i, in_shape, counters, where)
        if layer.name in names:
            raise SpecError("%s, layer %d: duplicate layer name %r" % (where, i, layer.name))
        names.add(layer.name)
        layers.append(layer)
        shapes.append(tuple(int(d) for d in in_shape))
    if shapes[-1] != (num_classes,):
        raise SpecError("%s, layer %d (%s): the network must end in %d logits, got shape %r"
                        % (where, len(layers), layers[-1].name, num_classes, shapes[-1]))
    if layers[-1].kind != "dense" or layers[-1].activation != "linear":
        raise SpecError("%s, layer %d (%s): the last layer must be a dense layer without activation "
                        "(its logits feed the softmax cross-entropy)" % (where, len(layers), layers[-1].name))
    spec = ModelSpec(name, description, source, tuple(shape), num_classes, init, tuple(layers),
                     tuple(shapes), training)
    for pname, info in spec.params().items():
        if _size(info.shape) > MAX_SIZE:
            raise SpecError("%s: parameter %s of shape %r has more than %d elements"
                            % (where, pname, info.shape, MAX_SIZE))
    return spec


TRAINING_OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")  # backends/base.py: OPTIMIZERS


def _parse_training(table, where):
    """The optional [training] table: a model's defaults for optimizer, lr, momentum, batch_size
    and epochs, as sorted (key, value) pairs."""
    if not isinstance(table, dict):
        raise SpecError("%s, field 'training': must be a table, got %r" % (where, type(table).__name__))
    f = _Fields(table, "%s, [training]" % where)
    known = ("optimizer", "lr", "momentum", "batch_size", "epochs")
    extra = sorted(set(table) - set(known))
    if extra:
        f.fail(extra[0], "unknown field (known: %s)" % ", ".join(known))
    out = {}
    if "optimizer" in table:
        out["optimizer"] = f.choice("optimizer", TRAINING_OPTIMIZERS)
    if "lr" in table:
        out["lr"] = f.float("lr", lo=1e-12)
    if "momentum" in table:
        out["momentum"] = f.float("momentum", lo=0.0, hi=1.0)
    if "batch_size" in table:
        out["batch_size"] = f.int("batch_size", minimum=1)
    if "epochs" in table:
        out["epochs"] = f.int("epochs", minimum=1)
    return tuple(sorted(out.items()))


def load_spec(name_or_path):
    """A model by name (models/<name>.toml) or by path to a TOML file."""
    import tomllib  # parent only (Python >= 3.11)

    path = name_or_path
    if not (name_or_path.endswith(".toml") or os.sep in name_or_path):
        path = os.path.join(MODELS_DIR, name_or_path + ".toml")
        if not os.path.exists(path):
            raise SpecError("unknown model %r (known: %s); or pass a path to a .toml spec"
                            % (name_or_path, ", ".join(list_models())))
    if not os.path.isfile(path):
        raise SpecError("%s: no such spec file" % path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SpecError("%s: cannot read it (%s)" % (path, exc.strerror or exc))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays nested thousands deep
        raise SpecError("%s: not valid TOML: %s" % (path, exc if str(exc) else type(exc).__name__))
    return spec_from_dict(data, where=path)


def list_models():
    return sorted(f[:-5] for f in os.listdir(MODELS_DIR) if f.endswith(".toml"))


# --- canonical initial weights -----------------------------------------------------------------

def _fans(shape):
    if len(shape) == 4:  # OIHW
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, shape[0] * receptive
    return shape[0], shape[1]


def init_weights(spec, seed=0, dtype="float32"):
    """Canonical initial parameters (and batchnorm state), drawn once from `seed`.

    Uses the legacy RandomState stream, which NumPy keeps stable across versions, so a worker on
    an old interpreter draws the same numbers. Weights: Glorot-uniform (Keras' fans for conv
    kernels) or He-normal; biases and beta zero; gamma and running_var one; running_mean zero.
    """
    rng = np.random.RandomState(seed)
    params = OrderedDict()
    for name, info in spec.params().items():
        field = name.rsplit(".", 1)[1]
        if field == "weight":
            fan_in, fan_out = _fans(info.shape)
            if spec.init == "glorot_uniform":
                limit = math.sqrt(6.0 / (fan_in + fan_out))
                value = rng.uniform(-limit, limit, size=info.shape)
            else:
                value = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=info.shape)
        elif field in ("gamma", "running_var"):
            value = np.ones(info.shape)
        else:
            value = np.zeros(info.shape)
        params[name] = value.astype(dtype)
    return params


def weights_digest(params):
    """Short sha256 over names, shapes and bytes: proves two runs started from the same numbers."""
    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
