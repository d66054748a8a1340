"""Per-layer micro-benchmarks of seed_convnet: each adapter's own blocks, one layer at a time.

Each layer of the spec (conv1, pool1, conv2, pool2, dense1), at batch 128 in float32, is timed
twice per backend with pytest-benchmark (convnet-benchmarks style): `fwd`, the layer's forward
pass without gradients, and `fwd+bwd`, forward plus the gradients with respect to the layer's
input AND parameters for a given upstream gradient (the output is returned too, so no graph
compiler can drop the forward).

Per layer, the backend's adapter (backends/) is built on a spec of that layer alone
(spec_from_dict; its input shape from seed_convnet's shape inference, a flat one as (n, 1, 1)
behind a flatten; the flatten and logits layer every spec ends in follow, built but never run).
Its LAYERS function makes the layer's block(s) standalone: no neighbour to fuse with, and with the
input gradient, as below a parametrized layer. conv1 = 3x3 convolution + bias + relu (the spec's
activation), pool1 = 2x2 max-pool, dense1 = the (1600 -> 10) matmul + bias. Weights go in through
the adapter's set_weights (its bindings and layouts), parameter gradients come back through the
same layouts. Each backend runs the blocks as its adapter composes them, on the CPU:
  numpy   the NumPy reference's layer objects: forward, then backward, block by block (NHWC)
  torch   nn modules in an nn.Sequential; forward under torch.no_grad(); torch.autograd.grad
  tf      the blocks (tf.nn ops on the adapter's tf.Variables) in a tf.function; tf.GradientTape
  tf-xla  the same with the tf-xla adapter's jit_compile=True
  jax     nnx modules in an nnx.Sequential, nnx.split once, merged inside jax.jit; jax.vjp;
          jax.block_until_ready before the clock stops
Inputs, upstream gradients and weights come from one seed, the same in every backend and process.
Before timing (outside the timed region, after a 3-call warm-up: tracing, compilation, buffers),
each backend's output and gradients are checked against the NumPy reference's within float32
tolerance; a failure names backend, layer and pass.

Run:  pytest --benchmark-only                                     (here: numpy, torch)
      .tox/tf/bin/python -m pytest --benchmark-only benchmarks/bench_layers.py    (tf, tf-xla)
      .tox/jax/bin/python -m pytest --benchmark-only benchmarks/bench_layers.py   (jax)
      convbench microbench      (each backend in its own process and env; JSON per backend)
Backends not importable here are skipped with the reason. CONVBENCH_MICROBENCH_BACKENDS=tf,jax
restricts the parametrization. CONVBENCH_MICROBENCH_THREADS=N: N threads for every framework
(the adapters' TrainConfig.threads; NumPy's BLAS through threadpoolctl), recorded; default: each
framework's own. `convbench microbench --threads N` also sets the frameworks' start-up variables.
"""
import importlib.util
import os
from collections import OrderedDict

import numpy as np
import pytest

from backends import registry
from backends.base import TrainConfig
from backends.common.layout import nchw_to_nhwc
from backends.common.walker import steps
from models import init_weights, load_spec, spec_from_dict

try:  # the NumPy reference's BLAS threads; the framework envs lack it
    import threadpoolctl
except ImportError:
    threadpoolctl = None

MODEL, BATCH, DTYPE, SEED = "seed_convnet", 128, "float32", 0
LAYERS = ("conv1", "pool1", "conv2", "pool2", "dense1")
PASSES = ("fwd", "fwd+bwd")
ALL_BACKENDS = ("numpy", "torch", "tf", "tf-xla", "jax")
WARMUP_CALLS = 3
# float32 sameness: |got - ref| <= RTOL * |ref| + ATOL * max|ref| (sums of up to ~15k products)
RTOL, ATOL = 1e-4, 1e-5
THREADS = int(os.environ.get("CONVBENCH_MICROBENCH_THREADS", "0") or 0)  # 0: frameworks' default
CONFIG = TrainConfig(batch_size=BATCH, dtype=DTYPE, seed=SEED, threads=THREADS, dropout=False)
_limits = []  # keeps the threadpoolctl limit of the NumPy reference's BLAS


def _selected_backends():
    chosen = os.environ.get("CONVBENCH_MICROBENCH_BACKENDS", "").split(",")
    names = tuple(n.strip() for n in chosen if n.strip())
    unknown = [n for n in names if n not in ALL_BACKENDS]
    if unknown:
        raise pytest.UsageError("CONVBENCH_MICROBENCH_BACKENDS: unknown backend(s) %s (known: %s)"
                                % (", ".join(unknown), ", ".join(ALL_BACKENDS)))
    return names or ALL_BACKENDS


