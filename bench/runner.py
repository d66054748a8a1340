"""The parent side of a job: start a worker in the backend's environment, read its JSON lines,
enforce the timeout, and turn every way it can end into one outcome. Never imports a framework.
"""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

from bench import envs

STDERR_TAIL_LINES = 30


class WorkerOutcome(object):
    """How a worker ended: status ok|failed|timeout|unavailable|unsupported, payload, stderr tail."""

    def __init__(self, status, payload=None, reason=None, stderr_tail="", wall_s=0.0, returncode=None):
        self.status = status
        self.payload = payload or {}
        self.reason = reason
        self.stderr_tail = stderr_tail
        self.wall_s = wall_s
        self.returncode = returncode


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


def run_worker(backend, job, threads, timeout_s, on_message=None, log=print):
    """Run one job in a fresh worker process; always returns a WorkerOutcome (never raises,
    except KeyboardInterrupt, after the worker has been stopped)."""
    t0 = time.time()
    try:
        python = envs.ensure_env(backend, log=log)
    except envs.EnvError as exc:
        return WorkerOutcome("unavailable", reason=str(exc))
    env = envs.worker_environment(backend, threads)
    stderr_file = tempfile.NamedTemporaryFile(prefix="convbench-worker-", suffix=".stderr", delete=False)
    try:
        proc = subprocess.Popen([python, "-m", "bench.worker"], cwd=envs.REPO, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file,
                                start_new_session=True)  # its own group: Ctrl-C is ours to relay
    except OSError as exc:
        stderr_file.close()
        os.unlink(stderr_file.name)
        return WorkerOutcome("unavailable", reason="cannot start %s (%s)" % (python, exc))

    timed_out = threading.Event()

    def kill_on_timeout():
        timed_out.set()
        _kill(proc)

    timer = threading.Timer(timeout_s, kill_on_timeout) if timeout_s else None
    if timer:
        timer.daemon = True
        timer.start()
    result, garbage = None, []
    try:
        try:
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # it died before reading the job: what it printed still tells why
        for raw in proc.stdout:
            try:
                message = json.loads(raw)
                if not isinstance(message, dict) or "type" not in message:
                    raise ValueError("not a protocol message")
            except ValueError:
                garbage.append(raw[:200].decode("utf-8", "replace").strip())
                continue
            if message["type"] == "result":
                result = message
            elif on_message:
                on_message(message)
        proc.wait()
    except KeyboardInterrupt:
        _kill(proc)
        raise
    finally:
        if timer:
            timer.cancel()
        stderr_file.close()
        tail = _tail(stderr_file.name)
        os.unlink(stderr_file.name)
    wall = time.time() - t0

    if timed_out.is_set():
        return WorkerOutcome("timeout", reason="no result after %.0f s (the limit, --timeout); the "
                             "worker was killed" % timeout_s, stderr_tail=tail, wall_s=wall,
                             returncode=proc.returncode)
    if result is None:
        reason = "worker %s without a result" % _describe_exit(proc.returncode)
        if garbage:
            reason += "; its protocol channel carried %d unparseable line(s), first: %r" % (
                len(garbage), garbage[0])
        return WorkerOutcome("failed", reason=reason, stderr_tail=tail, wall_s=wall,
                             returncode=proc.returncode)
    status = result.get("status", "failed")
    return WorkerOutcome(status, payload=result.get("record"), reason=result.get("reason"),
                         stderr_tail=tail, wall_s=wall, returncode=proc.returncode)


def _kill(proc):
    """Stop the worker and anything it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
