"""Per-layer micro-benchmarks of seed_convnet in every installed framework (convnet-benchmarks style).

Each layer of the spec (conv1, pool1, conv2, pool2, dense1), at batch 128 in float32, is timed
twice per backend with pytest-benchmark:

- `fwd`: the layer's forward pass, as inference code writes it in that framework;
- `fwd+bwd`: forward, then the gradient with respect to the layer's input AND its parameters for a
  given upstream gradient (the output is returned too, so no graph compiler can drop the forward).

A layer is what the spec says it is: conv1 = 3x3 convolution + bias + relu (the spec's activation),
pool1 = 2x2 max-pool, dense1 = the (1600 -> 10) matmul + bias on the flattened input. Every
layer's input, upstream gradient and weights are drawn from one seed, the same numbers in every
backend and every process. Layer shapes come from the spec's shape inference.

Backends, each in its own idiom, on the CPU:
  numpy   the NumPy reference's layer classes (backends/numpy_ref.py), standalone: every layer
          computes its input gradient and no fusion or cropping with its neighbours applies
  torch   nn.Conv2d + nn.ReLU / nn.MaxPool2d / nn.Linear; forward under torch.no_grad(),
          backward with torch.autograd.grad
  tf      tf.nn ops on tf.Variables in a tf.function; backward with tf.GradientTape
  tf-xla  the same tf.functions with jit_compile=True
  jax     jax.lax ops in jax.jit; backward with jax.vjp; jax.block_until_ready before the clock stops

Sameness: before timing, each backend's output and gradients are checked against the NumPy
oracle's on the same numbers (float32 tolerance), outside the timed region. A warm-up (3 calls:
tracing, compilation, buffer allocation) precedes timing.

Run:  pytest --benchmark-only                               (everything installed here)
      .tox/tf/bin/python -m pytest --benchmark-only benchmarks/bench_layers.py   (tf, tf-xla, jax)
      convbench microbench                                   (every built env, JSON per backend
                                                              under results/microbench/)
Backends not importable in the running interpreter are skipped with the reason.
CONVBENCH_MICROBENCH_BACKENDS=tf,jax restricts the parametrization (what `convbench microbench`
uses to time each backend in its own process). CONVBENCH_MICROBENCH_THREADS=N gives every framework
a budget of N threads (default: each framework's own, one per core); `convbench microbench
--threads N` also sets the variables the frameworks read at start-up (OMP/MKL/OPENBLAS_NUM_THREADS,
TF_NUM_INTRAOP/INTEROP_THREADS, and for N = 1 XLA_FLAGS). The threads used are recorded.
"""
import os
from collections import OrderedDict

import numpy as np
import pytest

MODEL = "seed_convnet"
BATCH = 128
DTYPE = "float32"
SEED = 0
LAYERS = ("conv1", "pool1", "conv2", "pool2", "dense1")
PASSES = ("fwd", "fwd+bwd")
ALL_BACKENDS = ("numpy", "torch", "tf", "tf-xla", "jax")
WARMUP_CALLS = 3
# float32 sameness: |got - ref| <= RTOL * |ref| + ATOL * max|ref| (sums of up to ~15k products)
RTOL, ATOL = 1e-4, 1e-5
THREADS = int(os.environ.get("CONVBENCH_MICROBENCH_THREADS", "0") or 0)  # 0: the framework's default
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
_limits = []  # keeps the threadpoolctl limit of the NumPy reference's BLAS


def _selected_backends():
    chosen = os.environ.get("CONVBENCH_MICROBENCH_BACKENDS", "").strip()
    if not chosen:
        return ALL_BACKENDS
    names = tuple(n.strip() for n in chosen.split(",") if n.strip())
    unknown = [n for n in names if n not in ALL_BACKENDS]
    if unknown:
        raise pytest.UsageError("CONVBENCH_MICROBENCH_BACKENDS: unknown backend(s) %s (known: %s)"
                                % (", ".join(unknown), ", ".join(ALL_BACKENDS)))
    return names


BACKENDS = _selected_backends()


# --- the cases: one per layer, the same numbers for every backend -------------------------------

