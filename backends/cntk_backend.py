"""CNTK 2.7: the spec as a `C.layers.Sequential`, trained with `C.Trainer.train_minibatch` per step.

Runs in the tox env `cntk` (CPython 3.6, `cntk==2.7.post2`, CPU wheel; see tox.ini): keep this file
3.6-compatible. `import cntk` needs OpenMPI 1.10 sonames, served from OpenMPI 4 by the soname links
in .tox/cntk-mpi-shim (bench/envs.py makes them; the registry puts them on LD_LIBRARY_PATH).

Tables. LAYERS builds each spec layer as CNTK Layers blocks (backends/common/walker.py); build()
applies each layer's blocks to a probe input as they are made, which fixes CNTK's inferred
parameter shapes, and compares every output shape with the spec's (Unsupported if one differs).
OPTIMIZERS is backends/cntk_learners.py's table of C.learners constructors (and C.universal
updates where CNTK's built-in learner computes another formula).

Layout. CNTK is channels-first and its Python view of a tensor is row-major, so the canonical layout
maps without transposes: data (N, C, H, W); conv kernels `W` (O, I, kh, kw); conv biases are stored
(O, 1, 1). A `Dense` applied to a (C, H, W) tensor flattens it itself (its `W` is (C, H, W, units),
the row-major view of the canonical (C*H*W, units)), so a spec `flatten` directly followed by a
dense is left to the Dense, as CNTK code does; otherwise it is a `C.reshape`. Each parameter is
bound with the reshape Layout between the two shapes (build() checks CNTK's shapes against them).

Padding. `Convolution2D(pad=True)` pads (k-1)//2 before and the rest after, output ceil(size/stride).
TF's 'same' (the spec's) puts the extra pixel after instead, so the two agree for stride 1 (also for
even kernels) but not always for strides > 1. `pad=True` is used where the pads agree, otherwise the
spec's pads go into a `C.pad` in front of an unpadded convolution. For asymmetric pads CNTK prints
that MKL cannot do them and uses its GEMM convolution engine. Pooling is `pad=False` (max and
`AveragePooling`): full windows only, output floor((size - k)/stride) + 1, each the window's mean.

Max-norm. CNTK's Layers library has no kernel constraint, so after each train_minibatch one CNTK
function of `C.assign`s (built once) rescales every constrained `W` in place with Keras' formula,
w * clip(n, 0, c) / (1e-7 + n), n reduced over every axis of CNTK's `W` but the output unit's (conv
(O, I, kh, kw): axes 1, 2, 3; Dense (in..., units): all but the last). Exact; nothing leaves CNTK's
memory. Cost: one more graph evaluation per step, about 8% of a maxnorm_cnn float32 step (a NumPy
round trip through `.value` took half that, on a loaded machine).

Learning rate and optimizers: backends/cntk_learners.py (the OPTIMIZERS table).

BatchNorm. `BatchNormalization(map_rank=1)` after a conv (per channel); per feature after a
flatten. CNTK blends running statistics per minibatch with f = 1 - exp(-n/normalization_time_constant),
n = samples in the minibatch, so PyTorch's momentum m is time constant -batch_size/ln(1-m), exact for
full batches; after a partial batch (n != batch_size) train_step redoes the blend with m from the
statistics before and after the step (exact up to rounding). CNTK ignores the running statistics on
its very first minibatch (while aggregate_count == 0 it copies the batch statistics) and refuses
inference before any training; set_weights therefore sets `aggregate_count` to batch_size, so the
first step blends as PyTorch's does and predict works on fresh weights. CNTK's running variance is
the unbiased batch variance, as PyTorch's; training normalizes with the biased one, as PyTorch. The
running statistics therefore match the reference exactly (float64: 1e-12 after 100 steps).
Not matched: in float32 CNTK's batchnorm kernels (both engines, use_cntk_engine True or False, give
the same numbers) accumulate their per-channel sums in float32. On MNIST, whose flat background makes
the backward sums cancel, that costs precision: for torch_bn, batch 32, one step, the conv weights
differ from a float64-accumulating reference by 1e-4 (1-3% of the step), while a NumPy reference that
accumulates in float32 lands within 4e-7 of CNTK. Float64 is exact (above).

Dropout. `C.layers.Dropout(rate, seed=config.seed + layer index)` (inverted dropout, off in
`eval`); with config.dropout False the layer is left out. The masks are CNTK's own.

Measured sameness (float64, 100 real-MNIST steps of 128, momentum lr 0.01, against the NumPy
reference, same 3.6 env): logits, per-step losses and final weights agree to <= 2e-15 for
seed_convnet, cntk_103d, tf_tutorial and mlp, and to 1.2e-13 / 1.1e-12 (loss / running_var) for
torch_bn; sgd, adam (universal), rmsprop and batches of 50 and 7 likewise.

Import. `import cntk` runs `ldconfig -N -v` over every LD_LIBRARY_PATH directory about a dozen
times to look for optional libraries (about 3 s; as root it also adds soname links, e.g.
libmpi.so.40 -> libmpi.so.12, to .tox/cntk-mpi-shim: harmless). Outside the timed steps.

Threads. `C.cntk_py.set_max_num_cputhreads(config.threads)` (when threads > 0); the worker also sets
OMP_NUM_THREADS/MKL_NUM_THREADS before CNTK loads. environment() records CNTK's own count.
Device. 'cuda' needs a GPU build of CNTK (`cntk-gpu`, not installed): Unavailable without a GPU.
"""
import math
import warnings

