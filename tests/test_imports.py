"""The import structure stays as documented: the harness imports no framework, the repo's own
packages import each other one way only (no cycles, lazy imports included), and the CLI starts."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from bench.paths import REPO

def _packages(*roots):
    """Every package (a folder with __init__.py) under the given top-level packages."""
    found = []
    for root in roots:
        for folder, _, files in os.walk(os.path.join(REPO, root)):
            if "__init__.py" in files:
                found.append(os.path.relpath(folder, REPO).replace(os.sep, "."))
    return tuple(sorted(found))


PACKAGES = _packages("bench", "backends", "models")
FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "flax", "optax", "cntk", "keras")
# the modules the parent process (CLI, report, executors) imports: none may pull in a framework
BENCH_PACKAGES = [p for p in PACKAGES if p.split(".")[0] == "bench"]
LIGHT = sorted(BENCH_PACKAGES
               + [package + "." + os.path.basename(p)[:-3] for package in BENCH_PACKAGES
                  for p in glob.glob(os.path.join(REPO, *package.split("."), "*.py"))
                  if os.path.basename(p) not in ("__init__.py", "__main__.py")]
               + ["backends.base", "backends.registry", "models.spec"])


def _python(*args, timeout=300):
    """This interpreter in a fresh process, importing the repo's packages from this checkout."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable] + list(args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_alone_without_a_framework(module):
    code = ("import importlib, sys\n"
            "importlib.import_module(%r)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))\n" % (module, FRAMEWORKS))
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[]", "%s imports a framework: %s" % (module, proc.stdout)


# --- the static import graph of bench/, backends/ and models/ ---------------------------------

def _repo_modules():
    """{dotted name: file} of every module of the repo's own packages."""
    found = {}
    for package in PACKAGES:
        for path in glob.glob(os.path.join(REPO, *package.split("."), "*.py")):
            name = os.path.basename(path)[:-3]
            found[package if name == "__init__" else package + "." + name] = path
    return found


def _imported(node, module, is_package):
    """The dotted names one import statement asks for (top-level or inside a function)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, `level` steps up
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    return [base] + [base + "." + alias.name for alias in node.names]


def import_graph():
    """{module: set of repo modules it imports}, from the source (no module is run)."""
    modules = _repo_modules()
    graph = {}
    for module, path in modules.items():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _imported(node, module, path.endswith("__init__.py")):
                    # the most specific repo module the name denotes (`from bench import x` may
                    # name the module bench.x or a name defined in bench/__init__.py)
                    while name and name not in modules:
                        name = name.rpartition(".")[0]
                    if name and name != module:
                        targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None."""
    state = {}  # module -> "open" while on the current path, "done" once fully explored
    path = []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_repo_packages_import_each_other_without_cycles():
    graph = import_graph()
    # the graph is real: a top-level and a function-level import of known modules are in it
    assert "bench.schema" in graph["bench.results"] and "bench.paths" in graph["bench.schema"]
    assert "bench.executors.ray_driver" in graph["bench.executors"]
    assert "bench.commands" in graph["bench.cli"] and "bench.plan" in graph["bench.commands.run"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: %s" % " -> ".join(cycle)


def test_python_m_bench_help_works():
    proc = _python("-m", "bench", "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage:"), proc.stdout
