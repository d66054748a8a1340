"""An adapter declared as tables (Keras 3's backend/<name>/nn.py is the model: the same names in
every backend). A subclass provides

    LAYERS      {layer kind: fn(adapter, step) -> native block(s) or None}   (walker.py)
    OPTIMIZERS  {optimizer name: fn(adapter, ...) -> the framework's optimizer}
    ACTIVATIONS {"relu": ..., "tanh": ...}   whatever its LAYERS functions want per activation
    read_param(handle) / write_param(handle, array)   one native parameter
    reset_optimizer()                                  fresh optimizer state (after set_weights)

and gets set_weights / get_weights from the bindings its LAYERS functions made.
"""
import numpy as np

from backends.base import Adapter
from backends.common.weights import Bindings
from models.spec import MAX_NORM_EPS


class TableAdapter(Adapter):
    LAYERS = {}
    OPTIMIZERS = {}
    ACTIVATIONS = {}

    def new_bindings(self):
        self.bindings = Bindings(self.read_param, self.write_param, self.config.dtype)
        return self.bindings

    def read_param(self, handle):
        raise NotImplementedError

    def write_param(self, handle, value):
        raise NotImplementedError

    def reset_optimizer(self):
        pass

    def set_weights(self, params):
        self.bindings.set_all(params)
        self.reset_optimizer()  # fresh optimizer state for fresh weights

    def get_weights(self):
        return self.bindings.get_all()


def max_norm_numpy(w, c, axes):
    """Keras' MaxNorm on a NumPy kernel, in place: each output unit's weights (reduced over
    `axes`) rescaled to an L2 norm of at most c (models/spec.py: ModelSpec.max_norms)."""
    norms = np.sqrt(np.sum(w * w, axis=axes, keepdims=True))
    w *= np.clip(norms, 0, c) / (w.dtype.type(MAX_NORM_EPS) + norms)
    return w
