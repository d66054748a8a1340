"""`convbench report` and `convbench compare` on 1000 realistic records, as a user runs them (the
CLI in a fresh process: imports, reading, schema validation, statistics, images, writing).

Realistic: the records of results/reference/runs.jsonl (11 backends, training runs of 468-1875
steps and timing-only processes of 56, a sweep) replayed as a history of sessions, each with new
ids and times and a summary computed as convbench writes it today, until there are 1000. The
report shows the newest session per backend and configuration (5 tables, 21 images).

- cold: a report into an empty directory: every image is drawn;
- regenerated: the report rewritten over the last one, as after each run: only images whose data
  changed are drawn (bench/plot_cache.py), here none;
- compare: two such histories of 1000 records each.

`pytest --benchmark-only benchmarks/bench_readers.py` times them (3 rounds); a plain `pytest`
runs each once on 10 records as a smoke test. `extra_info` holds the CPU seconds of the rounds.
"""
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import uuid

import pytest

from bench import metrics
from bench.paths import REPO

REFERENCE = os.path.join(REPO, "results", "reference", "runs.jsonl")


def history(path, n, seed_minutes=0):
    """n records replayed from the reference sessions, as convbench writes them now."""
    with open(REFERENCE) as fh:
        source = [json.loads(line) for line in fh]
    sessions = {}
    for record in source:
        sessions.setdefault(record["session_id"], []).append(record)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    out = []
    while len(out) < n:
        for records in sessions.values():
            session = uuid.uuid4().hex[:12]
            for r in records[: n - len(out)]:
                when = start + datetime.timedelta(minutes=seed_minutes + len(out))
                r = dict(r, session_id=session, run_id=uuid.uuid4().hex[:12],
                         time=when.isoformat(timespec="seconds"))
                if r["status"] == "ok":
                    r["summary"] = metrics.summarize(r)
                out.append(r)
            if len(out) == n:
                break
    with open(path, "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in out)
    return path


@pytest.fixture(scope="module")
def histories(tmp_path_factory, request):
    n = 10 if getattr(request.config.option, "benchmark_disable", False) else 1000
    d = tmp_path_factory.mktemp("history")
    return history(str(d / "a.jsonl"), n), history(str(d / "b.jsonl"), n, seed_minutes=10 ** 5)


def _convbench(*args):
    proc = subprocess.run([sys.executable, "-m", "bench"] + list(args), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(benchmark, run, setup=None, rounds=3):
    cpu0 = _children_cpu()
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    benchmark.extra_info["cpu_s_per_round"] = round((_children_cpu() - cpu0) / rounds, 2)


def test_report_cold(benchmark, histories, tmp_path):
    out = str(tmp_path / "cold")

    def empty():
        shutil.rmtree(out, ignore_errors=True)

    _timed(benchmark, lambda: _convbench("report", "--results", histories[0], "--out", out), empty)
    assert os.path.exists(os.path.join(out, "report.html"))


def test_report_regenerated(benchmark, histories, tmp_path):
    out = str(tmp_path / "warm")
    _convbench("report", "--results", histories[0], "--out", out)  # the last run's report
    _timed(benchmark, lambda: _convbench("report", "--results", histories[0], "--out", out))


def test_compare(benchmark, histories):
    _timed(benchmark, lambda: _convbench("compare", histories[0], histories[1]))
