"""The conformance kit: run one backend's sameness probes in its own worker and environment, and
compute the NumPy oracle's answers to the same questions in this process.

Cases cover every model in models/ in float32 and float64, a 100-step trajectory of seed_convnet,
and each optimizer. A backend passes when every case it supports matches the oracle within the
tolerances below; a case the adapter refuses with Unsupported is reported, not failed.
"""
import os
import tempfile

import numpy as np

from backends import registry
from backends.base import TrainConfig
from backends.numpy_ref import NumpyReference
from bench import envs
from bench.data import Mnist
from bench.runner import run_worker
from models.spec import init_weights, list_models, load_spec

import needs

# (max abs difference) per dtype. float64 proves the algorithms are the same; float32 shows what
# users see. Trajectory tolerances follow measured drift (shared/RECIPES.md): rounding grows
# through ReLU and max-pool switching points.
TOL = {
    "float64": {"logits": 1e-9, "loss1": 1e-9, "weights": 1e-9, "traj": 1e-6},
    "float32": {"logits": 2e-4, "loss1": 1e-5, "weights": 2e-5, "traj": 1e-3},
}
# Running statistics: frameworks differ in the Bessel correction of the running variance
# (n/(n-1): about 4e-5 relative for a 32x28x28 batch), so they are compared relatively, loosely.
RUNNING_STAT_RTOL = 1e-3
# float32 only: a parameter's one-step change may differ by this fraction of that change. Batchnorm's
# backward subtracts near-equal means over ~25k values; frameworks that reduce in float32 (CNTK)
# land 1-3% off the float64 truth on torch_bn's conv kernels, measured. float64 stays strict.
FLOAT32_UPDATE_RTOL = 0.05

BATCH = 32
TRAJ_STEPS = 100


def required(name):
    """A backend that must pass here: named in CONVBENCH_REQUIRE (or all of them, as under CI;
    its environment is then built), or one that is fully present (a base backend whose framework
    is installed, a built tox env on a machine with its system libraries): inside a backend's
    environment a missing framework fails."""
    if needs.explicitly_required(name):
        return True
    if needs.nothing_required():
        return False
    backend = registry.get(name)
    if backend.env == "base":
        return not envs.missing_requirements(backend)
    return envs.env_exists(backend.env) and envs.system_problem(backend.env) is None


def not_here(name):
    """Why backend `name` cannot run here without building anything (None when it can)."""
    backend = registry.get(name)
    ok, why = envs.availability(backend)
    if not ok:
        return why
    if backend.env != "base" and not envs.env_exists(backend.env):
        return ("tox env %r not built; fix: `python -m bench.envs %s` (or any `convbench run "
                "--backend %s` builds it on first use)" % (backend.env, backend.env, name))
    return None


def build_cases():
    """[(case dict, trajectory steps)] shared by every backend."""
    cases = []
    for model in list_models():
        for dtype in ("float64", "float32"):
            steps = TRAJ_STEPS if model == "seed_convnet" else (20 if dtype == "float64" else 0)
            cases.append((model, TrainConfig(optimizer="momentum", lr=0.01, dtype=dtype,
                                             dropout=False, threads=0, batch_size=BATCH), steps))
    for opt, lr in (("sgd", 0.1), ("adam", 1e-3), ("rmsprop", 1e-3)):
        cases.append(("seed_convnet", TrainConfig(optimizer=opt, lr=lr, dtype="float64",
                                                  dropout=False, threads=0, batch_size=BATCH), 10))
    return cases


def _real_batches(dtype, steps, offset):
    m = _mnist()
    n = BATCH * max(steps, 1)
    x = Mnist.to_input(m.train_images[offset:offset + n], dtype)
    y = m.train_labels[offset:offset + n].astype(np.int64)
    return x.reshape(max(steps, 1), BATCH, 1, 28, 28), y.reshape(max(steps, 1), BATCH)


_MNIST = []


def _mnist():
    if not _MNIST:
        _MNIST.append(Mnist())
    return _MNIST[0]


