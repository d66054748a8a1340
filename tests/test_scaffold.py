"""`convbench new-backend NAME`, as a new user runs it, on a COPY of the repo (the real tree is
never touched): the skeleton and its registry entry make the conformance suite run on the new
backend at once, with no test edits, and fail clearly on the first method still to write."""
import os

import pytest

from bench import scaffold
from repo_copy import copy_repo, run_in


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaffold") / "repo"
    root.mkdir()
    return copy_repo(root)


def test_class_name():
    assert scaffold.class_name("foo") == "FooAdapter"
    assert scaffold.class_name("my_fw2") == "MyFw2Adapter"


def test_new_backend_writes_skeleton_and_registry_entry(repo_copy):
    before = (repo_copy / "backends" / "registry.py").read_text()
    proc = run_in(repo_copy, "-m", "bench", "new-backend", "foo")
    assert proc.returncode == 0, proc.stderr
    module = repo_copy / "backends" / "foo_backend.py"
    assert module.exists() and str(module) in proc.stdout
    assert "tests/test_conformance.py --backends foo" in proc.stdout
    text = module.read_text()
    for method, section in (("build", "build"), ("read_param", "read_param-write_param-reset_optimizer"),
                            ("write_param", "read_param-write_param-reset_optimizer"),
                            ("reset_optimizer", "read_param-write_param-reset_optimizer"),
                            ("train_step", "train_step"), ("predict", "predict"),
                            ("environment", "environment")):
        assert "def %s(" % method in text and "docs/adding-a-backend.md#%s" % section in text
    for kind in ("conv2d", "maxpool2d", "avgpool2d", "dense", "batchnorm", "flatten", "dropout",
                 "activation"):
        assert '"%s":' % kind in text  # every layer kind has its LAYERS entry to fill in
    after = (repo_copy / "backends" / "registry.py").read_text()
    assert after.startswith(before[:before.index("BACKENDS = {")])  # nothing else moved
    check = run_in(repo_copy, "-c", "from backends import registry; b = registry.get('foo'); "
                                    "print(b.target, b.env, registry.load_adapter_class(b).__name__)")
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["backends.foo_backend:FooAdapter", "base", "FooAdapter"]


@pytest.mark.parametrize("name, expect", [
    ("foo", "backend 'foo' already exists"),      # written by the test above
    ("torch", "backend 'torch' already exists"),
    ("Foo-Bar", "invalid backend name 'Foo-Bar'"),
    ("9lives", "invalid backend name '9lives'"),
])
def test_refuses_taken_or_invalid_names(repo_copy, name, expect):
    registry_before = (repo_copy / "backends" / "registry.py").read_text()
    listing_before = sorted(os.listdir(str(repo_copy / "backends")))
    proc = run_in(repo_copy, "-m", "bench", "new-backend", name)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and expect in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert (repo_copy / "backends" / "registry.py").read_text() == registry_before
    assert sorted(os.listdir(str(repo_copy / "backends"))) == listing_before


@pytest.mark.slow
def test_conformance_suite_runs_on_the_skeleton_and_fails_clearly(repo_copy):
    if not (repo_copy / "backends" / "foo_backend.py").exists():
        assert run_in(repo_copy, "-m", "bench", "new-backend", "foo").returncode == 0
    proc = run_in(repo_copy, "-m", "pytest", "tests/test_conformance.py", "--backends", "foo",
                  "-x", "-q", "-p", "no:cacheprovider", "-k", "seed_convnet-float32", timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # tests ran and failed (not a collection error, not a skip)
    assert "1 failed" in out, out
    assert "NotImplementedError: FooAdapter.build() is not written yet: see " \
           "docs/adding-a-backend.md#build" in out, out
