"""The job matrix and the local executor: `convbench sweep` and `convbench run --repeat N`.

Real runs of the CLI in a subprocess on a small MNIST subset (numpy backend, ~1 s a job).
"""
import json
import os
import re
import subprocess
import sys

import numpy as np

from backends import registry
from backends.base import TrainConfig
from bench.jobs import expand, work_hash
from bench.paths import REPO
from bench.results import validate_file
from models.spec import load_spec

SHORT = ["--backend", "numpy", "--limit-train", "1024", "--limit-test", "200", "--warmup-steps", "1",
         "--timing-runs", "1"]


def convbench(*args, env=None):
    env = dict(os.environ if env is None else env)
    env.pop("CONVBENCH_INJECT", None)
    return subprocess.run([sys.executable, "-m", "bench"] + list(args), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=600)


def records_of(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def test_expand_is_the_full_matrix_in_run_order():
    numpy, torch = registry.get("numpy"), registry.get("torch")
    a, b = load_spec("seed_convnet"), load_spec("mlp")
    jobs = expand([numpy, torch], [a, b], TrainConfig(), batch_sizes=[32, 64],
                  threads=[1, 2], repeat=3, sweep_axes={"batch_size": [32, 64], "threads": [1, 2]})
    assert len(jobs) == 2 * 2 * 2 * 2 * 3
    assert [j.index for j in jobs] == list(range(len(jobs)))
    cells = [(j.config.threads, j.spec.name, j.config.batch_size, j.repeat["index"], j.backend.name)
             for j in jobs]
    assert cells == sorted(cells, key=lambda c: (c[0], ["seed_convnet", "mlp"].index(c[1]), c[2],
                                                 c[3], ["numpy", "torch"].index(c[4])))
    assert len(set(cells)) == len(cells)
    assert all(j.repeat["of"] == 3 for j in jobs)
    assert len(set(j.sweep["id"] for j in jobs)) == 1 and re.match("^[0-9a-f]{12}$", jobs[0].sweep["id"])
    assert jobs[0].fields() == {"sweep": jobs[0].sweep, "repeat": {"index": 0, "of": 3},
                                "role": "train", "timing_run": None,
                                "work_hash": work_hash(a.spec_hash, jobs[0].config.to_dict())}
    # a plain run: no sweep, no repeat
    plain = expand([numpy], [a], TrainConfig(batch_size=16, threads=4))
    assert [(j.config.batch_size, j.config.threads, j.repeat, j.sweep) for j in plain] == [(16, 4, None, None)]
    # each model's own defaults, when no batch size is swept
    per_model = expand([numpy], [a, b], lambda s: TrainConfig(batch_size=len(s.name)))
    assert [j.config.batch_size for j in per_model] == [len("seed_convnet"), len("mlp")]


def test_local_sweep_writes_every_record_with_its_sweep_and_repeat(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("sweep", "--batch-size", "64", "--threads", "1,2", "--repeat", "2",
                     "--results", path, "--report-dir", str(tmp_path / "report"), *SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validate_file(path) == (4, [])
    records = records_of(path)
    assert [(r["threads"], r["repeat"]) for r in records] == [
        (1, {"index": 0, "of": 2}), (1, {"index": 1, "of": 2}),
        (2, {"index": 0, "of": 2}), (2, {"index": 1, "of": 2})]
    ids = set(r["sweep"]["id"] for r in records)
    assert len(ids) == 1 and re.match("^[0-9a-f]{12}$", ids.pop())
    for r in records:
        assert r["status"] == "ok" and r["backend"] == "numpy" and r["config"]["batch_size"] == 64
        assert r["sweep"]["axes"] == {"batch_size": [64], "threads": [1, 2]}
        assert r["executor"] == {"kind": "local"}
        assert r["config"]["threads"] == r["threads"]
        assert r["environment"]["thread_env"]["OMP_NUM_THREADS"] == str(r["threads"])
        assert r["machine"]["matmul_peak_gflops"] > 0 and r["machine"]["hostname"]
    assert len(set(r["session_id"] for r in records)) == 1  # one invocation
    # the same job repeated trains identically (same weights, same batches): only timing differs
    assert records[0]["step_loss"] == records[1]["step_loss"]
    assert records[0]["summary"]["test_accuracy"] == records[1]["summary"]["test_accuracy"]
    # one line per job, naming its cell; then the report
    # one line per record (stderr is a pipe: the progress lines come between them)
    lines = [l for l in proc.stderr.splitlines() if l.startswith("  numpy") and " epoch " not in l]
    assert len(lines) == 4 and "b64 t2 r2/2 ok" in lines[-1]
    assert (tmp_path / "report" / "report.html").exists() and "report:" in proc.stdout
    # the report gives the sweep its own section: a table of pooled repeats and the plot
    sweep_id = records[0]["sweep"]["id"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Sweep %s" % sweep_id in md
    rows = [l for l in md.split("## Sweep")[1].splitlines() if l.startswith("| numpy")]
    assert len(rows) == 2 and all(" 2 |" in row for row in rows)  # threads 1 and 2, 2 runs each
    assert (tmp_path / "report" / "report_files" / ("sweep_%s.png" % sweep_id)).stat().st_size > 10000


def test_run_repeat_gives_n_records_per_backend_without_a_sweep(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--repeat", "3", "--batch-size", "128", "--threads", "1",
                     "--results", path, "--report-dir", str(tmp_path), *SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = records_of(path)
    assert validate_file(path) == (3, [])
    assert [r["repeat"] for r in records] == [{"index": i, "of": 3} for i in range(3)]
    assert all(r["sweep"] is None and r["executor"] == {"kind": "local"} for r in records)
    assert len(set(r["run_id"] for r in records)) == 3
    # the report pools the repeats into one row: 3 runs, accuracy as mean ± spread
    (row,) = [l for l in (tmp_path / "report.md").read_text().splitlines() if l.startswith("| numpy")]
    cells = [c.strip() for c in row.split("|")]
    assert "3" in cells and any("±" in c for c in cells)


def test_plain_run_records_say_no_sweep_no_repeat(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--batch-size", "256", "--threads", "1", "--results", path,
                     "--no-report", *SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = records_of(path)
    assert (r["sweep"], r["repeat"], r["executor"]) == (None, None, {"kind": "local"})


def test_sweep_usage_errors_are_one_line(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    for args, says in ((["--batch-size", "64,2048", "--limit-train", "1024"], "larger than the training set"),
                       (["--model", ","], "--model is empty"),
                       (["--model", "no_such_model"], "no_such_model")):
        proc = convbench("sweep", "--backend", "numpy", "--results", path, *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("convbench: error") and says in lines[0], lines
    for bad in ("64,64", "0", "x"):
        proc = convbench("sweep", "--backend", "numpy", "--batch-size", bad, "--results", path)
        assert proc.returncode == 2 and "--batch-size" in proc.stderr, proc.stderr
    assert not os.path.exists(path)


def test_inline_executor_runs_the_job_in_this_process_and_says_so(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--executor", "inline", "--batch-size", "256", "--threads", "1",
                     "--results", path, "--no-report", *SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = records_of(path)
    assert validate_file(path) == (1, [])
    assert r["status"] == "ok" and r["executor"] == {"kind": "inline"}, r["reason"]
    assert r["summary"]["steps"] == 1024 // 256
    # no worker: the job ran in the convbench process itself
    assert r["environment"]["executable"] == sys.executable


def test_inline_executor_refuses_injected_faults(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    env = dict(os.environ, CONVBENCH_INJECT="numpy:kill_at_step=2")
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--executor", "inline",
                           "--results", path] + SHORT, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()[-1:]
    assert "--executor inline cannot inject faults" in line and "fix: use --executor local" in line
    assert not os.path.exists(path)


def test_run_times_each_backend_in_fresh_interleaved_processes(tmp_path):
    """--timing-runs N: the training run plus N-1 timing-only processes a backend, after the
    training runs, in rounds with the backend order rotated; the report's figure is the median
    of the process medians with a CI across them and their range."""
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--backend", "numpy,torch", "--limit-train", "1024", "--limit-test", "200",
                     "--batch-size", "64", "--threads", "1", "--warmup-steps", "1",
                     "--timing-runs", "3", "--timing-steps", "5", "--results", path,
                     "--report-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert validate_file(path) == (6, [])
    records = records_of(path)
    assert [(r["backend"], r["role"], (r["timing_run"] or {}).get("index")) for r in records] == [
        ("numpy", "train", 0), ("torch", "train", 0), ("torch", "timing", 1), ("numpy", "timing", 1),
        ("numpy", "timing", 2), ("torch", "timing", 2)]
    assert len(set(r["session_id"] for r in records)) == 1
    for r in records:
        assert r["status"] == "ok", r["reason"]
        assert r["timing_run"]["of"] == 3
        if r["role"] == "timing":  # the first step, the warm-up step and 5 steady steps
            assert r["summary"]["steps"] == 7 and r["config"]["max_steps"] == 7
            assert r["timing"]["step_ns"] and r["config"]["evals_per_epoch"] == 0
            assert r["step_loss"] == [x for t in records if t["role"] == "train"
                                      and t["backend"] == r["backend"] for x in t["step_loss"]][:7]
        else:
            assert r["summary"]["steps"] == 16
    assert "timing 3/3" in proc.stderr and "(timing only)" in proc.stderr
    md = (tmp_path / "report.md").read_text()
    (row,) = [l for l in md.splitlines() if l.startswith("| numpy ")]
    header = [l for l in md.splitlines() if l.startswith("| backend ")][0]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    medians = sorted(float(np.median(np.asarray(r["timing"]["step_ns"][2:]) / 1e6))
                     for r in records if r["backend"] == "numpy")
    assert cells["processes"] == "3"
    assert cells["median step ms"] == "%.2f" % medians[1]
    assert cells["process range ms"] == "%.2f-%.2f" % (medians[0], medians[2])
    lo, hi = (float(x) for x in cells["95% CI ms"].split("-"))
    assert round(medians[0], 2) <= lo <= hi <= round(medians[2], 2)
    assert cells["test acc"] == "%.4f" % records[0]["summary"]["test_accuracy"]  # training run only


def test_timing_processes_follow_the_training_runs_in_rotated_rounds():
    numpy, torch, tf = registry.get("numpy"), registry.get("torch"), registry.get("tf")
    config = TrainConfig(batch_size=64, warmup_steps=2, limit_test=5000)
    jobs = expand([numpy, torch, tf], [load_spec("seed_convnet")], config, timing_runs=4,
                  timing_steps=10)
    assert [(j.backend.name, j.role, j.timing["index"]) for j in jobs] == [
        ("numpy", "train", 0), ("torch", "train", 0), ("tf", "train", 0),
        ("torch", "timing", 1), ("tf", "timing", 1), ("numpy", "timing", 1),
        ("tf", "timing", 2), ("numpy", "timing", 2), ("torch", "timing", 2),
        ("numpy", "timing", 3), ("torch", "timing", 3), ("tf", "timing", 3)]
    quick = jobs[-1].config
    assert (quick.max_steps, quick.limit_train, quick.epochs, quick.evals_per_epoch,
            quick.limit_test) == (1 + 2 + 10, 0, 1, 0, 1000)
    assert "max_steps" in quick.to_dict() and "max_steps" not in config.to_dict()
    assert jobs[0].config == config and jobs[-1].label().endswith("timing 4/4")
    assert len({j.fields()["work_hash"] for j in jobs}) == 1  # timing processes: the same work
    # one process a backend (the default of `sweep`): no timing jobs, no timing_run field
    assert [j.timing for j in expand([numpy], [load_spec("seed_convnet")], config)] == [None]