BACKENDS = _selected_backends()


# --- the cases: one per layer, the same numbers for every backend -------------------------------

class Case(object):
    """One layer: its one-layer spec, canonical input x and upstream gradient dy (NCHW), the
    canonical weights of the whole one-layer spec, and the oracle's answers (`ref`)."""

    def __init__(self, step, spec, x, dy, weights):
        self.layer, self.in_shape, self.out_shape = step.layer, step.in_shape, step.out_shape
        self.spec, self.x, self.dy, self.weights = spec, x, dy, weights
        self.names = [n for n in weights if n.startswith(self.layer.name + ".")]  # the layer's own
        self.ref = None  # {"fwd": {"out"}, "fwd+bwd": {"out", "x", <param names>}}

    def flops(self, mode):
        """Multiply-adds x 2 for the whole batch (conv and dense; 0 for pooling)."""
        layer, c_in = self.layer, self.in_shape[0]
        if layer.kind == "conv2d":
            f = 2 * c_in * int(np.prod(layer.kernel)) * int(np.prod(self.out_shape))
        else:
            f = 2 * c_in * layer.units if layer.kind == "dense" else 0
        return BATCH * f * (1 if mode == "fwd" else 3)  # backward: input and weight gradients


def layer_spec(model, step):
    """`step.layer` of `model` alone, as a valid spec: its input shape (a flat one as (n, 1, 1)
    behind a flatten), then the flatten and logits layer every spec ends in, unless it is the
    logits layer itself."""
    shape, before, after = list(step.in_shape), [], []
    if len(shape) == 1:
        shape, before = shape + [1, 1], [{"kind": "flatten", "name": "flat_input"}]
    if step.next is not None:
        if len(step.out_shape) == 3:
            after.append({"kind": "flatten", "name": "head_flatten"})
        after.append({"kind": "dense", "name": "head", "units": model.num_classes})
    layer = dict(model.to_dict()["layers"][step.index])  # its TOML form, every default explicit
    return spec_from_dict({"name": "%s_%s" % (model.name, step.layer.name), "input_shape": shape,
                           "num_classes": model.num_classes, "layers": before + [layer] + after})


def make_cases():
    model = load_spec(MODEL)
    weights = init_weights(model, SEED, DTYPE)
    rng = np.random.RandomState(SEED)
    cases = OrderedDict()
    for step in steps(model):
        if step.layer.name not in LAYERS:
            continue
        x = rng.standard_normal((BATCH,) + step.in_shape).astype(DTYPE)
        dy = rng.standard_normal((BATCH,) + step.out_shape).astype(DTYPE)
        spec = layer_spec(model, step)
        params = init_weights(spec, SEED, DTYPE)  # the head's are never used
        for name in params:
            if name.startswith(step.layer.name + "."):
                params[name] = weights[name]
                if name.endswith(".bias"):  # non-zero, so the check sees the bias too
                    params[name] = rng.uniform(-0.5, 0.5, params[name].shape).astype(DTYPE)
        cases[step.layer.name] = Case(step, spec, x, dy, params)
    missing = [n for n in LAYERS if n not in cases]
    assert not missing, "%s has no layer(s) %s" % (MODEL, missing)
    for case in cases.values():
        oracle = NumpyRunner("numpy", case)
        case.ref = {"fwd": oracle.canonical(oracle.fwd(), "fwd"),
                    "fwd+bwd": oracle.canonical(oracle.fwd_bwd(), "fwd+bwd")}
    return cases


# --- each backend's adapter, built on a case's one-layer spec -----------------------------------

def build_blocks(adapter, layer):
    """adapter.build(); the native block(s) its LAYERS function made for `layer`, built
    standalone: no neighbours (no fusion) and, as below a parametrized layer, with an input
    gradient (the walker reads the table from adapter.LAYERS)."""
    build, made = adapter.LAYERS[layer.kind], []

    def standalone(a, step):
        if step.layer.name != layer.name:
            return build(a, step)
        out = build(a, step._replace(prev=None, next=None, needs_input_grad=True))
        made.extend(out if isinstance(out, list) else [out])
        return out

    adapter.LAYERS = dict(adapter.LAYERS, **{layer.kind: standalone})
    adapter.build()
    return made


