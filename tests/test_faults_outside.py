"""The fault suite, second part: faults AROUND the worker. A full disk, a file-size limit, the
parent killed while its worker hangs, a diverging loss, results paths that cannot be written,
records that break the schema and symlinks planted where the report writes. Each adds a row to
the fault ledger (tests/conftest.py): records expected, found (in the results file, or kept in
the side file / on stdout), lost and corrupted; lost and corrupted must be 0. Every run is
tagged, and no process of it may outlive it.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from bench.paths import REPO
from faultkit import (SMALL, _env, _read, _records, _summary_line, account, convbench, no_survivors,
                      valid_lines)
from procs import tagged_processes
from record_mutations import MUTATIONS, mutant

NUMPY = ["--backend", "numpy"]
# SMALL without --no-report: runs that must also write their report
REPORTED = [a for a in SMALL if a != "--no-report"]


def _unshare_works():
    try:
        return subprocess.run(["unshare", "-rm", "true"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


UNSHARE = _unshare_works()
needs_unshare = pytest.mark.skipif(
    not UNSHARE, reason="mounting a small or read-only tmpfs needs user namespaces (unshare -rm); "
                        "fix: enable unprivileged user namespaces (sysctl "
                        "kernel.unprivileged_userns_clone=1) or run as root")


def _quiet_failure(proc, status):
    """The run ended with `status`, its last stderr line saying why, and no traceback."""
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# --- the disk --------------------------------------------------------------------------------

def test_file_size_limit_keeps_the_record_in_the_side_file(tmp_path, fault_ledger, baseline):
    path = str(tmp_path / "runs.jsonl")
    shutil.copy(baseline, path)
    before = _read(path)
    # RLIMIT_FSIZE (`ulimit -f`): the next record (~ the baseline's size) cannot be appended,
    # but fits alone in a new file
    limit = len(before) + 1024
    limited = [sys.executable, "-c", "import os, resource, sys; resource.setrlimit("
               "resource.RLIMIT_FSIZE, (%d, %d)); os.execvp(sys.argv[1], sys.argv[1:])"
               % (limit, limit)]
    tag = uuid.uuid4().hex
    proc = convbench("run", *NUMPY, "--results", path, *SMALL, prefix=limited, tag=tag)
    _quiet_failure(proc, 1)
    side = path + ".unsaved.jsonl"
    last = _summary_line(proc.stderr)
    assert "1 record(s) could not be written to %s (File too large)" % path in last, last
    assert "kept in %s" % side in last and "fix:" in last, last
    assert _read(path) == before  # the cut-short append was undone: no partial line
    account(fault_ledger, "file-size limit (ulimit -f) on the results file", path, before,
            expected_new=1, kept=valid_lines(_read(side).decode()))
    assert no_survivors(tag)


@needs_unshare
def test_full_disk_prints_the_record_and_leaves_the_file_whole(tmp_path, fault_ledger, baseline):
    mount, out = tmp_path / "full", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    before = _read(baseline)
    # a 64 KiB tmpfs of its own, filled up: the append fills the slack of the file's last page
    # (a short write), then ENOSPC; the side file next to it cannot be written either, so the
    # record is printed on stdout
    script = (
        'set -e; mount -t tmpfs -o size=64k tmpfs "$M"; cp "$B" "$M/runs.jsonl"; '
        '(head -c 1000000 /dev/zero > "$M/fill") 2>/dev/null || true; '
        'set +e; "$@" > "$O/stdout" 2> "$O/stderr"; echo $? > "$O/rc"; '
        'cp "$M/runs.jsonl" "$O/after.jsonl"; ls -A "$M" > "$O/ls"')
    tag = uuid.uuid4().hex
    env = dict(_env(tag=tag), M=str(mount), B=baseline, O=str(out), PYTHONPATH=REPO)
    subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "bench",
                    "run", *NUMPY, "--results", str(mount / "runs.jsonl"), *SMALL],
                   cwd=REPO, env=env, check=True, timeout=300)
    stderr = (out / "stderr").read_text()
    assert (out / "rc").read_text().strip() == "1" and "Traceback" not in stderr, stderr
    last = _summary_line(stderr)
    assert "(No space left on device)" in last and "kept in stdout" in last, last
    assert (out / "ls").read_text().split() == ["fill", "runs.jsonl"]  # no empty side file left
    after = str(out / "after.jsonl")
    assert _read(after) == before
    account(fault_ledger, "disk full (tmpfs, ENOSPC mid-append)", after, before, expected_new=1,
            kept=valid_lines((out / "stdout").read_text()))
    assert no_survivors(tag)


# --- the parent dies while its worker hangs ----------------------------------------------------

def _wait_for_worker(proc, tag, path=None, lines=0, timeout=120):
    """Once the tagged worker runs (and the results file has `lines` lines)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        workers = [p for p, cmd in tagged_processes(tag).items() if "bench.worker" in cmd]
        if workers and (path is None or _read(path).count(b"\n") >= lines):
            return workers[0]
        time.sleep(0.2)
    raise AssertionError("the worker never started")


