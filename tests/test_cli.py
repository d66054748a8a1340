"""The CLI end to end, as a user runs it: real subprocesses, real MNIST (a small subset)."""
import hashlib
import json
import os
import subprocess
import sys

import pytest

from bench import data
from bench.paths import REPO
from bench.schema import validate_file

SMALL = ["--limit-train", "512", "--limit-test", "500", "--batch-size", "64", "--warmup-steps", "1",
         "--timing-runs", "1"]


def convbench(*args, env=None):
    return subprocess.run([sys.executable, "-m", "bench"] + list(args), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=900)


def _digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    results = str(out / "runs.jsonl")
    proc = convbench("run", "--backend", "numpy,torch", "--results", results, *SMALL)
    return proc, results, out


def test_run_writes_valid_records_and_report(small_run):
    proc, results, out = small_run
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout and str(out / "report.html") in proc.stdout
    n_ok, problems = validate_file(results)
    assert (n_ok, problems) == (2, [])
    with open(results) as fh:
        records = [json.loads(line) for line in fh]
    assert [r["backend"] for r in records] == ["numpy", "torch"]
    a, b = records
    # the suite's claim: same data order, same initial weights, same config for every backend
    assert a["data"]["order_digest"] == b["data"]["order_digest"]
    assert a["data"]["init_weights_digest"] == b["data"]["init_weights_digest"]
    assert a["config"] == b["config"] and a["spec_hash"] == b["spec_hash"]
    assert a["session_id"] == b["session_id"] and a["run_id"] != b["run_id"]
    # same trajectory in float32, up to rounding
    assert abs(a["step_loss"][0] - b["step_loss"][0]) < 1e-4
    for r in records:
        s = r["summary"]
        assert s["median_step_ms"] > 0 and s["images_per_s"] > 0 and s["peak_rss_mb"] > 50
        assert r["machine"]["matmul_peak_gflops"] > 0 and r["threads"] >= 1
        assert len(r["timing"]["step_ns"]) == 8 and r["environment"]["framework_version"]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "numpy" in text and "torch" in text and "median step ms" in text
    assert "data:image/png;base64," in html and "http" not in html.split("<body>")[1].split("<script>")[0].replace("http-equiv", "")
    assert len(list((out / "report_files").glob("*.png"))) == 4


def test_report_and_check_commands(small_run):
    _, results, out = small_run
    proc = convbench("report", "--results", results, "--out", str(out / "again"))
    assert proc.returncode == 0 and (out / "again" / "report.html").exists()
    proc = convbench("check", "--results", results)
    assert proc.returncode == 0 and "2 valid record(s), 0 problem(s)" in proc.stdout


def test_list_shows_backends_and_models():
    proc = convbench("list")
    assert proc.returncode == 0
    assert "numpy" in proc.stdout and "torch" in proc.stdout and "seed_convnet" in proc.stdout
    assert "34826" in proc.stdout


@pytest.mark.parametrize("args, expect", [
    (["--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--epochs", "-1"], "--epochs: must be >= 1"),
    (["--optimizer", "adagrad"], "invalid choice: 'adagrad'"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--lr", "nan"], "--lr: must be a positive number"),
])
def test_bad_input_is_one_line_nonzero_and_leaves_results_alone(small_run, args, expect):
    _, results, _ = small_run
    before = _digest(results)
    proc = convbench("run", "--results", results, *(args + SMALL))
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("usage:")
             and not l.startswith("  ")]
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _digest(results) == before