class Runner(object):
    """A backend's adapter on a case's one-layer spec with the case's canonical weights set:
    `fwd()`, `fwd_bwd()` (timed) and `canonical(result, mode)` (for the check)."""

    channels_last = True  # the adapter's activations are NHWC
    numpy = staticmethod(np.asarray)  # a framework's array as an ndarray
    environ = ()  # variables the framework reads when it is imported

    def __init__(self, backend, case):
        info = registry.get(backend)
        for var, value in info.worker_env + self.environ:
            os.environ.setdefault(var, value)
        python = ".venv/bin/python" if info.env == "base" else ".tox/%s/bin/python" % info.env
        missing = [m for m in info.requires if importlib.util.find_spec(m) is None]
        if missing:  # not imported here: the adapter's build sets threads up before it imports
            pytest.skip("%s not installed in this interpreter; backend %s runs in its env: %s -m "
                        "pytest benchmarks/bench_layers.py (%s)"
                        % (", ".join(missing), backend, python, info.install_hint))
        self.adapter = registry.load_adapter_class(info)(case.spec, CONFIG)
        self.blocks = build_blocks(self.adapter, case.layer)
        self.adapter.set_weights(case.weights)
        self.bound = OrderedDict((n, self.adapter.bindings.table[n]) for n in case.names)
        self.version = self.adapter.environment()["framework_version"]
        native = (lambda a: nchw_to_nhwc(a, DTYPE)) if self.channels_last else np.array
        self.setup(native(case.x), native(case.dy))

    def canonical(self, result, mode):
        """{"out"[, "x", <param names>]}: activations NHWC (the reference's inside layout),
        parameter gradients canonical (through the bindings' layouts); fresh arrays."""
        nhwc = (lambda a: np.array(a)) if self.channels_last else (lambda a: nchw_to_nhwc(a, DTYPE))
        if mode == "fwd":
            return {"out": nhwc(self.numpy(result))}
        out, dx, grads = result
        got = {"out": nhwc(self.numpy(out)), "x": nhwc(self.numpy(dx))}
        for (name, (_, layout)), g in zip(self.bound.items(), grads):
            got[name] = np.array(layout.from_native(self.numpy(g)))
        return got


class NumpyRunner(Runner):
    def setup(self, x, dy):
        blocks, params = self.blocks, self.adapter.params
        if THREADS and threadpoolctl and not _limits:
            _limits.append(threadpoolctl.threadpool_limits(limits=THREADS, user_api="blas"))

        def forward(train):
            h = x
            for block in blocks:
                h = block.forward(h, params, train)
            return h

        def fwd_bwd():
            out, d, grads = forward(True), dy, {}
            for block in reversed(blocks):
                d = block.backward(d, grads)
            return out, d, [grads[name] for name in self.bound]

        self.fwd, self.fwd_bwd = (lambda: forward(False)), fwd_bwd

    def threads(self):
        pools = threadpoolctl.threadpool_info() if threadpoolctl else []
        return next((p.get("num_threads") for p in pools if p.get("user_api") == "blas"), None)


class TorchRunner(Runner):
    channels_last = False
    numpy = staticmethod(lambda t: t.detach().numpy())

    def setup(self, x, dy):
        torch, model = self.adapter.torch, self.adapter.nn.Sequential(*self.blocks)
        x, dy = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(dy)
        inputs = [x] + [getattr(module, attr) for (module, attr), _ in self.bound.values()]

        def fwd():
            with torch.no_grad():
                return model(x)  # CPU: the kernels have run when the call returns

        def fwd_bwd():
            out = model(x)
            grads = torch.autograd.grad(out, inputs, dy)
            return out, grads[0], grads[1:]

        self.fwd, self.fwd_bwd = fwd, fwd_bwd

    def threads(self):
        return self.adapter.torch.get_num_threads()


class TfRunner(Runner):
    def setup(self, x, dy):
        tf, blocks = self.adapter.tf, self.blocks
        variables = [var for var, _ in self.bound.values()]

        def forward(x, training):
            for block in blocks:
                x = block(x, training)
            return x

        def fwd_bwd(x, dy):
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = forward(x, True)
            grads = tape.gradient(out, [x] + variables, output_gradients=dy)
            return out, grads[0], grads[1:]

        jit = self.adapter.jit_compile
        fwd_fn = tf.function(lambda x: forward(x, False), jit_compile=jit)
        fwd_bwd_fn = tf.function(fwd_bwd, jit_compile=jit)
        x, dy = tf.constant(x), tf.constant(dy)
        # TF's eager runtime executes synchronously (the default): on the CPU a tf.function call
        # returns after its kernels ran, and the outputs stay device tensors (no copy timed)
        self.fwd = lambda: fwd_fn(x)
        self.fwd_bwd = lambda: fwd_bwd_fn(x, dy)

    def threads(self):
        n = self.adapter.tf.config.threading.get_intra_op_parallelism_threads()
        return n or os.cpu_count()  # 0: TF's default, one thread per core


