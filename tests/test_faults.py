"""The fault suite: each fault injected into a real `convbench run` (real worker processes, real
MNIST, small subsets), and what must come out: one record per backend, the healthy backends' records
ok, nothing already written lost or corrupted, a non-zero exit with a one-line summary.

Every test that runs convbench accounts for the records it expected and found in the fault ledger
(tests/conftest.py), printed as a table at the end of the run; lost or corrupted is a failure.
tests/test_faults_outside.py adds the faults around the worker (the disk, the parent, the numbers,
the readers) to the same table; tests/faultkit.py holds what both files share.
"""
import ast
import gzip
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import data, inject
from bench.paths import REPO
from faultkit import MNIST, SMALL, _env, _read, _records, _summary_line, account, convbench
from models.spec import LAYER_KINDS, ModelSpec, SpecError, load_spec, spec_from_dict
from procs import tagged_processes

TORCH_HINT = "pip install 'convbench[torch]'"


# --- one faulty worker among healthy ones ------------------------------------------------------

# (fault, CONVBENCH_INJECT, backends in run order, extra options, faulty backend, its status,
#  what its reason must say)
WORKER_FAULTS = [
    ("worker SIGKILLed mid-epoch", "numpy:kill_at_step=3", "numpy,torch", [], "numpy", "failed",
     ["killed by SIGKILL"]),
    # the hanging one is torch: the healthy numpy needs a second or two of the same --timeout, and
    # torch must get to step 3 first (its import alone can take 15 s on a loaded machine)
    ("worker hangs past --timeout", "torch:hang_at_step=3", "torch,numpy", ["--timeout", "40"],
     "torch", "timeout", ["no result after 40 s", "--timeout"]),
    ("worker exceeds --memory-limit-mb", "numpy:alloc_mb_at_step=3:3000", "numpy,torch",
     ["--memory-limit-mb", "2000"], "numpy", "failed",
     ["exceeded the memory limit of 2000 MB", "--memory-limit-mb", "MemoryError"]),
    ("framework fails to import", "torch:import_error=1", "torch,numpy", [], "torch",
     "unavailable", ["cannot import PyTorch", "No module named 'torch'", TORCH_HINT]),
    ("garbage on the protocol channel", "numpy:garbage_at_step=3", "numpy,torch", [], "numpy",
     "failed", ["unparseable line", "Segmentation fault", "the result was discarded"]),
]


@pytest.mark.parametrize("fault, spec, backends, extra, faulty, status, says", WORKER_FAULTS,
                         ids=["kill", "hang", "memory", "import", "garbage"])
def test_one_faulty_worker_one_record_the_others_still_run(
        tmp_path, fault_ledger, baseline, fault, spec, backends, extra, faulty, status, says):
    path = str(tmp_path / "runs.jsonl")
    shutil.copy(baseline, path)  # an earlier run's record: it must survive untouched
    before = _read(path)
    tag = uuid.uuid4().hex
    proc = convbench("run", "--backend", backends, "--results", path, *(SMALL + extra),
                     inject_spec=spec, tag=tag)

    names = backends.split(",")
    new = _records(path)[1:]
    account(fault_ledger, fault, path, before, expected_new=len(names))
    assert [r["backend"] for r in new] == names
    bad = [r for r in new if r["backend"] == faulty][0]
    assert bad["status"] == status, bad["reason"]
    for text in says:
        assert text in bad["reason"], bad["reason"]
    assert "\n" not in bad["reason"]
    assert bad["stderr_tail"].strip(), "the worker's stderr tail is in the record"
    assert bad["injected"] == inject.active(faulty, {inject.ENV_VAR: spec}) != {}
    for good in (r for r in new if r["backend"] != faulty):
        assert good["status"] == "ok" and good["injected"] is None
        assert good["summary"]["test_accuracy"] > 0.3  # it really trained

    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    summary = _summary_line(proc.stderr)
    assert summary.startswith("convbench: 1 of 2 backend(s) did not finish ok: %s %s ("
                              % (faulty, status)), summary
    assert tagged_processes(tag) == {}, "a worker outlived convbench"


