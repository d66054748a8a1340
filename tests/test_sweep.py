"""The job matrix and the local executor: `convbench sweep` and `convbench run --repeat N`.

Real runs of the CLI in a subprocess on a small MNIST subset (numpy backend, ~1 s a job).
"""
import json
import os
import re
import subprocess
import sys

from backends import registry
from backends.base import TrainConfig
from bench.jobs import expand
from bench.paths import REPO
from bench.schema import validate_file
from models.spec import load_spec

SHORT = ["--backend", "numpy", "--limit-train", "1024", "--limit-test", "200", "--warmup-steps", "1"]


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
    assert jobs[0].fields() == {"sweep": jobs[0].sweep, "repeat": {"index": 0, "of": 3}}
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
    lines = [l for l in proc.stderr.splitlines() if l.startswith("  numpy")]
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
