"""The smaller faults of issue 19, each with its test: relative data paths, a gzip bomb, FIFOs,
a worker dying under --memory-limit-mb, an ok record that must stay valid, control characters on
the terminal, duplicate sweep jobs, misspelt fault scopes, compare's 'nothing to compare'."""
import gzip
import json
import os
import uuid

import pytest

from bench import data
from bench.context import usable_cpus
from bench.results import validate_file
from faultkit import MNIST, SMALL, _records, convbench, no_survivors


def test_relative_data_dir_and_huge_warmup_give_a_valid_ok_record(tmp_path):
    """--data-dir relative to the caller's directory (the worker runs in the repo: the parent
    resolves it once). --warmup-steps past the run's steps leaves no step timed: still an ok
    record that check accepts and the report renders (median null)."""
    tag = uuid.uuid4().hex
    proc = convbench("run", "--backend", "numpy", "--data-dir", os.path.relpath(MNIST, str(tmp_path)),
                     "--results", "runs.jsonl", "--limit-train", "128", "--limit-test", "100",
                     "--batch-size", "64", "--timing-runs", "1", "--threads", "1",
                     "--warmup-steps", "10000", cwd=str(tmp_path), tag=tag)
    assert proc.returncode == 0, proc.stderr
    (record,) = _records(str(tmp_path / "runs.jsonl"))
    assert record["status"] == "ok" and record["summary"]["median_step_ms"] is None
    assert record["data"]["dir"] == os.path.abspath(MNIST)
    assert validate_file(str(tmp_path / "runs.jsonl")) == (1, [])
    assert (tmp_path / "report.html").exists() and no_survivors(tag)


def test_relative_convbench_data_is_resolved_in_the_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv(data.ENV_VAR, os.path.relpath(MNIST, str(tmp_path)))
    assert data.resolve_data_dir(download=False) == os.path.abspath(MNIST)


def test_a_gzip_bomb_stops_inflating_at_the_files_size(tmp_path):
    name = "train-labels-idx1-ubyte"
    bomb = tmp_path / (name + ".gz")
    bomb.write_bytes(gzip.compress(b"\0" * (64 * 2 ** 20), 1))  # 64 MB from ~64 KB
    with pytest.raises(data.DataError, match="inflates past the 60008 bytes .*60009 bytes read"):
        data.read_idx(str(bomb), name)


def test_a_fifo_as_an_mnist_file_is_refused_unopened(tmp_path):
    name = "t10k-labels-idx1-ubyte"
    os.mkfifo(str(tmp_path / (name + ".gz")))  # opening it would block forever
    with pytest.raises(data.DataError, match="is not a regular file.*fix:"):
        data.read_idx(str(tmp_path / (name + ".gz")), name)


def test_a_worker_dying_under_the_memory_limit_names_it(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("run", "--backend", "numpy", "--memory-limit-mb", "30", "--results", path, *SMALL)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (record,) = _records(path)
    assert record["status"] == "failed"
    assert "--memory-limit-mb 30" in record["reason"] and "raise it" in record["reason"], record["reason"]


ESC = "\x1b]0;pwned\x07\x1b[2J"


def test_control_characters_from_records_reach_the_terminal_escaped(tmp_path, baseline):
    good = _records(baseline)[0]
    broken = dict(good, backend="evil" + ESC, status="exploded")
    failed = dict(good, status="failed", reason="crashed " + ESC, summary={})
    (tmp_path / "a.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(failed) + "\n")
    check = convbench("check", "--results", str(tmp_path / "a.jsonl"))
    compare = convbench("compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert check.returncode == 1 and compare.returncode == 0, check.stdout + compare.stderr
    for out in (check.stdout, compare.stdout):
        assert "\x1b" not in out and "\x07" not in out, out
    assert "evil\\x1b]0;pwned\\x07" in check.stdout and "crashed \\x1b]0;pwned" in compare.stdout


def test_compare_with_nothing_valid_exits_3_not_1(tmp_path, baseline):
    (tmp_path / "junk.jsonl").write_text('{"schema_version": 1}\n[1, 2]\n')
    proc = convbench("compare", baseline, str(tmp_path / "junk.jsonl"))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("convbench: cannot compare: ")


def test_a_sweep_runs_each_point_once(tmp_path):
    """--threads 0 is every usable CPU: given beside that count, it is the same point; so are a
    repeated model or backend (a repeated number is an argparse error already)."""
    path = str(tmp_path / "runs.jsonl")
    proc = convbench("sweep", "--backend", "numpy,numpy", "--model", "seed_convnet,seed_convnet",
                     "--batch-size", "64", "--threads", "0,%d" % usable_cpus(), "--limit-train",
                     "128", "--limit-test", "100", "--results", path, "--no-report")
    assert proc.returncode == 0, proc.stderr
    assert "sweep of 1 job(s)" in proc.stderr and len(_records(path)) == 1, proc.stderr


@pytest.mark.parametrize("spec", ["NUMPY:kill_at_step=2", "nosuch:hang_at_step=1"])
def test_a_fault_scope_that_names_no_backend_is_refused(tmp_path, spec):
    path = tmp_path / "runs.jsonl"
    proc = convbench("run", "--results", str(path), *SMALL, inject_spec=spec)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "is not a backend" in proc.stderr and "fix:" in proc.stderr and not path.exists()
