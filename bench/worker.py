"""One benchmark job in a fresh process: `python -m bench.worker < job.json`.

Protocol (JSON Lines): the job is one JSON object on stdin; the worker writes JSON lines to the
protocol channel, which is the ORIGINAL stdout. File descriptor 1 is then pointed at stderr, so
whatever a framework prints (C++ logs, warnings) cannot corrupt the channel. Messages:

    {"type": "hello", "pid": ..., "python": ...}
    {"type": "progress", ...} / {"type": "epoch", ...}
    {"type": "result", "status": "ok", "record": {...}}              exactly one of these
    {"type": "result", "status": "unavailable"|"unsupported"|"failed", "reason": "..."}

The parent (bench/runner.py) adds the run's context and writes the record. The worker imports the
framework (lazily, through the registry) and nothing it imports may be newer than CPython 3.6.
"""
import json
import os
import platform
import re
import sys
import traceback

#: set by the parent (bench/runner.py) for --memory-limit-mb: the worker caps its own address space
MEMORY_LIMIT_VAR = "CONVBENCH_MEMORY_LIMIT_MB"
#: the parent's pid: the worker runs in its own session, so nothing else ends it when the parent dies
PARENT_VAR = "CONVBENCH_PARENT_PID"
#: the worker's own deadline is the parent's --timeout plus this: the parent's, with its reason,
#: wins while the parent lives; the worker's holds when it does not
DEADLINE_GRACE_S = 10.0
WATCH_INTERVAL_S = 0.5


def _end_group():
    """Kill this worker and whatever it started (it leads its own process group)."""
    import signal

    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os._exit(137)


def _watch_parent():
    """A daemon thread that ends the worker when its parent is gone (it was reparented: the parent
    died, even by SIGKILL). A thread, not a signal: it runs whatever the main thread is stuck in,
    as long as that releases the GIL (sleeps, I/O and the frameworks' kernels do)."""
    import threading
    import time

    parent = int(os.environ.get(PARENT_VAR) or 0)
    if not parent:
        return

    def watch():
        while True:
            if os.getppid() != parent:
                sys.stderr.write("convbench worker: parent %d is gone; exiting\n" % parent)
                sys.stderr.flush()
                _end_group()
            time.sleep(WATCH_INTERVAL_S)

    thread = threading.Thread(target=watch, name="convbench-parent-watch")
    thread.daemon = True
    thread.start()


def _set_deadline(seconds):
    """The worker's own timeout: SIGALRM with its default action, which the kernel carries out
    even while the main thread is stuck in native code holding the GIL."""
    import math
    import signal

    if seconds and seconds > 0:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(math.ceil(seconds)))


def _limit_memory():
    """Cap this process' address space (RLIMIT_AS) before any framework loads."""
    mb = int(os.environ.get(MEMORY_LIMIT_VAR) or 0)
    if mb > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (mb * 2 ** 20, mb * 2 ** 20))


def _open_channel():
    """Keep the real stdout for the protocol; send fd 1 (and sys.stdout) to stderr."""
    channel_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(channel_fd, "w", 1)


class _Emitter(object):
    """emit(message): one JSON line on the channel; raw(bytes): unframed (the garbage fault)."""

    def __init__(self, channel):
        self.channel = channel

    def __call__(self, message):
        self.channel.write(json.dumps(_jsonable(message)) + "\n")
        self.channel.flush()

    def raw(self, data):
        self.channel.flush()
        os.write(self.channel.fileno(), data)


