"""Every registered backend against the NumPy oracle, with no per-backend test code.

For each backend: its worker (in its own environment) answers the probes of tests/conformance.py;
this process computes the oracle's answers; each case is compared. A backend that is not required
here (see conformance.required) and not available is skipped with the reason; a required one fails.
The run's closing summary says which backends' conformance ran and which were skipped, and why.
"""

import pytest

from backends import registry
from backends.base import TrainConfig
from bench.context import usable_cpus
from bench.schema import record_problems
from models.spec import load_spec

import conformance
import needs

CASES = conformance.build_cases()


@pytest.fixture(scope="session")
def probe_inputs():
    return conformance.inputs_for(CASES)


@pytest.fixture(scope="session")
def oracle(probe_inputs, request):
    """The reference's answers to the cases this session selected (for any backend)."""
    chosen = sorted({item.callspec.params["case_index"] for item in request.session.items
                     if "case_index" in getattr(getattr(item, "callspec", None), "params", {})})
    return conformance.oracle_outputs([CASES[i] for i in chosen], probe_inputs)


def _skip_or_fail(name, why, ledger):
    if conformance.required(name):
        ledger.failed(name, why)
        pytest.fail("backend %r is required here but %s" % (name, why), pytrace=False)
    ledger.skipped(name, why)
    needs.missing(name, why)


_PROBES = {}


def _selected_cases(session, name):
    """The case indices this session runs for backend `name` (after -k and friends, and within
    the backend's own conformance subset): only those are sent to its worker, so selecting one
    case does not run them all."""
    chosen = set()
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (params.get("backend_name") == name and "case_index" in params
                and _in_subset(name, CASES[params["case_index"]])):
            chosen.add(params["case_index"])
    return sorted(chosen)


def _in_subset(name, case):
    subset = registry.get(name).conformance
    return not subset or case.label.startswith(subset)


def backend_probes(name, inputs, ledger, session):
    """Run each backend's probe job once per session, for the selected cases."""
    if name not in _PROBES:
        why = conformance.not_here(name)
        if why and not conformance.required(name):
            _PROBES[name] = ("missing", why)
        else:
            cases = [CASES[i] for i in _selected_cases(session, name)]
            outcome, outputs = conformance.run_backend_probes(name, cases, inputs)
            if outcome.status == "unavailable":
                _PROBES[name] = ("missing", outcome.reason)
            elif outcome.status != "ok":
                _PROBES[name] = ("error", "%s: %s\n%s" % (outcome.status, outcome.reason, outcome.stderr_tail))
                ledger.failed(name, "probe worker %s" % outcome.status)
            else:
                _PROBES[name] = ("ok", outputs)
                ledger.ran(name)
    return _PROBES[name]


@pytest.mark.parametrize("case_index", range(len(CASES)), ids=[c.label.replace(" ", "-") for c in CASES])
def test_matches_oracle(backend_name, case_index, probe_inputs, oracle, conformance_ledger, request):
    name = backend_name
    case = CASES[case_index]
    if not _in_subset(name, case):
        pytest.skip("not in %s's conformance subset %s (backends/registry.py: each case compiles "
                    "its own model)" % (name, registry.get(name).conformance))
    state, payload = backend_probes(name, probe_inputs, conformance_ledger, request.session)
    if state == "missing":
        _skip_or_fail(name, payload, conformance_ledger)
    if state == "error":
        pytest.fail("backend %r probe worker did not finish: %s" % (name, payload))
    if case.key + "unsupported" in payload:
        pytest.skip("backend %r does not support %s: %s" % (name, case.label, payload[case.key + "unsupported"]))
    problems = conformance.compare_case(case, payload, oracle, probe_inputs)
    if problems:
        conformance_ledger.failed(name, case.label)
    assert not problems, "%s %s: %s" % (name, case.label, "; ".join(problems))


@pytest.mark.slow
def test_learns_on_real_mnist(backend_name, conformance_ledger):
    """A short real run through the CLI's own path: a valid ok record, accuracy beyond chance."""
    from bench.executors.common import execute_job
    from bench.jobs import expand
    from bench.session import new_session_context

    name = backend_name
    backend = registry.get(name)
    why = conformance.not_here(name)
    if why and not conformance.required(name):
        _skip_or_fail(name, why, conformance_ledger)
    spec = load_spec("seed_convnet")
    config = TrainConfig(batch_size=64, limit_train=2048, limit_test=1000, threads=usable_cpus(),
                         warmup_steps=2)
    job = expand([backend], [spec], config)[0]
    record = execute_job(job, config, new_session_context(config.threads), None, 900,
                         log=lambda t: None)
    if record["status"] == "unavailable":
        _skip_or_fail(name, record["reason"], conformance_ledger)
    assert record["status"] == "ok", "%s: %s\n%s" % (record["status"], record["reason"], record["stderr_tail"])
    assert record_problems(record) == []
    assert record["summary"]["test_accuracy"] > 0.5, record["summary"]
    assert record["summary"]["steps"] == 2048 // 64
    assert len(record["step_loss"]) == 32 and record["step_loss"][-1] < record["step_loss"][0]
