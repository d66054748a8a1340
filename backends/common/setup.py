"""Per-process setup the adapters (and benchmarks/hand_loops/) share."""
import os
import sys


def pin_cpus(threads, module="jax"):
    """Restrict this process to its first `threads` CPUs, before `module` loads.

    XLA's CPU client has no thread-count setting: it sizes its pool from the CPUs the process may
    use. Returns the CPUs pinned to, or None when nothing was changed."""
    if not threads or module in sys.modules or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if threads >= len(cpus):
        return None
    os.sched_setaffinity(0, cpus[:threads])
    return cpus[:threads]