import numpy as np

from backends import cntk_learners as learners
from backends.base import Unavailable, Unsupported
from backends.common import schedule, tables
from backends.common.adapter import TableAdapter
from backends.common.layout import max_norm_axes
from backends.common.padding import conv_padding
from backends.common.walker import walk
from backends.common.weights import Layout
from models.spec import MAX_NORM_EPS


def import_cntk():
    """Import cntk quietly (it warns about the Linux distribution and GPU libraries), or Unavailable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import cntk
        except ImportError as exc:
            msg = str(exc)
            if "libmpi" in msg:
                raise Unavailable("CNTK cannot load OpenMPI (%s); fix: apt-get install libopenmpi3, and "
                                  "run through convbench (it links the 1.10 sonames in "
                                  ".tox/cntk-mpi-shim and puts them on LD_LIBRARY_PATH)" % msg)
            raise Unavailable("cntk is not importable (%s); fix: tox -e cntk --notest" % msg)
    return cntk


# --- the spec, layer by layer: CNTK Layers blocks --------------------------------------------------

def _conv2d(a, step):
    C, layer = a.C, step.layer
    pad = conv_padding(layer)
    auto = tuple(_cntk_auto_pads(step.in_shape[1 + i], layer.kernel[i], layer.stride[i])
                 for i in (0, 1))
    explicit = not pad.zero and pad.pads != auto  # CNTK's pad=True would pad elsewhere
    blocks = [_Pad(C, [(0, 0)] + list(pad.pads))] if explicit else []
    conv = C.layers.Convolution2D(tuple(layer.kernel), layer.filters,
                                  activation=tables.activation(a, layer.activation),
                                  pad=not pad.zero and not explicit,
                                  strides=tuple(layer.stride), bias=layer.use_bias, name=layer.name)
    _bind_kernel(a, layer, conv, a.param_shape(layer.name + ".weight"), (layer.filters, 1, 1),
                 max_norm_axes(4, channels_last=False))
    return blocks + [conv]


def _dense(a, step):
    layer = step.layer
    dense = a.C.layers.Dense(layer.units, activation=tables.activation(a, layer.activation),
                             bias=layer.use_bias, name=layer.name)
    if step.prev is not None and step.prev.kind == "flatten":  # folded: W is (C, H, W, units)
        flatten_in = a.spec.shapes[step.index - 2] if step.index >= 2 else a.spec.input_shape
        w_shape = tuple(flatten_in) + (layer.units,)
    else:
        w_shape = (step.in_shape[0], layer.units)
    _bind_kernel(a, layer, dense, w_shape, (layer.units,), tuple(range(len(w_shape) - 1)))
    return dense


def _bind_kernel(a, layer, block, w_shape, b_shape, norm_axes):
    """Bind W (and b) of a conv / dense block; register its max-norm (axes of CNTK's own W)."""
    a.bind(layer.name + ".weight", block, "W", w_shape)
    if layer.use_bias:
        a.bind(layer.name + ".bias", block, "b", b_shape)
    if layer.max_norm is not None:
        a.max_norms.append((block, layer.max_norm, norm_axes))


def _flatten(a, step):
    if step.next is not None and step.next.kind == "dense":
        return None  # the Dense flattens by itself
    return _Reshape(a.C, (int(np.prod(step.in_shape)),))


def _dropout(a, step):
    if not a.config.dropout or step.layer.rate == 0:
        return None
    return a.C.layers.Dropout(step.layer.rate, seed=int(a.config.seed) + step.index,
                              name=step.layer.name)


def _batchnorm(a, step):
    layer = step.layer
    spatial = len(step.in_shape) == 3  # per channel after a conv, per feature after a flatten
    tc = a.time_constant(layer.momentum)
    bn = a.C.layers.BatchNormalization(map_rank=1 if spatial else None,
                                       normalization_time_constant=tc, epsilon=layer.eps,
                                       name=layer.name)
    for field, attr in (("gamma", "scale"), ("beta", "bias"), ("running_mean", "aggregate_mean"),
                        ("running_var", "aggregate_variance")):
        a.bind(layer.name + "." + field, bn, attr, (step.in_shape[0],))
    a.bn_counts.append(bn.aggregate_count)
    a.bn_stats.append((bn.aggregate_mean, bn.aggregate_variance, layer.momentum, tc))
    return bn


class CntkAdapter(TableAdapter):
    name = "cntk"
    precision_note = "runs CNTK, which has no bfloat16 (its reduced precision is float16, GPU only)"
    framework = "cntk"
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": lambda a, step: a.C.layers.MaxPooling(
            tuple(step.layer.size), strides=tuple(step.layer.stride), pad=False,
            name=step.layer.name),
        "avgpool2d": lambda a, step: a.C.layers.AveragePooling(
            tuple(step.layer.size), strides=tuple(step.layer.stride), pad=False,
            name=step.layer.name),
        "flatten": _flatten,
        "dense": _dense,
        "dropout": _dropout,
        "batchnorm": _batchnorm,
        "activation": lambda a, step: tables.activation(a, step.layer.function),
    }
    OPTIMIZERS = learners.OPTIMIZERS

    # -- build ---------------------------------------------------------------------------------
    def build(self):
        C = import_cntk()
        self.C = C
        self.ACTIVATIONS = {"relu": C.relu, "tanh": C.tanh}
        cfg = self.config
        schedule.check(cfg)
        if cfg.dtype not in ("float32", "float64"):
            raise Unsupported("dtype %r" % cfg.dtype)
        self.np_dtype = np.dtype(cfg.dtype)
        self._set_device(cfg.device)
        if cfg.threads:
            C.cntk_py.set_max_num_cputhreads(int(cfg.threads))

        spec = self.spec
        dt = self.np_dtype.type
        self.x_var = C.input_variable(tuple(spec.input_shape), dtype=dt, name="features")
        self.y_var = C.input_variable(spec.num_classes, dtype=dt, name="labels")
        self.new_bindings()
        self.canonical = spec.params()
        self.native_shapes = {}  # canonical name -> the shape CNTK's variable must have
        self.max_norms = []      # (block, c, axes of its W)
        self.bn_counts = []
        self.bn_stats = []  # (running mean, running var, PyTorch momentum, CNTK time constant)
        with C.default_options(dtype=dt):
            blocks = self._walk_checked()
        self.bindings.check(self.canonical)
        self.model = C.layers.Sequential(blocks)(self.x_var)
        self.loss = C.cross_entropy_with_softmax(self.model, self.y_var)
        self._check_params()
        self.trainable = [var for var, _ in self._variables() if var.is_parameter]
        self.max_norm_op = self._max_norm_op()
        self.reset_optimizer()

    def _set_device(self, device):
        C = self.C
        if device == "cuda":
            gpus = [d for d in C.device.all_devices() if d.type() == C.device.DeviceKind.GPU]
            if not gpus:
                raise Unavailable("--device cuda asked, but CNTK sees no GPU (the cntk env has the CPU "
                                  "wheel `cntk`, not `cntk-gpu`); run with --device cpu")
            self.device = gpus[0]
        elif device == "cpu":
            self.device = C.device.cpu()
        else:
            raise Unsupported("device %r" % device)
        if not C.device.try_set_default_device(self.device):
            raise Unavailable("CNTK could not select device %r (another process holds it locked?)" % device)

    def _walk_checked(self):
        """walk(self), each layer's blocks applied to a probe input as they are made (CNTK infers
        parameter shapes then), its output shape compared with the spec's."""
        h = [self.C.input_variable(tuple(self.spec.input_shape), dtype=self.np_dtype.type)]

        def checked(build):
            def layer(a, step):
                made = build(a, step)
                for block in made if isinstance(made, list) else [] if made is None else [made]:
                    h[0] = block(h[0])
                got = tuple(h[0].shape)
                if made is None and step.layer.kind == "flatten":  # left to the next Dense
                    got = (int(np.prod(got)),)
                if got != tuple(step.out_shape):
                    raise Unsupported("layer %s (%s): CNTK output shape %r, the spec says %r"
                                      % (step.layer.name, step.layer.kind, got, step.out_shape))
                return made
            return layer

        return walk(self, dict((kind, checked(fn)) for kind, fn in self.LAYERS.items()))

    def param_shape(self, name):
        return tuple(self.canonical[name].shape)

    def bind(self, name, block, attr, native_shape):
        """Bind CNTK's `block.attr` to canonical `name`: a reshape between the two shapes."""
        native, canonical = tuple(native_shape), self.param_shape(name)
        self.native_shapes[name] = native
        self.bindings.bind(name, (block, attr), Layout(lambda v: v.reshape(native),
                                                       lambda v: v.reshape(canonical)))

    def _variables(self):
        return [(getattr(block, attr), name)
                for name, ((block, attr), _) in self.bindings.table.items()]

    def _check_params(self):
        for var, name in self._variables():
            if tuple(var.shape) != self.native_shapes[name]:
                raise Unsupported("parameter %s: CNTK shape %r, expected %r (canonical %r)"
                                  % (name, tuple(var.shape), self.native_shapes[name],
                                     self.param_shape(name)))

    def time_constant(self, momentum):
        """CNTK's normalization_time_constant giving PyTorch's momentum for a full batch."""
        if momentum >= 1.0:
            return 0  # only the current minibatch
        if momentum <= 0.0:
            return float("inf")  # frozen
        return -float(self.config.batch_size) / math.log(1.0 - momentum)

    def _max_norm_op(self):
        """One CNTK function assigning Keras' MaxNorm to every constrained W (or None)."""
        C, dt = self.C, self.np_dtype
        # in the run's dtype: Python floats become float32 constants (c off by ~4e-9 in float64)
        zero, eps = C.constant(np.asarray(0.0, dt)), C.constant(np.asarray(MAX_NORM_EPS, dt))
        assigns = []
        for block, c, axes in self.max_norms:
            w = block.W
            norms = C.sqrt(C.reduce_sum(w * w, axis=axes))
            bound = C.constant(np.asarray(c, dt))
            assigns.append(C.assign(w, w * (C.clip(norms, zero, bound) / (eps + norms))))
        return C.combine(assigns) if assigns else None

    # -- TableAdapter hooks --------------------------------------------------------------------
    def read_param(self, handle):
        block, attr = handle
        return np.asarray(getattr(block, attr).value, dtype=self.np_dtype)

    def write_param(self, handle, value):
        block, attr = handle
        getattr(block, attr).value = value

    def reset_optimizer(self):
        self.inv_batch = None
        self.learner, self.learner_desc = tables.optimizer(self, self.trainable)
        self.trainer = self.C.Trainer(self.model, (self.loss, None), [self.learner])
        self.steps = 0

    def set_weights(self, params):
        for count in self.bn_counts:
            # > 0: blend from the first step on (CNTK copies the batch stats while it is 0) and
            # allow inference on fresh weights
            count.value = np.asarray(float(self.config.batch_size), dtype=self.np_dtype)
        TableAdapter.set_weights(self, params)

    # -- steps ---------------------------------------------------------------------------------
    def _feed(self, x, y=None):
        xb = np.ascontiguousarray(x, dtype=self.np_dtype)
        if y is None:
            return {self.x_var: xb}
        y = np.asarray(y, dtype=np.int64)
        onehot = np.zeros((len(y), self.spec.num_classes), dtype=self.np_dtype)
        onehot[np.arange(len(y)), y] = 1
        return {self.x_var: xb, self.y_var: onehot}

    def train_step(self, x, y):
        feed = self._feed(x, y)
        n = len(feed[self.x_var])
        if self.inv_batch is not None:
            learners.universal_constants(self, n)
        partial = self.bn_stats and n != self.config.batch_size
        if partial:
            before = [(mean.value, var.value) for mean, var, _, _ in self.bn_stats]
        self.trainer.train_minibatch(feed)
        if self.max_norm_op is not None:
            self.max_norm_op.eval(device=self.device)
        if partial:
            self._fix_running_stats(before, n)
        self.steps += 1
        return float(self.trainer.previous_minibatch_loss_average)

    def _fix_running_stats(self, before, n):
        """A batch of n != batch_size samples: CNTK blended the running statistics with
        f = 1 - exp(-n/tc) = 1 - (1-m)^(n/batch_size); redo the blend with PyTorch's m."""
        for (mean, var, m, tc), old in zip(self.bn_stats, before):
            if not (0.0 < m < 1.0):
                continue  # tc 0 or inf: CNTK's factor is 1 or 0 whatever n is, as PyTorch's
            f = 1.0 - math.exp(-float(n) / tc)
            for const, prev in zip((mean, var), old):
                batch = (const.value - (1.0 - f) * prev) / f
                const.value = np.ascontiguousarray(((1.0 - m) * prev + m * batch).astype(self.np_dtype))

    def predict(self, x):
        out = self.model.eval(self._feed(x), device=self.device)
        return np.asarray(out, dtype=self.np_dtype).reshape(len(x), self.spec.num_classes)

    def environment(self):
        C = self.C
        info = {"framework": "cntk", "framework_version": C.__version__,
                "layout": "NCHW (CNTK is channels-first; dense W (C,H,W,units))",
                "device_name": "cpu" if self.device.type() == C.device.DeviceKind.CPU else
                "gpu %d" % self.device.id(),
                "intra_op_threads": int(C.cntk_py.get_max_num_cputhreads()),
                "threads_requested": int(self.config.threads),
                "learner": self.learner_desc}
        return info


def _cntk_auto_pads(size, k, s):
    """(before, after) padding of CNTK's pad=True: (k-1)//2 before, output ceil(size/s)."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    before = min((k - 1) // 2, total)
    return (before, total - before)


class _Pad(object):
    """Explicit zero padding in front of a pad=False convolution (a picklable callable)."""

    def __init__(self, C, pattern):
        self.C = C
        self.pattern = pattern
        self.name = ""

    def __call__(self, x):
        return self.C.pad(x, pattern=self.pattern, mode=self.C.ops.CONSTANT_PAD)


class _Reshape(object):
    def __init__(self, C, shape):
        self.C = C
        self.shape = shape
        self.name = ""

    def __call__(self, x):
        return self.C.reshape(x, self.shape)
