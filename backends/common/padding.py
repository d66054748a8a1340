"""The one padding rule: how a conv layer's padding reaches a framework.

The spec resolves every padding to per-side amounts ((top, bottom), (left, right)); 'same' is
TensorFlow's (the extra pixel, if any, at the bottom/right: models/spec.py). Frameworks whose own
'same' is TensorFlow's can say "same"; the others get the amounts, symmetric or not.
"""
from typing import NamedTuple, Tuple


class Padding(NamedTuple):
    mode: str                                   # "valid" | "same" | "explicit"
    pads: Tuple[Tuple[int, int], Tuple[int, int]]

    @property
    def symmetric(self):
        (t, b), (l, r) = self.pads
        return t == b and l == r

    @property
    def zero(self):
        return self.pads == ((0, 0), (0, 0))


def conv_padding(layer):
    return Padding(layer.padding_mode, tuple(tuple(p) for p in layer.padding))
