"""Look-ups in an adapter's OPTIMIZERS and ACTIVATIONS tables: a missing entry is Unsupported,
naming what is missing and what the adapter has."""
from backends.base import Unsupported


def optimizer(adapter, *args):
    """`adapter.OPTIMIZERS[config.optimizer](adapter, *args)`: the framework's own optimizer."""
    name = adapter.config.optimizer
    make = adapter.OPTIMIZERS.get(name)
    if make is None:
        raise Unsupported("%s has no optimizer %r (it has: %s)"
                          % (adapter.name, name, ", ".join(sorted(adapter.OPTIMIZERS))))
    return make(adapter, *args)


def activation(adapter, function):
    """The adapter's ACTIVATIONS entry for `function`, or None for "linear" (no block)."""
    if function in (None, "linear"):
        return None
    found = adapter.ACTIVATIONS.get(function)
    if found is None:
        raise Unsupported("%s has no activation %r (it has: %s)"
                          % (adapter.name, function, ", ".join(sorted(adapter.ACTIVATIONS))))
    return found