class JaxRunner(Runner):
    environ = (("JAX_PLATFORMS", "cpu"),)

    def setup(self, x, dy):
        jax, nnx = self.adapter.jax, self.adapter.nnx
        model = nnx.Sequential(*self.blocks)
        graph, params, rest = nnx.split(model, nnx.Param, ...)
        where = dict((id(node), path) for path, node in nnx.iter_graph(model))
        paths = [where[id(module)] + (attr,) for (module, attr), _ in self.bound.values()]

        def forward(params, x):
            return nnx.merge(graph, params, rest)(x)

        def fwd_bwd(params, x, dy):
            out, vjp = jax.vjp(forward, params, x)
            grads, dx = vjp(dy)
            flat = dict(nnx.to_flat_state(grads))  # an nnx State: each parameter's by its path
            return out, dx, [flat[path][...] for path in paths]

        fwd_fn, fwd_bwd_fn = jax.jit(forward), jax.jit(fwd_bwd)
        x, dy = jax.device_put(x, self.adapter.device), jax.device_put(dy, self.adapter.device)
        self.fwd = lambda: jax.block_until_ready(fwd_fn(params, x))
        self.fwd_bwd = lambda: jax.block_until_ready(fwd_bwd_fn(params, x, dy))

    def threads(self):  # XLA's CPU client: one thread per usable core, or XLA_FLAGS' one
        one = "intra_op_parallelism_threads=1" in os.environ.get("XLA_FLAGS", "")
        return 1 if one else len(os.sched_getaffinity(0))


RUNNERS = {"numpy": NumpyRunner, "torch": TorchRunner, "tf": TfRunner, "tf-xla": TfRunner,
           "jax": JaxRunner}


# --- checks and the benchmark ------------------------------------------------------------------

def assert_same(got, ref, what):
    """got equals the oracle's ref within float32 tolerance (scaled by max |ref|)."""
    got = np.asarray(got)
    assert got.shape == ref.shape, "%s: shape %s, the reference's %s" % (what, got.shape, ref.shape)
    scale = float(np.max(np.abs(ref))) or 1.0
    bad = np.abs(got - ref) > RTOL * np.abs(ref) + ATOL * scale
    assert not bad.any(), (
        "%s differs from the NumPy reference's: %d of %d values off, max |diff| %.3g "
        "(tolerance %g * |ref| + %.3g)" % (what, bad.sum(), bad.size, np.max(np.abs(got - ref)),
                                           RTOL, ATOL * scale))


def check_against_oracle(backend, runner, case, mode, result):
    got, ref = runner.canonical(result, mode), case.ref[mode]
    where = "%s %s %s" % (backend, case.layer.name, mode)
    assert sorted(got) == sorted(ref), "%s: results %s, the reference has %s" % (
        where, sorted(got), sorted(ref))
    for key in ref:
        what = {"out": "output", "x": "input gradient"}.get(key, key + " gradient")
        assert_same(got[key], ref[key], "%s: %s" % (where, what))


@pytest.fixture(scope="module")
def cases():
    return make_cases()


@pytest.mark.parametrize("mode", PASSES)
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer(benchmark, cases, backend, layer, mode):
    case = cases[layer]
    runner = RUNNERS[backend](backend, case)  # skips here when the framework is not importable
    fn = runner.fwd if mode == "fwd" else runner.fwd_bwd
    # tracing / compilation / first allocations: not timed (one call when benchmarks are disabled,
    # the smoke run of a plain `pytest`)
    for _ in range(WARMUP_CALLS if benchmark.enabled else 1):
        result = fn()
    check_against_oracle(backend, runner, case, mode, result)
    del result
    benchmark.group = "%s %s %s, batch %d, %s" % (MODEL, layer, mode, BATCH, DTYPE)
    benchmark.extra_info.update({
        "suite": "convbench-microbench", "model": MODEL, "backend": backend,
        "framework": runner.adapter.framework, "framework_version": runner.version,
        "layer": layer, "kind": case.layer.kind, "pass": mode, "batch": BATCH, "dtype": DTYPE,
        "device": "cpu", "input_shape": list(case.x.shape), "output_shape": list(case.dy.shape),
        "flops": case.flops(mode), "threads": runner.threads(), "checked_against": "numpy oracle"})
    benchmark(fn)
