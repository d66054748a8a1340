"""The context every record carries: machine, git commit, measured matmul peak."""
import json
import os
import platform
import shutil
import subprocess
import sys

from bench.paths import REPO


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "amx", "sse4")))
    except OSError:
        pass
    return []


def _ram_gb():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2.0 ** 30
    except (ValueError, OSError):
        return None


def gpus():
    """GPU model, memory and driver from nvidia-smi, or [] where there is none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(("name", "memory", "driver"), (p.strip() for p in line.split(","))))
            for line in out.strip().splitlines() if line.strip()]


def usable_cpus():
    """How many CPUs this process may run on (its affinity mask, which a container, taskset or a
    batch scheduler may narrow), not how many the machine has: the default thread budget."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity masks on this OS
        return os.cpu_count() or 1


def machine():
    return {"hostname": platform.node(), "cpu_model": _cpu_model(), "cpu_flags": _cpu_flags(),
            "cores": os.cpu_count(), "usable_cpus": usable_cpus(), "ram_gb": _ram_gb(),
            "os": platform.platform(), "arch": platform.machine(), "gpus": gpus()}


def git_commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, universal_newlines=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               universal_newlines=True).stdout.strip()
        return commit or None, bool(dirty)
    except OSError:
        return None, None


def math_env(environ=None):
    """The variables that change which math kernels run (bench/worker.py: MATH_ENV)."""
    from bench import worker

    return worker.math_env(os.environ if environ is None else environ)


def _peak_cache_path():
    """Where measured peaks are kept per machine: $CONVBENCH_PEAK_CACHE ("off": nowhere), else
    $XDG_CACHE_HOME/convbench/matmul_peaks.json (~/.cache by default)."""
    path = os.environ.get("CONVBENCH_PEAK_CACHE")
    if path:
        return None if path == "off" else path
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convbench", "matmul_peaks.json")


def _peak_key(mach, threads, env):
    return json.dumps([mach.get("cpu_model"), mach.get("cores"), mach.get("arch"), threads,
                       math_env(env), sys.executable], sort_keys=True)


def measure_matmul_peak(env, mach=None, threads=None):
    """The machine's fp32 GEMM peak with the run's thread budget (env: its environment), measured
    once per machine, thread budget, math-kernel settings and interpreter and then reused from
    the cache, so every record of the machine divides by the same figure. A dict
    (bench/peak.py: gflops, library, by_library, method) plus `measured_at` and `cached`, or None."""
    path, key = _peak_cache_path(), _peak_key(mach or machine(), threads, env)
    cache = {}
    if path and os.path.isfile(path):
        try:
            with open(path) as fh:
                cache = json.load(fh)
        except (OSError, ValueError):
            cache = {}
    if isinstance(cache.get(key), dict) and cache[key].get("gflops"):
        return dict(cache[key], cached=True)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.peak"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=300)
        peak = json.loads(out.stdout)
        peak["gflops"] = float(peak["gflops"])
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError):
        return None
    import datetime

    peak["measured_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if path:
        cache[key] = peak
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = "%s.%d.tmp" % (path, os.getpid())
            with open(tmp, "w") as fh:
                json.dump(cache, fh, indent=1)
            os.replace(tmp, path)
        except OSError:
            pass  # an unwritable cache only means measuring again next time
    return dict(peak, cached=False)
