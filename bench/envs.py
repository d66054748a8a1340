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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    if env_exists(backend.env):
        return True, "tox env %r ready" % backend.env
    return True, "tox env %r is built on first use (tox -e %s)" % (backend.env, backend.env)


def tox_command():
    """tox from the base environment (installed with convbench's test extra)."""
    here = os.path.join(os.path.dirname(sys.executable), "tox")
    if os.path.exists(here):
        return [here]
    found = shutil.which("tox")
    if found:
        return [found]
    if find_spec("tox") is not None:
        return [sys.executable, "-m", "tox"]
    return None


def ensure_env(backend, log=print):
    """Return the interpreter for `backend`, creating its tox env on first use."""
    env = backend.env
    if env == "base":
        return sys.executable
    if not env_exists(env):
        tox = tox_command()
        if tox is None:
            raise EnvError("backend %r needs tox env %r and tox is not installed; fix: pip install "
                           "'convbench[test]' (tox + tox-uv)" % (backend.name, env))
        log("convbench: creating the %r environment for backend %r (first use; takes a few "
            "minutes)..." % (env, backend.name))
        proc = subprocess.run(tox + ["-e", env, "--notest", "-c", os.path.join(REPO, "tox.ini")],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        if proc.returncode != 0 or not env_exists(env):
            raise EnvError("could not build tox env %r for backend %r: %s; fix: run `tox -e %s "
                           "--notest` and read its output" % (env, backend.name,
                                                              build_failure(proc.stdout), env))
        log("convbench: environment %r ready" % env)
    if env == "cntk":
        ensure_cntk_mpi_shim()
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
CNTK_MPI_LINKS = (("libmpi.so.12", "/usr/lib/x86_64-linux-gnu/libmpi.so.40"),
                  ("libmpi_cxx.so.1", "/usr/lib/x86_64-linux-gnu/libmpi_cxx.so.40"))


def ensure_cntk_mpi_shim():
    """Create .tox/cntk-mpi-shim (soname symlinks) when missing; EnvError when OpenMPI 4 is absent."""
    missing = [target for _, target in CNTK_MPI_LINKS if not os.path.exists(target)]
    if missing:
        raise EnvError("backend 'cntk' needs OpenMPI 4 (%s missing); fix: apt-get install "
                       "libopenmpi3" % ", ".join(missing))
    os.makedirs(CNTK_MPI_SHIM, exist_ok=True)
    for link, target in CNTK_MPI_LINKS:
        path = os.path.join(CNTK_MPI_SHIM, link)
        if os.path.islink(path) and os.readlink(path) == target:
            continue
        if os.path.lexists(path):
            os.remove(path)
        os.symlink(target, path)
    return CNTK_MPI_SHIM


def worker_environment(backend, threads):
    """Environment variables of the backend's worker process.

    The thread budget is set before any library loads (BLAS pools read it at import), the repo is
    put on the path (tox envs install only the framework, not convbench), and backend-specific
    variables from the registry are applied.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[var] = str(threads)
    for key, value in backend.worker_env:
        value = value.replace("{repo}", REPO)
        if key.endswith("PATH") and env.get(key):
            value = value + os.pathsep + env[key]
        env[key] = value
    return env
