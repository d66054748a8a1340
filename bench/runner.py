"""The parent side of a job: start a worker in the backend's environment, read its JSON lines,
enforce the timeout, and turn every way it can end into one outcome. Never imports a framework.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

from bench import envs, inject
from bench.load import LoadMeter
from bench.paths import REPO
from bench.worker import DEADLINE_GRACE_S, MEMORY_LIMIT_VAR, PARENT_VAR

STDERR_TAIL_LINES = 30
MAX_LINE_BYTES = 64 * 2 ** 20  # a protocol line longer than this is garbage, not a record
REASON_CHARS = 2000
# how an allocation that hit RLIMIT_AS shows up: Python, C++, glibc, the frameworks' allocators
MEMORY_SIGNS = re.compile(r"MemoryError|bad_alloc|[Cc]an(?:'|no)t allocate|[Oo]ut of memory|"
                          r"[Uu]nable to allocate|[Ff]ailed to allocate")


class WorkerOutcome(object):
    """How a worker ended: status ok|failed|timeout|unavailable|unsupported, payload, stderr tail."""

    def __init__(self, status, payload=None, reason=None, stderr_tail="", wall_s=0.0, returncode=None,
                 injected=None, load=None):
        self.status = status
        self.payload = payload or {}
        self.reason = _one_line(reason)
        self.stderr_tail = stderr_tail
        self.wall_s = wall_s
        self.returncode = returncode
        self.injected = injected or None  # faults CONVBENCH_INJECT put into this worker
        self.load = load  # other processes' CPU use during the job (bench/load.py)


def _one_line(reason):
    """Reasons are one line (the CLI summary and the report show them): join and cap."""
    if reason is None:
        return None
    text = " | ".join(part.strip() for part in str(reason).splitlines() if part.strip())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def _tail(path, lines=STDERR_TAIL_LINES):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _describe_exit(code):
    if code is not None and code < 0:
        try:
            return "killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exited with code %s" % code


def _lines(stream, cap=MAX_LINE_BYTES):
    """The stream's lines; a line longer than cap comes out in cap-sized pieces (all garbage)."""
    while True:
        line = stream.readline(cap)
        if not line:
            return
        yield line


def run_worker(backend, job, threads, timeout_s, on_message=None, log=print, memory_limit_mb=0):
    """Run one job in a fresh worker process; always returns a WorkerOutcome (never raises,
    except KeyboardInterrupt, after the worker has been stopped).

    memory_limit_mb: when > 0, the worker's address space is capped there (RLIMIT_AS); an
    allocation beyond it ends the job as `failed`, saying so."""
    t0 = time.time()
    try:
        python = envs.ensure_env(backend, log=log)
    except envs.EnvError as exc:
        return WorkerOutcome("unavailable", reason=str(exc))
    env = envs.worker_environment(backend, threads)
    if memory_limit_mb:
        # the worker caps itself (bench/worker.py) before it imports anything: a preexec_fn is
        # not safe in a parent that has threads (the timeout timer, Ray's)
        env[MEMORY_LIMIT_VAR] = str(int(memory_limit_mb))
    injected = inject.active(backend.name, environ=env)
    # the worker watches for us (bench/worker.py): it ends itself when this process goes away,
    # and at its own deadline (a little after ours) if nobody ends it
    env[PARENT_VAR] = str(os.getpid())
    if timeout_s:
        job = dict(job, deadline_s=float(timeout_s) + DEADLINE_GRACE_S)
    stderr_file = tempfile.NamedTemporaryFile(prefix="convbench-worker-", suffix=".stderr", delete=False)
    meter = LoadMeter()
    try:
        proc = subprocess.Popen([python, "-m", "bench.worker"], cwd=REPO, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file,
                                start_new_session=True)  # its own group: Ctrl-C is ours to relay
    except OSError as exc:
        stderr_file.close()
        os.unlink(stderr_file.name)
        return WorkerOutcome("unavailable", reason="cannot start %s (%s)" % (python, exc),
                             injected=injected)

    timed_out = threading.Event()

    def kill_on_timeout():
        timed_out.set()
        _kill(proc)

    timer = threading.Timer(timeout_s, kill_on_timeout) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    result, first_garbage, garbage_lines = None, None, 0
    try:
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died before reading the job: what it printed still tells why
        for raw in _lines(proc.stdout):
            try:
                message = json.loads(raw)
                if not isinstance(message, dict) or "type" not in message:
                    raise ValueError("not a protocol message")
            except ValueError:  # counted; only the first is kept: a worker may spew megabytes
                garbage_lines += 1
                if first_garbage is None:
                    first_garbage = raw[:200].decode("utf-8", "replace").strip()
                continue
            if message["type"] == "result":
                result = message
            elif on_message:
                on_message(message)
        proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM/SIGHUP (bench/cli.py), or a bug in on_message
        _kill(proc)
        proc.wait()  # reaped: no zombie, no orphan
        raise
    finally:
        if timer:
            timer.cancel()
        stderr_file.close()
        tail = _tail(stderr_file.name)
        os.unlink(stderr_file.name)
    wall = time.time() - t0
    ended = dict(stderr_tail=tail, wall_s=wall, returncode=proc.returncode, injected=injected,
                 load=meter.stop())

    if timed_out.is_set():
        return WorkerOutcome("timeout", reason="no result after %.0f s (the limit, --timeout); the "
                             "worker was killed" % timeout_s, **ended)
    if garbage_lines:
        # only the worker writes the channel, in whole JSON lines: anything else means a corrupt
        # process, and its result (if any) cannot be trusted
        return WorkerOutcome("failed", reason="worker %s %s; its protocol channel carried %d "
                             "unparseable line(s), first: %r%s" % (
                                 _describe_exit(proc.returncode),
                                 "with a result" if result else "without a result",
                                 garbage_lines, first_garbage,
                                 "; the result was discarded" if result else ""), **ended)
    if result is None:
        outcome = WorkerOutcome("failed", reason="worker %s without a result"
                                % _describe_exit(proc.returncode), **ended)
    else:
        outcome = WorkerOutcome(result.get("status", "failed"), payload=result.get("record"),
                                reason=result.get("reason"), **ended)
    return _blame_memory_limit(outcome, memory_limit_mb)


def _under_limit(memory_limit_mb):
    """A worker that died without a result under --memory-limit-mb may have died of it (an import
    that cannot map its libraries dies in many ways): the limit is named with the fix."""
    if not memory_limit_mb:
        return ""
    return (", under --memory-limit-mb %d (its address space was capped at %d MB: if that is too "
            "low for this framework, raise it, or 0 for none)" % (memory_limit_mb, memory_limit_mb))


def _blame_memory_limit(outcome, memory_limit_mb):
    """A failure under --memory-limit-mb that shows an allocation failure says so, naming the fix."""
    if not memory_limit_mb or outcome.status != "failed":
        return outcome
    if not MEMORY_SIGNS.search((outcome.reason or "") + "\n" + outcome.stderr_tail):
        if "without a result" in (outcome.reason or ""):
            outcome.reason = _one_line(outcome.reason + _under_limit(memory_limit_mb))
        return outcome
    outcome.reason = _one_line("exceeded the memory limit of %d MB (--memory-limit-mb %d; raise it, "
                               "or 0 for none): %s" % (memory_limit_mb, memory_limit_mb, outcome.reason))
    return outcome


def _kill(proc):
    """Stop the worker and anything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