def _start_hanging_run(path, backends, tag, sighup):
    """`convbench run` whose last backend's worker hangs at step 3, with SIGHUP set to `sighup` in
    it: SIG_DFL as a terminal leaves it (under a suite started with nohup it would inherit SIG_IGN,
    which convbench keeps on purpose), SIG_IGN as nohup sets it."""
    hang = backends.split(",")[-1]
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--backend", backends,
                             "--results", path, "--timeout", "120"] + SMALL, cwd=REPO,
                            env=_env("%s:hang_at_step=3" % hang, tag), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, sighup))


@pytest.mark.parametrize("sig, backends, status", [
    # SIGTERM: the first backend's record is complete when the second one's worker hangs
    (signal.SIGTERM, "numpy,numpy@base", 143),
    (signal.SIGHUP, "numpy", 129),
    (signal.SIGKILL, "numpy", -signal.SIGKILL),
], ids=["SIGTERM", "SIGHUP", "SIGKILL"])
def test_parent_signalled_while_the_worker_hangs(tmp_path, fault_ledger, baseline, sig, backends,
                                                 status):
    path = str(tmp_path / "runs.jsonl")
    shutil.copy(baseline, path)
    before = _read(path)
    tag = uuid.uuid4().hex
    proc = _start_hanging_run(path, backends, tag, signal.SIG_DFL)
    try:
        complete = len(backends.split(",")) - 1
        _wait_for_worker(proc, tag, path, lines=1 + complete)
        time.sleep(1.0)
        os.kill(proc.pid, sig)  # the parent only, as a supervisor or a closing terminal does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, err
    # the worker goes with its parent: stopped by it, or (SIGKILL) on its own within a second
    assert no_survivors(tag, within_s=5), "a worker outlived convbench"
    if sig != signal.SIGKILL:
        assert "Traceback" not in err, err
        assert _summary_line(err).startswith("convbench: interrupted by %s; the worker was "
                                             "stopped; %d complete record(s) kept"
                                             % (sig.name, complete)), err
    account(fault_ledger, "parent %s, worker hung" % sig.name, path, before, expected_new=complete)


def test_a_run_under_nohup_outlives_a_hangup(tmp_path):
    """Started with SIGHUP ignored (nohup), convbench keeps ignoring it: a closing terminal does not
    stop the run; SIGTERM still does, and no worker is left."""
    tag = uuid.uuid4().hex
    proc = _start_hanging_run(str(tmp_path / "runs.jsonl"), "numpy", tag, signal.SIG_IGN)
    try:
        _wait_for_worker(proc, tag)
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(2.0)
        assert proc.poll() is None, "SIGHUP stopped a run started under nohup"
        assert [p for p, cmd in tagged_processes(tag).items() if "bench.worker" in cmd]
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert _summary_line(err).startswith("convbench: interrupted by SIGTERM"), err
    assert no_survivors(tag, within_s=5), "a worker outlived convbench"