def test_ctrl_c_stops_the_worker_keeps_complete_records(tmp_path, fault_ledger):
    path = str(tmp_path / "runs.jsonl")
    tag = uuid.uuid4().hex
    # numpy finishes; torch is then stopped mid-run (it would hang at step 2 anyway)
    proc = subprocess.Popen([sys.executable, "-m", "bench", "run", "--backend", "numpy,torch",
                             "--results", path] + SMALL, cwd=REPO,
                            env=_env("torch:hang_at_step=2", tag), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            start_new_session=True)  # a process group, as a terminal makes
    try:
        worker = _wait_for_torch_worker(proc, path, tag)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "1 complete record(s) kept" in err and "Traceback" not in err
    assert not os.path.exists("/proc/%d" % worker) or worker not in tagged_processes(tag)
    assert tagged_processes(tag) == {}, "a worker outlived convbench"
    account(fault_ledger, "Ctrl-C (SIGINT) mid-run", path, b"", expected_new=1)
    assert [(r["backend"], r["status"]) for r in _records(path)] == [("numpy", "ok")]


@pytest.mark.parametrize("script, limit, blamed", [
    # an allocation abort: libstdc++'s last words, then SIGABRT, as a C++ framework dies
    ("echo \"terminate called after throwing an instance of 'std::bad_alloc'\" >&2; kill -ABRT $$",
     500, True),
    ("echo 'assertion failed' >&2; kill -ABRT $$", 500, False),  # an abort, but not memory
    ("echo 'MemoryError' >&2; exit 1", 0, False),  # no limit given: nothing to blame
])
def test_allocation_abort_under_a_memory_limit_is_blamed_on_it(tmp_path, monkeypatch, script,
                                                               limit, blamed):
    from backends import registry
    from bench import envs, runner

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n" + script + "\n")
    fake.chmod(0o755)
    monkeypatch.setattr(envs, "ensure_env", lambda b, log=print: str(fake))
    outcome = runner.run_worker(registry.get("numpy"), {"kind": "train"}, 1, timeout_s=30,
                                memory_limit_mb=limit)
    assert outcome.status == "failed"
    assert ("exceeded the memory limit of 500 MB (--memory-limit-mb 500" in outcome.reason) == blamed
    assert "SIGABRT" in outcome.reason or not limit


