"""The layer kinds of a spec, as immutable records, and the constants their parsing shares.

3.6-compatible (workers import it): no dataclasses, no walrus, no builtin generics.
"""
import re
from typing import NamedTuple, Optional, Tuple

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
