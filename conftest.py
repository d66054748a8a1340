"""pytest setup shared by tests/ and benchmarks/: no network calls (tests/netguard.py)."""
import os
import sys

# the one place the test runs put paths on sys.path: the repo's packages (bench, backends, models)
# and the tests' helpers (tests/*.py), both without an install; benchmarks/ relies on it too
ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from netguard import deselect_downloads, no_network  # noqa: E402,F401  (an autouse fixture)


def pytest_collection_modifyitems(config, items):
    deselect_downloads(config, items)