def _wait_for_torch_worker(proc, path, tag, timeout=120):
    """The torch worker's pid, once numpy's record is on disk and the torch worker is running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        if _read(path).count(b"\n") == 1:
            workers = [pid for pid, cmd in tagged_processes(tag).items() if "bench.worker" in cmd]
            if workers:
                return workers[0]
        time.sleep(0.2)
    raise AssertionError("the torch worker never started")


# --- the results file --------------------------------------------------------------------------

def test_two_runs_append_to_one_file_at_once(tmp_path, fault_ledger, baseline):
    path = str(tmp_path / "runs.jsonl")
    shutil.copy(baseline, path)
    before = _read(path)
    cmd = [sys.executable, "-m", "bench", "run", "--backend", "numpy,torch", "--results", path]
    procs = [subprocess.Popen(cmd + SMALL, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    account(fault_ledger, "two convbench runs, one results file", path, before, expected_new=4)
    sessions = {}
    for r in _records(path)[1:]:
        sessions.setdefault(r["session_id"], []).append(r["backend"])
    assert sorted(sessions.values()) == [["numpy", "torch"], ["numpy", "torch"]]


def test_truncated_last_line_is_skipped_reported_and_appended_after(tmp_path, fault_ledger, baseline):
    path = str(tmp_path / "runs.jsonl")
    whole = _read(baseline)
    with open(path, "wb") as fh:  # a crash cut the second record's line short
        fh.write(whole + whole[: len(whole) // 2])
    before = _read(path)

    proc = convbench("check", "--results", path)
    assert proc.returncode == 1
    assert "line 2: not a valid record" in proc.stdout and "cut off" in proc.stdout, proc.stdout
    assert "1 valid record(s), 1 problem(s)" in proc.stdout

    proc = convbench("report", "--results", path, "--out", str(tmp_path / "report"))
    assert proc.returncode == 0, proc.stderr
    assert "line 2: skipped" in proc.stderr and (tmp_path / "report" / "report.html").exists()

    proc = convbench("run", "--backend", "numpy", "--results", path, *SMALL)
    assert proc.returncode == 0, proc.stderr
    account(fault_ledger, "results file cut mid-line by a crash", path, before, expected_new=1,
            bad_lines=(2,))
    lines = _read(path).splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["status"] == "ok"


def test_check_validates_every_record_and_names_its_line(tmp_path, baseline):
    good = _records(baseline)[0]
    wrong_status = dict(good, status="exploded")
    missing = dict(good)
    del missing["summary"], missing["spec_hash"]
    ok_with_reason = dict(good, reason="")  # ok records have reason null
    failed_without_reason = dict(good, status="failed", reason=None)
    two_line_reason = dict(good, status="failed", reason="crashed\nTraceback ...")
    lines = [json.dumps(good), json.dumps(wrong_status), json.dumps(missing), "[1, 2]",
             json.dumps(good).replace('"lr": 0.1', '"lr": NaN'), json.dumps(ok_with_reason),
             json.dumps(failed_without_reason), json.dumps(two_line_reason), json.dumps(good)]
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    proc = convbench("check", "--results", str(path))
    assert proc.returncode == 1
    out = proc.stdout
    assert "'exploded' is not one of" in out and "'summary' is a required property" in out
    assert "'spec_hash' is a required property" in out and "NaN is not JSON" in out
    for n in range(2, 9):
        assert "line %d:" % n in out, out
    assert "line 1:" not in out and "line 9:" not in out
    assert "2 valid record(s), 7 problem(s)" in out
    assert convbench("check", "--results", baseline).returncode == 0


# --- bad input: data, CLI values, fault specs, spec files --------------------------------------

def _flip_a_byte(raw):
    raw = bytearray(raw)
    raw[len(raw) // 2] ^= 0xFF
    return bytes(raw)


MNIST_DAMAGE = [
    ("corrupted", "t10k-labels-idx1-ubyte", lambda gz: gzip.compress(_flip_a_byte(gzip.decompress(gz))),
     "is corrupt"),
    ("truncated", "train-images-idx3-ubyte", lambda gz: gz[: len(gz) // 2], "not a readable gzip"),
    ("wrong-size", "train-labels-idx1-ubyte", lambda gz: gzip.compress(gzip.decompress(gz) + b"\x07"),
     "60009 bytes"),
]


@pytest.mark.parametrize("kind, name, damage, says", MNIST_DAMAGE, ids=[m[0] for m in MNIST_DAMAGE])
def test_damaged_mnist_is_one_line_naming_file_and_fix(tmp_path, fault_ledger, baseline, kind,
                                                       name, damage, says):
    d = tmp_path / "mnist"
    d.mkdir()
    for n in data.FILES:
        blob = _read(os.path.join(MNIST, n + ".gz"))
        (d / (n + ".gz")).write_bytes(damage(blob) if n == name else blob)
    path = str(tmp_path / "runs.jsonl")
    shutil.copy(baseline, path)
    before = _read(path)
    proc = convbench("run", "--backend", "numpy", "--data-dir", str(d), "--results", path, *SMALL)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    assert str(d / (name + ".gz")) in line and says in line and "fix:" in line, line
    assert _read(path) == before
    account(fault_ledger, "MNIST file %s" % kind, path, before, expected_new=0)


BAD_VALUES = [
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--optimizer", "adagrad"], "--optimizer: invalid choice: 'adagrad'"),
    (["--epochs", "-1"], "--epochs: must be >= 1"),
    (["--device", "tpu"], "--device: invalid choice: 'tpu'"),
    (["--lr", "fast"], "--lr: must be a number, got 'fast'"),
    (["--lr", "-0.1"], "--lr: must be a positive number"),
    (["--timeout", "inf"], "--timeout: must be a positive number"),
    (["--memory-limit-mb", "lots"], "--memory-limit-mb: must be a whole number"),
    (["--limit-train", "-5"], "--limit-train: must be >= 0"),
]


@pytest.mark.parametrize("args, says", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_cli_values_are_one_argparse_line_exit_2(tmp_path, args, says):
    path = tmp_path / "runs.jsonl"
    proc = convbench("run", "--results", str(path), *(args + SMALL))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("convbench")]
    assert len(errors) == 1 and says in errors[0], proc.stderr
    assert not path.exists()


@pytest.mark.parametrize("spec, says", [
    ("hang_at_stp=3", "known key"), ("numpy:kill_at_step=zero", "invalid literal"),
    ("alloc_mb_at_step=3", "must be STEP:MB"), (":hang_at_step=1", "is not [BACKEND:]key=value"),
    ("kill_at_step=1,kill_at_step=2", "twice"),
])
def test_malformed_fault_spec_is_a_usage_error(tmp_path, spec, says):
    path = tmp_path / "runs.jsonl"
    proc = convbench("run", "--results", str(path), *SMALL, inject_spec=spec)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr and "fix" in proc.stderr and not path.exists()


def test_fault_scopes():
    env = {inject.ENV_VAR: "step_sleep_ms=5, numpy:hang_at_step=3, torch:step_sleep_ms=0"}
    assert inject.active("numpy", env) == {"step_sleep_ms": "5", "hang_at_step": "3"}
    assert inject.active("torch", env) == {"step_sleep_ms": "0"}
    assert inject.active("tf", env) == inject.active(None, env) == {"step_sleep_ms": "5"}
    assert inject.active("numpy", {}) == {}


# --- generated spec files: SpecError, never another exception ----------------------------------

def _toml_str(text):
    out = []
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04X" % ord(ch) if ch not in '"\\' else "\\" + ch)
        else:
            out.append(ch)
    return '"%s"' % "".join(out)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[%s]" % ", ".join(_toml_value(x) for x in v)
    return "{%s}" % ", ".join("%s = %s" % (_toml_str(k), _toml_value(x)) for k, x in v.items())


def to_toml(spec):
    """TOML text of a spec dict: top-level keys inline, layers as [[layers]] tables when they are."""
    layers = spec.get("layers")
    tables = isinstance(layers, list) and layers and all(isinstance(l, dict) for l in layers)
    lines = ["%s = %s" % (_toml_str(k), _toml_value(v)) for k, v in spec.items()
             if not (k == "layers" and tables)]
    for layer in (layers if tables else []):
        lines.append("\n[[layers]]")
        lines += ["%s = %s" % (_toml_str(k), _toml_value(v)) for k, v in layer.items()]
    return "\n".join(lines) + "\n"


def _base_spec():
    return {"name": "fuzz", "input_shape": [1, 28, 28], "num_classes": 10, "layers": [
        {"kind": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"},
        {"kind": "maxpool2d", "size": 2},
        {"kind": "flatten"},
        {"kind": "dense", "units": 10}]}


HUGE = [0, -1, -2 ** 63, 2 ** 31, 2 ** 63 - 1, 10 ** 30, 2 ** 31 - 1]
SCALARS = st.one_of(
    st.integers(-3, 40), st.sampled_from(HUGE), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([float("nan"), float("inf"), -0.0]),
    st.booleans(), st.text(max_size=8), st.sampled_from(["same", "valid", "relu", "", "💥", "ｒｅｌｕ"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                   st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))
FIELDS = ["kind", "name", "filters", "kernel", "stride", "padding", "activation", "use_bias", "size",
          "units", "rate", "eps", "momentum", "function", "bogus"]
TOP_FIELDS = ["name", "input_shape", "num_classes", "init", "layers", "description", "training",
              "bogus"]
KINDS = st.one_of(st.sampled_from(LAYER_KINDS + ("conv3d", "lstm", "", "Conv2D")), st.text(max_size=6))


@st.composite
def mutated_spec(draw):
    """The base spec with 1-4 random changes: wrong types, bad sizes, unknown kinds, gaps."""
    spec = _base_spec()
    for _ in range(draw(st.integers(1, 4))):
        layers = spec["layers"] if isinstance(spec.get("layers"), list) else []
        what = draw(st.sampled_from(["field", "field", "drop", "kind", "insert", "top", "remove"]))
        target = draw(st.sampled_from(layers)) if layers and what in ("field", "drop", "kind") else None
        if what == "field" and isinstance(target, dict):
            target[draw(st.sampled_from(FIELDS))] = draw(VALUES)
        elif what == "drop" and isinstance(target, dict) and target:
            del target[draw(st.sampled_from(sorted(target)))]
        elif what == "kind" and isinstance(target, dict):
            target["kind"] = draw(KINDS)
        elif what == "insert":
            layer = {"kind": draw(KINDS)}
            for f in draw(st.lists(st.sampled_from(FIELDS[1:]), max_size=3)):
                layer[f] = draw(VALUES)
            layers.insert(draw(st.integers(0, len(layers))), layer)
        elif what == "top":
            spec[draw(st.sampled_from(TOP_FIELDS))] = draw(VALUES)
        elif what == "remove" and layers:
            del layers[draw(st.integers(0, len(layers) - 1))]
    return spec


@st.composite
def spec_file(draw):
    """Bytes of a spec file: a mutated spec, often damaged as text, or noise."""
    text = to_toml(draw(mutated_spec()))
    damage = draw(st.sampled_from(["none", "none", "none", "cut", "insert", "bytes", "deep",
                                   "noise"]))
    if damage == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(min_size=1, max_size=4)) + text[at:]
    elif damage == "deep":
        depth = draw(st.sampled_from([50, 400, 5000]))
        text += "deep = %s1%s\n" % ("[" * depth, "]" * depth)
    elif damage == "noise":
        text = draw(st.text(max_size=60))
    raw = text.encode("utf-8", "surrogatepass")
    if damage == "bytes":
        raw = raw + draw(st.binary(min_size=1, max_size=8))
    return raw


@st.composite
def plausible_spec(draw):
    """A random conv/pool/dense stack: often valid, sometimes collapsing; never nonsense types."""
    layers = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            layers.append({"kind": "conv2d", "filters": draw(st.integers(1, 8)),
                           "kernel": draw(st.integers(1, 9)), "stride": draw(st.integers(1, 3)),
                           "padding": draw(st.sampled_from(["valid", "same", 0, 1, [2, 1]])),
                           "activation": draw(st.sampled_from(["relu", "tanh", "linear"]))})
        else:
            layers.append({"kind": "maxpool2d", "size": draw(st.integers(1, 5)),
                           "stride": draw(st.integers(1, 5))})
    if draw(st.booleans()):
        layers.append({"kind": "batchnorm"})
    layers.append({"kind": "flatten"})
    for _ in range(draw(st.integers(0, 2))):
        layers.append({"kind": "dense", "units": draw(st.integers(1, 64)), "activation": "relu"})
        if draw(st.booleans()):
            layers.append({"kind": "dropout", "rate": draw(st.floats(0, 0.99))})
    layers.append({"kind": "dense", "units": 10})
    return {"name": "plausible", "input_shape": [1, draw(st.integers(1, 32)), draw(st.integers(1, 32))],
            "init": draw(st.sampled_from(["glorot_uniform", "he_normal"])), "layers": layers}


def _load_or_spec_error(directory, raw, counts):
    path = os.path.join(directory, "spec.toml")
    with open(path, "wb") as fh:
        fh.write(raw)
    try:
        spec = load_spec(path)
    except SpecError as exc:
        assert str(exc)
        counts["SpecError"] += 1
        return
    # what loaded is a usable spec: facts, hash and the dict a worker gets all work
    assert isinstance(spec, ModelSpec) and spec.param_count > 0
    assert spec.flops()["train"] > 0 and len(spec.spec_hash) == 16
    assert spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    counts["loaded"] += 1


def test_1000_generated_spec_files_give_spec_error_and_nothing_else(fault_ledger):
    counts = {"SpecError": 0, "loaded": 0}
    with tempfile.TemporaryDirectory() as directory:
        @settings(max_examples=1000, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(spec_file())
        def damaged(raw):
            _load_or_spec_error(directory, raw, counts)

        @settings(max_examples=200, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(plausible_spec())
        def plausible(spec):
            _load_or_spec_error(directory, to_toml(spec).encode(), counts)

        damaged()
        errors_from_damaged = counts["SpecError"]
        plausible()
    fault_ledger.note("generated spec files: %d loaded, %d SpecError, 0 other exceptions"
                      % (counts["loaded"], counts["SpecError"]))
    assert errors_from_damaged >= 900, counts  # the generator really makes bad specs
    assert sum(counts.values()) >= 1200, counts
    assert counts["loaded"] >= 50, counts  # and the plausible ones mostly load


def test_spec_edge_cases_are_spec_errors(tmp_path):
    base = _base_spec()
    flat = [{"kind": "flatten"}]
    cases = [
        (dict(base, layers=[{"kind": "dropout", "rate": 10 ** 400}] + base["layers"]), "finite"),
        (dict(base, input_shape=[2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1]), "at most"),
        (dict(base, layers=flat + [{"kind": "dense", "units": 3 * 10 ** 9}, {"kind": "dense", "units": 10}]),
         "must be <= 2147483647"),
        (dict(base, layers=flat + [{"kind": "dense", "units": 2 ** 31 - 1}, {"kind": "dense", "units": 10}]),
         "parameter dense1.weight"),
        (dict(base, layers=[dict(base["layers"][0], name="cönv")] + base["layers"][1:]), "ASCII"),
        (dict(base, layers=[dict(base["layers"][0], padding=2 ** 30)] + base["layers"][1:]),
         "more than 2147483647 elements"),
    ]
    for case, says in cases:
        with pytest.raises(SpecError, match=says):
            spec_from_dict(case)
    with pytest.raises(SpecError, match="cannot read it|no such spec"):
        load_spec(str(tmp_path) + os.sep)  # a directory
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(str(deep))


# --- security -----------------------------------------------------------------------------------

LOAD_PATHS = ["models", "bench", "backends"]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "yaml", "joblib"}


def unsafe_calls(source, filename="<source>"):
    """Where a module could run code from data: eval/exec/compile, pickle-family or yaml imports,
    torch.load, and np.load without allow_pickle=False."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += ["%s:%d import %s" % (filename, node.lineno, n) for n in names
                      if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile"):
            found.append("%s:%d %s()" % (filename, node.lineno, f.id))
        if isinstance(f, ast.Name) and f.id == "__import__" and not (
                node.args and isinstance(node.args[0], ast.Constant)):  # a literal name is code
            found.append("%s:%d __import__ of a computed name" % (filename, node.lineno))
        if isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name):
            if f.value.id in ("np", "numpy"):
                safe = [k for k in node.keywords if k.arg == "allow_pickle"
                        and isinstance(k.value, ast.Constant) and k.value.value is False]
                if not safe:
                    found.append("%s:%d np.load without allow_pickle=False" % (filename, node.lineno))
            elif f.value.id in ("torch", "pickle", "yaml"):
                found.append("%s:%d %s.load" % (filename, node.lineno, f.value.id))
    return found


