"""The node side of the `ray` executor: what runs inside a Ray task (ray_driver.py sends it).

On the node, a task does what the local executor does for one job (env found or built, a fresh
worker, `execute_job`) with the node's own context: its machine fingerprint and a matmul peak
measured there with the job's thread budget. The record goes back to the driver as the task's
result. Imported by Ray's workers; imports ray only inside functions.
"""
import contextlib
import os
import platform

from bench import context
from bench.executors.common import execute_job, resolve_threads

#: environment variables the driver passes on to each job (the rest is the node's own)
FORWARDED_ENV = ("CONVBENCH_INJECT",)

_NODE_CONTEXTS = {}  # thread budget -> session context, per Ray worker process


def code_version():
    """What the driver and every node must agree on: git commit and dirty flag of the code."""
    commit, dirty = context.git_commit()
    return {"git_commit": commit, "git_dirty": dirty}


def node_identity():
    """The `executor` field of a record made on this node."""
    import ray

    return {"kind": "ray", "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "hostname": platform.node()}


def probe_node(spec_dicts):
    """Preflight on one node: its code version, identity and the spec hashes it computes."""
    from models.spec import spec_from_dict

    return {"version": code_version(), "executor": node_identity(),
            "spec_hashes": [spec_from_dict(d).spec_hash for d in spec_dicts]}


@contextlib.contextmanager
def _job_environ(values):
    """os.environ with the driver's forwarded variables for one job (a Ray worker is reused)."""
    saved = dict((k, os.environ.get(k)) for k in FORWARDED_ENV)
    try:
        for key in FORWARDED_ENV:
            if values.get(key) is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = values[key]
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _node_cpus():
    import ray

    assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return int(assigned) if assigned else context.usable_cpus()


def _failed_on_node(ident, reason):
    """A run_worker stand-in for a job that cannot start on this node (its data is missing)."""
    from bench.runner import WorkerOutcome

    def run(*args, **kwargs):
        return WorkerOutcome("failed", reason="on node %s (%s): %s" % (
            ident["hostname"], ident["node_ip"], reason))
    return run


def run_on_node(payload):
    """One job on this node; returns {"kind": "record", ...} or {"kind": "mismatch", ...}.

    Whatever the benchmark does, this returns normally (a failure is a `failed` record); only the
    death of this process or of the node makes the task fail, and Ray then retries it."""
    from backends import registry
    from backends.base import TrainConfig
    from bench.data import DataError, resolve_data_dir
    from bench.jobs import Job
    from bench.session import new_session_context
    from models.spec import spec_from_dict

    ident = node_identity()
    version = code_version()
    spec = spec_from_dict(payload["spec"])
    if version != payload["version"] or spec.spec_hash != payload["spec_hash"]:
        return {"kind": "mismatch", "executor": ident, "version": version,
                "spec_hash": spec.spec_hash}
    config = TrainConfig.from_dict(payload["config"])
    training = payload["training"] and TrainConfig.from_dict(payload["training"])
    job = Job(payload["index"], registry.get(payload["backend"]), spec, config,
              payload["repeat"], payload["sweep"], payload["role"], payload["timing"], training)
    config = resolve_threads(config, _node_cpus())
    if config.threads not in _NODE_CONTEXTS:
        _NODE_CONTEXTS[config.threads] = new_session_context(config.threads)
    session = dict(_NODE_CONTEXTS[config.threads], session_id=payload["session_id"])
    with _job_environ(payload["env"]):
        try:
            data_dir, run = resolve_data_dir(payload["data_dir"]), None
        except DataError as exc:
            data_dir, run = None, _failed_on_node(ident, exc)
        record = execute_job(job, config, session, data_dir, payload["timeout_s"],
                             memory_limit_mb=payload["memory_limit_mb"], log=lambda text: None,
                             extra={"executor": ident}, run=run)
    return {"kind": "record", "record": record}
