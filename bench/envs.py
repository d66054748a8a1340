"""Where each backend's worker runs: the base interpreter or a tox environment built on first use.

Frameworks whose versions clash (TF 2.15 needs numpy < 2, CNTK needs CPython 3.6) live in their own
tox environments (tox.ini). The parent never imports a framework: it only finds (or creates) the
interpreter and the environment variables the worker needs.
"""
import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec

from bench.paths import REPO

TOX_WORK_DIR = os.path.join(REPO, ".tox")


class EnvError(RuntimeError):
    """The backend's environment is missing and cannot be built here (the message names the fix)."""


def env_python(env):
    """Path of the interpreter for a backend env ('base' is the one running convbench)."""
    if env == "base":
        return sys.executable
    return os.path.join(TOX_WORK_DIR, env, "bin", "python")


def env_exists(env):
    return env == "base" or os.path.exists(env_python(env))


def missing_requirements(backend):
    """Names of the backend's required modules missing from the base interpreter (no import)."""
    if backend.env != "base":
        return []
    return [m for m in backend.requires if find_spec(m) is None]


def availability(backend):
    """(available_now, reason) without importing anything heavy."""
    if backend.env == "base":
        missing = missing_requirements(backend)
        if missing:
            return False, "%s not installed; fix: %s" % (", ".join(missing), backend.install_hint)
        return True, "installed"
    lacking = system_problem(backend.env)
    if lacking:
        return False, lacking
    if env_exists(backend.env):
        return True, "tox env %r ready" % backend.env
    return True, "tox env %r is built on first use (tox -e %s)" % (backend.env, backend.env)


def system_problem(env):
    """What the machine lacks for `env` that neither pip nor tox can install (an interpreter, a
    system library), as a one-line reason naming the fix; None when nothing is missing."""
    version = ENV_PYTHONS.get(env)
    if version and not env_exists(env) and find_python(version) is None:
        var = python_env_var(version)
        return ("tox env %r needs CPython %s, which was not found (on PATH, through pyenv or uv); "
                "fix: `pyenv install %s` (or your system's python%s package), or set %s to a "
                "CPython %s interpreter" % (env, version, version, version, var, version))
    if env == "cntk":
        return cntk_mpi_problem()
    return None


def tox_command():
    """tox from the base environment (a dependency of convbench itself)."""
    return _tool("tox")


def _tool(name):
    """A console script installed beside this interpreter, else on PATH, else None."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(here):
        return [here]
    found = shutil.which(name)
    if found:
        return [found]
    if find_spec(name) is not None:
        return [sys.executable, "-m", name]
    return None


#: tox envs that need an interpreter other than the one running convbench (tox.ini's basepython
#: reads it from the variable python_env_var names, so no machine's path is written in the repo)
ENV_PYTHONS = {"cntk": "3.6"}


def python_env_var(version):
    return "CONVBENCH_PYTHON" + version.replace(".", "")


def _runs_as(path, version):
    """True when `path` is a working CPython `version` (a pyenv shim that exits 127 is not)."""
    try:
        out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and out.stdout.strip() == version


def _candidates(version):
    """Where a CPython `version` may be, in order: the user's variable, PATH, pyenv, uv."""
    given = os.environ.get(python_env_var(version))
    if given:
        yield given
    on_path = shutil.which("python" + version)
    if on_path:
        yield on_path
    queries = []
    if shutil.which("pyenv"):
        queries.append((["pyenv", "prefix", version], os.path.join("bin", "python" + version)))
    uv = _tool("uv")
    if uv:
        queries.append((uv + ["python", "find", "--no-project", version], ""))
    for command, suffix in queries:
        try:
            out = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 universal_newlines=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.stdout.splitlines() if out.returncode == 0 else []:
            if line.strip():
                yield os.path.join(line.strip(), suffix) if suffix else line.strip()


def find_python(version):
    """Path of a working CPython `version` on this machine, or None."""
    for path in _candidates(version):
        if _runs_as(path, version):
            return path
    return None


def tox_environment(env):
    """os.environ plus the interpreter variable tox.ini reads for `env` (when it needs one)."""
    environ = dict(os.environ)
    version = ENV_PYTHONS.get(env)
    if version:
        found = find_python(version)
        if found:
            environ[python_env_var(version)] = found
    return environ


def ensure_env(backend, log=print):
    """Return the interpreter for `backend`, creating its tox env on first use."""
    env = backend.env
    if env == "base":
        return sys.executable
    lacking = system_problem(env)  # before a build that cannot succeed (or run) here
    if lacking:
        raise EnvError("backend %r: %s" % (backend.name, lacking))
    if not env_exists(env):
        build_env(env, log=log, who="backend %r" % backend.name)
    if env == "cntk":
        ensure_cntk_mpi_shim()
    return env_python(env)


