"""The adapter contract: the one interface every backend implements. NumPy in, NumPy out.

An adapter realizes a `models.spec.ModelSpec` in its framework's own idiom. The harness
(bench/harness.py) owns the data, its order, the epochs and the clocks; the adapter owns only the
network, its optimizer and the conversion between the canonical layout and its own.

Lifecycle, all inside one worker process:
    adapter = AdapterClass(spec, config)   # cheap; no framework work yet
    adapter.build()                        # import the framework, create the native model + optimizer
    adapter.set_weights(params)            # canonical dict name -> ndarray (see models/spec.py);
                                           # called once, right after build
    loss = adapter.train_step(x, y)        # ONE optimizer step; returning a Python float forces
                                           # the device to finish (that is the timing sync point)
    logits = adapter.predict(x)            # eval mode (dropout off, batchnorm running stats), no update
    params = adapter.get_weights()         # canonical layout, including batchnorm running stats;
                                           # fresh arrays the caller owns (never views of live tensors)
    adapter.environment()                  # framework name/version, device, threads, layout, flags

    x: float array (N, C, H, W), canonical NCHW, values in [0, 1], of `config.dtype`
    y: int64 array (N,), class indices
    The loss is the mean softmax cross-entropy over the batch; the learning rate applies to that
    mean (per-minibatch meaning). Optimizer formulas are fixed in docs/results-schema.md#optimizers
    and implemented by the NumPy reference (backends/numpy_ref.py).

A configuration the adapter cannot run raises `Unsupported(reason)` (reported as status
`unsupported`); a framework or device that is missing raises `Unavailable(reason)` (status
`unavailable`). Anything else is a failure.

This module runs on every backend's interpreter, CPython 3.6 (CNTK) included: keep it 3.6-compatible.
"""
import time
from typing import NamedTuple


class Unavailable(RuntimeError):
    """The framework, its environment or the requested device is not there."""


class Unsupported(NotImplementedError):
    """This adapter does not implement this model or configuration."""


OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "rmsprop", "adadelta")
SCHEDULES = ("constant", "time", "step", "cosine")  # backends/common/schedule.py
#: each optimizer's learning rate when neither --lr nor the model's [training] table gives one:
#: the frameworks' conventional defaults (Keras: SGD 0.01, Adam 0.001, RMSprop 0.001; PyTorch's
#: Adam 0.001), except momentum's 0.1, which trains seed_convnet to >= 98% in one epoch (measured,
#: seeds 0-2), nesterov's 0.05 (the seed post's SGD(lr=0.05, nesterov=True)) and adadelta's 1.0
#: (the original Adadelta's and Keras 1/2's; Keras 3's 0.001 barely moves). docs/results-schema.md
#: lists them.
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.1, "nesterov": 0.05, "adam": 0.001, "rmsprop": 0.001,
              "adadelta": 1.0}
DEVICES = ("cpu", "cuda")
DTYPES = ("float32", "float64")
#: "full": compute in config.dtype; "bf16": mixed precision, bfloat16 compute with float32 master
#: weights, through the framework's own autocast / mixed-precision policy (dtype float32 only)
PRECISIONS = ("full", "bf16")


def _perf_counter_ns_py36():
    return int(time.perf_counter() * 1e9)


#: the one step clock; time.perf_counter_ns is 3.7+, CNTK's interpreter may be 3.6
clock_ns = getattr(time, "perf_counter_ns", _perf_counter_ns_py36)


