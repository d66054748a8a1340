"""The conformance kit's own behaviour: what a failure says (the first trajectory step past the
tolerance and the worst weight there; forward vs backward for a layer case), and that -k runs
only the cases it selects. The answers compared here are the reference's own, perturbed."""
import os
import subprocess
import sys

import numpy as np

import conformance
from backends.base import TrainConfig
from backends.numpy_ref import NumpyReference
from bench.harness import conform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _answers(case):
    """The reference's probe answers to one case (its own arrays)."""
    arrays = conformance.inputs_for([case])

    def factory(job_case):
        from models.spec import spec_from_dict
        return NumpyReference(spec_from_dict(job_case["spec"]), TrainConfig.from_dict(job_case["config"]))

    return conform(factory, conformance._job_cases([case]), arrays, lambda m: None)


def _case(label, steps=0):
    (case,) = [c for c in conformance.build_cases() if c.label == label]
    return case._replace(key="c0/", steps=steps) if steps else case._replace(key="c0/")


def test_a_trajectory_failure_names_its_first_step_and_the_worst_weight_there():
    case = _case("seed_convnet-float64-momentum-100steps", steps=12)
    want = _answers(case)
    assert conformance.compare_case(case, want, want) == []
    got = dict(want)
    traj = want["c0/traj"].copy()
    traj[7:] += np.linspace(2e-6, 5e-3, len(traj) - 7)  # past 1e-6 from step 7 on
    got["c0/traj"] = traj
    w = want["c0/tw/7/dense1.weight"].copy()
    w[3, 4] += 0.25
    got["c0/tw/7/dense1.weight"] = w
    (problem,) = conformance.compare_case(case, got, want)
    assert "first differs past 1e-06 at step 7" in problem, problem
    assert "after 7 update(s) the largest weight difference is 0.25 in dense1.weight" in problem


def test_a_layer_case_says_whether_forward_or_backward_differs():
    case = _case("layer maxpool2d 3x3 stride 2")
    want = _answers(case)
    got = dict(want)
    got["c0/step1/pre.weight"] = want["c0/step1/pre.weight"] + 1e-3
    problems = conformance.compare_case(case, got, want)
    assert problems == ["backward: pre.weight after one step differs by 0.001 > 1e-09"], problems
    got = dict(want)
    got["c0/logits"] = want["c0/logits"] * 1.01
    assert conformance.compare_case(case, got, want)[0].startswith("forward: logits differ")


def test_k_selects_cases_without_running_the_others():
    """-k picks one case of one backend: its worker gets that case only (the run's output says how
    many cases the probe job carried)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
         "tests/test_conformance.py", "--backends", "numpy", "-k", "layer-avgpool2d-2x2"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        timeout=600, env=dict(os.environ, CONVBENCH_CONFORMANCE_VERBOSE="1"))
    assert "1 passed" in proc.stdout, proc.stdout[-2000:]
    assert "probe job for numpy: 1 case(s)" in proc.stdout, proc.stdout[-2000:]


def test_bf16_tolerances_are_derived_and_catch_both_ways():
    """A bf16 case: the reference's own float32 answers fail it (bf16 was not on), answers moved
    by half the derived logit tolerance pass, by twice it fail. The tolerance follows from the
    batch and weights (bf16's 2^-8 per rounding through the layers), not from a constant."""
    import bf16_tolerance

    case = _case("bf16 seed_convnet-float32-momentum")
    arrays = conformance.inputs_for([case])
    want = conformance.oracle_outputs([case], arrays)
    (problem,) = conformance.compare_case(case, want, want, arrays)
    assert "is bf16 compute on?" in problem
    tol, rtol = conformance.tolerances(case, arrays)
    weights = {k[5:]: v for k, v in arrays.items() if k.startswith("c0/w/")}
    derived = bf16_tolerance.bounds(case.spec, weights, arrays["c0/x"], arrays["c0/y"])
    assert tol["logits"] == conformance.TOL["float32"]["logits"] + derived["logits"]
    assert 1e-4 < derived["logits"] < 0.1 and rtol > conformance.FLOAT32_UPDATE_RTOL
    # doubling the weights' scale roughly doubles the logits and their derived error
    doubled = bf16_tolerance.bounds(
        case.spec, {k: 2 * v for k, v in weights.items()}, arrays["c0/x"], arrays["c0/y"])
    assert doubled["logits"] > 2 * derived["logits"]
    for factor, ok in ((0.5, True), (2.0, False)):
        got = dict(want)
        shift = np.zeros_like(want["c0/logits"])
        shift[0, 0] = factor * tol["logits"]
        got["c0/logits"] = want["c0/logits"] + shift
        problems = [p for p in conformance.compare_case(case, got, want, arrays)
                    if "logits" in p]
        assert (problems == []) == ok, (factor, problems)