def test_worker_keeps_its_own_deadline_without_a_parent_watching(tmp_path):
    """The worker's deadline (--timeout + grace) holds even when no parent enforces it."""
    from backends import registry
    from backends.base import TrainConfig
    from bench import envs, inject
    from faultkit import MNIST
    from models.spec import load_spec

    config = TrainConfig(batch_size=64, limit_train=256, limit_test=100, threads=1)
    job = {"kind": "train", "backend": "numpy", "spec": load_spec("seed_convnet").to_dict(),
           "config": config.to_dict(), "data_dir": MNIST, "deadline_s": 5}
    env = envs.worker_environment(registry.get("numpy"), 1)
    env[inject.ENV_VAR] = "numpy:hang_at_step=2"
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "bench.worker"], cwd=REPO, env=env,
                          input=__import__("json").dumps(job).encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == -signal.SIGALRM, proc.stderr.decode()[-2000:]
    assert time.time() - t0 < 60


# --- the numbers -------------------------------------------------------------------------------

def test_nan_loss_is_a_failed_record_and_the_next_backend_runs(tmp_path, fault_ledger):
    path = str(tmp_path / "runs.jsonl")
    tag = uuid.uuid4().hex
    proc = convbench("run", "--backend", "numpy,torch", "--lr", "1e8", "--results", path, *SMALL,
                     tag=tag)
    _quiet_failure(proc, 1)
    account(fault_ledger, "loss becomes NaN (--lr 1e8)", path, b"", expected_new=2)
    new = _records(path)
    assert [r["backend"] for r in new] == ["numpy", "torch"]
    for r in new:
        assert r["status"] == "failed" and r["reason"].startswith("loss became "), r["reason"]
        assert " at step " in r["reason"] and "fix: lower --lr" in r["reason"], r["reason"]
    assert _summary_line(proc.stderr).startswith("convbench: 2 of 2 backend(s) did not finish ok")
    assert no_survivors(tag)


# --- where the records and the report go ---------------------------------------------------------

