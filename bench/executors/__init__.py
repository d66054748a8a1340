"""Where the jobs of a run or sweep run. Each executor decides only *where*; every one of them turns
a job into a record with the same `execute_job` (common.py):

- ``local`` (default): one job after another on this machine, each in a fresh worker process in
  its backend's environment (local.py); records are appended as each job ends.
- ``ray``: each job is a Ray task on a node of a Ray cluster, one job per node at a time
  (ray_driver.py on this side, ray_node.py on the node); the records come back to this process,
  the single writer.
- ``inline``: the jobs in this very process, no worker, no timeout and no memory limit (inline.py):
  for a debugger or a profiler. The framework must be importable by this interpreter.

The jobs come from bench/jobs.py (`expand`). Every record says what groups it
(docs/results-schema.md): ``sweep``, ``repeat`` and ``executor``.
"""
from bench.executors.common import SweepError  # noqa: F401  (callers catch executors.SweepError)

EXECUTORS = ("local", "ray", "inline")


def run_jobs(jobs, executor="local", ray_address=None, data_dir=None, timeout_s=1800.0,
             results_path=None, on_record=None, memory_limit_mb=0):
    """Run every job with the chosen executor; each record is appended to `results_path` by this
    process as its job ends. Returns the records in the order they were written.

    KeyboardInterrupt propagates after the running job(s) were stopped; records already written
    stay (`records_so_far` on the exception holds them).
    """
    if executor not in EXECUTORS:
        raise SweepError("unknown executor %r; choose one of: %s" % (executor, ", ".join(EXECUTORS)))
    options = dict(data_dir=data_dir, timeout_s=timeout_s, results_path=results_path,
                   on_record=on_record, memory_limit_mb=memory_limit_mb)
    if executor == "ray":
        from bench.executors import ray_driver  # imports ray lazily, with a one-line error naming the extra

        return ray_driver.run_jobs(jobs, address=ray_address, **options)
    if executor == "inline":
        from bench.executors import inline

        return inline.run_jobs(jobs, **options)
    from bench.executors import local

    return local.run_jobs(jobs, **options)