def _jsonable(value):
    """Make NumPy scalars/arrays and NaN/inf safe for strict JSON."""
    import numpy as np

    if isinstance(value, dict):
        return dict((str(k), _jsonable(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _software():
    import numpy as np

    return {"python": platform.python_version(), "python_implementation": platform.python_implementation(),
            "numpy": np.__version__, "executable": sys.executable,
            "thread_env": dict((k, os.environ[k]) for k in sorted(os.environ) if k.endswith("_NUM_THREADS")),
            "cpu_affinity": _affinity(),
            "math_libraries": _math_libraries(),
            "math_env": math_env(os.environ)}


#: environment variables that change which math kernels run (OpenBLAS' core type and cache size,
#: MKL's code path, oneDNN's ISA limit): part of the fingerprint
MATH_ENV = ("OPENBLAS_", "MKL_", "DNNL_", "ONEDNN_", "KMP_", "XLA_FLAGS", "TF_ENABLE_ONEDNN")
_MATH_LIB = re.compile(r"(mkl|openblas|dnnl|mkldnn|blis|iomp|gomp|onednn|xla|eigen|accelerate)",
                       re.IGNORECASE)


def math_env(environ):
    """The variables in `environ` that change which math kernels run."""
    return dict((k, environ[k]) for k in sorted(environ) if k.startswith(MATH_ENV))


def _math_libraries():
    """The math libraries this worker really loaded (shared objects mapped into it), by file
    name: what a framework's build settings cannot tell (CNTK bundles MKL; NumPy wheels bundle
    OpenBLAS). None where /proc/self/maps is missing."""
    try:
        with open("/proc/self/maps") as fh:
            paths = set(line.split()[-1] for line in fh if "/" in line)
    except OSError:
        return None
    return sorted(set(os.path.basename(p) for p in paths if _MATH_LIB.search(os.path.basename(p))))


def _affinity():
    """The CPUs this worker may run on (pinned when fewer than the machine has), or None."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    return {"cpus": cpus, "pinned": len(cpus) < (os.cpu_count() or len(cpus))}


def run_job(job, emit):
    from backends import registry
    from backends.base import TrainConfig, Unavailable, Unsupported
    from bench import inject
    from models.spec import spec_from_dict

    try:
        backend = registry.get(job["backend"])
        faults = inject.active(backend.name)
        inject.block_imports(backend, faults)
        adapter_cls = registry.load_adapter_class(backend)

        if job["kind"] == "train":
            from bench import harness

            spec = spec_from_dict(job["spec"])
            config = TrainConfig.from_dict(job["config"])
            adapter = adapter_cls(spec, config)
            part = harness.train(adapter, spec, config, job.get("data_dir"), emit, faults=faults,
                                 raw_write=getattr(emit, "raw", None))
            part["environment"] = adapter.environment()
            part["environment"].update(_software())
            adapter.close()
            return {"type": "result", "status": "ok", "record": part}

        if job["kind"] == "conform":
            import numpy as np
            from bench import harness

            with np.load(job["arrays_in"], allow_pickle=False) as npz:
                arrays = dict((k, npz[k]) for k in npz.files)

            def factory(case):
                return adapter_cls(spec_from_dict(case["spec"]), TrainConfig.from_dict(case["config"]))

            out = harness.conform(factory, job["cases"], arrays, emit)
            np.savez(job["arrays_out"], **out)
            return {"type": "result", "status": "ok", "record": {"arrays_out": job["arrays_out"],
                                                                "software": _software()}}
        raise ValueError("unknown job kind %r" % job.get("kind"))
    except ImportError as exc:
        # adapters import their framework lazily (in build), so this can come from either place
        traceback.print_exc()
        return {"type": "result", "status": "unavailable",
                "reason": "cannot import %s (%s); fix: %s" % (backend.framework, exc, backend.install_hint)}
    except Unavailable as exc:
        return {"type": "result", "status": "unavailable", "reason": str(exc)}
    except Unsupported as exc:
        return {"type": "result", "status": "unsupported", "reason": str(exc) or "not implemented"}
    except ArithmeticError as exc:
        from bench.harness import NonFiniteLoss

        if not isinstance(exc, NonFiniteLoss):
            traceback.print_exc()
        return {"type": "result", "status": "failed", "reason": str(exc) if isinstance(
            exc, NonFiniteLoss) else "%s: %s" % (type(exc).__name__, exc)}
    except Exception as exc:
        traceback.print_exc()  # to stderr: the parent keeps its tail
        return {"type": "result", "status": "failed",
                "reason": "%s: %s" % (type(exc).__name__, exc)}


def main():
    _watch_parent()
    _limit_memory()
    channel = _open_channel()
    emit = _Emitter(channel)
    emit({"type": "hello", "pid": os.getpid(), "python": platform.python_version()})
    job = json.loads(sys.stdin.read())
    _set_deadline(job.get("deadline_s"))
    emit(run_job(job, emit))
    channel.close()


if __name__ == "__main__":
    main()
