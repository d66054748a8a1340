"""The local executor: jobs one after another on this machine, each in a fresh worker process."""
from bench.executors.common import execute_job, jobs_bar, resolve_threads, say


def run_jobs(jobs, data_dir=None, timeout_s=1800.0, results_path=None, on_record=None,
             memory_limit_mb=0, run=None, executor=None):
    """Each job's record is appended as it ends. The session context (machine fingerprint, matmul
    peak) is measured once per thread budget: the peak depends on it.

    run: how a job's worker runs (default bench/runner.run_worker; the inline executor passes its own).
    executor: the record's `executor` field (default {"kind": "local"})."""
    from bench import results
    from bench.context import usable_cpus
    from bench.progress import Progress
    from bench.session import new_session_context

    contexts = {}  # thread budget -> session context (machine + peak measured with that budget)
    session_id = None
    records = []
    # a bar over the jobs of a sweep or a repeat (a plain run shows its per-epoch bars only)
    bar = jobs_bar(len(jobs)) if any(j.sweep or j.repeat or j.timing for j in jobs) else None
    extra = {"executor": executor} if executor else None
    try:
        for job in jobs:
            config = resolve_threads(job.config, usable_cpus())
            if config.threads not in contexts:
                contexts[config.threads] = new_session_context(config.threads)
                session_id = session_id or contexts[config.threads]["session_id"]
                contexts[config.threads]["session_id"] = session_id  # one invocation, one id
            progress = Progress(job.label() if bar else job.backend.name)
            try:
                record = execute_job(job, config, contexts[config.threads], data_dir, timeout_s,
                                     memory_limit_mb=memory_limit_mb, on_message=progress.update,
                                     log=progress.log, extra=extra, run=run)
            finally:
                progress.close()
            kept = results.keep_record(results_path, record)  # never lost: side file or stdout
            if kept:
                record["_kept_in"] = kept  # in memory only: finish() names where it went
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
