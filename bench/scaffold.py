"""`convbench new-backend NAME`: the adapter skeleton and its registry entry, nothing else.

Writes backends/NAME_backend.py (every contract method raises NotImplementedError naming the section
of docs/adding-a-backend.md to read) and inserts one entry into the BACKENDS table of
backends/registry.py, in the base environment with no required modules: the conformance suite then
runs on the new backend at once and fails on the first method that is not written yet. Nothing is
changed when the name is taken or invalid.
"""
import ast
import os
import re

from bench.paths import REPO

GUIDE = "docs/adding-a-backend.md"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(ValueError):
    """A name that cannot be used (one line, names the fix)."""


def class_name(name):
    return "".join(part.capitalize() for part in name.split("_") if part) + "Adapter"


def _paths(repo):
    return (os.path.join(repo, "backends", "registry.py"),
            os.path.join(repo, "backends", "%s_backend.py"))


def _registered(registry_text):
    """Backend names in the BACKENDS dict literal of registry.py (parsed, not imported)."""
    for node in ast.walk(ast.parse(registry_text)):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "BACKENDS"
                                                for t in node.targets):
            return {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    raise ScaffoldError("backends/registry.py has no BACKENDS = {...} table; add the entry by hand "
                        "(see %s#the-registry-entry)" % GUIDE)


def check_name(name, repo=REPO):
    registry_path, module_pattern = _paths(repo)
    if not NAME_RE.match(name or ""):
        raise ScaffoldError("invalid backend name %r: use lower-case letters, digits and _, starting "
                            "with a letter (it becomes backends/NAME_backend.py)" % name)
    with open(registry_path) as fh:
        registered = _registered(fh.read())
    if name in registered:
        raise ScaffoldError("backend %r already exists in backends/registry.py; pick another name"
                            % name)
    if os.path.exists(module_pattern % name):
        raise ScaffoldError("backends/%s_backend.py already exists; pick another name or remove it"
                            % name)


def skeleton(name):
    cls = class_name(name)
    return '''"""{name}: <framework> adapter. Skeleton written by `convbench new-backend {name}`.

Fill in each table entry and hook; the guide is {guide}. Run the conformance suite after each
one (-k "layer" runs the one-step layer cases only):

    .venv/bin/python -m pytest tests/test_conformance.py --backends {name}

Document here what the framework does differently from the suite's definitions (layout, padding,
optimizer formulas, batchnorm), as the other adapters do.
"""
import numpy as np  # noqa: F401

from backends.base import Unavailable, Unsupported  # noqa: F401
from backends.common import tables  # noqa: F401  (tables.optimizer, tables.activation)
from backends.common.adapter import TableAdapter
from backends.common.padding import conv_padding  # noqa: F401
from backends.common.walker import walk
from backends.common.weights import IDENTITY, TRANSPOSED  # noqa: F401


def _todo(what, section="#the-shape-of-an-adapter-tables-of-the-frameworks-own-idioms"):
    return NotImplementedError("{cls}.%s is not written yet: see {guide}%s" % (what, section))


# --- the spec, layer by layer: step.layer, step.in_shape, step.out_shape, step.prev, step.next --
# Each function returns the native block(s) and binds every parameter it creates:
#     a.bindings.bind(step.layer.name + ".weight", native_handle, layout)

def _conv2d(a, step):
    raise _todo("LAYERS['conv2d'] (filters, kernel, stride, conv_padding(layer), activation, "
                "use_bias, max_norm)")


def _dense(a, step):
    raise _todo("LAYERS['dense'] (units, activation, use_bias, max_norm)")


def _batchnorm(a, step):
    raise _todo("LAYERS['batchnorm'] (eps, momentum in PyTorch's meaning; gamma, beta, "
                "running_mean, running_var)")


def _pool(kind):
    def build(a, step):
        raise _todo("LAYERS[%r] (size, stride; no padding)" % kind)
    return build


def _simple(kind):
    def build(a, step):
        raise _todo("LAYERS[%r]" % kind)
    return build


def _optimizer(name):
    def make(a, *args):
        raise _todo("OPTIMIZERS[%r] (formulas: docs/results-schema.md#optimizers)" % name)
    return make


class {cls}(TableAdapter):
    name = "{name}"
    framework = "{name}"
    LAYERS = {{"conv2d": _conv2d, "maxpool2d": _pool("maxpool2d"), "avgpool2d": _pool("avgpool2d"),
              "dense": _dense, "batchnorm": _batchnorm, "flatten": _simple("flatten"),
              "dropout": _simple("dropout"), "activation": _simple("activation")}}
    OPTIMIZERS = {{n: _optimizer(n) for n in ("sgd", "momentum", "nesterov", "adam", "rmsprop",
                                             "adadelta")}}
    ACTIVATIONS = {{}}  # "relu" / "tanh" -> whatever your LAYERS functions want

    def build(self):
        """Import the framework HERE (never at module level); apply config.threads, config.dtype
        and config.device (Unavailable when the device is missing); then:
            self.new_bindings(); blocks = walk(self); <compose blocks into the native model>
            self.bindings.check(self.spec.params()); self.reset_optimizer()
        See {guide}#build."""
        raise _todo("build()", "#build")

    def read_param(self, handle):
        """The native value of one bound parameter, as an array-like (it is copied for you).
        See {guide}#read_param-write_param-reset_optimizer."""
        raise _todo("read_param()", "#read_param-write_param-reset_optimizer")

    def write_param(self, handle, value):
        """Load one bound parameter from a C-contiguous array already in the native layout.
        See {guide}#read_param-write_param-reset_optimizer."""
        raise _todo("write_param()", "#read_param-write_param-reset_optimizer")

    def reset_optimizer(self):
        """Fresh optimizer state (called after every set_weights), e.g.
        self.optimizer = tables.optimizer(self, <parameters>).
        See {guide}#read_param-write_param-reset_optimizer."""
        raise _todo("reset_optimizer()", "#read_param-write_param-reset_optimizer")

    def train_step(self, x, y):
        """ONE optimizer step on x (N, C, H, W) of config.dtype and y (N,) int64; apply the
        max-norm constraints after the update; return the batch-mean loss as a Python float,
        which must wait for the device to finish the step. See {guide}#train_step."""
        raise _todo("train_step()", "#train_step")

    def predict(self, x):
        """Logits (N, num_classes) as a NumPy array, in eval mode (dropout off, batchnorm on its
        running statistics), with no update. See {guide}#predict."""
        raise _todo("predict()", "#predict")

    def environment(self):
        """Framework name and version, device name, layout, threads, flags (into the record).
        See {guide}#environment."""
        raise _todo("environment()", "#environment")

    # optional: device_peak_bytes() (GPU peak memory), train_epoch() (the framework's own
    # epoch loop, --mode epoch), close(). See {guide}#optional-methods.
'''.format(name=name, cls=cls, guide=GUIDE)


def registry_entry(name):
    return ('    "{name}": Backend(\n'
            '        name="{name}", target="backends.{name}_backend:{cls}", framework="{name}",\n'
            '        requires=(), env="base",  # requires: the import names; env: "base" or a tox env\n'
            '        install_hint="see backends/{name}_backend.py and {guide}",\n'
            '        description="skeleton from `convbench new-backend {name}`"),\n'
            ).format(name=name, cls=class_name(name), guide=GUIDE)


def insert_entry(registry_text, name):
    """registry.py's text with the entry added as the last item of the BACKENDS table."""
    lines = registry_text.splitlines(True)
    start = next((i for i, line in enumerate(lines) if line.startswith("BACKENDS = {")), None)
    end = None if start is None else next(
        (i for i in range(start + 1, len(lines)) if lines[i].rstrip() == "}"), None)
    if end is None:
        raise ScaffoldError("cannot find the end of BACKENDS = {...} in backends/registry.py; add "
                            "the entry by hand (see %s#the-registry-entry)" % GUIDE)
    new_text = "".join(lines[:end]) + registry_entry(name) + "".join(lines[end:])
    if name not in _registered(new_text):  # parses, and the entry landed in the table
        raise ScaffoldError("could not insert the entry into backends/registry.py; add it by hand "
                            "(see %s#the-registry-entry)" % GUIDE)
    return new_text


def new_backend(name, repo=REPO):
    """Write the skeleton and the registry entry; return the two paths written."""
    check_name(name, repo)
    registry_path, module_pattern = _paths(repo)
    with open(registry_path) as fh:
        new_registry = insert_entry(fh.read(), name)
    module_path = module_pattern % name
    with open(module_path, "x") as fh:
        fh.write(skeleton(name))
    with open(registry_path, "w") as fh:
        fh.write(new_registry)
    return module_path, registry_path
