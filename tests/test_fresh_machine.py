"""What a stranger's machine lacks, and how the suite says so: pieces pip cannot install skip with the
fix (or fail where required), CPython 3.6 and OpenMPI are looked for rather than assumed, no
machine's path is written in the repo, the thread default follows the CPU affinity, and the worker
caps its own memory. Real subprocesses throughout."""
import json
import os
import re
import stat
import subprocess
import sys
import textwrap

import pytest

from bench import envs
from bench.paths import REPO
from repo_copy import copy_env, copy_repo, run_in

SMALL = ["--limit-train", "256", "--limit-test", "200", "--batch-size", "64", "--warmup-steps", "1",
         "--timing-runs", "1",
         "--no-report"]


def _pytest_outcome(tmp_path, body, **environ):
    """Run a one-test file with `needs` under the given environment; its pytest outcome line."""
    (tmp_path / "test_piece.py").write_text(textwrap.dedent(body))
    env = dict(os.environ)
    for var in ("CI", "CONVBENCH_REQUIRE", "CONVBENCH_REQUIRE_BACKENDS"):
        env.pop(var, None)
    env.update(environ)
    env["PYTHONPATH"] = os.path.join(REPO, "tests")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_piece.py")],
                          cwd=str(tmp_path), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    return proc.stdout


MISSING_BROWSER = """
    import needs

    def test_needs_a_browser():
        needs.missing("chromium", "no browser; fix: apt-get install chromium")
"""


@pytest.mark.parametrize("environ, outcome", [
    ({}, "1 skipped"),
    ({"CI": "true"}, "1 failed"),
    ({"CI": "true", "CONVBENCH_REQUIRE": "none"}, "1 skipped"),
    ({"CONVBENCH_REQUIRE": "all"}, "1 failed"),
    ({"CONVBENCH_REQUIRE": "ray,chromium"}, "1 failed"),
    ({"CONVBENCH_REQUIRE": "ray"}, "1 skipped"),
    ({"CONVBENCH_REQUIRE_BACKENDS": "all"}, "1 failed"),  # the older name still works
], ids=["plain", "ci", "ci-none", "all", "listed", "other-listed", "old-name"])
def test_a_missing_piece_skips_with_its_fix_unless_required(tmp_path, environ, outcome):
    out = _pytest_outcome(tmp_path, MISSING_BROWSER, **environ)
    assert outcome in out, out
    assert "fix: apt-get install chromium" in out, out
    if outcome == "1 skipped":
        assert "CONVBENCH_REQUIRE=chromium to make this a failure" in out, out


def test_the_test_summary_names_the_backends_whose_conformance_ran_and_the_skipped_ones(tmp_path):
    """A plain pytest run in a copy of the repo with no framework env built: numpy's conformance
    runs, the env backends are listed as skipped with the command that builds them."""
    root = tmp_path / "repo"
    root.mkdir()
    copy_repo(root)
    env = copy_env()
    for var in ("CI", "CONVBENCH_REQUIRE", "CONVBENCH_REQUIRE_BACKENDS"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_conformance.py", "--backends", "numpy,jax,cntk",
                           "-k", "mlp-float32-momentum or learns"],
                          cwd=str(root), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=1200)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert "conformance ran for 1 of 3 backend(s): numpy; skipped 2: cntk, jax" in out, out[-3000:]
    assert re.search(r"jax skipped: tox env 'jax' not built; fix: `python -m bench.envs jax`", out)
    assert re.search(r"cntk skipped: .*fix: ", out), out[-3000:]


def _fake_tool(directory, name, script):
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_python36_shim_that_does_not_run_is_not_taken_for_an_interpreter(tmp_path, monkeypatch):
    # what pyenv's shim does when 3.6 is installed but not activated: exit 127
    _fake_tool(tmp_path, "python3.6", "echo 'pyenv: python3.6: command not found' >&2\nexit 127\n")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/usr/bin:/bin")
    monkeypatch.setenv(envs.python_env_var("3.6"), sys.executable)  # a working python, but not 3.6
    assert not envs._runs_as(str(tmp_path / "python3.6"), "3.6")
    assert not envs._runs_as(sys.executable, "3.6")
    assert envs._runs_as(sys.executable, "%d.%d" % sys.version_info[:2])
    found = envs.find_python("3.6")
    assert found is None or envs._runs_as(found, "3.6")


