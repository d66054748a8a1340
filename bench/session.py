"""A run's records: the context an invocation shares, and one outcome made into one record.

The record is self-describing: schema version, ids, time, git commit, the spec's hash and facts,
the full config, the machine (with its measured matmul peak), the worker's software environment,
raw step times and losses, per-epoch figures, memory and a `summary` (docs/results-schema.md).
"""
import datetime
import uuid

from bench import SCHEMA_VERSION, context, envs, metrics
from bench.jobs import work_hash


def new_session_context(threads):
    """What every record of one invocation shares (measured once)."""
    commit, dirty = context.git_commit()
    mach = context.machine()
    budget = threads or mach["cores"]
    env = envs.process_environment(budget)
    peak = context.measure_matmul_peak(env, mach, budget)
    mach["matmul_peak_gflops"] = peak["gflops"] if peak else None
    mach["matmul_peak"] = peak
    mach["math_env"] = context.math_env(env)
    return {"session_id": uuid.uuid4().hex[:12], "git_commit": commit, "git_dirty": dirty,
            "machine": mach, "threads": budget}


def build_record(backend, spec, config, session, outcome, extra=None):
    """extra: fields set last (a job's `sweep`, `repeat`, the `executor`; bench/executors/)."""
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
        "load": getattr(outcome, "load", None),
    }
    if outcome.status == "ok":
        record.update(outcome.payload)
    record["summary"] = metrics.summarize(record) if outcome.status == "ok" else {}
    record.update({"sweep": None, "repeat": None, "role": "train", "timing_run": None,
                   "work_hash": work_hash(spec.spec_hash, config.to_dict()),
                   "executor": {"kind": "local"}})
    record.update(extra or {})
    return _valid_or_failed(record)


def _valid_or_failed(record):
    """An ok record is always a valid one: a worker's result that breaks the schema (e.g. a framework
    returning odd types) is
    written as `failed`, naming what broke, rather than as an ok record readers would refuse."""
    from bench.schema import record_problems

    if record["status"] != "ok":
        return record
    problems = record_problems(record)
    if problems:
        for key in ("timing", "step_loss", "epochs", "curve", "memory", "data", "environment", "gc"):
            record.pop(key, None)  # the payload is what broke
        record.update(status="failed", summary={}, stderr_tail="",
                      reason="the worker's result breaks the record schema: %s"
                      % "; ".join(problems[:3])[:1500])
    return record
