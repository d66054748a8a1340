"""pytest setup shared by tests/ and benchmarks/: no network calls (tests/netguard.py)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))

from netguard import deselect_downloads, no_network  # noqa: E402,F401  (an autouse fixture)


def pytest_collection_modifyitems(config, items):
    deselect_downloads(config, items)
