"""JAX: the spec as a Flax `nnx.Sequential` (channels_last), trained with optax in one `jax.jit` step.

Written from docs/adding-a-backend.md alone, as the proof that the guide is enough.

The idiom, Flax's "functional training loop" (its performance guide): build the `nnx` model and an
`nnx.Optimizer` (optax inside), `nnx.split` both once into a static graph definition and one state
pytree (parameters, batchnorm statistics, dropout RNG state, optimizer state), and train with one
`jax.jit`-compiled function over that state, its buffers donated: `nnx.merge` at the top,
`nnx.value_and_grad` w.r.t. the `nnx.Param`s, `optimizer.update`, `nnx.state` out. `nnx.jit` on
the stateful objects would do the same but traverses the object graph in Python on every call. (The
merge must happen outside the gradient: merging inside `jax.value_and_grad` makes the batchnorm
update a mutation from another trace level, which Flax refuses with TraceContextError.)

Layout: data NHWC, conv kernels HWIO, dense kernels (in, out): the same world as TensorFlow's, so
the canonical <-> native conversion is `backends.tf_backend.TfLayout` (conv OIHW <-> HWIO, rows of
the first dense kernel after a flatten permuted from (c, h, w) to (h, w, c) order). Explicit and
'same' padding both go to nnx.Conv as the spec's explicit (low, high) pairs.

Sameness with the suite (docs/results-schema.md#optimizers, PyTorch's formulas), all stock optax:
- sgd: optax.sgd(lr); momentum: optax.sgd(lr, momentum) (optax's trace is v = g + mu*v,
  update -lr*v: PyTorch's heavy ball, not Nesterov);
- adam: optax.adam(lr, b1, b2, eps) (bias-corrected m and v, eps outside the square root, exactly
  PyTorch's form);
- rmsprop: optax.rmsprop(lr, decay=rho, eps=eps, eps_in_sqrt=False): optax's default puts eps
  INSIDE the square root (rsqrt(v + eps)); PyTorch's is g / (sqrt(v) + eps);
- loss: optax.softmax_cross_entropy_with_integer_labels, mean over the batch;
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
narrowed to `threads` cores before jax is imported, which sizes XLA's thread pool.

Device: "cpu" or "cuda" (jax.devices("gpu")); the state is placed on that device and the jitted
step runs there. train_step returns float(loss): the loss is an output of the same XLA executable
as the new parameters, so it is ready only when the whole step is (the timing sync point).
"""
import functools
import os
import sys
from collections import OrderedDict

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported
from backends.tf_backend import TfLayout, nchw_to_nhwc