class Case(object):
    """One layer of the spec with its input, upstream gradient, parameters and the oracle's answer.

    Canonical layout throughout: NCHW activations, OIHW conv kernels, (in, out) dense kernels.
    """

    def __init__(self, layer, in_shape, out_shape, x, dy, params):
        self.layer = layer
        self.in_shape = in_shape
        self.out_shape = out_shape
        self.x = x
        self.dy = dy
        self.params = params  # OrderedDict canonical name -> array (this layer's only)
        self.ref = None  # {"fwd": out, "fwd+bwd": {"out", "x", <param names>}}

    def flops(self, mode):
        """Multiply-adds x 2 for the whole batch (conv and dense; 0 for pooling)."""
        layer = self.layer
        if layer.kind == "conv2d":
            kh, kw = layer.kernel
            f = 2 * self.in_shape[0] * kh * kw * int(np.prod(self.out_shape))
        elif layer.kind == "dense":
            f = 2 * self.in_shape[0] * layer.units
        else:
            return 0
        return BATCH * f * (1 if mode == "fwd" else 3)  # backward: input and weight gradients


def make_cases():
    from models import init_weights, load_spec

    spec = load_spec(MODEL)
    weights = init_weights(spec, SEED, DTYPE)
    rng = np.random.RandomState(SEED)
    cases = OrderedDict()
    in_shape = spec.input_shape
    for layer, out_shape in zip(spec.layers, spec.shapes):
        if layer.name in LAYERS:
            x = rng.standard_normal((BATCH,) + tuple(in_shape)).astype(DTYPE)
            dy = rng.standard_normal((BATCH,) + tuple(out_shape)).astype(DTYPE)
            params = OrderedDict()
            for name in spec.params():
                if name.startswith(layer.name + "."):
                    value = weights[name]
                    if name.endswith(".bias"):  # non-zero, so the check sees the bias too
                        value = rng.uniform(-0.5, 0.5, value.shape).astype(DTYPE)
                    params[name] = value
            cases[layer.name] = Case(layer, tuple(in_shape), tuple(out_shape), x, dy, params)
        in_shape = out_shape
    missing = [n for n in LAYERS if n not in cases]
    assert not missing, "%s has no layer(s) %s" % (MODEL, missing)
    for case in cases.values():
        impl = NumpyLayer(case)
        case.ref = {"fwd": impl.canonical(impl.forward(), "fwd"),
                    "fwd+bwd": impl.canonical(impl.forward_backward(), "fwd+bwd")}
    return cases


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


