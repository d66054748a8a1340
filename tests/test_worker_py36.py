"""The worker side runs on CPython 3.6 too (CNTK's wheels stop at 3.7): everything a worker
imports must parse as 3.6 syntax, and, where the cntk env is built, import under its interpreter."""
import ast
import os
import subprocess

import pytest

import needs
from bench import envs
from bench.paths import REPO

#: the modules a worker imports (bench/worker.py and what it reaches), and every adapter module
#: that may run beside them on 3.6
WORKER_SIDE = ["bench/__init__.py", "bench/worker.py", "bench/harness.py", "bench/inject.py",
               "bench/data.py", "bench/memory.py", "bench/paths.py", "backends/base.py", "backends/registry.py",
               "backends/numpy_ref.py", "backends/numpy_layers.py", "backends/numpy_conv.py",
               "backends/cntk_backend.py", "backends/cntk_learners.py", "models/__init__.py",
               "models/spec.py", "models/parse.py", "models/layers.py"]
WORKER_SIDE += sorted(os.path.join("backends", "common", n)
                      for n in os.listdir(os.path.join(REPO, "backends", "common")) if n.endswith(".py"))


@pytest.mark.parametrize("path", WORKER_SIDE)
def test_worker_side_parses_as_python36(path):
    with open(os.path.join(REPO, path)) as fh:
        ast.parse(fh.read(), filename=path, feature_version=(3, 6))


def test_worker_side_imports_under_the_cntk_interpreter():
    if not envs.env_exists("cntk"):
        needs.missing("cntk", "the cntk env (CPython 3.6) is not built; fix: python -m bench.envs cntk")
    modules = [p[:-3].replace(os.sep, ".").replace(".__init__", "") for p in WORKER_SIDE
               if p != "backends/cntk_backend.py"]  # imports cntk itself: OpenMPI's library path
    proc = subprocess.run([envs.env_python("cntk"), "-c", "import %s" % ", ".join(modules)],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
