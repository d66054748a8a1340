"""The conformance kit: run one backend's sameness probes in its own worker and environment, and
compute the NumPy oracle's answers to the same questions in this process.

Cases cover every model in models/ in float32 and float64, a 100-step trajectory of seed_convnet,
and each optimizer. A backend passes when every case it supports matches the oracle within the
tolerances below; a case the adapter refuses with Unsupported is reported, not failed.
"""
import os
import tempfile
from typing import Any, NamedTuple

import numpy as np

from backends import registry
from backends.base import TrainConfig
from backends.numpy_ref import NumpyReference
from bench import envs
from bench.context import usable_cpus
from bench.data import Mnist
from bench.runner import run_worker
from models.spec import init_weights, list_models, load_spec, spec_from_dict

import bf16_tolerance
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

# bf16 mixed precision (TrainConfig.precision "bf16"): tolerances derived in bf16_tolerance.py


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


class Case(NamedTuple):
    """One conformance question: a spec, a config and how many trajectory steps."""
    key: str             # "c<index>/": the prefix of its arrays
    label: str           # what a failure names
    spec: Any
    config: TrainConfig
    steps: int


def _config(**kw):
    kw.setdefault("optimizer", "momentum")
    kw.setdefault("lr", 0.01)
    return TrainConfig(dropout=False, threads=0, batch_size=BATCH, **kw)