class TrainConfig(NamedTuple):
    """Everything that defines a training run, identical for every backend of one run."""
    optimizer: str = "momentum"
    lr: float = 0.1           # momentum 0.9, lr 0.1: seed_convnet >= 98% after one epoch (measured, seeds 0-2)
    momentum: float = 0.9      # sgd-with-momentum (heavy ball, PyTorch/Keras form)
    beta1: float = 0.9         # adam
    beta2: float = 0.999       # adam
    rho: float = 0.9           # rmsprop and adadelta decay (Keras' Adadelta: 0.95)
    eps: float = 1e-7          # adam, rmsprop and adadelta
    batch_size: int = 128
    epochs: int = 1
    seed: int = 0
    threads: int = 0           # 0: all cores of the machine
    device: str = "cpu"
    dtype: str = "float32"
    dropout: bool = True       # conformance turns it off: masks cannot be shared across frameworks
    limit_train: int = 0       # 0: the full training set
    limit_test: int = 0        # 0: the full test set
    warmup_steps: int = 5      # excluded from step statistics, kept in the record
    evals_per_epoch: int = 4   # test-set evaluations per epoch (untimed): the accuracy-vs-time curve
    eval_batch_size: int = 1000
    mode: str = "step"         # "step": harness-timed train_step loop; "epoch": the framework's
                               # own epoch loop (adapters with an `epoch_idiom` only)
    max_steps: int = 0         # > 0: stop the epoch after this many steps (timing-only processes)
    # the learning-rate schedule (backends/common/schedule.py): lr times a factor of the update count
    schedule: str = "constant"  # constant | time (Keras' decay) | step | cosine
    decay: float = 0.0          # time: lr / (1 + decay * k)
    gamma: float = 0.1          # step: lr * gamma ** (k // decay_steps)
    decay_steps: int = 0        # step: its period; cosine: its length (0: the whole run, see plan)
    target_accuracy: float = 0.0  # > 0: stop at the first evaluation that reaches it (time to accuracy)
    precision: str = "full"    # PRECISIONS

    def to_dict(self):
        d = dict(self._asdict())
        # absent unless set: records made before they existed stay comparable (same work hash)
        for field in ("max_steps", "target_accuracy"):
            if not d[field]:
                del d[field]
        if d["precision"] == "full":
            del d["precision"]
        if d["schedule"] == "constant":
            for field in ("schedule", "decay", "gamma", "decay_steps"):
                del d[field]
        return d

    @classmethod
    def from_dict(cls, data):
        known = set(cls._fields)
        return cls(**dict((k, v) for k, v in data.items() if k in known))


class Adapter(object):
    """Base class: subclasses set `name` and `framework`, implement the abstract methods."""

    name = "abstract"
    framework = "none"
    #: the framework's own epoch-level training call (Keras `fit`, `Estimator.train`), which
    #: train_epoch runs in TrainConfig.mode "epoch"; None: the framework trains step by step, and
    #: mode "epoch" is refused as Unsupported rather than run as step mode under another label
    epoch_idiom = None
    #: the TrainConfig.precision values it implements; others are refused (check_precision)
    precisions = ("full",)
    #: models/configs this adapter cannot do can be refused in build() with Unsupported(...)

    def __init__(self, spec, config):
        self.spec = spec
        self.config = config

    # -- to implement -------------------------------------------------------------------------
    def build(self):
        raise NotImplementedError

    def set_weights(self, params):
        raise NotImplementedError

    def get_weights(self):
        raise NotImplementedError

    def train_step(self, x, y):
        raise NotImplementedError

    def predict(self, x):
        raise NotImplementedError

    def environment(self):
        return {"framework": self.framework}

    def check_precision(self):
        """Unsupported for a precision this adapter does not implement (called before build)."""
        p = getattr(self.config, "precision", "full")
        if p not in self.precisions:
            raise Unsupported("precision %r: %s %s" % (p, self.name, getattr(
                self, "precision_note", "has no mixed-precision path (full precision only)")))
        if p == "bf16" and self.config.dtype != "float32":
            raise Unsupported("precision 'bf16' keeps float32 master weights: it needs dtype "
                              "float32, not %s" % self.config.dtype)

    # -- optional ------------------------------------------------------------------------------
    def train_epoch(self, batches, on_step):
        """Train over an iterable of (x, y); call on_step(step_ns, loss) once per step.

        The default times each train_step with clock_ns (perf_counter_ns). Adapters whose idiom trains a
        whole epoch in one call (Keras fit, Estimator) set `epoch_idiom`, override this and time
        steps from callbacks; on_step may then evaluate (predict) between two steps, from inside
        that call, so predict must see the current weights there.
        """
        for x, y in batches:
            t0 = clock_ns()
            loss = self.train_step(x, y)
            on_step(clock_ns() - t0, loss)

    def device_peak_bytes(self):
        """Peak device memory in bytes where the framework reports it, else None."""
        return None

    def close(self):
        pass
