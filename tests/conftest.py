import os
import sys

# the tests import their helpers (conformance.py) and the repo's packages without installing
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def pytest_addoption(parser):
    parser.addoption("--backends", default="",
                     help="comma-separated backends the conformance suite runs (default: all registered)")


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        from backends import registry

        chosen = metafunc.config.getoption("--backends")
        names = [n.strip() for n in chosen.split(",") if n.strip()] or registry.names()
        for n in names:
            registry.get(n)  # an unknown name is an error, not an empty run
        metafunc.parametrize("backend_name", names)
