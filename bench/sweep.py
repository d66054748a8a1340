"""A job matrix (backends x models x batch sizes x thread counts x repeats) and its executors.

`convbench sweep` and `convbench run --repeat N` expand their options into jobs here and hand them
to an executor:

- ``local`` (default): one job after another on this machine, each exactly as `convbench run`
  runs a backend (`session.run_backend`: a fresh worker process in the backend's environment);
  the records are appended as each job ends.
- ``ray``: each job is a Ray task on a node of a Ray cluster, one job per node at a time
  (`bench/ray_executor.py`); the records come back to this process, the single writer.

Every record a sweep or a repeat writes says what groups it (docs/results-schema.md): ``sweep``
({"id", "axes"}, or null) and ``repeat`` ({"index", "of"}, or null), plus ``executor``.
The session context (machine fingerprint, measured matmul peak) is measured once per thread count:
the peak depends on the thread budget.
"""
import uuid
from typing import Any, NamedTuple, Optional

# SweepError is part of this module's interface too (cli and tests catch sweep.SweepError)
from bench.executor_common import SweepError, jobs_bar, resolve_threads, say


EXECUTORS = ("local", "ray")


class Job(NamedTuple):
    """One cell of the matrix: one backend trained once on one model with one configuration."""
    index: int
    backend: Any          # backends.registry.Backend
    spec: Any             # models.spec.Spec
    config: Any           # backends.base.TrainConfig; threads 0 = all cores of the machine that runs it
    repeat: Optional[dict]  # {"index": i, "of": n} (0-based) or None when the job is not repeated
    sweep: Optional[dict]   # {"id": ..., "axes": {...}} or None outside `convbench sweep`

    def fields(self):
        """The record fields that group this job with its siblings."""
        return {"sweep": self.sweep, "repeat": self.repeat}

    def label(self):
        text = "%s %s b%d t%s" % (self.backend.name, self.spec.name, self.config.batch_size,
                                  self.config.threads or "all")
        if self.repeat:
            text += " r%d/%d" % (self.repeat["index"] + 1, self.repeat["of"])
        return text


def new_sweep_id():
    return uuid.uuid4().hex[:12]


def expand(backends, specs, base_config, batch_sizes=None, threads=None, repeat=1, sweep_axes=None):
    """All jobs of the matrix, in the order they run.

    base_config: a TrainConfig, or a function spec -> TrainConfig (models carry their own training
    defaults); batch_sizes/threads None: the base config's value.

    Thread counts vary slowest (one session context each), then models and batch sizes; repeats
    come before backends, so every backend's k-th run is next to the others' (slow drift of the
    machine then touches every backend alike). `sweep_axes` (a dict) makes the jobs part of one
    sweep with a fresh id; None leaves `sweep` null (a plain `convbench run`).
    """
    config_for = base_config if callable(base_config) else (lambda spec: base_config)
    sweep = {"id": new_sweep_id(), "axes": sweep_axes} if sweep_axes is not None else None
    jobs = []
    for t in (threads if threads is not None else [None]):
        for spec in specs:
            base = config_for(spec)
            for b in (batch_sizes or [base.batch_size]):
                config = base._replace(batch_size=b, threads=base.threads if t is None else t)
                for r in range(repeat):
                    for backend in backends:
                        rep = {"index": r, "of": repeat} if repeat > 1 else None
                        jobs.append(Job(len(jobs), backend, spec, config, rep, sweep))
    return jobs


def run_jobs(jobs, executor="local", ray_address=None, data_dir=None, timeout_s=1800.0,
             results_path=None, on_record=None, memory_limit_mb=0):
    """Run every job with the chosen executor; each record is appended to `results_path` by this
    process as its job ends. Returns the records in the order they were written.

    KeyboardInterrupt propagates after the running job(s) were stopped; records already written
    stay (`records_so_far` on the exception holds them).
    """
    if executor not in EXECUTORS:
        raise SweepError("unknown executor %r; choose one of: %s" % (executor, ", ".join(EXECUTORS)))
    if executor == "ray":
        from bench import ray_executor  # imports ray lazily, with a one-line error naming the extra

        return ray_executor.run_jobs(jobs, address=ray_address, data_dir=data_dir,
                                     timeout_s=timeout_s, results_path=results_path,
                                     on_record=on_record, memory_limit_mb=memory_limit_mb)
    return run_local(jobs, data_dir=data_dir, timeout_s=timeout_s, results_path=results_path,
                     on_record=on_record, memory_limit_mb=memory_limit_mb)


def run_local(jobs, data_dir=None, timeout_s=1800.0, results_path=None, on_record=None,
              memory_limit_mb=0):
    """The local executor: jobs one after another, each as `convbench run` runs one backend."""
    from bench.progress import Progress
    from bench.context import usable_cpus
    from bench.session import new_session_context, run_backend

    contexts = {}  # thread budget -> session context (machine + peak measured with that budget)
    session_id = None
    records = []
    # a bar over the jobs of a sweep or a repeat (a plain run shows its per-epoch bars only)
    bar = jobs_bar(len(jobs)) if any(j.sweep or j.repeat for j in jobs) else None
    try:
        for job in jobs:
            config = resolve_threads(job.config, usable_cpus())
            if config.threads not in contexts:
                contexts[config.threads] = new_session_context(config.threads)
                session_id = session_id or contexts[config.threads]["session_id"]
                contexts[config.threads]["session_id"] = session_id  # one invocation, one id
            progress = Progress(job.label() if bar else job.backend.name)
            try:
                record = run_backend(job.backend, job.spec, config, contexts[config.threads],
                                     data_dir, timeout_s, results_path, on_message=progress.update,
                                     log=progress.log, memory_limit_mb=memory_limit_mb,
                                     extra=job.fields())
            finally:
                progress.close()
            records.append(record)
            if bar is not None:
                bar.update(1)
            if on_record:
                say(on_record(record))
    except KeyboardInterrupt as exc:
        exc.records_so_far = records
        raise
    finally:
        if bar is not None:
            bar.close()
    return records