def test_specs_and_data_are_loaded_as_data_only():
    sources = 0
    found = []
    for top in LOAD_PATHS:
        for name in sorted(os.listdir(os.path.join(REPO, top))):
            if name.endswith(".py"):
                path = os.path.join(REPO, top, name)
                with open(path) as fh:
                    found += unsafe_calls(fh.read(), os.path.relpath(path, REPO))
                sources += 1
    assert sources > 20 and found == []
    # the scan itself catches what it looks for
    bad = ("import pickle\nimport yaml\nx = eval('1')\nimport numpy as np\n"
           "np.load('a.npy')\nnp.load('a', allow_pickle=True)\ntorch.load('m')\n"
           "__import__(name)\n__import__('json')\nnp.load('a', allow_pickle=False)\n")
    assert len(unsafe_calls(bad)) == 7


def test_code_in_a_spec_stays_a_string(tmp_path):
    marker = tmp_path / "pwned"
    payload = "__import__('os').system('touch %s')" % marker
    spec = _base_spec()
    spec["name"] = payload
    spec["description"] = "{{7*7}} ${7*7} `touch %s`" % marker
    path = tmp_path / "evil.toml"
    path.write_text(to_toml(spec))
    loaded = load_spec(str(path))
    assert loaded.name == payload and not marker.exists()