def test_malformed_spec_file(small_run, tmp_path):
    _, results, _ = small_run
    before = _digest(results)
    spec = tmp_path / "broken.toml"
    spec.write_text('name = "broken"\n[[layers]]\nkind = "conv2d"\nfilters = -3\nkernel = 3\n')
    proc = convbench("run", "--model", str(spec), "--results", results, *SMALL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "broken.toml, layer 1 (conv2d 'conv1'), field 'filters'" in proc.stderr
    assert _digest(results) == before


def test_corrupted_mnist(small_run, tmp_path):
    _, results, _ = small_run
    before = _digest(results)
    src = data.resolve_data_dir(download=False)
    for name in data.FILES:
        blob = open(os.path.join(src, name + ".gz"), "rb").read()
        if name == "train-images-idx3-ubyte":
            blob = blob[: len(blob) // 2]
        (tmp_path / (name + ".gz")).write_bytes(blob)
    proc = convbench("run", "--data-dir", str(tmp_path), "--results", results, *SMALL)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train-images-idx3-ubyte" in proc.stderr and "fix" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _digest(results) == before


def test_cuda_on_a_cpu_machine_is_unavailable_not_a_crash(tmp_path):
    if any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl")):
        pytest.skip("this machine has a GPU")
    results = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--backend", "torch,numpy", "--device", "cuda", "--results", results,
                     "--no-report", *SMALL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    records = [json.loads(l) for l in open(results)]
    assert [r["status"] for r in records] == ["unavailable", "unavailable"]
    assert "cuda" in records[0]["reason"].lower()
    assert validate_file(results) == (2, [])


def test_help_needs_no_framework():
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in {'torch','tensorflow','keras','cntk','jax','flax'}:\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import bench, models, backends, bench.cli, bench.report, bench.session\n"
            "from bench.cli import main\n"
            "sys.argv = ['convbench', '--help']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0 and "usage: convbench" in proc.stdout, proc.stderr


def test_notebook_runs_on_the_records(small_run, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    _, results, _ = small_run
    monkeypatch.setenv("CONVBENCH_RESULTS", results)
    nb = nbformat.read(os.path.join(REPO, "notebooks", "compare.ipynb"), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
    table = nb.cells[2].outputs[0]["data"]["text/plain"]
    assert "numpy" in table and "torch" in table


def test_model_training_defaults_apply_unless_a_flag_is_given(tmp_path):
    """cntk_103d's [training] lr is used where no --lr is given; a flag always wins."""
    results = str(tmp_path / "runs.jsonl")
    tiny = ["--backend", "numpy", "--model", "cntk_103d", "--results", results, "--no-report",
            "--limit-train", "128", "--limit-test", "100", "--warmup-steps", "0",
            "--timing-runs", "1"]
    assert convbench("run", *tiny).returncode == 0
    assert convbench("run", "--lr", "0.02", "--batch-size", "32", *tiny).returncode == 0
    configs = [json.loads(l)["config"] for l in open(results)]
    assert [(c["lr"], c["batch_size"]) for c in configs] == [(0.03, 64), (0.02, 32)]
    assert {c["momentum"] for c in configs} == {0.9}  # not in its table: the suite's default


def test_a_run_too_short_to_time_a_step_still_reports(tmp_path):
    """4 steps, all first or warm-up: no median to show. The record is ok, the line says n/a and
    why, the report leaves the cell empty instead of failing on an empty distribution."""
    results = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--backend", "numpy", "--results", results, "--limit-train", "512",
                     "--limit-test", "200", "--warmup-steps", "5", "--timing-runs", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "median step n/a ms" in proc.stderr and "train longer" in proc.stderr, proc.stderr
    with open(results) as fh:
        record = json.loads(fh.read())
    assert record["status"] == "ok" and record["summary"]["median_step_ms"] is None
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").exists()


def test_report_on_a_file_without_records_says_so(tmp_path):
    results = tmp_path / "runs.jsonl"
    results.write_text('{"schema_version": 1, "run_id": "x", "note": "not a record"}\n')
    proc = convbench("report", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "line 1: skipped, not a valid record (a JSON object without" in proc.stderr
    assert "No records yet" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_the_tf_adapter_runs_on_tf_2_15_as_a_control(tmp_path):
    """`tf@tf_legacy`: the tf adapter in the tf_legacy env (TF 2.15), beside tf_layers and
    tf_estimator, so API and version can be told apart."""
    import needs
    from bench import envs

    if not envs.env_exists("tf_legacy"):
        needs.missing("tf_legacy", "its env is not built; fix: python -m bench.envs tf_legacy")
    results = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--backend", "tf@tf_legacy", "--results", results, "--no-report", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = [json.loads(l) for l in open(results)]
    assert r["status"] == "ok" and r["backend"] == "tf@tf_legacy", r["reason"]
    assert r["environment"]["framework_version"].startswith("2.15.")
    assert r["summary"]["test_accuracy"] > 0.3


def test_target_accuracy_stops_at_the_first_evaluation_that_reaches_it(tmp_path):
    """Time to accuracy, end to end on torch: a reachable target stops the run mid-epoch (time and
    steps of that evaluation recorded), an unreachable one runs every epoch and says so."""
    results = str(tmp_path / "runs.jsonl")
    common = ["run", "--backend", "torch", "--results", results, "--no-report", "--epochs", "2",
              "--evals-per-epoch", "4"] + SMALL
    reached = convbench(*common + ["--target-accuracy", "0.3"])  # mid-epoch 1 (0.47 at step 6)
    missed = convbench(*common + ["--target-accuracy", "0.999"])
    assert reached.returncode == 0 and missed.returncode == 0, reached.stderr + missed.stderr
    assert "reached after" in reached.stderr and "NOT reached in 2 epochs" in missed.stderr
    assert validate_file(results) == (2, [])
    with open(results) as fh:
        hit, miss = [json.loads(line) for line in fh]
    t = hit["target"]
    assert (t["status"], t["accuracy"], hit["config"]["target_accuracy"]) == ("reached", 0.3, 0.3)
    first = next(p for p in hit["curve"] if p["test_accuracy"] >= 0.3)
    assert (t["steps"], t["train_s"]) == (first["step"], first["train_s"])
    assert len(hit["timing"]["step_ns"]) == t["steps"] < 8 and t["epoch"] < 1  # stopped there
    assert len(hit["epochs"]) == 1 and hit["epochs"][0]["test_accuracy"] == first["test_accuracy"]
    m = miss["target"]
    assert (m["status"], m["train_s"], m["steps"]) == ("not_reached", None, None)
    assert len(miss["timing"]["step_ns"]) == 16 and m["evaluations"] == 8 and m["eval_s"] > 0
    assert hit["curve"][-1]["step"] == t["steps"]  # no evaluation after the one that reached it
