"""The inline executor: each job in this very process, for a debugger or a profiler
(`convbench run --executor inline --backend torch` under `py-spy record` or `python -m pdb`).

What it gives up, by design: no fresh process per job (a framework imported once stays, with its
thread pools and caches, for the next job), no timeout, no memory limit, and no protection of the
results file from a crash of the framework (the records of jobs already ended are written). The
framework must be importable by the interpreter that runs convbench; otherwise the job is
`unavailable` with the install hint. Records say `executor: {"kind": "inline"}`.
"""
import os
import time

from bench.executors.local import run_jobs as run_local
from bench.runner import WorkerOutcome

IDENTITY = {"kind": "inline"}


def run_in_process(backend, job, threads, timeout_s, on_message=None, log=print, memory_limit_mb=0):
    """bench.worker's job in this process; the same outcome a worker's result line gives."""
    from bench import envs, worker

    # the thread variables only reach frameworks imported after this (the first job's)
    for key, value in envs.worker_environment(backend, threads).items():
        if key.endswith("_THREADS") or key.startswith(("OMP_", "MKL_", "OPENBLAS_", "TF_")):
            os.environ[key] = value
    t0 = time.time()
    result = worker.run_job(job, on_message or (lambda message: None))
    return WorkerOutcome(result.get("status", "failed"), payload=result.get("record"),
                         reason=result.get("reason"), wall_s=time.time() - t0)


def run_jobs(jobs, **options):
    from bench import inject
    from bench.executors.common import SweepError

    if inject.parse(os.environ.get(inject.ENV_VAR)):
        raise SweepError("--executor inline cannot inject faults (%s is set): they would hit "
                         "convbench itself; fix: use --executor local" % inject.ENV_VAR)
    return run_local(jobs, run=run_in_process, executor=IDENTITY, **options)