def test_without_cpython36_cntk_is_unavailable_saying_how_to_get_one(tmp_path):
    """A copy of the repo (no .tox) on a PATH with no usable 3.6 and no pyenv: the record says which
    interpreter is missing and how to get one; numpy beside it trains; the earlier line stays."""
    root = tmp_path / "repo"
    root.mkdir()
    copy_repo(root)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "python3.6", "exit 127\n")
    results = tmp_path / "runs.jsonl"
    earlier = '{"note": "written before"}\n'
    results.write_text(earlier)
    env = copy_env()
    env["PATH"] = str(bindir) + os.pathsep + "/usr/bin:/bin"
    env.pop(envs.python_env_var("3.6"), None)
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--backend", "cntk,numpy",
                           "--results", str(results)] + SMALL, cwd=str(root), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr
    lines = results.read_text().splitlines(True)
    assert lines[0] == earlier
    records = dict((r["backend"], r) for r in map(json.loads, lines[1:]))
    assert records["numpy"]["status"] == "ok"
    cntk = records["cntk"]
    assert cntk["status"] == "unavailable"
    assert "needs CPython 3.6, which was not found" in cntk["reason"]
    assert "fix: `pyenv install 3.6`" in cntk["reason"] and "CONVBENCH_PYTHON36" in cntk["reason"]
    assert not (root / ".tox" / "cntk").exists()  # nothing was built that could not run
    assert "Traceback" not in proc.stderr


def test_without_openmpi_cntk_is_unavailable_naming_the_apt_command(tmp_path):
    """The dynamic linker knows no OpenMPI (an ldconfig that lists nothing, as on a machine without
    libopenmpi3): one unavailable record naming the apt command, before any env is built."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "ldconfig", "echo '0 libs found in cache'\n")
    results = tmp_path / "runs.jsonl"
    env = dict(os.environ)
    env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--backend", "cntk",
                           "--results", str(results)] + SMALL, cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr
    (record,) = map(json.loads, results.read_text().splitlines())
    assert record["status"] == "unavailable"
    assert record["reason"].endswith("fix: apt-get install libopenmpi3"), record["reason"]
    said = [l for l in proc.stderr.splitlines() if "UNAVAILABLE" in l]
    assert len(said) == 1 and "apt-get install libopenmpi3" in said[0], proc.stderr


MACHINE_PATH = re.compile(r"/root/|/home/[^/\s]+/|\.pyenv/versions|/Users/")


def test_no_machine_paths_in_the_repo():
    files = ["tox.ini", "pyproject.toml"]
    for top in (".ci", "bench", "backends", "models"):
        for dirpath, _, names in os.walk(os.path.join(REPO, top)):
            files += [os.path.relpath(os.path.join(dirpath, n), REPO) for n in names
                      if not n.endswith((".pyc",))]
    found = []
    for rel in files:
        with open(os.path.join(REPO, rel), encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if MACHINE_PATH.search(line):
                    found.append("%s:%d: %s" % (rel, number, line.strip()))
    assert not found, "\n".join(found)


def test_the_thread_default_follows_the_cpu_affinity_and_the_record_says_so(tmp_path):
    """Pinned to one CPU (as taskset or a batch scheduler does), the default budget is 1 thread and
    the record names the CPU the worker was allowed."""
    cpu = max(os.sched_getaffinity(0))
    results = tmp_path / "runs.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--backend", "numpy",
                           "--results", str(results)] + SMALL, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=600, preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert proc.returncode == 0, proc.stderr
    (record,) = map(json.loads, results.read_text().splitlines())
    assert record["threads"] == 1 and record["config"]["threads"] == 1
    assert record["machine"]["usable_cpus"] == 1
    assert record["environment"]["cpu_affinity"]["cpus"] == [cpu]
    assert record["environment"]["cpu_affinity"]["pinned"] == (os.cpu_count() > 1)


def test_the_worker_sets_its_own_memory_limit(tmp_path):
    """--memory-limit-mb reaches the worker as a variable it applies to itself first thing (no
    preexec_fn in a parent with threads): an allocation past the limit fails the job, saying so."""
    from bench.inject import ENV_VAR

    results = tmp_path / "runs.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--backend", "numpy",
                           "--memory-limit-mb", "1500", "--results", str(results)] + SMALL,
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600,
                          env=dict(os.environ, **{ENV_VAR: "numpy:alloc_mb_at_step=2:2000"}))
    assert proc.returncode == 1, proc.stderr
    (record,) = map(json.loads, results.read_text().splitlines())
    assert record["status"] == "failed"
    assert "memory limit of 1500 MB" in record["reason"], record["reason"]
