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


def measure_matmul_peak(env):
    """fp32 GEMM peak in a fresh process with the run's thread budget (env: its environment)."""
    try:
        out = subprocess.run([sys.executable, "-m", "bench.peak"], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=120)
        return json.loads(out.stdout)["gflops"]
    except (OSError, ValueError, KeyError, subprocess.SubprocessError):
        return None