class JaxAdapter(Adapter):
    name = "jax"
    framework = "jax"

    # -- build -----------------------------------------------------------------------------------
    def build(self):
        cfg = self.config
        self.notes = {}
        if cfg.optimizer not in ("sgd", "momentum", "adam", "rmsprop"):
            raise Unsupported("optimizer %r" % cfg.optimizer)
        if cfg.threads and "jax" not in sys.modules and hasattr(os, "sched_setaffinity"):
            cpus = sorted(os.sched_getaffinity(0))
            if cfg.threads < len(cpus):
                os.sched_setaffinity(0, cpus[:cfg.threads])
                self.notes["cpu_affinity"] = cpus[:cfg.threads]
        import jax
        if cfg.dtype == "float64":
            jax.config.update("jax_enable_x64", True)  # before any float64 array is made
        import jax.numpy as jnp
        import optax
        from flax import nnx

        self.jax, self.jnp, self.optax, self.nnx = jax, jnp, optax, nnx
        self.device = _device(jax, cfg.device)
        self.np_dtype = np.dtype(cfg.dtype)
        self.layout = TfLayout(self.spec)

        with jax.default_device(self.device):
            self.model, self.variables = self._make_model()
            self.tx = self._make_optimizer()
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
        self.graph_train, self.state = nnx.split((self.model, optimizer))

    def _make_model(self):
        nnx, cfg = self.nnx, self.config
        dt = self.jnp.dtype(cfg.dtype)
        rngs = nnx.Rngs(params=cfg.seed, dropout=cfg.seed)
        layers = []
        variables = OrderedDict()  # canonical name -> (index in nnx.Sequential, attribute)
        in_shape = self.spec.input_shape
        for layer, shape in zip(self.spec.layers, self.spec.shapes):
            kind = layer.kind
            if kind == "conv2d":
                conv = nnx.Conv(in_shape[0], layer.filters, tuple(layer.kernel),
                                strides=tuple(layer.stride),
                                padding=[tuple(p) for p in layer.padding],
                                use_bias=layer.use_bias, dtype=dt, param_dtype=dt, rngs=rngs)
                self._map(variables, layer, len(layers))
                layers.append(conv)
                layers.extend(_activation(nnx, layer.activation))
            elif kind == "maxpool2d":
                layers.append(functools.partial(nnx.max_pool, window_shape=tuple(layer.size),
                                                strides=tuple(layer.stride), padding="VALID"))
            elif kind == "flatten":
                layers.append(_flatten)
            elif kind == "dense":
                dense = nnx.Linear(in_shape[0], layer.units, use_bias=layer.use_bias, dtype=dt,
                                   param_dtype=dt, rngs=rngs)
                self._map(variables, layer, len(layers))
                layers.append(dense)
                layers.extend(_activation(nnx, layer.activation))
            elif kind == "dropout":
                if cfg.dropout and layer.rate > 0:
                    layers.append(nnx.Dropout(layer.rate, rngs=rngs))
            elif kind == "batchnorm":
                bn = nnx.BatchNorm(in_shape[0], momentum=1.0 - layer.momentum, epsilon=layer.eps,
                                   use_fast_variance=False, dtype=dt, param_dtype=dt, rngs=rngs)
                for field, attr in (("gamma", "scale"), ("beta", "bias"),
                                    ("running_mean", "mean"), ("running_var", "var")):
                    variables[layer.name + "." + field] = (len(layers), attr)
                layers.append(bn)
            elif kind == "activation":
                layers.extend(_activation(nnx, layer.function))
            else:
                raise Unsupported("layer kind %r" % kind)
            in_shape = shape
        return nnx.Sequential(*layers), variables

    @staticmethod
    def _map(variables, layer, index):
        variables[layer.name + ".weight"] = (index, "kernel")
        if layer.use_bias:
            variables[layer.name + ".bias"] = (index, "bias")

    def _make_optimizer(self):
        optax, c = self.optax, self.config
        if c.optimizer == "sgd":
            return optax.sgd(c.lr)
        if c.optimizer == "momentum":
            return optax.sgd(c.lr, momentum=c.momentum)
        if c.optimizer == "adam":
            return optax.adam(c.lr, b1=c.beta1, b2=c.beta2, eps=c.eps)
        return optax.rmsprop(c.lr, decay=c.rho, eps=c.eps, eps_in_sqrt=False)

    # -- the pure functions that jax.jit compiles -------------------------------------------------
    def _step(self, state, x, y):
        """Flax's functional training loop: merge, nnx.value_and_grad, Optimizer.update, split."""
        nnx, optax = self.nnx, self.optax
        model, optimizer = nnx.merge(self.graph_train, state)

        def loss_fn(model):
            logits = model(x)  # batchnorm statistics and dropout RNG counts update in place
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)  # gradients w.r.t. nnx.Param only
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

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

    def set_weights(self, params):
        missing = sorted(set(self.variables) - set(params))
        if missing:
            raise ValueError("set_weights: missing %s" % ", ".join(missing))
        nnx, jax = self.nnx, self.jax
        nnx.update(self.model, self.state[0])
        for name, (index, attr) in self.variables.items():
            value = self.layout.to_tf(name, np.asarray(params[name], dtype=self.np_dtype))
            getattr(self.model.layers[index], attr).value = jax.device_put(value, self.device)
        with jax.default_device(self.device):
            self._split()  # a fresh optimizer state for fresh weights

    def get_weights(self):
        # the live buffers are donated to the next step: TfLayout.from_tf copies them
        self.nnx.update(self.model, self.state[0])
        return OrderedDict(
            (name, self.layout.from_tf(name, np.asarray(
                getattr(self.model.layers[index], attr).value)))
            for name, (index, attr) in self.variables.items())

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


def _flatten(x):
    return x.reshape(x.shape[0], -1)  # (h, w, c) order: TfLayout permutes the next dense kernel


def _activation(nnx, function):
    if function == "relu":
        return [nnx.relu]
    if function == "tanh":
        return [nnx.tanh]
    return []
