"""What the fault suite's files share (tests/test_faults.py, tests/test_faults_outside.py): running
convbench as a user does, reading what it wrote, and the ledger's accounting of records."""
import json
import os
import subprocess
import sys
import time

from bench import data, inject
from bench.paths import REPO
from bench.results import validate_file
from bench.schema import record_problems
from procs import TAG_VAR, tagged_processes

SMALL = ["--limit-train", "1024", "--limit-test", "200", "--batch-size", "64", "--timing-runs", "1",
         "--warmup-steps", "1", "--threads", "1", "--no-report"]
MNIST = data.resolve_data_dir(download=False)  # the real files, found before any test changes env


def _env(inject_spec=None, tag=None):
    env = dict(os.environ)
    env.pop(inject.ENV_VAR, None)
    if inject_spec:
        env[inject.ENV_VAR] = inject_spec
    if tag:
        env[TAG_VAR] = tag  # inherited by the workers: finds them (and orphans)
    return env


def convbench(*args, inject_spec=None, tag=None, timeout=300, cwd=REPO, prefix=()):
    """`python -m bench ARGS` in a fresh process; prefix: a command that wraps it (unshare, sh)."""
    env = _env(inject_spec, tag)
    env["PYTHONPATH"] = REPO  # a cwd outside the repo still finds bench/
    return subprocess.run(list(prefix) + [sys.executable, "-m", "bench"] + list(args), cwd=cwd,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def _read(path):
    if not os.path.exists(path):
        return b""
    with open(path, "rb") as fh:
        return fh.read()


def _records(path):
    return [json.loads(line) for line in _read(path).decode().splitlines() if line.strip()]


def valid_lines(text):
    """How many lines of `text` (a side file's, or a run's stdout) are valid records."""
    found = 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found += isinstance(record, dict) and not record_problems(record)
    return found


def account(ledger, fault, path, before, expected_new, bad_lines=(), kept=0):
    """Put the observed figures in the ledger, then fail on any lost or corrupted record.

    before: the file's bytes before the fault (they must stay its prefix, byte for byte);
    expected_new: records the run must have added (to the file, or kept beside it); bad_lines:
    line numbers the TEST damaged; kept: valid records found in the side file or on stdout
    (bench/results.keep_record): found, not lost."""
    after = _read(path)
    corrupted = 0 if after.startswith(before) else 1
    problems = []
    valid = 0
    if os.path.exists(path) and os.path.isfile(path):
        valid, problems = validate_file(path)
    own = [p for p in problems if not any(p.startswith("line %d:" % n) for n in bad_lines)]
    if own or (after and not after.endswith(b"\n")):
        corrupted = 1
    expected = len([l for l in before.splitlines() if l.strip()]) - len(bad_lines) + expected_new
    expected = max(expected, 0)
    row = ledger.add(fault, expected, valid + kept, corrupted)
    assert row[3] == 0 and row[4] == 0, "%s: lost %d, corrupted %d: %s" % (fault, row[3], row[4], own)
    assert valid + kept == expected, "%s: %d records found, %d expected" % (fault, valid + kept, expected)


def _summary_line(stderr):
    return [l for l in stderr.splitlines() if l.strip()][-1]


def no_survivors(tag, within_s=0.0):
    """True when no process of the tagged run is alive (waiting up to within_s for them to go)."""
    deadline = time.time() + within_s
    while tagged_processes(tag):
        if time.time() >= deadline:
            return False
        time.sleep(0.2)
    return True


def baseline_file(directory):
    """One healthy numpy record in directory/runs.jsonl: the file the fault tests damage, extend
    or render (made once per test session: tests/conftest.py)."""
    path = str(directory / "runs.jsonl")
    proc = convbench("run", "--backend", "numpy", "--results", path, *SMALL)
    assert proc.returncode == 0, proc.stderr
    return path

