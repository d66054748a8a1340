"""JAX: the spec as a Flax `nnx.Sequential` (channels_last), trained with optax in one `jax.jit` step.

Written from docs/adding-a-backend.md alone, as the proof that the guide is enough.

The idiom, Flax's "functional training loop" (its performance guide): build the `nnx` model (the
LAYERS table, one function per layer kind) and an `nnx.Optimizer` (optax inside, the OPTIMIZERS
table), `nnx.split` both once into a static graph definition and one state pytree (parameters,
batchnorm statistics, dropout RNG state, optimizer state), and train with one `jax.jit`-compiled
function over that state, its buffers donated: `nnx.merge` at the top, `nnx.value_and_grad` w.r.t.
the `nnx.Param`s, `optimizer.update`, the max-norm constraints, `nnx.state` out. `nnx.jit` on the
stateful objects would do the same but traverses the object graph in Python on every call. (The
merge must happen outside the gradient: merging inside `jax.value_and_grad` makes the batchnorm
update a mutation from another trace level, which Flax refuses with TraceContextError.)

Layout: data NHWC, conv kernels HWIO, dense kernels (in, out): the canonical <-> native conversion
is `backends.common.layout.ChannelsLast` (conv OIHW <-> HWIO, rows of the first dense kernel after
a flatten permuted from (c, h, w) to (h, w, c) order). Explicit and 'same' padding both go to
nnx.Conv as the spec's explicit (low, high) pairs.

Sameness with the suite (docs/results-schema.md#optimizers, PyTorch's formulas), all stock optax:
- sgd: optax.sgd(lr); momentum: optax.sgd(lr, momentum) (optax's trace is v = g + mu*v,
  update -lr*v: PyTorch's heavy ball, not Nesterov);
- adam: optax.adam(lr, b1, b2, eps) (bias-corrected m and v, eps outside the square root, exactly
  PyTorch's form);
- rmsprop: optax.rmsprop(lr, decay=rho, eps=eps, eps_in_sqrt=False): optax's default puts eps
  INSIDE the square root (rsqrt(v + eps)); PyTorch's is g / (sqrt(v) + eps);
- nesterov: optax.sgd(nesterov=True) (update g + mu*(mu*v + g): PyTorch's); adadelta:
  optax.adadelta(lr, rho, eps) (eps inside both roots, as everywhere);
- schedules (SCHEDULES): optax's exponential_decay(staircase) and cosine_decay_schedule, a plain
  count -> lr function for the time-based decay; optax applies lr after the trace (PyTorch's form);
- loss: optax.softmax_cross_entropy_with_integer_labels, mean over the batch;
- avgpool2d: nnx.avg_pool, VALID windows (the spec's pools have no padding);
- max_norm: Keras' MaxNorm applied inside the jitted step right after the optax update (jnp ops
  on the HWIO / (in, out) kernel: axes (0, 1, 2) / (0,)); optax.projections.projection_l2_ball
  would scale a whole kernel at once, not each output unit, and without Keras' eps;
- batchnorm: nnx.BatchNorm(momentum = 1 - spec momentum, epsilon = spec eps,
  use_fast_variance=False (the two-pass variance, as the reference computes it)). DIFFERENCE, kept as
  Flax does it: Flax updates the running variance with the BIASED batch variance, the canonical
  state the unbiased one (x n/(n-1), n = values per channel in the batch): running_var differs by a
  relative ~1/n of the batch part, as in Keras (the conformance suite compares running statistics
  with a relative tolerance for this reason). Normalization in training is identical;
- dropout: nnx.Dropout with its own RNG stream (seeded from config.seed), only when
  config.dropout; masks are not shared with other frameworks (conformance turns dropout off);
- float64: jax_enable_x64 is switched on in build() before any array exists (JAX is float32-only
  until then); every layer gets dtype and param_dtype, so float32 runs in the same process (the
  conformance worker runs both) stay float32.

Threads: XLA has no thread-count setting for the CPU; as for keras-jax the process' CPU affinity is
narrowed to `threads` cores before jax is imported (backends.common.setup.pin_cpus), which sizes
XLA's thread pool.

Device: "cpu" or "cuda" (jax.devices("gpu")); the state is placed on that device and the jitted
step runs there. train_step returns float(loss): the loss is an output of the same XLA executable
as the new parameters, so it is ready only when the whole step is (the timing sync point).
"""
import functools
import os