def _unwritable_cases(tmp_path, victim):
    """(name, command line, what the error names): each must fail before any worker starts."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("not a directory\n")
    os.mkfifo(str(tmp_path / "fifo"))
    os.symlink(victim, str(tmp_path / "link.jsonl"))
    run = ["run"] + NUMPY + SMALL
    cases = [
        ("a directory", run + ["--results", str(tmp_path / "adir")], "is a directory"),
        ("a sweep into a directory", ["sweep"] + NUMPY + SMALL + ["--results", str(tmp_path / "adir")],
         "is a directory"),
        ("under a file", run + ["--results", str(tmp_path / "afile" / "runs.jsonl")],
         "is not a directory"),
        ("a FIFO", run + ["--results", str(tmp_path / "fifo")], "is a FIFO"),
        ("a symlink", run + ["--results", str(tmp_path / "link.jsonl")], "is a symlink"),
        ("the report's own file", ["run"] + NUMPY + REPORTED + ["--results", str(tmp_path / "report.md")],
         "one of the report's own files"),
        ("a report dir that is a file", ["run"] + NUMPY + REPORTED + [
            "--results", str(tmp_path / "r.jsonl"), "--report-dir", str(tmp_path / "afile")],
         "is not a directory"),
    ]
    return cases


def test_unwritable_results_fail_before_any_worker(tmp_path, fault_ledger, baseline):
    victim = str(tmp_path / "victim.jsonl")
    shutil.copy(baseline, victim)
    before = _read(victim)
    for name, args, says in _unwritable_cases(tmp_path, victim):
        tag = uuid.uuid4().hex
        proc = convbench(*args, tag=tag, timeout=120)
        assert proc.returncode == 2, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "fix:" in lines[0], (name, proc.stderr)
        assert no_survivors(tag)
    assert sorted(os.listdir(str(tmp_path))) == ["adir", "afile", "fifo", "link.jsonl", "victim.jsonl"]
    account(fault_ledger, "unwritable --results (dir, under a file, FIFO, symlink, report's file)",
            victim, before, expected_new=0)


@needs_unshare
def test_read_only_filesystem_fails_before_any_worker(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    script = 'mount -t tmpfs -o ro tmpfs "$M" && exec "$@"'
    env = dict(_env(), M=str(ro), PYTHONPATH=REPO)
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "bench",
                           "run", *NUMPY, "--results", str(ro / "runs.jsonl"), *SMALL],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Read-only file system" in proc.stderr and "fix:" in proc.stderr, proc.stderr


def test_symlinked_report_targets_are_refused_and_nothing_foreign_deleted(tmp_path, fault_ledger,
                                                                           baseline):
    path = str(tmp_path / "runs.jsonl")
    shutil.copy(baseline, path)
    before = _read(path)
    out, victims = tmp_path / "out", tmp_path / "victims"
    out.mkdir()
    victims.mkdir()
    (victims / "precious.txt").write_text("keep me\n")
    (victims / "g0_loss.png").write_bytes(b"not the report's")  # named like the report's images
    snapshot = {n: (victims / n).read_bytes() for n in os.listdir(str(victims))}
    os.symlink(str(victims / "precious.txt"), str(out / "report.md.tmp"))  # the old temp name
    for planted, says in (("report_files", "report_files is a symlink"),
                          ("report.html", "report.html is a symlink")):
        target = victims if planted == "report_files" else victims / "precious.txt"
        os.symlink(str(target), str(out / planted))
        proc = convbench("report", "--results", path, "--out", str(out))
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, \
            proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        os.unlink(str(out / planted))
    proc = convbench("report", "--results", path, "--out", str(tmp_path / "runs.jsonl"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr, proc.stderr
    # a clean directory now, but with a file the report did not make in report_files/
    (out / "report_files").mkdir()
    (out / "report_files" / "g7_loss.png").write_bytes(b"a user's")
    for _ in range(2):  # the second report deletes what the first made, and only that
        proc = convbench("report", "--results", path, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
    assert (out / "report_files" / "g7_loss.png").read_bytes() == b"a user's"
    assert os.path.islink(str(out / "report.md.tmp"))
    assert {n: (victims / n).read_bytes() for n in os.listdir(str(victims))} == snapshot
    account(fault_ledger, "symlinks planted at the report's targets", path, before, expected_new=0)


# --- records that are valid JSON but break the schema ------------------------------------------

def test_schema_breaking_records_are_listed_skipped_and_never_crash_a_reader(tmp_path, fault_ledger,
                                                                             baseline):
    import json

    from bench.schema import record_problems

    good = _records(baseline)[0]
    mutants, twins, passing = [], [], 0
    for i, (field, value) in enumerate(MUTATIONS):
        # each under its own backend name, so the report draws and compare pairs every one
        named = dict(good, backend="m%02d" % i)
        changed = mutant(named, field, value)
        passing += not record_problems(changed)
        mutants.append(json.dumps(changed))
        twins.append(json.dumps(named))
    deep = "[" * 200000 + "]" * 200000
    path, twin_path = tmp_path / "runs.jsonl", tmp_path / "twins.jsonl"
    path.write_text("\n".join([json.dumps(good)] + mutants + [deep]) + "\n")
    twin_path.write_text("\n".join(twins) + "\n")
    bad_lines = [n for n, m in enumerate(mutants, 2) if record_problems(json.loads(m))] + [
        len(mutants) + 2]
    assert passing == 6 and len(bad_lines) == len(MUTATIONS) - 6 + 1  # every broken one is caught
    before = _read(str(path))

    proc = convbench("check", "--results", str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "%d valid record(s), %d problem(s)" % (1 + passing, len(bad_lines)) in proc.stdout
    assert "line %d: not a valid record (nested" % bad_lines[-1] in proc.stdout, proc.stdout
    proc = convbench("compare", str(twin_path), str(path), "--threshold", "1.5")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    for n in bad_lines:
        assert "line %d: skipped" % n in proc.stderr, proc.stderr
    # a run appends to the file and writes its report, which renders every record that passed
    tag = uuid.uuid4().hex
    proc = convbench("run", *NUMPY, "--results", str(path), *REPORTED, tag=tag)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "report.html").exists() and no_survivors(tag)
    account(fault_ledger, "schema-breaking records (%d of %d fields, one 200000-deep line)"
            % (len(bad_lines) - 1, len(MUTATIONS)), str(path), before, expected_new=1,
            bad_lines=bad_lines)
