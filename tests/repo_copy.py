"""A copy of the repo for tests that must change it (a new registry entry, a tox env): the real
tree is never touched. Commands run in the copy with its own packages and the real MNIST files."""
import os
import shutil
import subprocess
import sys

from bench import data
from bench.paths import REPO

PARTS = ("backends", "bench", "models", "tests", "pyproject.toml", "tox.ini")


def copy_repo(root):
    """Copy the code (not .tox, results or caches) into the existing directory `root`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in PARTS:
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, str(root / name), ignore=ignore)
        else:
            shutil.copy(src, str(root / name))
    return root


def copy_env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the copy's packages, not the real tree's
    env["CONVBENCH_DATA"] = data.resolve_data_dir(download=False)  # ../shared is not beside the copy
    return env


def run_in(root, *args, timeout=600):
    """`python ARGS` in the copy, with the interpreter running the tests."""
    return subprocess.run([sys.executable] + list(args), cwd=str(root), env=copy_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout)