import numpy as np

from backends.base import Unavailable
from backends.common import schedule, tables
from backends.common.adapter import TableAdapter
from backends.common.layout import ChannelsLast, max_norm_axes, nchw_to_nhwc
from backends.common.padding import conv_padding
from backends.common.setup import pin_cpus
from backends.common.walker import walk
from models.spec import MAX_NORM_EPS


# --- the spec, layer by layer: nnx modules (and plain functions for the stateless ones) ----------

def _conv2d(a, step):
    layer = step.layer
    conv = a.nnx.Conv(step.in_shape[0], layer.filters, tuple(layer.kernel),
                      strides=tuple(layer.stride), padding=list(conv_padding(layer).pads),
                      use_bias=layer.use_bias, rngs=a.rngs, **a.dtypes)
    _bind_kernel(a, layer, conv)
    return [conv] + _activation(a, layer.activation)


def _dense(a, step):
    layer = step.layer
    dense = a.nnx.Linear(step.in_shape[0], layer.units, use_bias=layer.use_bias, rngs=a.rngs,
                         **a.dtypes)
    _bind_kernel(a, layer, dense)
    return [dense] + _activation(a, layer.activation)


def _bind_kernel(a, layer, module):
    _bind(a, layer.name + ".weight", module, "kernel")
    if layer.use_bias:
        _bind(a, layer.name + ".bias", module, "bias")
    if layer.max_norm is not None:
        a.max_norm_modules.append((module, layer.max_norm))


def _bind(a, name, module, attr):
    a.bindings.bind(name, (module, attr), a.layout.layout(name))


def _pool(op):
    def build(a, step):
        layer = step.layer
        return functools.partial(op(a), window_shape=tuple(layer.size),
                                 strides=tuple(layer.stride), padding="VALID")
    return build


def _flatten(x):
    return x.reshape(x.shape[0], -1)  # (h, w, c) order: ChannelsLast permutes the next dense kernel


def _dropout(a, step):
    if a.config.dropout and step.layer.rate > 0:
        return a.nnx.Dropout(step.layer.rate, rngs=a.rngs)
    return None


def _batchnorm(a, step):
    layer = step.layer
    bn = a.nnx.BatchNorm(step.in_shape[0], momentum=1.0 - layer.momentum, epsilon=layer.eps,
                         use_fast_variance=False, rngs=a.rngs, **a.dtypes)
    for field, attr in (("gamma", "scale"), ("beta", "bias"), ("running_mean", "mean"),
                        ("running_var", "var")):
        _bind(a, layer.name + "." + field, bn, attr)
    return bn


def _activation(a, function):
    found = tables.activation(a, function)
    return [found] if found else []


