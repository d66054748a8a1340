"""One `convbench run`: for each backend, a worker job; each outcome becomes one record, appended.

The record is self-describing: schema version, ids, time, git commit, the spec's hash and facts,
the full config, the machine (with its measured matmul peak), the worker's software environment,
raw step times and losses, per-epoch figures, memory and a `summary` (docs/results-schema.md).
"""
import datetime
import uuid

from bench import SCHEMA_VERSION, context, envs, metrics, results
from bench.runner import run_worker


def new_session_context(threads):
    """What every record of one invocation shares (measured once)."""
    commit, dirty = context.git_commit()
    mach = context.machine()
    budget = threads or mach["cores"]
    mach["matmul_peak_gflops"] = context.measure_matmul_peak(envs.process_environment(budget))
    return {"session_id": uuid.uuid4().hex[:12], "git_commit": commit, "git_dirty": dirty,
            "machine": mach, "threads": budget}


def build_record(backend, spec, config, session, outcome, extra=None):
    """extra: fields set last (a sweep's `sweep`, `repeat`, `executor`; bench/sweep.py)."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": uuid.uuid4().hex[:12],
        "session_id": session["session_id"],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": session["git_commit"],
        "git_dirty": session["git_dirty"],
        "backend": backend.name,
        "framework": backend.framework,
        "model": spec.name,
        "spec_hash": spec.spec_hash,
        "spec_facts": {"param_count": spec.param_count, "flops_forward": spec.flops()["forward"],
                       "flops_train": spec.flops()["train"]},
        "device": config.device,
        "threads": config.threads,
        "config": config.to_dict(),
        "machine": session["machine"],
        "status": outcome.status,
        "reason": outcome.reason,
        "wall_s": round(outcome.wall_s, 3),
        "stderr_tail": outcome.stderr_tail if outcome.status != "ok" else "",
        "injected": outcome.injected,  # also on records of workers that died of their fault
    }
    if outcome.status == "ok":
        record.update(outcome.payload)
    record["summary"] = metrics.summarize(record) if outcome.status == "ok" else {}
    record.update({"sweep": None, "repeat": None, "executor": {"kind": "local"}})
    record.update(extra or {})
    return record


def run_backend(backend, spec, config, session, data_dir, timeout_s, results_path,
                on_message=None, log=print, memory_limit_mb=0, extra=None):
    """Run one backend's job, append its record (whatever happened) and return it."""
    job = {"kind": "train", "backend": backend.name, "spec": spec.to_dict(),
           "config": config.to_dict(), "data_dir": data_dir}
    outcome = run_worker(backend, job, config.threads, timeout_s, on_message=on_message, log=log,
                         memory_limit_mb=memory_limit_mb)
    record = build_record(backend, spec, config, session, outcome, extra=extra)
    results.append_record(results_path, record)
    return record