def inputs_for(cases):
    """The arrays every backend receives: weights, a batch, trajectory batches (real MNIST)."""
    arrays = {}
    for i, (model, config, steps) in enumerate(cases):
        key = "c%d/" % i
        spec = load_spec(model)
        for name, value in init_weights(spec, seed=i, dtype=config.dtype).items():
            arrays[key + "w/" + name] = value
        xs, ys = _real_batches(config.dtype, steps or 1, offset=BATCH * i)
        arrays[key + "x"], arrays[key + "y"] = xs[0], ys[0]
        if steps:
            arrays[key + "xs"], arrays[key + "ys"] = xs, ys
    return arrays


def oracle_outputs(cases, arrays):
    """What the NumPy reference answers, computed in this process."""
    from bench.harness import conform

    def factory(case):
        from models.spec import spec_from_dict
        return NumpyReference(spec_from_dict(case["spec"]), TrainConfig.from_dict(case["config"]))

    return conform(factory, _job_cases(cases), arrays, lambda m: None)


def _job_cases(cases):
    return [{"spec": load_spec(m).to_dict(), "config": c.to_dict()} for m, c, _ in cases]


def run_backend_probes(name, cases, arrays, timeout_s=1800):
    """Run the probes in the backend's worker; returns (outcome, outputs dict or None)."""
    backend = registry.get(name)
    with tempfile.TemporaryDirectory(prefix="convbench-conform-") as tmp:
        arrays_in = os.path.join(tmp, "in.npz")
        arrays_out = os.path.join(tmp, "out.npz")
        np.savez(arrays_in, **arrays)
        job = {"kind": "conform", "backend": name, "cases": _job_cases(cases),
               "arrays_in": arrays_in, "arrays_out": arrays_out}
        outcome = run_worker(backend, job, threads=os.cpu_count(), timeout_s=timeout_s,
                             log=lambda text: None)
        if outcome.status != "ok":
            return outcome, None
        with np.load(arrays_out, allow_pickle=False) as npz:
            return outcome, {k: npz[k] for k in npz.files}


def compare_case(i, case, got, want):
    """List of mismatch descriptions for case i ([] when it conforms)."""
    model, config, steps = case
    key = "c%d/" % i
    tol = TOL[config.dtype]
    spec = load_spec(model)
    problems = []

    def diff(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        return float(np.max(np.abs(a - b))) if a.size else 0.0

    names = sorted(k[len(key) + 3:] for k in got if k.startswith(key + "rt/"))
    if names != sorted(spec.params()):
        problems.append("parameter names %s != spec %s" % (names, sorted(spec.params())))
        return problems
    count = sum(got[key + "rt/" + n].size for n, p in spec.params().items() if p.trainable)
    if count != spec.param_count:
        problems.append("parameter count %d != spec %d" % (count, spec.param_count))
    for n in names:
        if not np.array_equal(got[key + "rt/" + n], want[key + "rt/" + n]):
            problems.append("weights round trip not exact for %s (get_weights must return copies, not views)" % n)
    d = diff(got[key + "logits"], want[key + "logits"])
    if d > tol["logits"]:
        problems.append("logits differ by %.3g > %.1g" % (d, tol["logits"]))
    d = diff(got[key + "loss1"], want[key + "loss1"])
    if d > tol["loss1"]:
        problems.append("one-step loss differs by %.3g > %.1g" % (d, tol["loss1"]))
    for n in names:
        g, w = got[key + "step1/" + n], want[key + "step1/" + n]
        if n.endswith((".running_mean", ".running_var")):
            if not np.allclose(g, w, rtol=RUNNING_STAT_RTOL, atol=tol["weights"]):
                problems.append("running statistic %s after one step differs by %.3g"
                                % (n, diff(g, w)))
        else:
            allowed = tol["weights"]
            if config.dtype == "float32":
                allowed += FLOAT32_UPDATE_RTOL * diff(w, want[key + "rt/" + n])
            if diff(g, w) > allowed:
                problems.append("%s after one step differs by %.3g > %.2g" % (n, diff(g, w), allowed))
    if steps:
        d = diff(got[key + "traj"], want[key + "traj"])
        if d > tol["traj"]:
            problems.append("%d-step loss trajectory differs by up to %.3g > %.1g" % (steps, d, tol["traj"]))
    return problems
