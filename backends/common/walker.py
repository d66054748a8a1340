"""One walk over a spec's layers for every adapter.

An adapter declares `LAYERS = {"conv2d": fn, "maxpool2d": fn, ...}`: one small function per layer
kind, written in its framework's own idiom. `walk` calls `fn(adapter, step)` for each layer, in
order, and collects what it returns (a native block, a list of them, or None: a layer folded into
a neighbour). A function binds the parameters it creates with `adapter.bindings.bind(...)` (see
weights.py). A kind missing from the table is `Unsupported`, naming the kind and the layer.

`step` carries the layer, its input and output shapes and its neighbours, so look-ahead fusions
(a conv followed by a pool, CNTK's flatten folded into the dense after it) stay possible.
"""
from typing import Any, NamedTuple, Optional, Tuple

from backends.base import Unsupported


class Step(NamedTuple):
    index: int
    layer: Any
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]
    prev: Optional[Any]        # the layer before, or None
    next: Optional[Any]        # the layer after, or None
    needs_input_grad: bool     # a parametrized layer comes before this one


PARAMETRIZED = ("conv2d", "dense", "batchnorm")


def steps(spec):
    """The spec's layers with their context, in order."""
    layers = spec.layers
    in_shape = spec.input_shape
    seen_params = False
    for i, (layer, shape) in enumerate(zip(layers, spec.shapes)):
        yield Step(i, layer, tuple(in_shape), tuple(shape), layers[i - 1] if i else None,
                   layers[i + 1] if i + 1 < len(layers) else None, seen_params)
        seen_params = seen_params or layer.kind in PARAMETRIZED
        in_shape = shape


def walk(adapter, table=None):
    """The native blocks of `adapter.spec`, built by `table` (default: the adapter's LAYERS)."""
    table = adapter.LAYERS if table is None else table
    blocks = []
    for step in steps(adapter.spec):
        build = table.get(step.layer.kind)
        if build is None:
            raise Unsupported("%s has no %r layer (model %s, layer %s); it needs LAYERS[%r] in "
                              "its adapter" % (adapter.name, step.layer.kind, adapter.spec.name,
                                               step.layer.name, step.layer.kind))
        made = build(adapter, step)
        if made is None:
            continue
        blocks.extend(made if isinstance(made, list) else [made])
    return blocks
