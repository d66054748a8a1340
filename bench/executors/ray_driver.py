"""The driver side of the `ray` executor: each job is a Ray task on a node of a Ray cluster
(docs/ray.md); ray_node.py is what the task runs there. The record comes back as the task's
result; the driver (this process) is the only writer of the results file.

One job per machine: the driver keeps at most one job in flight per node, and each job's task asks
for every CPU of its node (a CUDA job: one GPU and its share of CPUs): no two jobs share a machine.

Faults: a task whose Ray worker or node dies is retried by Ray (MAX_RETRIES); a benchmark that
fails is not retried: the task succeeds and returns a `failed` record. A task Ray gives up on
becomes a `failed` record written by the driver, so no job is ever lost or written twice. Before
any job, and again inside each task, the node's code version (git commit + dirty flag, and the
spec hash it computes) is compared with the driver's: a mismatch stops the sweep with one line.

Ray is imported only here, lazily: without it, `--executor ray` is one line naming the extra.
"""
import collections
import os
import time
import uuid

from bench.executors.common import SweepError, jobs_bar, say
from bench.executors.ray_node import FORWARDED_ENV, code_version, probe_node, run_on_node
from bench.results import keep_record

#: how often Ray re-runs a task whose worker process or node died (a benchmark failure is never
#: retried: it is a result)
MAX_RETRIES = 2
#: how often (seconds) the driver looks for new or lost nodes while it waits
REFRESH_S = 2.0
#: how long pending jobs may wait for a usable node to appear before the sweep gives up
NO_NODE_WAIT_S = 120.0
INSTALL_FIX = "pip install 'convbench[ray]'"