class JaxAdapter(TableAdapter):
    name = "jax"
    precision_note = ("has no bf16 path yet (Flax's idiom, layers with dtype=bfloat16 and "
                      "param_dtype=float32, is not wired in)")
    framework = "jax"
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": _pool(lambda a: a.nnx.max_pool),
        "avgpool2d": _pool(lambda a: a.nnx.avg_pool),
        "flatten": lambda a, step: _flatten,
        "dense": _dense,
        "dropout": _dropout,
        "batchnorm": _batchnorm,
        "activation": lambda a, step: _activation(a, step.layer.function),
    }
    OPTIMIZERS = {
        "sgd": lambda a: a.optax.sgd(a.lr()),
        "momentum": lambda a: a.optax.sgd(a.lr(), momentum=a.config.momentum),
        "nesterov": lambda a: a.optax.sgd(a.lr(), momentum=a.config.momentum, nesterov=True),
        "adam": lambda a: a.optax.adam(a.lr(), b1=a.config.beta1, b2=a.config.beta2,
                                       eps=a.config.eps),
        "rmsprop": lambda a: a.optax.rmsprop(a.lr(), decay=a.config.rho, eps=a.config.eps,
                                             eps_in_sqrt=False),
        "adadelta": lambda a: a.optax.adadelta(a.lr(), rho=a.config.rho, eps=a.config.eps),
    }
    # optax schedules: count -> lr (optax has no inverse-time decay: any such function is one)
    SCHEDULES = {
        "constant": lambda a, c: c.lr,
        "time": lambda a, c: lambda count: c.lr / (1.0 + c.decay * count),
        "step": lambda a, c: a.optax.exponential_decay(c.lr, c.decay_steps, c.gamma,
                                                       staircase=True),
        "cosine": lambda a, c: a.optax.cosine_decay_schedule(c.lr, c.decay_steps, alpha=0.0),
    }

    def lr(self):
        return self.SCHEDULES[self.config.schedule](self, self.config)

    # -- build -----------------------------------------------------------------------------------
    def build(self):
        cfg = self.config
        self.notes = {}
        if cfg.optimizer not in self.OPTIMIZERS:
            tables.optimizer(self)  # Unsupported, before jax is imported
        schedule.check(cfg)
        pinned = pin_cpus(cfg.threads, "jax")
        if pinned:
            self.notes["cpu_affinity"] = pinned
        import jax
        if cfg.dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # before any float64 array is made
        import jax.numpy as jnp
        import optax
        from flax import nnx

        self.jax, self.jnp, self.optax, self.nnx = jax, jnp, optax, nnx
        self.ACTIVATIONS = {"relu": nnx.relu, "tanh": nnx.tanh}
        self.device = _device(jax, cfg.device)
        self.np_dtype = np.dtype(cfg.dtype)
        self.layout = ChannelsLast(self.spec)
        dt = jnp.dtype(cfg.dtype)
        self.dtypes = {"dtype": dt, "param_dtype": dt}

        with jax.default_device(self.device):
            self.rngs = nnx.Rngs(params=cfg.seed, dropout=cfg.seed)
            self.new_bindings()
            self.max_norm_modules = []  # (module, c), appended by the LAYERS functions
            blocks = walk(self)
            self.model = nnx.Sequential(*blocks)
            self.bindings.check(self.spec.params())
            # the jitted step reaches a constrained kernel through its index in the merged model
            self.max_norms = [(_index(blocks, module), c) for module, c in self.max_norm_modules]
            self.tx = tables.optimizer(self)
            self._split()
            # evaluation: the same state under a view with dropout off and batchnorm on its
            # running statistics
            eval_view = nnx.view(self.model, deterministic=True, use_running_average=True,
                                 raise_if_not_found=False)
            self.graph_eval = nnx.split(eval_view)[0]
        self._train = jax.jit(self._step, donate_argnums=0)
        self._predict = jax.jit(self._forward_eval)

    def _split(self):
        """(Re)create the optimizer for the model's current weights and split both into the static
        graph definition and the state pytree the jitted step carries."""
        nnx = self.nnx
        optimizer = nnx.Optimizer(self.model, self.tx, wrt=nnx.Param)
        self.graph_train, state = nnx.split((self.model, optimizer))
        # committed to the device, as the step's outputs are: an uncommitted leaf (the optimizer's
        # fresh state) made the second step compile the whole step again (~0.8 s)
        self.state = self.jax.device_put(state, self.device)

    # -- the pure functions that jax.jit compiles -------------------------------------------------
    def _step(self, state, x, y):
        """Flax's functional training loop: merge, nnx.value_and_grad, Optimizer.update, the
        max-norm constraints, split."""
        nnx, optax = self.nnx, self.optax
        model, optimizer = nnx.merge(self.graph_train, state)

        def loss_fn(model):
            logits = model(x)  # batchnorm statistics and dropout RNG counts update in place
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)  # gradients w.r.t. nnx.Param only
        optimizer.update(model, grads)
        self._apply_max_norms(model)
        return nnx.state((model, optimizer)), loss

    def _apply_max_norms(self, model):
        """Keras' MaxNorm after the update: w <- w * clip(n, 0, c) / (eps + n), n the L2 norm of
        each output unit's incoming weights (the last axis of HWIO and (in, out) kernels)."""
        jnp = self.jnp
        for index, c in self.max_norms:
            kernel = model.layers[index].kernel
            w = kernel.value
            norms = jnp.sqrt(jnp.sum(w * w, axis=max_norm_axes(w.ndim, True), keepdims=True))
            kernel.value = w * (jnp.clip(norms, 0, c) / (MAX_NORM_EPS + norms))

    def _forward_eval(self, model_state, x):
        return self.nnx.merge(self.graph_eval, model_state)(x)

    # -- the contract ----------------------------------------------------------------------------
    def train_step(self, x, y):
        x = nchw_to_nhwc(x, self.np_dtype)
        y = np.asarray(y, dtype=np.int32)
        self.state, loss = self._train(self.state, x, y)  # the old state's buffers are donated
        return float(loss)  # waits for the step's executable: the timing sync point

    def predict(self, x):
        return np.asarray(self._predict(self.state[0], nchw_to_nhwc(x, self.np_dtype)))

    def _sync_model(self):
        """The live values live in self.state (the model's own buffers were donated to a step)."""
        self.nnx.update(self.model, self.state[0])

    def read_param(self, handle):
        module, attr = handle
        return np.asarray(getattr(module, attr).value)  # the bindings copy it

    def write_param(self, handle, value):
        module, attr = handle
        getattr(module, attr).value = self.jax.device_put(value, self.device)

    def reset_optimizer(self):
        with self.jax.default_device(self.device):
            self._split()  # a fresh optimizer state for the model's current weights

    def set_weights(self, params):
        self._sync_model()
        TableAdapter.set_weights(self, params)

    def get_weights(self):
        self._sync_model()
        return TableAdapter.get_weights(self)

    def device_peak_bytes(self):
        if self.config.device != "cuda":
            return None
        stats = self.device.memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else int(peak)

    def environment(self):
        import flax
        import jaxlib
        jax = self.jax
        info = {"framework": "jax", "framework_version": jax.__version__,
                "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                "optax": self.optax.__version__, "device_name": str(self.device),
                "device_kind": getattr(self.device, "device_kind", ""),
                "x64": bool(jax.config.jax_enable_x64),
                "layout": "NHWC (channels_last), kernels HWIO",
                "idiom": "flax.nnx.Sequential + optax; one jax.jit step over the nnx.split state "
                         "(buffers donated)",
                "xla_flags": os.environ.get("XLA_FLAGS", "")}
        if hasattr(os, "sched_getaffinity"):
            info["cpu_threads"] = len(os.sched_getaffinity(0))
        info.update(self.notes)
        return info


def _index(blocks, module):
    return next(i for i, block in enumerate(blocks) if block is module)


def _device(jax, device):
    if device == "cuda":
        try:
            return jax.devices("gpu")[0]
        except RuntimeError:  # no GPU platform in this jaxlib / on this machine
            platforms = sorted(set(d.platform for d in jax.devices()))
            raise Unavailable("no CUDA device: jax.devices('gpu') finds none (platforms here: %s; "
                              "the jax env installs the CPU-only jaxlib); run on a GPU machine with "
                              "jax[cuda12] in the jax env, or with --device cpu" % ", ".join(platforms))
    return jax.devices("cpu")[0]
