"""Parsing and validating one spec's tables: typed fields with errors that name the file, the
layer and the field; each layer kind's fields and output shape; the [training] table.

3.6-compatible (workers validate the spec dict they receive).
"""
import math

from models.layers import (ACTIVATIONS, LAYER_KINDS, LAYER_NAME, MAX_SIZE, POOL_KINDS, Activation,
                           AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D,
                           SpecError)


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


TRAINING_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop", "adadelta")  # backends/base.py
TRAINING_SCHEDULES = ("constant", "time", "step", "cosine")  # backends/base.py: SCHEDULES
#: [training] field -> how it is read (bench/plan.py applies them where no flag is given)
_TRAINING_FIELDS = (
    ("optimizer", lambda f, k: f.choice(k, TRAINING_OPTIMIZERS)),
    ("lr", lambda f, k: f.float(k, lo=1e-12)),
    ("momentum", lambda f, k: f.float(k, lo=0.0, hi=1.0)),
    ("rho", lambda f, k: f.float(k, lo=0.0, hi=1.0)),
    ("eps", lambda f, k: f.float(k, lo=0.0)),
    ("batch_size", lambda f, k: f.int(k, minimum=1)),
    ("epochs", lambda f, k: f.int(k, minimum=1)),
    ("schedule", lambda f, k: f.choice(k, TRAINING_SCHEDULES)),
    ("decay", lambda f, k: f.float(k, lo=0.0)),
    ("gamma", lambda f, k: f.float(k, lo=1e-12, hi=1.0)),
    ("decay_steps", lambda f, k: f.int(k, minimum=0)),
)


def _parse_training(table, where, name="training"):
    """The optional [training] table: a model's defaults for the optimizer and its
    hyper-parameters, the schedule, batch_size and epochs, as sorted (key, value) pairs; its
    optional [training.target] sub-table, the same fields, is the recipe `convbench run
    --target-accuracy` uses on top of them (its epochs the most it trains)."""
    if not isinstance(table, dict):
        raise SpecError("%s, field '%s': must be a table, got %r" % (where, name, type(table).__name__))
    f = _Fields(table, "%s, [%s]" % (where, name))
    known = [field for field, _ in _TRAINING_FIELDS] + (["target"] if name == "training" else [])
    extra = sorted(set(table) - set(known))
    if extra:
        f.fail(extra[0], "unknown field (known: %s)" % ", ".join(known))
    out = dict((field, read(f, field)) for field, read in _TRAINING_FIELDS if field in table)
    if "target" in table and name == "training":
        out["target"] = _parse_training(table["target"], where, "training.target")
    return tuple(sorted(out.items()))
