"""The CLI end to end, as a user runs it: real subprocesses, real MNIST (a small subset)."""
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bench import data
from bench.paths import REPO
from bench.results import validate_file

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
    assert sorted(p.name for p in (out / "report_files").glob("*.png")) == [
        "g0_accuracy.png", "g0_first_step.png", "g0_loss.png", "g0_memory.png", "g0_steps.png",
        "g0_throughput.png", "overview_0.png"]


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
    # columns sized to the longest name; the former names listed as aliases
    rows = proc.stdout.split("\nmodels:")[0].splitlines()[1:-1]
    starts = {row.index(" " + row.split()[1]) for row in rows}
    assert len(rows) >= 11 and len(starts) == 1, rows
    assert "aliases: tf_estimator -> tf-estimator, tf_layers -> tf-layers" in proc.stdout


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
    table = nb.cells[2].outputs[0]["text"]
    assert "numpy" in table and "torch" in table
    assert any(o.get("output_type") == "display_data" for o in nb.cells[3].outputs)


def test_the_notebook_shows_exactly_the_reports_rows(monkeypatch):
    """On the reference records, the notebook's table is the report's rows (bench.selection)."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    from bench.results import read_records
    from bench.selection import latest_rows

    reference = os.path.join(REPO, "results", "reference", "runs.jsonl")
    monkeypatch.setenv("CONVBENCH_RESULTS", reference)
    nb = nbformat.read(os.path.join(REPO, "notebooks", "compare.ipynb"), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.join(REPO, "notebooks")}}).execute()
    shown = [line.split(",") for line in nb.cells[2].outputs[0]["text"].strip().splitlines()[1:]]
    rows = latest_rows(read_records(reference))
    assert len(shown) == len(rows) > 20
    # machine names hold commas (quoted in CSV): compare model, mode, backend and the median
    # the median as printed (a rounded figure) against the report's to within that rounding
    got = [(l[-12], l[-11], l[-9], float(l[-5])) for l in shown if l[-5]]
    want = [(r.model, r["mode"], r.backend, r.median_ms) for _, r in rows.iterrows()
            if r.median_ms == r.median_ms]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got] == pytest.approx([w[3] for w in want], abs=1e-3)


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
    """`tf@tf_legacy`: the tf adapter in the tf_legacy env (TF 2.15), beside tf-layers and
    tf-estimator, so API and version can be told apart."""
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


@pytest.mark.slow
def test_epoch_mode_evaluates_mid_epoch_inside_the_frameworks_own_loop(tmp_path):
    """Keras `fit` and `Estimator.train` evaluate on step mode's schedule from their callback or
    hook, so the accuracy curves (same weights, same batches) match the reference's step by step;
    a framework that trains step by step has no epoch mode and says so."""
    import needs
    from bench import envs

    for env in ("tf", "tf_legacy"):
        if not envs.env_exists(env):
            needs.missing(env, "its env is not built; fix: python -m bench.envs %s" % env)
    results = str(tmp_path / "runs.jsonl")
    small = SMALL + ["--no-report", "--results", results]
    assert convbench("run", "--backend", "numpy", *small).returncode == 0
    proc = convbench("run", "--backend", "keras,tf-estimator,torch", "--mode", "epoch", *small)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "torch unsupported (training mode 'epoch': torch trains step by step" in proc.stderr
    records = {r["backend"]: r for r in map(json.loads, open(results))}
    assert records["torch"]["status"] == "unsupported" and not records["torch"].get("curve")

    def curve(r):
        return [(p["step"], round(p["test_accuracy"], 3)) for p in r["curve"]]

    reference = curve(records["numpy"])
    assert len(reference) == 4  # 8 steps, 4 evaluations per epoch: steps 2, 4, 6 and the end
    for name in ("keras", "tf-estimator"):
        assert records[name]["status"] == "ok", records[name]["reason"]
        assert records[name]["config"]["mode"] == "epoch"
        assert curve(records[name]) == reference, name


@pytest.mark.slow
def test_seeds_vary_the_run_and_the_output_reads_in_a_pipe(tmp_path):
    """--seeds: one training run per seed (different initial weights and order), pooled into one
    row with the accuracy's spread; stderr is a pipe here, so progress comes as plain lines with
    a finite rate; every record gives the measured throughput beside the per-step one."""
    results, out = str(tmp_path / "runs.jsonl"), tmp_path / "report"
    proc = convbench("run", "--backend", "numpy", "--seeds", "0,1", "--limit-train", "1536",
                     "--limit-test", "500", "--batch-size", "64", "--warmup-steps", "1",
                     "--timing-runs", "1", "--results", results, "--report-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "one training run per seed (0,1)" in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "epoch 1/1: step" in l]
    assert lines and "numpy seed_convnet b64 t" in lines[-1]
    assert "r2/2 epoch 1/1: step 24/24, loss " in lines[-1]
    rates = [float(l.rsplit(", ", 1)[1].split()[0]) for l in lines if l.endswith("step/s")]
    assert rates and all(0 < r < 1000 for r in rates), lines
    assert "\r" not in proc.stderr  # no bar redraws in a log
    records = [json.loads(l) for l in open(results)]
    assert [r["config"]["seed"] for r in records] == [0, 1]
    assert records[0]["data"]["init_weights_digest"] != records[1]["data"]["init_weights_digest"]
    assert records[0]["work_hash"] == records[1]["work_hash"]
    for r in records:
        s = r["summary"]
        assert 0 < s["train_images_per_s"]
        expected = len(r["timing"]["step_ns"]) * 64 / r["timing"]["train_s"]
        assert s["train_images_per_s"] == pytest.approx(expected)
    accs = [r["summary"]["test_accuracy"] for r in records]
    assert accs[0] != accs[1]
    report = (out / "report.md").read_text()
    spread = pytest.approx(float(np.std(accs, ddof=1)), abs=1e-4)
    row = [l for l in report.splitlines() if l.startswith("| numpy")][0]
    assert "%.4f ± " % np.mean(accs) in row and float(row.split("± ")[1].split()[0]) == spread


def test_seeds_and_repeat_together_are_refused(tmp_path):
    proc = convbench("run", "--seeds", "0,1", "--repeat", "2", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "give --seeds S,S,... (one run per seed) or --repeat N" in proc.stderr


def test_a_spec_file_that_borrows_a_builtin_name_is_told_apart(tmp_path):
    """Same name as the built-in seed_convnet, another network: the run says so in one line and
    its records carry `seed_convnet@<hash>`; an unchanged copy stays seed_convnet."""
    text = open(os.path.join(REPO, "models", "seed_convnet.toml")).read()
    same, other = tmp_path / "same.toml", tmp_path / "other.toml"
    same.write_text(text)
    other.write_text(text.replace("filters = 64", "filters = 16", 1))
    results = str(tmp_path / "runs.jsonl")
    tiny = ["--backend", "numpy", "--results", results, "--no-report", "--limit-train", "256",
            "--limit-test", "100", "--warmup-steps", "0", "--timing-runs", "1"]
    assert convbench("run", "--model", str(same), *tiny).returncode == 0
    proc = convbench("run", "--model", str(other), *tiny)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (note,) = [l for l in proc.stderr.splitlines() if "note:" in l]
    assert "is not the built-in seed_convnet (another network: " in note
    models = [json.loads(l)["model"] for l in open(results)]
    assert models[0] == "seed_convnet" and re.fullmatch(r"seed_convnet@[0-9a-f]{8}", models[1])
    assert models[1] in note


def test_a_cut_off_results_line_warns_in_the_clis_format(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text('{"schema_version": 1, "backe')
    proc = convbench("check", "--results", str(path))
    proc = convbench("report", "--results", str(path), "--out", str(tmp_path / "out"))
    assert "UserWarning" not in proc.stderr and "warnings.warn" not in proc.stderr
    assert "convbench: warning: %s line 1: skipped" % path in proc.stderr


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