#: one small network per layer feature: a linear 1x1 conv below (so the layer's input gradient
#: reaches a parameter), the layer, then flatten and the logits; checked one step, in float64.
#: A failure names the layer and whether its forward or its backward differs.
_PRE = {"kind": "conv2d", "name": "pre", "filters": 3, "kernel": 1}
LAYER_CASES = (
    ("conv2d 3x3 valid relu", {"kind": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"}),
    ("conv2d 3x3 same stride 2", {"kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2,
                                  "padding": "same"}),
    ("conv2d 4x2 explicit pad no-bias tanh", {"kind": "conv2d", "filters": 4, "kernel": [4, 2],
                                                "padding": [1, 2], "use_bias": False,
                                                "activation": "tanh"}),
    ("conv2d max_norm", {"kind": "conv2d", "filters": 4, "kernel": 3, "max_norm": 0.3}),
    ("maxpool2d 2x2", {"kind": "maxpool2d", "size": 2}),
    ("maxpool2d 3x3 stride 2", {"kind": "maxpool2d", "size": 3, "stride": 2}),
    ("avgpool2d 2x2", {"kind": "avgpool2d", "size": 2}),
    ("avgpool2d 3x3 stride 2", {"kind": "avgpool2d", "size": 3, "stride": 2}),
    ("batchnorm spatial", {"kind": "batchnorm"}),
    ("activation tanh", {"kind": "activation", "function": "tanh"}),
    ("dense relu after flatten", None),
    ("dense max_norm", None),
)


def _layer_spec(label, layer):
    layers = [_PRE] + ([layer] if layer else []) + [{"kind": "flatten"}]
    if label.startswith("dense"):
        dense = {"kind": "dense", "units": 7, "activation": "relu"}
        if "max_norm" in label:
            dense["max_norm"] = 0.2
        layers.append(dense)
    layers.append({"kind": "dense", "units": 10, "name": "logits"})
    return spec_from_dict({"name": "layer", "input_shape": [1, 28, 28], "num_classes": 10,
                           "layers": layers}, where=label)


#: A case's position fixes its seed and its MNIST batches (inputs_for), and float32 trajectories
#: are sensitive to both: new cases are appended, so existing cases keep their numbers. These are
#: the models the suite had when that rule was made, in their order; later models come after the
#: optimizer cases.
FIRST_MODELS = ("cntk_103d", "mlp", "seed_convnet", "tf_tutorial", "torch_bn")


def _model_rows(models):
    rows = []
    for model in models:
        for dtype in ("float64", "float32"):
            steps = TRAJ_STEPS if model == "seed_convnet" else (20 if dtype == "float64" else 0)
            rows.append(("%s-%s-momentum%s" % (model, dtype, "-%dsteps" % steps if steps else ""),
                         load_spec(model), _config(dtype=dtype), steps))
    return rows


#: the seeds' optimizers and the schedules (backends/common/schedule.py), each one step and a short
#: trajectory of seed_convnet in float64 and float32. The schedules' parameters make the lr change
#: within the trajectory (step: halved every 3 steps; cosine: to 0 over the 10 steps).
RECIPE_STEPS = 10
RECIPE_CASES = (
    ("adadelta", dict(optimizer="adadelta", lr=1.0, rho=0.95, eps=1e-7)),
    ("nesterov", dict(optimizer="nesterov", lr=0.01, momentum=0.9)),
    ("sgd-time-decay", dict(optimizer="sgd", lr=0.1, schedule="time", decay=0.1)),
    ("momentum-step-decay", dict(optimizer="momentum", lr=0.01, schedule="step", gamma=0.5,
                                 decay_steps=3)),
    ("adam-cosine", dict(optimizer="adam", lr=1e-3, schedule="cosine", decay_steps=RECIPE_STEPS)),
)


def build_cases():
    """[Case] shared by every backend: every model, each optimizer, each layer feature."""
    models = list_models()
    rows = _model_rows([m for m in FIRST_MODELS if m in models])
    for opt, lr in (("sgd", 0.1), ("adam", 1e-3), ("rmsprop", 1e-3)):
        rows.append(("seed_convnet-float64-%s-10steps" % opt, load_spec("seed_convnet"),
                     _config(optimizer=opt, lr=lr, dtype="float64"), 10))
    rows += _model_rows([m for m in models if m not in FIRST_MODELS])
    for model in bf16_tolerance.MODELS:  # appended: the cases above keep their positions and data
        rows.append(("bf16 %s-float32-momentum" % model, load_spec(model),
                     _config(dtype="float32", precision="bf16"), 0))
    for label, layer in LAYER_CASES:
        rows.append(("layer " + label, _layer_spec(label, layer),
                     _config(optimizer="sgd", lr=0.5, dtype="float64"), 0))
    for dtype in ("float64", "float32"):
        for label, kw in RECIPE_CASES:
            rows.append(("seed_convnet-%s-%s-%dsteps" % (dtype, label, RECIPE_STEPS),
                         load_spec("seed_convnet"), _config(dtype=dtype, **kw), RECIPE_STEPS))
    return [Case("c%d/" % i, label, spec, config, steps)
            for i, (label, spec, config, steps) in enumerate(rows)]


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
    """The arrays every backend receives: weights, a batch, trajectory batches (real MNIST).
    Case i starts from init_weights(spec, seed=i) and reads MNIST from offset BATCH * i."""
    arrays = {}
    for i, case in enumerate(cases):
        key = case.key
        for name, value in init_weights(case.spec, seed=i, dtype=case.config.dtype).items():
            arrays[key + "w/" + name] = value
        xs, ys = _real_batches(case.config.dtype, case.steps or 1, offset=BATCH * i)
        arrays[key + "x"], arrays[key + "y"] = xs[0], ys[0]
        if case.steps:
            arrays[key + "xs"], arrays[key + "ys"] = xs, ys
    return arrays


def oracle_outputs(cases, arrays):
    """What the NumPy reference answers, computed in this process."""
    from bench.harness import conform

    def factory(case):
        from models.spec import spec_from_dict
        config = TrainConfig.from_dict(case["config"])._replace(precision="full")  # the reference
        return NumpyReference(spec_from_dict(case["spec"]), config)

    return conform(factory, _job_cases(cases), arrays, lambda m: None)


def _job_cases(cases):
    return [{"key": c.key, "spec": c.spec.to_dict(), "config": c.config.to_dict(),
             "checkpoints": _checkpoints(c)} for c in cases]


#: trajectory weights kept per case, at most (values): enough for every step of seed_convnet
CHECKPOINT_VALUES = 4 * 10 ** 6


def _checkpoints(case):
    """After which trajectory steps the probes keep the weights (to name the largest weight
    difference where a trajectory first goes past its tolerance): every step where that fits in
    CHECKPOINT_VALUES, else steps 1, 2, 4, 8, ... and the last."""
    if not case.steps:
        return []
    size = sum(int(np.prod(p.shape)) for p in case.spec.params().values())
    if size * case.steps <= CHECKPOINT_VALUES:
        return list(range(1, case.steps + 1))
    steps = [2 ** k for k in range(case.steps.bit_length()) if 2 ** k <= case.steps]
    return sorted(set(steps + [case.steps]))


def run_backend_probes(name, cases, arrays, timeout_s=1800):
    """Run the probes in the backend's worker; returns (outcome, outputs dict or None)."""
    backend = registry.get(name)
    with tempfile.TemporaryDirectory(prefix="convbench-conform-") as tmp:
        arrays_in = os.path.join(tmp, "in.npz")
        arrays_out = os.path.join(tmp, "out.npz")
        np.savez(arrays_in, **arrays)
        if os.environ.get("CONVBENCH_CONFORMANCE_VERBOSE"):
            print("probe job for %s: %d case(s)" % (name, len(cases)))
        job = {"kind": "conform", "backend": name, "cases": _job_cases(cases),
               "arrays_in": arrays_in, "arrays_out": arrays_out}
        outcome = run_worker(backend, job, threads=usable_cpus(), timeout_s=timeout_s,
                             log=lambda text: None)
        if outcome.status != "ok":
            return outcome, None
        with np.load(arrays_out, allow_pickle=False) as npz:
            return outcome, {k: npz[k] for k in npz.files}


def bf16_bounds(case, arrays):
    """The derived bf16 tolerances of one case's batch and weights (tests/bf16_tolerance.py)."""
    weights = {k[len(case.key) + 2:]: v for k, v in arrays.items() if k.startswith(case.key + "w/")}
    return bf16_tolerance.bounds(case.spec, weights, arrays[case.key + "x"], arrays[case.key + "y"])


def tolerances(case, arrays):
    """(tol dict, one-step update rtol) for a case: TOL, or for bf16 the derived bounds added
    to float32's."""
    tol = dict(TOL[case.config.dtype])
    rtol = FLOAT32_UPDATE_RTOL if case.config.dtype == "float32" else 0.0
    if case.config.precision == "bf16":
        bf = bf16_bounds(case, arrays)
        tol["logits"] += bf["logits"]
        tol["loss1"] += bf["loss1"]
        rtol += bf["update_rtol"]
    return tol, rtol


def compare_case(case, got, want, arrays=None):
    """List of mismatch descriptions for one case ([] when it conforms); arrays: the case's
    inputs (bf16 cases derive their tolerances from them)."""
    key, steps, spec = case.key, case.steps, case.spec
    tol, update_rtol = tolerances(case, arrays or {})
    problems = []
    layer_case = case.label.startswith("layer ")
    forward = "forward: " if layer_case else ""
    backward = "backward: " if layer_case else ""

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
        problems.append("%slogits differ by %.3g > %.1g" % (forward, d, tol["logits"]))
    if case.config.precision == "bf16" and d <= TOL["float32"]["logits"]:
        problems.append("bf16 logits agree with the float32 oracle to %.3g, within float32's "
                        "tolerance: is bf16 compute on?" % d)
    d = diff(got[key + "loss1"], want[key + "loss1"])
    if d > tol["loss1"]:
        problems.append("%sone-step loss differs by %.3g > %.1g" % (forward, d, tol["loss1"]))
    for n in names:
        g, w = got[key + "step1/" + n], want[key + "step1/" + n]
        if n.endswith((".running_mean", ".running_var")):
            if not np.allclose(g, w, rtol=RUNNING_STAT_RTOL, atol=tol["weights"]):
                problems.append("%srunning statistic %s after one step differs by %.3g"
                                % (forward, n, diff(g, w)))
        else:
            allowed = tol["weights"] + update_rtol * diff(w, want[key + "rt/" + n])
            if diff(g, w) > allowed:
                problems.append("%s%s after one step differs by %.3g > %.2g"
                                % (backward, n, diff(g, w), allowed))
    if steps:
        problems += _trajectory_problems(case, got, want, tol["traj"], diff)
    return problems


def _trajectory_problems(case, got, want, tol, diff):
    """Where a loss trajectory first goes past its tolerance, and the largest weight difference
    at the nearest kept step at or after it (the weights that produced the next losses)."""
    key = case.key
    gap = np.abs(np.asarray(got[key + "traj"], np.float64) - np.asarray(want[key + "traj"], np.float64))
    if not gap.size or gap.max() <= tol:
        return []
    first = int(np.argmax(gap > tol))  # loss[s] is computed from the weights after s updates
    text = ("%d-step loss trajectory first differs past %.1g at step %d (by %.3g; largest %.3g at "
            "step %d)" % (case.steps, tol, first, gap[first], gap.max(), int(np.argmax(gap))))
    kept = [s for s in _checkpoints(case) if s >= max(first, 1)]
    if kept:
        at = kept[0]
        prefix = "%stw/%d/" % (key, at)
        worst = max(((diff(got[k], want[k]), k[len(prefix):]) for k in got
                     if k.startswith(prefix) and k in want), default=None)
        if worst:
            text += "; after %d update(s) the largest weight difference is %.3g in %s" % (
                at, worst[0], worst[1])
    return [text]