def build_env(env, log=print, who=None):
    """Create tox env `env` (tox -e ENV --notest); EnvError naming the cause when it fails."""
    tox = tox_command()
    if tox is None:
        raise EnvError("tox env %r is needed and tox is not installed; fix: pip install -e . "
                       "(tox and tox-uv are convbench dependencies)" % env)
    log("convbench: creating the %r environment%s (first use; takes a few minutes)..."
        % (env, " for " + who if who else ""))
    proc = subprocess.run(tox + ["-e", env, "--notest", "-c", os.path.join(REPO, "tox.ini")],
                          cwd=REPO, env=tox_environment(env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    if proc.returncode != 0 or not env_exists(env):
        raise EnvError("could not build tox env %r%s: %s; fix: run `tox -e %s --notest` and read "
                       "its output" % (env, " for " + who if who else "", build_failure(proc.stdout),
                                       env))
    log("convbench: environment %r ready" % env)
    return env_python(env)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: tox's own summary lines, which say that it failed but not why
_TOX_SUMMARY = re.compile(r"^\S+: (FAIL code|exit \d+)|^evaluation failed|^\S+: install_deps>")


def build_failure(output, most=3):
    """What tox printed about WHY an environment could not be built: the installer's or
    interpreter lookup's error lines (uv's "error:"/"cause:", pip's "ERROR:", a RuntimeError), not
    tox's own summary; else its last lines. Colour codes removed, one line."""
    lines = [_ANSI.sub("", l).strip() for l in output.splitlines()]
    lines = [l for l in lines if l]
    why = [l for l in lines if not _TOX_SUMMARY.search(l)
           and re.search(r"error|cause:|not found|no matching|unsatisfiable", l, re.I)]
    picked = why[:most] or lines[-most:]
    return " | ".join(l if len(l) <= 300 else l[:297] + "..." for l in picked) or "no output"


#: CNTK 2.7 links OpenMPI 1.10 sonames; OpenMPI 4 (Debian's libopenmpi3) serves them via symlinks
CNTK_MPI_SHIM = os.path.join(TOX_WORK_DIR, "cntk-mpi-shim")  # registry: worker LD_LIBRARY_PATH
CNTK_MPI_LINKS = (("libmpi.so.12", "libmpi.so.40"), ("libmpi_cxx.so.1", "libmpi_cxx.so.40"))
CNTK_MPI_FIX = "apt-get install libopenmpi3"


def _system_libraries():
    """{soname: path} of the shared libraries the dynamic linker knows (ldconfig's cache)."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        out = subprocess.run([ldconfig, "-p"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in out.splitlines():
        name, arrow, path = line.strip().partition(" => ")
        if arrow:
            found.setdefault(name.split(" (")[0], path.strip())
    return found


def _cntk_mpi_targets():
    libraries = _system_libraries()
    return [(link, libraries.get(soname), soname) for link, soname in CNTK_MPI_LINKS]


def cntk_mpi_problem():
    missing = [soname for _, path, soname in _cntk_mpi_targets() if not path]
    if missing:
        return ("CNTK needs OpenMPI 4 (%s not found by the dynamic linker); fix: %s"
                % (", ".join(missing), CNTK_MPI_FIX))
    return None


def ensure_cntk_mpi_shim():
    """Create .tox/cntk-mpi-shim (soname symlinks) when missing; EnvError when OpenMPI 4 is absent."""
    problem = cntk_mpi_problem()
    if problem:
        raise EnvError("backend 'cntk': " + problem)
    os.makedirs(CNTK_MPI_SHIM, exist_ok=True)
    for link, target, _ in _cntk_mpi_targets():
        path = os.path.join(CNTK_MPI_SHIM, link)
        if os.path.islink(path) and os.readlink(path) == target:
            continue
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(target, path)
    return CNTK_MPI_SHIM


def process_environment(threads):
    """Environment variables of a child process that runs convbench code with a thread budget
    (a backend's worker, the matmul peak probe).

    The thread budget is set before any library loads (BLAS pools read it at import) and the repo
    is put on the path (tox envs install only the framework, not convbench).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[var] = str(threads)
    return env


def worker_environment(backend, threads):
    """Environment variables of the backend's worker process: process_environment plus the
    backend-specific variables from the registry."""
    env = process_environment(threads)
    for key, value in backend.worker_env:
        value = value.replace("{repo}", REPO)
        if key.endswith("PATH") and env.get(key):
            value = value + os.pathsep + env[key]
        env[key] = value
    return env


def tox_env_list():
    """The framework environments tox.ini lists (its env_list)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(REPO, "tox.ini"))
    return [e.strip() for e in parser.get("tox", "env_list").replace("\n", ",").split(",") if e.strip()]


def main(argv=None):
    """`python -m bench.envs [ENV ...]`: build the named framework environments (default: every one
    in tox.ini), each the way `convbench run` builds it on first use; exit 1 when one cannot be,
    2 when a name is not an environment of tox.ini."""
    import argparse

    known = tox_env_list()
    # the names go in a raw epilog, one per line: argparse re-wraps help text at any width
    parser = argparse.ArgumentParser(
        prog="python -m bench.envs", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the framework environments of tox.ini the way `convbench run` builds "
                    "them on first use.",
        epilog="environments:\n" + "\n".join("  " + name for name in known))
    parser.add_argument("envs", nargs="*", metavar="ENV",
                        help="environments to build (default: every one listed below)")
    names = parser.parse_args(argv).envs or known
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error("unknown environment %s; fix: name one of %s"
                     % (", ".join(map(repr, unknown)), ", ".join(known)))
    failed = 0
    for env in names:
        try:
            lacking = system_problem(env)
            if lacking:
                raise EnvError(lacking)
            python = env_python(env) if env_exists(env) else build_env(env)
            if env == "cntk":
                ensure_cntk_mpi_shim()
            print("%s: ready (%s)" % (env, python))
        except EnvError as exc:
            failed += 1
            print("%s: unavailable: %s" % (env, exc), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