def _nchw(a):
    a = np.asarray(a)
    return np.array(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else np.array(a)


def _padding(layer):
    """((top, bottom), (left, right)) of a conv, zeros for a pool."""
    return getattr(layer, "padding", ((0, 0), (0, 0)))


# --- one class per backend: forward(), forward_backward(), canonical(result, mode) ---------------

class NumpyLayer(object):
    framework = "numpy"

    def __init__(self, case):
        from backends import numpy_ref as ref

        self.case = case
        layer = case.layer
        bufs = ref._Buffers(np.dtype(DTYPE))
        if layer.kind == "conv2d":
            self.impl = ref.Conv2D(layer, case.in_shape, bufs, need_input_grad=True)
        elif layer.kind == "maxpool2d":
            self.impl = ref.MaxPool2D(layer, bufs)
        else:
            self.impl = ref.Dense(layer, bufs, need_input_grad=True)
        self.params = OrderedDict((k, v.copy()) for k, v in case.params.items())
        self.x = _nhwc(case.x)  # the reference's inside layout
        self.dy = _nhwc(case.dy)
        self.version = np.__version__
        if THREADS and not _limits:
            try:
                from threadpoolctl import threadpool_limits
                _limits.append(threadpool_limits(limits=THREADS, user_api="blas"))
            except ImportError:
                pass

    def forward(self):
        return self.impl.forward(self.x, self.params, True)

    def forward_backward(self):
        out = self.impl.forward(self.x, self.params, True)
        grads = {}
        dx = self.impl.backward(self.dy, grads)
        return out, dx, grads

    def canonical(self, result, mode):
        if mode == "fwd":
            return _nchw(result)
        out, dx, grads = result
        d = {"out": _nchw(out), "x": _nchw(dx)}
        d.update((k, np.array(v)) for k, v in grads.items())
        return d

    def threads(self):
        try:
            from threadpoolctl import threadpool_info
            pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
            return pools[0].get("num_threads") if pools else None
        except ImportError:
            return None


class TorchLayer(object):
    framework = "torch"

    def __init__(self, case):
        torch = pytest.importorskip("torch", reason="torch is not installed in this interpreter "
                                                    "(pip install 'convbench[torch]')")
        from torch import nn

        self.torch = torch
        self.case = case
        if THREADS:
            torch.set_num_threads(THREADS)
        layer = case.layer
        if layer.kind == "conv2d":
            (pt, pb), (pl, pr) = _padding(layer)
            modules = []
            if pt != pb or pl != pr:
                modules.append(nn.ZeroPad2d((pl, pr, pt, pb)))
                pad = 0
            else:
                pad = (pt, pl)
            conv = nn.Conv2d(case.in_shape[0], layer.filters, layer.kernel, layer.stride,
                             padding=pad, bias=layer.use_bias)
            modules.append(conv)
            modules += _torch_activation(nn, layer.activation)
            tensors = {layer.name + ".weight": (conv.weight, False),
                       layer.name + ".bias": (conv.bias, False)}
        elif layer.kind == "maxpool2d":
            modules = [nn.MaxPool2d(layer.size, layer.stride)]
            tensors = {}
        else:
            linear = nn.Linear(case.in_shape[0], layer.units, bias=layer.use_bias)
            modules = [linear] + _torch_activation(nn, layer.activation)
            tensors = {layer.name + ".weight": (linear.weight, True),  # nn.Linear stores (out, in)
                       layer.name + ".bias": (linear.bias, False)}
        self.model = nn.Sequential(*modules).to(dtype=getattr(torch, DTYPE))
        self.names = list(case.params)
        with torch.no_grad():
            for name, value in case.params.items():
                tensor, transpose = tensors[name]
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(value.T if transpose else value)))
        self.transposed = [tensors[n][1] for n in self.names]
        self.x = torch.from_numpy(case.x.copy()).requires_grad_(True)
        self.dy = torch.from_numpy(case.dy.copy())
        self.inputs = [self.x] + [tensors[n][0] for n in self.names]
        self.version = torch.__version__

    def forward(self):
        with self.torch.no_grad():
            return self.model(self.x)  # CPU: the kernels have run when the call returns

    def forward_backward(self):
        out = self.model(self.x)
        grads = self.torch.autograd.grad(out, self.inputs, self.dy)
        return out, grads

    def canonical(self, result, mode):
        if mode == "fwd":
            return result.detach().numpy().copy()
        out, grads = result
        d = {"out": out.detach().numpy().copy(), "x": grads[0].numpy().copy()}
        for name, g, transpose in zip(self.names, grads[1:], self.transposed):
            g = g.numpy()
            d[name] = np.array(g.T if transpose else g)
        return d

    def threads(self):
        return self.torch.get_num_threads()


def _torch_activation(nn, function):
    return {"relu": [nn.ReLU()], "tanh": [nn.Tanh()]}.get(function, [])


