"""Canonical weights <-> an adapter's native parameters, implemented once over bindings.

While the walker builds the network, each layer function binds every parameter it creates:
`bindings.bind("conv1.weight", native_handle, layout)`, where `layout` converts a canonical array
to the native one and back (IDENTITY, TRANSPOSED, or a ChannelsLast rule from layout.py). The
adapter supplies how to read and write one native handle; `set_all` and `get_all` do the rest:
every canonical name checked, values cast to the run's dtype, fresh arrays handed back (never
views of live framework buffers).
"""
from collections import OrderedDict
from typing import Callable, NamedTuple

import numpy as np


class Layout(NamedTuple):
    to_native: Callable
    from_native: Callable


IDENTITY = Layout(lambda a: a, lambda a: a)
#: nn.Linear-style (out, in) kernels against the canonical (in, out)
TRANSPOSED = Layout(lambda a: a.T, lambda a: a.T)


class Bindings(object):
    """name -> (native handle, layout), in the order the walker bound them."""

    def __init__(self, read, write, dtype):
        self.read = read      # handle -> array-like in the native layout
        self.write = write    # (handle, contiguous ndarray in the native layout) -> None
        self.dtype = np.dtype(dtype)
        self.table = OrderedDict()

    def bind(self, name, handle, layout=IDENTITY):
        if name in self.table:
            raise ValueError("parameter %r bound twice" % name)
        self.table[name] = (handle, layout)

    def handle(self, name):
        return self.table[name][0]

    def check(self, expected):
        """The bound names must be exactly the spec's parameters."""
        if list(self.table) != list(expected):
            raise ValueError("bound parameters %s differ from the spec's %s"
                             % (list(self.table), list(expected)))

    def set_all(self, params):
        missing = sorted(set(self.table) - set(params))
        if missing:
            raise ValueError("set_weights: missing %s" % ", ".join(missing))
        for name, (handle, layout) in self.table.items():
            value = np.asarray(params[name], dtype=self.dtype)
            self.write(handle, np.ascontiguousarray(layout.to_native(value)))

    def get_all(self):
        return OrderedDict(
            (name, np.array(layout.from_native(np.asarray(self.read(handle))), order="C",
                            copy=True))
            for name, (handle, layout) in self.table.items())