XSS = ["<script>alert(1)</script>", "'\"><img src=x onerror=alert(2)>"]


def test_record_fields_render_inert_in_the_html_report(tmp_path, baseline):
    good = _records(baseline)[0]
    evil = json.loads(json.dumps(good))
    evil.update(backend=XSS[0], framework=XSS[1], model=XSS[0], status="failed",
                reason=XSS[0] + " " + XSS[1], stderr_tail=XSS[0],
                run_id="abcabcabcabc")  # a valid id: the record is rendered, not skipped
    evil["environment"]["framework_version"] = XSS[1]
    evil["machine"]["cpu_model"] = XSS[0]
    good2 = json.loads(json.dumps(good))
    good2["environment"]["framework_version"] = XSS[0]
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(evil) + "\n" + json.dumps(good2) + "\n")
    proc = convbench("report", "--results", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    for payload in XSS:
        assert payload not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "onerror=alert(2)&gt;" in html and "<img src=x" not in html


def test_socket_guard_blocks_the_network_but_not_loopback(tmp_path):
    from netguard import NetworkBlocked

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlocked):
            s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed anyway
        with pytest.raises(NetworkBlocked):
            s.connect_ex(("example.com", 443))
    finally:
        s.close()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    for host in ("127.0.0.1", "localhost"):
        client = socket.create_connection((host, server.getsockname()[1]), timeout=5)
        client.close()
        server.accept()[0].close()
    server.close()
    unix_path = str(tmp_path / "s.sock")
    userver = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    userver.bind(unix_path)
    userver.listen(1)
    uclient = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    uclient.connect(unix_path)
    uclient.close()
    userver.close()


@pytest.mark.download
def test_mnist_download_from_the_public_mirrors(tmp_path):
    """The one test that reaches the network: only with `-m download`."""
    data.download_mnist(str(tmp_path))
    assert data.Mnist(str(tmp_path)).test_labels[0] == 7


def test_download_tests_are_deselected_by_default():
    node = "tests/test_faults.py::test_mnist_download_from_the_public_mirrors"
    plain = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", node], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert "1 deselected" in plain.stdout, plain.stdout
    asked = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "download",
                            node], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True)
    assert "1 test collected" in asked.stdout, asked.stdout