class TfLayer(object):
    framework = "tensorflow"
    jit_compile = False

    def __init__(self, case):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed in this "
                                 "interpreter; run in its env: .tox/tf/bin/python -m pytest "
                                 "--benchmark-only benchmarks/bench_layers.py (tox -e tf --notest)")
        self.tf = tf
        self.case = case
        if THREADS:
            try:  # before TF's runtime starts; the runner also sets TF_NUM_*_THREADS
                tf.config.threading.set_intra_op_parallelism_threads(THREADS)
                tf.config.threading.set_inter_op_parallelism_threads(THREADS)
            except RuntimeError:
                pass  # already initialized (an earlier test in this process): set then
        layer = case.layer
        self.names = list(case.params)
        values = []
        for name in self.names:
            v = case.params[name]
            values.append(v.transpose(2, 3, 1, 0) if v.ndim == 4 else v)  # OIHW -> HWIO
        self.vars = [tf.Variable(np.ascontiguousarray(v)) for v in values]
        f = self._layer_fn(layer)
        self.x = tf.constant(_nhwc(case.x))
        self.dy = tf.constant(_nhwc(case.dy))
        variables = self.vars

        def fwd_bwd(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = f(x)
            return out, tape.gradient(out, [x] + variables, output_gradients=dy)

        self._fwd = tf.function(f, jit_compile=self.jit_compile)
        self._fwd_bwd = tf.function(fwd_bwd, jit_compile=self.jit_compile)
        self.version = tf.__version__

    def _layer_fn(self, layer):
        from backends.tf_common import tf_activate

        tf = self.tf
        v = self.vars
        if layer.kind == "conv2d":
            (pt, pb), (pl, pr) = _padding(layer)
            pad = "VALID" if not (pt or pb or pl or pr) else [[0, 0], [pt, pb], [pl, pr], [0, 0]]
            stride = [1, layer.stride[0], layer.stride[1], 1]

            def f(x):
                y = tf.nn.conv2d(x, v[0], strides=stride, padding=pad)
                if len(v) > 1:
                    y = tf.nn.bias_add(y, v[1])
                return tf_activate(tf, y, layer.activation)
        elif layer.kind == "maxpool2d":
            def f(x):
                return tf.nn.max_pool2d(x, ksize=list(layer.size), strides=list(layer.stride),
                                        padding="VALID")
        else:
            def f(x):
                y = tf.matmul(x, v[0])
                if len(v) > 1:
                    y = tf.nn.bias_add(y, v[1])
                return tf_activate(tf, y, layer.activation)
        return f

    # TF's eager runtime executes synchronously (the default): on the CPU a tf.function call
    # returns after its kernels ran, and the outputs stay device tensors (no copy in the timing)
    def forward(self):
        return self._fwd(self.x)

    def forward_backward(self):
        return self._fwd_bwd(self.x, self.dy)

    def canonical(self, result, mode):
        if mode == "fwd":
            return _nchw(result.numpy())
        out, grads = result
        d = {"out": _nchw(out.numpy()), "x": _nchw(grads[0].numpy())}
        for name, g in zip(self.names, grads[1:]):
            g = g.numpy()
            d[name] = np.array(g.transpose(3, 2, 0, 1) if g.ndim == 4 else g)  # HWIO -> OIHW
        return d

    def threads(self):
        n = self.tf.config.threading.get_intra_op_parallelism_threads()
        return n or os.cpu_count()  # 0: TF's default, one thread per core


class TfXlaLayer(TfLayer):
    jit_compile = True


class JaxLayer(object):
    framework = "jax"

    def __init__(self, case):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        if THREADS == 1:  # read when XLA's CPU client starts; more than one cannot be set
            os.environ.setdefault("XLA_FLAGS", XLA_ONE_THREAD)
        jax = pytest.importorskip("jax", reason="jax is not installed in this interpreter; run in "
                                  "its env: .tox/tf/bin/python -m pytest --benchmark-only "
                                  "benchmarks/bench_layers.py (tox -e tf --notest)")
        import jax.numpy as jnp
        from jax import lax

        self.jax = jax
        self.case = case
        layer = case.layer
        self.names = list(case.params)
        params = []
        for name in self.names:
            v = case.params[name]
            params.append(jnp.asarray(np.ascontiguousarray(v.transpose(2, 3, 1, 0) if v.ndim == 4 else v)))
        self.params = tuple(params)

        if layer.kind == "conv2d":
            padding = [tuple(p) for p in _padding(layer)]

            def f(p, x):
                y = lax.conv_general_dilated(x, p[0], tuple(layer.stride), padding,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
                if len(p) > 1:
                    y = y + p[1]
                return _jax_activation(jax, y, layer.activation)
        elif layer.kind == "maxpool2d":
            def f(p, x):
                return lax.reduce_window(x, -jnp.inf, lax.max, (1,) + tuple(layer.size) + (1,),
                                         (1,) + tuple(layer.stride) + (1,), "VALID")
        else:
            def f(p, x):
                y = jnp.dot(x, p[0])
                if len(p) > 1:
                    y = y + p[1]
                return _jax_activation(jax, y, layer.activation)

        def fwd_bwd(p, x, dy):
            out, vjp = jax.vjp(f, p, x)
            gp, gx = vjp(dy)
            return out, gx, gp

        self._fwd = jax.jit(f)
        self._fwd_bwd = jax.jit(fwd_bwd)
        self.x = jnp.asarray(_nhwc(case.x))
        self.dy = jnp.asarray(_nhwc(case.dy))
        self.version = jax.__version__

    def forward(self):
        return self.jax.block_until_ready(self._fwd(self.params, self.x))

    def forward_backward(self):
        return self.jax.block_until_ready(self._fwd_bwd(self.params, self.x, self.dy))

    def canonical(self, result, mode):
        if mode == "fwd":
            return _nchw(np.asarray(result))
        out, gx, gp = result
        d = {"out": _nchw(np.asarray(out)), "x": _nchw(np.asarray(gx))}
        for name, g in zip(self.names, gp):
            g = np.asarray(g)
            d[name] = np.array(g.transpose(3, 2, 0, 1) if g.ndim == 4 else g)
        return d

    def threads(self):
        if "intra_op_parallelism_threads=1" in os.environ.get("XLA_FLAGS", ""):
            return 1
        return os.cpu_count()  # XLA's CPU client: one thread per core


def _jax_activation(jax, y, function):
    if function == "relu":
        return jax.nn.relu(y)
    if function == "tanh":
        return jax.numpy.tanh(y)
    return y


IMPLS = {"numpy": NumpyLayer, "torch": TorchLayer, "tf": TfLayer, "tf-xla": TfXlaLayer,
         "jax": JaxLayer}


# --- checks and the benchmark ------------------------------------------------------------------

def assert_same(got, ref, what):
    """got equals the oracle's ref within float32 tolerance (scaled by the reference's magnitude)."""
    got = np.asarray(got)
    assert got.shape == ref.shape, "%s: shape %s, the reference has %s" % (what, got.shape, ref.shape)
    scale = float(np.max(np.abs(ref))) or 1.0
    np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL * scale, err_msg=what)


def check_against_oracle(impl, case, mode, result):
    got = impl.canonical(result, mode)
    ref = case.ref[mode]
    if mode == "fwd":
        assert_same(got, ref, "%s %s forward output" % (impl.framework, case.layer.name))
        return
    assert sorted(got) == sorted(ref), "%s %s: gradients %s, the reference has %s" % (
        impl.framework, case.layer.name, sorted(got), sorted(ref))
    for key in ref:
        assert_same(got[key], ref[key], "%s %s fwd+bwd: %s" % (impl.framework, case.layer.name, key))


@pytest.fixture(scope="module")
def cases():
    return make_cases()


@pytest.mark.parametrize("mode", PASSES)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer(benchmark, cases, backend, layer, mode):
    case = cases[layer]
    impl = IMPLS[backend](case)  # skips here when the framework is not importable
    fn = impl.forward if mode == "fwd" else impl.forward_backward
    # tracing / compilation / first allocations: not timed (one call when benchmarks are disabled,
    # the smoke run of a plain `pytest`)
    for _ in range(WARMUP_CALLS if benchmark.enabled else 1):
        result = fn()
    check_against_oracle(impl, case, mode, result)
    del result
    benchmark.group = "%s %s %s, batch %d, %s" % (MODEL, layer, mode, BATCH, DTYPE)
    benchmark.extra_info.update({
        "suite": "convbench-microbench", "model": MODEL, "backend": backend,
        "framework": impl.framework, "framework_version": impl.version, "layer": layer,
        "kind": case.layer.kind, "pass": mode, "batch": BATCH, "dtype": DTYPE, "device": "cpu",
        "input_shape": list(case.x.shape), "output_shape": list(case.dy.shape),
        "flops": case.flops(mode), "threads": impl.threads(), "checked_against": "numpy oracle"})
    benchmark(fn)
