"""Worker processes: a kill, a timeout and garbage on the channel each end as one record."""
import os
import signal
import sys

from backends import registry
from backends.base import TrainConfig
from bench.paths import REPO
from bench.results import read_records
from bench.runner import run_worker
from bench.results import validate_file
from bench.executors.common import execute_job
from bench.jobs import expand
from bench.results import append_record
from bench.session import new_session_context
from models.spec import load_spec

SPEC = load_spec("seed_convnet")
CONFIG = TrainConfig(batch_size=64, limit_train=4096, limit_test=500, threads=1, warmup_steps=1)


def run_backend(config, session, path, on_message=None):
    """One numpy job as the local executor runs it: a fresh worker, its record appended."""
    job = expand([registry.get("numpy")], [SPEC], config)[0]
    record = execute_job(job, config, session, None, 300, on_message=on_message, log=lambda t: None)
    append_record(path, record)
    return record


def _job(config=CONFIG):
    return {"kind": "train", "backend": "numpy", "spec": SPEC.to_dict(), "config": config.to_dict(),
            "data_dir": None}


def test_worker_killed_mid_run_gives_failed_record_and_keeps_earlier_ones(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    session = new_session_context(1)
    small = CONFIG._replace(limit_train=256)
    first = run_backend(small, session, path)
    assert first["status"] == "ok"
    with open(path, "rb") as fh:
        before = fh.read()

    pid = {}

    def killer(message):
        if message["type"] == "hello":
            pid["worker"] = message["pid"]
        if message["type"] == "progress" and message.get("step", 0) >= 20:
            os.kill(pid["worker"], signal.SIGKILL)

    second = run_backend(CONFIG, session, path, on_message=killer)
    assert second["status"] == "failed"
    assert "SIGKILL" in second["reason"]
    with open(path, "rb") as fh:
        after = fh.read()
    assert after.startswith(before)  # earlier records untouched
    assert [r["status"] for r in read_records(path)] == ["ok", "failed"]
    assert validate_file(path) == (2, [])


def test_timeout_kills_the_worker():
    outcome = run_worker(registry.get("numpy"), _job(CONFIG._replace(limit_train=0)), 1, timeout_s=3)
    assert outcome.status == "timeout" and "3 s" in outcome.reason


def test_garbage_on_the_channel_and_a_crash_are_reported(tmp_path, monkeypatch):
    # a fake interpreter: prints garbage where the protocol goes, then dies
    fake = tmp_path / "python"
    # it closes stdin first, so the job write hits a broken pipe (the race CI once lost)
    fake.write_text("#!/bin/sh\nexec 0<&-\necho 'Segmentation fault (core dumped) <garbage>'\n"
                    "echo 'native crash detail' >&2\nexit 139\n")
    fake.chmod(0o755)
    backend = registry.Backend("fake", "x:Y", "Fake", (), "fakeenv", "nothing")
    from bench import envs
    monkeypatch.setattr(envs, "ensure_env", lambda b, log=print: str(fake))
    outcome = run_worker(backend, _job(), 1, timeout_s=30)
    assert outcome.status == "failed"
    assert "exited with code 139" in outcome.reason and "unparseable" in outcome.reason
    assert "native crash detail" in outcome.stderr_tail


def test_framework_noise_on_stdout_does_not_corrupt_the_protocol():
    """The worker points fd 1 at stderr: a print() inside the job cannot reach the channel."""
    import subprocess
    import json
    code = ("import bench.worker as w, sys, json\n"
            "ch = w._open_channel()\n"
            "print('noise from a framework')\n"
            "import os; os.write(1, b'C-level noise\\n')\n"
            "ch.write(json.dumps({'type': 'hello'}) + '\\n'); ch.flush()\n")
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True,
                          cwd=REPO)
    assert [json.loads(l) for l in proc.stdout.splitlines()] == [{"type": "hello"}]
    assert "noise from a framework" in proc.stderr and "C-level noise" in proc.stderr
