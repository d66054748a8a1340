"""What every executor shares: turning one job into one record (`execute_job`), the thread
budget, and the console lines and bars around the jobs."""
import sys


class SweepError(Exception):
    """A run or sweep that cannot start or must stop (one line naming the fix; exit status 2)."""


def resolve_threads(config, cores):
    """threads 0 means all cores of the machine that runs the job."""
    return config if config.threads else config._replace(threads=cores or 1)


def worker_job(job, config, data_dir):
    """What the worker reads on stdin for one training job (bench/worker.py)."""
    return {"kind": "train", "backend": job.backend.name, "spec": job.spec.to_dict(),
            "config": config.to_dict(), "data_dir": data_dir}


def execute_job(job, config, session, data_dir, timeout_s, memory_limit_mb=0, on_message=None,
                log=print, extra=None, run=None):
    """One job, start to record: `run` (bench/runner.run_worker, a fresh worker, by default) trains the backend; whatever
    happened becomes one record. Never raises for a benchmark's failure; writes nothing.

    config: the job's config with its thread budget resolved on the machine that runs it.
    extra: record fields set last, besides the job's own `sweep`/`repeat` (the executor's identity).
    """
    from bench.runner import run_worker
    from bench.session import build_record

    outcome = (run or run_worker)(job.backend, worker_job(job, config, data_dir), config.threads, timeout_s,
                  on_message=on_message, log=log, memory_limit_mb=memory_limit_mb)
    return build_record(job.backend, job.spec, config, session, outcome,
                        extra=dict(job.fields(), **(extra or {})))


def jobs_bar(total, desc="jobs"):
    """The progress bar over jobs (stderr; none when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="job", desc=desc, file=sys.stderr, disable=None, position=0,
                dynamic_ncols=True)


def say(text):
    """One line on stderr that does not break the progress bars."""
    if text:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