def import_ray():
    """The ray module, or a SweepError naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise SweepError("--executor ray needs Ray, which is not installed here (%s); fix: %s"
                         % (exc, INSTALL_FIX))
    return ray


# --- the driver side --------------------------------------------------------------------------

class _Node(collections.namedtuple("_Node", "node_id ip hostname cpus gpus")):
    def slots(self, device):
        """How many of our jobs may run on it at once: 1, or one per GPU for CUDA jobs."""
        return int(self.gpus) if device == "cuda" else (1 if self.cpus >= 1 else 0)

    def request(self, device):
        """The task's resources: the whole node (a CUDA job: a GPU and its share of the CPUs)."""
        if device == "cuda":
            return {"num_cpus": int(self.cpus // max(self.gpus, 1)), "num_gpus": 1}
        return {"num_cpus": int(self.cpus)}

    def machine(self):
        """What the driver knows of the node's machine when no record came back from it."""
        return {"hostname": self.hostname, "cpu_model": None, "cpu_flags": [], "cores": int(self.cpus),
                "ram_gb": None, "os": None, "arch": None, "gpus": [], "matmul_peak_gflops": None}

    def identity(self):
        return {"kind": "ray", "node_id": self.node_id, "node_ip": self.ip, "hostname": self.hostname}


def _alive_nodes(ray):
    nodes = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        nodes[n["NodeID"]] = _Node(n["NodeID"], n.get("NodeManagerAddress"),
                                   n.get("NodeManagerHostname"), float(res.get("CPU", 0)),
                                   float(res.get("GPU", 0)))
    return nodes


def _describe_version(v):
    return "%s%s" % ((v.get("git_commit") or "no git commit")[:12], " (dirty)" if v.get("git_dirty") else "")


def _mismatch_error(result, version, spec):
    where = "%s (%s, node %s)" % (result["executor"]["hostname"], result["executor"]["node_ip"],
                                  result["executor"]["node_id"][:12])
    if result["version"] != version:
        what = "code %s, this driver runs %s" % (_describe_version(result["version"]),
                                                 _describe_version(version))
    else:
        what = "spec hash %s for model %s, this driver has %s" % (result["spec_hash"], spec.name,
                                                                   spec.spec_hash)
    return SweepError("refusing to mix code versions in one sweep: Ray node %s has %s; fix: check "
                      "out the same commit of convbench on every node (and the driver), with no "
                      "uncommitted changes on one side only" % (where, what))


def check_address(address, timeout_s=5.0):
    """Ray retries an unreachable GCS for many minutes: fail fast when nothing listens there.
    (None: $RAY_ADDRESS, else a local instance is started: nothing to check.)"""
    import socket

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address or address in ("auto", "local"):
        return
    target = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise SweepError("--ray-address %r is not HOST:PORT; fix: give the head node's address, "
                         "e.g. --ray-address 10.0.0.5:6379" % address)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SweepError("nothing answers at the Ray address %s (%s); fix: start the cluster "
                         "(`ray start --head`) or pass the head's address with --ray-address "
                         "HOST:PORT (docs/ray.md)" % (address, exc))


def _connect(ray, address):
    address = address or os.environ.get("RAY_ADDRESS") or None
    check_address(address)
    kwargs = {"address": address, "logging_level": "WARNING", "log_to_driver": True}
    if not address:
        kwargs["include_dashboard"] = False  # a fresh local instance: no dashboard needed
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise SweepError("cannot connect to the Ray cluster at %s (%s); fix: start one (`ray start "
                         "--head`) and pass its address with --ray-address HOST:PORT"
                         % (address or os.environ.get("RAY_ADDRESS") or "a new local instance", text))


def _preflight(ray, remote_probe, nodes, specs, version):
    """Every node's code version and spec hashes must match the driver's, before any job."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    spec_dicts = [s.to_dict() for s in specs]
    refs = dict((remote_probe.options(num_cpus=0, max_retries=1, scheduling_strategy=(
        NodeAffinitySchedulingStrategy(node_id, soft=False))).remote(spec_dicts), node_id)
        for node_id in nodes)
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=NO_NODE_WAIT_S)
    for ref in ready:
        try:
            answer = ray.get(ref)
        except ray.exceptions.RayError:
            continue  # a node that died meanwhile: its jobs go elsewhere
        if answer["version"] != version:
            raise _mismatch_error(dict(answer, spec_hash=None), version, specs[0])
        for spec, node_hash in zip(specs, answer["spec_hashes"]):
            if node_hash != spec.spec_hash:
                raise _mismatch_error(dict(answer, spec_hash=node_hash), version, spec)


def _failed_record(ray, job, node, session_id, version, exc, wall_s):
    """A job whose Ray task gave no result (its worker or node died on every try, or the task
    itself raised): a `failed` record, written by the driver like any other."""
    from bench.runner import WorkerOutcome
    from bench.session import build_record

    name = type(exc).__name__
    text = str(exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = (lines[-1] if isinstance(exc, ray.exceptions.RayTaskError) and lines else
              lines[0] if lines else "")[:300]
    if isinstance(exc, ray.exceptions.RayTaskError):
        what = "the Ray task raised on its node (%s: %s)" % (name, detail)
    else:
        what = "the Ray task's worker or node died on each of its %d tries (%s: %s)" % (
            MAX_RETRIES + 1, name, detail)
    reason = "%s; fix: see the Ray logs of node %s (%s)" % (what, node.hostname, node.ip)
    outcome = WorkerOutcome("failed", reason=reason, wall_s=wall_s)
    session = dict(version, session_id=session_id, machine=node.machine(), threads=job.config.threads)
    return build_record(job.backend, job.spec, job.config, session, outcome,
                        extra=dict(job.fields(), executor=node.identity()))


def run_jobs(jobs, address=None, data_dir=None, timeout_s=1800.0, results_path=None,
             on_record=None, memory_limit_mb=0):
    """Run the jobs on the Ray cluster at `address` (None: $RAY_ADDRESS, else a new local
    instance); append each record as it comes back. Returns the records in the order written."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not jobs:
        return []
    version = code_version()
    session_id = uuid.uuid4().hex[:12]
    devices = set(j.config.device for j in jobs)
    specs = list(collections.OrderedDict((j.spec.spec_hash, j.spec) for j in jobs).values())
    env = dict((k, os.environ.get(k)) for k in FORWARDED_ENV)
    _connect(ray, address)
    records, inflight = [], {}
    bar = None
    try:
        remote_job = ray.remote(run_on_node)
        remote_probe = ray.remote(probe_node)
        nodes = _alive_nodes(ray)
        if not any(n.slots(d) for n in nodes.values() for d in devices):
            raise SweepError("the Ray cluster has no node that can take a %s job (nodes: %s); fix: "
                             "add nodes with CPUs%s to the cluster" % (
                                 "/".join(sorted(devices)), _node_summary(nodes),
                                 " and GPUs" if "cuda" in devices else ""))
        _preflight(ray, remote_probe, nodes, specs, version)
        pending = collections.deque(jobs)
        load = collections.Counter()  # node_id -> our jobs in flight there
        bar = jobs_bar(len(jobs), desc="jobs on Ray")
        last_refresh = time.time()
        waiting_since = None
        while pending or inflight:
            if time.time() - last_refresh >= REFRESH_S:
                nodes, last_refresh = _alive_nodes(ray), time.time()
            for node in nodes.values():
                while pending and load[node.node_id] < node.slots(pending[0].config.device):
                    job = pending.popleft()
                    payload = {"index": job.index, "backend": job.backend.name,
                               "spec": job.spec.to_dict(), "spec_hash": job.spec.spec_hash,
                               "config": job.config.to_dict(), "repeat": job.repeat,
                               "sweep": job.sweep, "role": job.role, "timing": job.timing,
                               "training": job.training and job.training.to_dict(),
                               "version": version, "session_id": session_id,
                               "env": env, "data_dir": data_dir,
                               "timeout_s": timeout_s, "memory_limit_mb": memory_limit_mb}
                    ref = remote_job.options(
                        max_retries=MAX_RETRIES, retry_exceptions=False,
                        name="convbench %s" % job.label(),
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=True),
                        **node.request(job.config.device)).remote(payload)
                    inflight[ref] = (job, node, time.time())
                    load[node.node_id] += 1
            bar.set_postfix_str("%d running on %d node(s)" % (len(inflight), len(nodes)),
                                refresh=True)
            if not inflight:
                waiting_since = waiting_since or time.time()
                if time.time() - waiting_since > NO_NODE_WAIT_S:
                    raise SweepError("%d job(s) waited %.0f s for a usable Ray node (nodes: %s); "
                                     "fix: add nodes to the cluster" % (
                                         len(pending), NO_NODE_WAIT_S, _node_summary(nodes)))
                time.sleep(0.5)
                nodes, last_refresh = _alive_nodes(ray), time.time()
                continue
            waiting_since = None
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=REFRESH_S)
            for ref in ready:
                job, node, t0 = inflight.pop(ref)
                load[node.node_id] -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    record = _failed_record(ray, job, node, session_id, version, exc,
                                            time.time() - t0)
                else:
                    if result["kind"] == "mismatch":
                        raise _mismatch_error(result, version, job.spec)
                    record = result["record"]
                    if (record.get("git_commit"), record.get("git_dirty"), record.get("spec_hash")) != (
                            version["git_commit"], version["git_dirty"], job.spec.spec_hash):
                        raise _mismatch_error(dict(result, executor=record["executor"], version={
                            "git_commit": record.get("git_commit"),
                            "git_dirty": record.get("git_dirty")},
                            spec_hash=record.get("spec_hash")), version, job.spec)
                kept = keep_record(results_path, record)  # this driver is the only writer
                if kept:
                    record["_kept_in"] = kept  # side file or stdout; finish() names it
                records.append(record)
                bar.update(1)
                if on_record:
                    say(on_record(record))
    except BaseException as exc:
        _cancel(ray, list(inflight))
        if isinstance(exc, KeyboardInterrupt):
            exc.records_so_far = records
        raise
    finally:
        if bar is not None:
            bar.close()
        ray.shutdown()
    return records


def _cancel(ray, refs, grace_s=5.0):
    """Stop running jobs: a KeyboardInterrupt in each task first (the runner then kills its
    benchmark process group and reaps it), then, for what is still running, the task's worker
    (its benchmark process then ends at its next message: its pipe is gone)."""
    for ref in refs:
        try:
            ray.cancel(ref, force=False)
        except Exception:
            pass
    if not refs:
        return
    try:  # a graceful cancel first, then force
        _, running = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    except Exception:
        running = refs
    for ref in running:
        try:
            ray.cancel(ref, force=True)
        except Exception:
            pass


def _node_summary(nodes):
    if not nodes:
        return "none alive"
    return ", ".join("%s/%s %g CPU %g GPU" % (n.hostname, n.ip, n.cpus, n.gpus) for n in nodes.values())
