"""A backend whose environment cannot be built: an `unavailable` record naming what is missing.

On a COPY of the repo, two backends get tox environments that real tox cannot build: one needs a
package no index has, one an interpreter this machine lacks (what the cntk env meets on a machine
without CPython 3.6). `convbench run` tries to build each on first use, as it does for tf_legacy or
cntk, writes an `unavailable` record whose reason names the missing piece and the fix, still runs the
backend beside them, leaves the records already written alone, and exits 1.
"""
import json
import os

import pytest

from bench.envs import TOX_WORK_DIR, tox_env_list
from bench.paths import REPO
from repo_copy import copy_repo, run_in

MISSING_PACKAGE = "convbench-no-such-framework"
MISSING_PYTHON = "/nonexistent/bin/python3.99"

BROKEN_ENVS = """
[testenv:broken_pkg]
deps = %s==9.9

[testenv:broken_python]
basepython = %s
""" % (MISSING_PACKAGE, MISSING_PYTHON)

BROKEN_BACKENDS = """    "broken-pkg": Backend(
        name="broken-pkg", target="backends.numpy_ref:NumpyReference", framework="NumPy",
        requires=("numpy",), env="broken_pkg", install_hint="tox -e broken_pkg --notest"),
    "broken-python": Backend(
        name="broken-python", target="backends.numpy_ref:NumpyReference", framework="NumPy",
        requires=("numpy",), env="broken_python", install_hint="tox -e broken_python --notest"),
"""


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("envbuild") / "repo"
    root.mkdir()
    copy_repo(root)
    with open(str(root / "tox.ini"), "a") as f:
        f.write(BROKEN_ENVS)
    registry = root / "backends" / "registry.py"
    text = registry.read_text()
    end = text.index("\n}\n", text.index("BACKENDS = {")) + 1  # the table's closing brace
    registry.write_text(text[:end] + BROKEN_BACKENDS + text[end:])
    return root


def test_unbuildable_environments_give_unavailable_records_naming_what_is_missing(broken_repo):
    results = broken_repo / "results" / "runs.jsonl"
    results.parent.mkdir()
    earlier = '{"schema_version": 1, "run_id": "earlier", "note": "written before"}\n'
    results.write_text(earlier)

    proc = run_in(broken_repo, "-m", "bench", "run", "--backend", "broken-pkg,broken-python,numpy",
                  "--limit-train", "1280", "--limit-test", "500", "--timing-runs", "1",
                  "--results", str(results))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr

    lines = results.read_text().splitlines(True)
    assert lines[0] == earlier
    records = dict((r["backend"], r) for r in map(json.loads, lines[1:]))
    assert sorted(records) == ["broken-pkg", "broken-python", "numpy"]
    assert records["numpy"]["status"] == "ok"

    pkg, py = records["broken-pkg"], records["broken-python"]
    assert pkg["status"] == py["status"] == "unavailable"
    assert "could not build tox env 'broken_pkg'" in pkg["reason"]
    assert MISSING_PACKAGE in pkg["reason"]          # the installer's own words, not tox's summary
    assert "could not build tox env 'broken_python'" in py["reason"]
    assert MISSING_PYTHON in py["reason"]
    for record, env in ((pkg, "broken_pkg"), (py, "broken_python")):
        assert "fix: run `tox -e %s --notest`" % env in record["reason"]
        assert "\x1b[" not in record["reason"]          # tox's colour codes stripped
        assert "\n" not in record["reason"]
        # its one stderr line says the same
        said = [l for l in proc.stderr.splitlines() if l.startswith("  " + record["backend"] + " ")]
        assert len(said) == 1 and "UNAVAILABLE: could not build tox env" in said[0], proc.stderr


def test_envs_command_reads_its_arguments_as_a_command_does():
    """`python -m bench.envs --help` is help, not an environment named '--help'; an unknown name is
    one line naming the environments there are, exit 2, and nothing is built."""
    def envs(*args):
        return run_in(REPO, "-m", "bench.envs", *args, timeout=120)

    shown = envs("--help")
    assert shown.returncode == 0, shown.stderr
    assert "usage: python -m bench.envs" in shown.stdout
    listed = shown.stdout.split("environments:\n", 1)[1].split()
    assert listed == tox_env_list()

    wrong = envs("no_such_env")
    assert wrong.returncode == 2
    last = wrong.stderr.strip().splitlines()[-1]
    assert "unknown environment 'no_such_env'; fix: name one of " in last
    assert "Traceback" not in wrong.stderr
    assert not os.path.exists(os.path.join(TOX_WORK_DIR, "no_such_env"))
