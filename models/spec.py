"""The framework-neutral model spec: a TOML file parsed into a frozen ModelSpec.

A model is data. This module (with models/layers.py, the layer records, and models/parse.py, the
field-by-field validation) validates it, infers every shape, counts parameters and FLOPs, hashes
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
from collections import OrderedDict
from typing import NamedTuple, Tuple

import numpy as np

from models.layers import (  # noqa: F401  (the names users of models.spec import)
    ACTIVATIONS, LAYER_KINDS, MAX_NORM_EPS, MAX_SIZE, POOL_KINDS, Activation, AvgPool2D, BatchNorm,
    Conv2D, Dense, Dropout, Flatten, MaxPool2D, ParamInfo, SpecError)
from models.parse import TRAINING_OPTIMIZERS, _Fields, _parse_layer, _parse_training, _size  # noqa: F401

MODELS_DIR = os.path.dirname(os.path.abspath(__file__))


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
            ("init", self.init), ("layers", layers),
            ("training", OrderedDict((k, OrderedDict(v) if k == "target" else v)
                                     for k, v in self.training))])

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
    spec = spec_from_dict(data, where=path)
    return spec if path == os.path.join(MODELS_DIR, name_or_path + ".toml") else _distinct(spec, path)


def _distinct(spec, path):
    """A spec from a path that takes a built-in model's name but is another network is renamed
    `<name>@<its hash, 8 hex>`, so records and report never pass it off as the built-in."""
    builtin = os.path.join(MODELS_DIR, spec.name + ".toml")
    if spec.name not in list_models() or os.path.realpath(path) == os.path.realpath(builtin):
        return spec
    if load_spec(spec.name).spec_hash == spec.spec_hash:
        return spec
    return spec._replace(name="%s@%s" % (spec.name, spec.spec_hash[:8]))


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
