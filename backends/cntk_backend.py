"""CNTK 2.7: the spec as a `C.layers.Sequential`, trained with `C.Trainer.train_minibatch` per step.

Runs in the tox env `cntk` (CPython 3.6, `cntk==2.7.post2`, CPU wheel; see tox.ini): keep this file
3.6-compatible. `import cntk` needs OpenMPI 1.10 sonames, served from OpenMPI 4 by the soname links
in .tox/cntk-mpi-shim (bench/envs.py makes them; the registry puts them on LD_LIBRARY_PATH).

Layout. CNTK is channels-first and its Python view of a tensor is row-major, so the canonical layout
maps without transposes: data (N, C, H, W); conv kernels `W` (O, I, kh, kw); conv biases are stored
(O, 1, 1). A `Dense` applied to a (C, H, W) tensor flattens it itself (its `W` is (C, H, W, units),
the row-major view of the canonical (C*H*W, units)), so a spec `flatten` followed by a dense (no
batchnorm in between) is left to the Dense, as CNTK code does; otherwise it is a `C.reshape`.

Padding. `Convolution2D(pad=True)` pads (k-1)//2 before and the rest after, output ceil(size/stride).
TF's 'same' (the spec's) puts the extra pixel after instead, so the two agree for stride 1 (also for
even kernels) but not always for strides > 1. `pad=True` is used where the pads agree, otherwise the
spec's pads go into a `C.pad` in front of an unpadded convolution. Every layer's output shape is
checked against the spec's `shapes` in build() (Unsupported if one differs). For asymmetric pads CNTK
prints that MKL cannot do them and uses its GEMM convolution engine.

Learning rate. The suite's meaning: lr applies to the batch MEAN of the loss. CNTK's criterion is the
per-sample cross-entropy summed over the minibatch. Every built-in learner here gets
`minibatch_size=C.learners.IGNORE` and `C.learning_parameter_schedule(lr)` (no reference minibatch
size): CNTK's "compatible mode", in which the learner divides the summed gradient by the actual
minibatch size and applies lr and momentum unscaled: the per-minibatch meaning for every batch
size, a partial last batch included. (A reference size N would make lr per N samples, applied to the
sum, i.e. lr*n/N times the mean on a batch of n, and momentum mu**(n/N).)

Optimizers, against the formulas of backends/numpy_ref.py (PyTorch's):
- sgd: `C.sgd`. Exact.
- momentum: `C.momentum_sgd(unit_gain=False)`. CNTK keeps u = mu*u + lr*g, p -= u; PyTorch keeps
  v = mu*v + g, p -= lr*v; with a constant lr, u = lr*v: the same iterates (rounding order aside).
  CNTK's default unit_gain=True would be u = mu*u + (1-mu)*lr*g: a 10x smaller step at mu=0.9.
- adam: CNTK's `C.adam(unit_gain=True)` computes p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps):
  eps is added to the UNcorrected sqrt(v), so in PyTorch's terms its eps is eps/sqrt(1-b2^t) (31.6x
  at step 1 with b2=0.999, 3.2x at step 100). That is not small on MNIST, where many weights see
  tiny gradients: 30 float64 steps of seed_convnet differ from the reference by 1e-3 in the loss and
  9e-3 in the weights. So by default Adam is PyTorch's formula written with `C.universal` (CNTK's
  own custom-learner API; the summed gradient is scaled by a 1/n constant, bias corrections are
  constants set per step): exact, and no slower here. CONVBENCH_CNTK_ADAM=native selects `C.adam`
  (recorded in environment()["learner"]).
- rmsprop: CNTK's built-in `C.rmsprop` is another algorithm: its mean square starts at g_1^2, not
  0, a fixed 1e-6 floor sits inside the sqrt (eps outside in PyTorch), and per-weight step sizes
  adapt by the gradient's sign (inc/dec/max/min). PyTorch's RMSProp (v = rho*v + (1-rho)*g^2,
  p -= lr*g/(sqrt(v)+eps)) is therefore written with `C.universal`, as Adam is. Exact.

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
import os
import warnings
from collections import OrderedDict

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported

#: "universal": PyTorch's Adam exactly (C.universal); "native": C.adam (eps on the uncorrected
#: second moment, see above). The environment variable CONVBENCH_CNTK_ADAM overrides it.
CNTK_ADAM = os.environ.get("CONVBENCH_CNTK_ADAM", "universal")


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


class CntkAdapter(Adapter):
    name = "cntk"
    framework = "cntk"

    # -- build ---------------------------------------------------------------------------------
    def build(self):
        C = import_cntk()
        self.C = C
        cfg = self.config
        if cfg.dtype not in ("float32", "float64"):
            raise Unsupported("dtype %r" % cfg.dtype)
        self.np_dtype = np.dtype(cfg.dtype)
        self._set_device(cfg.device)
        if cfg.threads:
            C.cntk_py.set_max_num_cputhreads(int(cfg.threads))
        if cfg.optimizer not in ("sgd", "momentum", "adam", "rmsprop"):
            raise Unsupported("optimizer %r" % cfg.optimizer)
        if cfg.optimizer == "adam" and CNTK_ADAM not in ("universal", "native"):
            raise Unsupported("CONVBENCH_CNTK_ADAM=%r (universal or native)" % CNTK_ADAM)

        spec = self.spec
        dt = self.np_dtype.type
        self.x_var = C.input_variable(tuple(spec.input_shape), dtype=dt, name="features")
        self.y_var = C.input_variable(spec.num_classes, dtype=dt, name="labels")
        self.layer_map = OrderedDict()  # canonical name -> (layer block, attribute name)
        self.bn_counts = []
        self.bn_stats = []  # (running mean, running var, PyTorch momentum, CNTK time constant)
        per_layer = []
        with C.default_options(dtype=dt):
            for i, layer in enumerate(spec.layers):
                per_layer.append(self._layer(i, layer))
        self._check_shapes(per_layer)
        self.model = C.layers.Sequential([b for blocks in per_layer for b in blocks])(self.x_var)
        self.loss = C.cross_entropy_with_softmax(self.model, self.y_var)
        self._bind_params()
        self.inv_batch = None
        self._make_trainer()

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

    def _layer(self, i, layer):
        """CNTK blocks (functions of one argument) for spec layer i, registering its parameters."""
        C = self.C
        L = C.layers
        spec = self.spec
        in_shape = spec.input_shape if i == 0 else spec.shapes[i - 1]
        if layer.kind == "conv2d":
            (pt, pb), (pl, pr) = layer.padding
            kh, kw = layer.kernel
            sh, sw = layer.stride
            auto = tuple(_cntk_auto_pads(in_shape[1 + a], layer.kernel[a], layer.stride[a])
                         for a in (0, 1))
            out = []
            if (pt, pb, pl, pr) == (0, 0, 0, 0):
                pad = False
            elif ((pt, pb), (pl, pr)) == auto:
                pad = True
            else:
                out.append(_Pad(C, [(0, 0), (pt, pb), (pl, pr)]))
                pad = False
            conv = L.Convolution2D((kh, kw), layer.filters, activation=_act(C, layer.activation),
                                   pad=pad, strides=(sh, sw), bias=layer.use_bias, name=layer.name)
            self._register(layer.name + ".weight", conv, "W")
            if layer.use_bias:
                self._register(layer.name + ".bias", conv, "b")
            out.append(conv)
            return out
        if layer.kind == "maxpool2d":
            return [L.MaxPooling(tuple(layer.size), strides=tuple(layer.stride), pad=False,
                                 name=layer.name)]
        if layer.kind == "flatten":
            if self._dense_flattens(i):
                return []
            return [_Reshape(C, (int(np.prod(in_shape)),))]
        if layer.kind == "dense":
            dense = L.Dense(layer.units, activation=_act(C, layer.activation), bias=layer.use_bias,
                            name=layer.name)
            self._register(layer.name + ".weight", dense, "W")
            if layer.use_bias:
                self._register(layer.name + ".bias", dense, "b")
            return [dense]
        if layer.kind == "dropout":
            if not self.config.dropout or layer.rate == 0:
                return []
            return [L.Dropout(layer.rate, seed=int(self.config.seed) + i, name=layer.name)]
        if layer.kind == "batchnorm":
            spatial = len(in_shape) == 3  # per channel after a conv, per feature after a flatten
            tc = self._time_constant(layer.momentum)
            bn = L.BatchNormalization(map_rank=1 if spatial else None, normalization_time_constant=tc,
                                      epsilon=layer.eps, name=layer.name)
            for field, attr in (("gamma", "scale"), ("beta", "bias"),
                                ("running_mean", "aggregate_mean"),
                                ("running_var", "aggregate_variance")):
                self._register(layer.name + "." + field, bn, attr)
            self.bn_counts.append(bn.aggregate_count)
            self.bn_stats.append((bn.aggregate_mean, bn.aggregate_variance, layer.momentum, tc))
            return [bn]
        if layer.kind == "activation":
            return [_act(C, layer.function) or (lambda v: v)]
        raise Unsupported("layer kind %r" % layer.kind)

    def _dense_flattens(self, i):
        """A flatten whose next dense can flatten by itself (no batchnorm in between)."""
        for layer in self.spec.layers[i + 1:]:
            if layer.kind == "dense":
                return True
            if layer.kind == "batchnorm":
                return False
        return False

    def _time_constant(self, momentum):
        """CNTK's normalization_time_constant giving PyTorch's momentum for a full batch."""
        if momentum >= 1.0:
            return 0  # only the current minibatch
        if momentum <= 0.0:
            return float("inf")  # frozen
        return -float(self.config.batch_size) / math.log(1.0 - momentum)

    def _register(self, canonical, block, attr):
        self.layer_map[canonical] = (block, attr)

    def _bind_params(self):
        """Resolve the registered (block, attribute) pairs to CNTK variables, now that shapes are known."""
        expected = self.spec.params()
        bound = OrderedDict()
        for name, (block, attr) in self.layer_map.items():
            var = getattr(block, attr)
            shape = tuple(var.shape)
            want = expected[name].shape
            if int(np.prod(shape)) != int(np.prod(want)):
                raise Unsupported("parameter %s: CNTK shape %r does not hold canonical %r"
                                  % (name, shape, want))
            bound[name] = (var, shape)
        missing = sorted(set(expected) - set(bound))
        if missing:
            raise Unsupported("parameters not realized in CNTK: %s" % ", ".join(missing))
        self.params = bound
        self.trainable = [v for v, _ in bound.values() if v.is_parameter]

    def _check_shapes(self, per_layer):
        """Apply the blocks layer by layer (parameters shared) and compare with the spec's shapes."""
        h = self.C.input_variable(tuple(self.spec.input_shape), dtype=self.np_dtype.type)
        lazy = False  # a flatten left to the next Dense
        for layer, blocks, want in zip(self.spec.layers, per_layer, self.spec.shapes):
            for block in blocks:
                h = block(h)
            got = tuple(h.shape)
            lazy = (lazy or (layer.kind == "flatten" and not blocks)) and layer.kind != "dense"
            if lazy:
                got = (int(np.prod(got)),)
            if got != tuple(want):
                raise Unsupported("layer %s (%s): CNTK output shape %r, the spec says %r"
                                  % (layer.name, layer.kind, got, tuple(want)))

    # -- optimizer -----------------------------------------------------------------------------
    def _make_trainer(self):
        C = self.C
        c = self.config
        IGNORE = C.learners.IGNORE
        lr = C.learning_parameter_schedule(c.lr)
        params = self.trainable
        if c.optimizer == "sgd":
            learner = C.sgd(params, lr=lr, minibatch_size=IGNORE)
            self.learner_desc = "C.sgd(minibatch_size=IGNORE)"
        elif c.optimizer == "momentum":
            learner = C.momentum_sgd(params, lr=lr, momentum=C.momentum_schedule(c.momentum),
                                     unit_gain=False, minibatch_size=IGNORE)
            self.learner_desc = "C.momentum_sgd(unit_gain=False, minibatch_size=IGNORE)"
        elif c.optimizer == "adam" and CNTK_ADAM == "native":
            learner = C.adam(params, lr=lr, momentum=C.momentum_schedule(c.beta1), unit_gain=True,
                             variance_momentum=C.momentum_schedule(c.beta2), epsilon=c.eps,
                             minibatch_size=IGNORE)
            self.learner_desc = "C.adam(unit_gain=True, minibatch_size=IGNORE)"
        elif c.optimizer in ("adam", "rmsprop"):
            learner = self._universal(c.optimizer)
            self.learner_desc = "C.universal(PyTorch %s)" % c.optimizer
        else:
            raise Unsupported("optimizer %r" % c.optimizer)
        self.learner = learner
        self.trainer = C.Trainer(self.model, (self.loss, None), [learner])
        self.steps = 0

    def _universal(self, kind):
        """PyTorch's Adam / RMSProp as a CNTK update function (C.universal).

        A universal learner receives the gradient of the summed loss, so it is scaled by 1/N with a
        constant set in train_step; Adam's bias corrections are constants set per step likewise.
        """
        C = self.C
        c = self.config
        dt = self.np_dtype.type
        self.inv_batch = C.constant(1.0, dtype=dt, name="inv_batch")
        self.bias_c1 = C.constant(1.0, dtype=dt, name="adam_c1")  # 1/(1-b1^t)
        self.bias_c2 = C.constant(1.0, dtype=dt, name="adam_c2")  # 1/(1-b2^t)

        def update(parameters, gradients):
            updates = []
            for p, g in zip(parameters, gradients):
                g = g * self.inv_batch
                if kind == "rmsprop":
                    v = C.constant(0.0, shape=p.shape, dtype=dt, name="rms_v")
                    v_new = C.assign(v, c.rho * v + (1.0 - c.rho) * g * g)
                    updates.append(C.assign(p, p - c.lr * g / (C.sqrt(v_new) + c.eps)))
                else:
                    m = C.constant(0.0, shape=p.shape, dtype=dt, name="adam_m")
                    v = C.constant(0.0, shape=p.shape, dtype=dt, name="adam_v")
                    m_new = C.assign(m, c.beta1 * m + (1.0 - c.beta1) * g)
                    v_new = C.assign(v, c.beta2 * v + (1.0 - c.beta2) * g * g)
                    step = (m_new * self.bias_c1) / (C.sqrt(v_new * self.bias_c2) + c.eps)
                    updates.append(C.assign(p, p - c.lr * step))
            return C.combine(updates)

        return C.universal(update, self.trainable)

    # -- weights -------------------------------------------------------------------------------
    def set_weights(self, params):
        missing = sorted(set(self.params) - set(params))
        if missing:
            raise ValueError("set_weights: missing %s" % ", ".join(missing))
        for name, (var, shape) in self.params.items():
            value = np.asarray(params[name], dtype=self.np_dtype).reshape(shape)
            var.value = np.ascontiguousarray(value)
        for count in self.bn_counts:
            # > 0: blend from the first step on (CNTK copies the batch stats while it is 0) and
            # allow inference on fresh weights
            count.value = np.asarray(float(self.config.batch_size), dtype=self.np_dtype)
        self._make_trainer()  # fresh optimizer state for fresh weights

    def get_weights(self):
        expected = self.spec.params()
        out = OrderedDict()
        for name, (var, _) in self.params.items():
            out[name] = np.ascontiguousarray(
                np.asarray(var.value, dtype=self.np_dtype).reshape(expected[name].shape))
        return out

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
            self._universal_constants(n)
        partial = self.bn_stats and n != self.config.batch_size
        if partial:
            before = [(mean.value, var.value) for mean, var, _, _ in self.bn_stats]
        self.trainer.train_minibatch(feed)
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

    def _universal_constants(self, n):
        c = self.config
        t = self.steps + 1
        self.inv_batch.value = np.asarray(1.0 / n, dtype=self.np_dtype)
        if c.optimizer == "adam":
            self.bias_c1.value = np.asarray(1.0 / (1.0 - c.beta1 ** t), dtype=self.np_dtype)
            self.bias_c2.value = np.asarray(1.0 / (1.0 - c.beta2 ** t), dtype=self.np_dtype)

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


def _act(C, function):
    if function == "relu":
        return C.relu
    if function == "tanh":
        return C.tanh
    return None


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
