"""The `ray` executor on a real two-node Ray cluster on this machine (issue 9).

The cluster is two `ray start` nodes of 1 CPU each (a head and a node that joins it), every port
chosen free, each node with its own temp dir. Ray turns 127.0.0.1 into this machine's own address
(`resolve_ip_for_localhost`), so the nodes' addresses are this machine's; nothing leaves it.
Teardown stops exactly the processes this module started (their process groups and every process
carrying this module's tag): `ray stop` would also stop any other Ray instance on the machine.

What the tests hold the executor to: every job's record arrives once, with its node; a record made
on Ray equals the local executor's record of the same job apart from the fields listed in
VOLATILE (identity, node, timing, memory); a job whose Ray worker is killed mid-run ends as one
record, ok (retried) or failed, never lost or doubled; without Ray, `--executor ray` is a
one-line error naming the extra.
"""
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from bench.paths import REPO
from bench.results import validate_file
import needs
from procs import TAG_VAR, tagged_processes

SHORT = ["--backend", "numpy", "--threads", "1", "--limit-train", "1024", "--limit-test", "200",
         "--timing-runs", "1",
         "--warmup-steps", "1", "--no-report"]

#: what may differ between a job's record from the local executor and from Ray. Everything else
#: (config, spec hash, every step's loss, every evaluation's accuracy and loss, data digests,
#: software versions, git commit) must be identical: same weights, same batches, same code.
VOLATILE = {
    "run_id", "session_id", "time",   # identity of the record and of the invocation
    "executor",                       # where it ran: {"kind": "local"} vs the Ray node
    "machine",                        # fingerprint incl. the matmul peak, measured per session/node
    "environment.executable",         # the node's interpreter path (python vs python3, same venv)
    "wall_s", "timing", "memory",     # measurements
    "load", "gc",                     # the machine's other work; the collector's passes
    "sweep.id",                       # one per sweep invocation
    "epochs[].train_s", "epochs[].elapsed_s", "epochs[].eval_s", "curve[].train_s",
}
#: The summary's fields that are not measurements; every other one (step times, throughput and
#: its note, memory, times to accuracy, ...) derives from timing or memory, and new ones will too.
SUMMARY_DETERMINISTIC = ("test_accuracy", "steps")


def comparable(record):
    """The record without its VOLATILE fields."""
    out = json.loads(json.dumps(record))
    for path in VOLATILE:
        if "[]." in path:
            key, field = path.split("[].")
            for item in out.get(key) or []:
                item.pop(field, None)
        elif "." in path:
            key, field = path.split(".")
            (out.get(key) or {}).pop(field, None)
        else:
            out.pop(path, None)
    if "summary" in out:
        out["summary"] = {k: out["summary"].get(k) for k in SUMMARY_DETERMINISTIC}
    return out


def job_key(r):
    return (r["backend"], r["model"], r["config"]["batch_size"], r["threads"],
            (r["repeat"] or {}).get("index"))


def convbench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench"] + list(args), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout)


def records_of(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


# --- the cluster ------------------------------------------------------------------------------

def _port_is_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _free_ports(n, taken):
    """n distinct free ports (a contiguous range when asked for a worker range)."""
    while True:
        base = random.randint(20000, 60000 - n)
        block = list(range(base, base + n))
        if not taken.intersection(block) and all(_port_is_free(p) for p in block):
            taken.update(block)
            return block


def _ppid(pid):
    with open("/proc/%d/stat" % pid) as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


class Cluster(object):
    def __init__(self, tmp):
        self.tag = uuid.uuid4().hex
        self.tmp = tmp
        self.groups = []
        # token authentication with a token of its own: nodes and drivers get it from the
        # environment (not ~/.ray/auth_token, which this test neither reads nor writes)
        self.env = dict(os.environ, PYTHONPATH=REPO, RAY_USAGE_STATS_ENABLED="0",
                        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                        **{TAG_VAR: self.tag})
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("CONVBENCH_INJECT", None)
        self.ray = os.path.join(os.path.dirname(sys.executable), "ray")

    def start(self):
        taken = set()
        self.port = _free_ports(1, taken)[0]
        self.address = "127.0.0.1:%d" % self.port
        head = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                "--include-dashboard", "false", "--dashboard-port", str(_free_ports(1, taken)[0]),
                "--ray-client-server-port", str(_free_ports(1, taken)[0])]
        self._start("head", head, taken)
        self._start("node2", ["--address", self.address], taken)

    def _start(self, name, args, taken):
        ports = _free_ports(6, taken)
        workers = _free_ports(40, taken)
        temp = os.path.join(self.tmp, name)
        os.makedirs(temp)
        cmd = [self.ray, "start", "--num-cpus", "1", "--temp-dir", temp, "--disable-usage-stats",
               "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
               "--dashboard-agent-listen-port", str(ports[2]),
               "--dashboard-agent-grpc-port", str(ports[3]),
               "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
               "--min-worker-port", str(workers[0]), "--max-worker-port", str(workers[-1])] + args
        with open(os.path.join(self.tmp, name + ".log"), "w") as log:
            proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=log,
                                    start_new_session=True)  # its daemons keep this group
            self.groups.append(proc.pid)
            rc = proc.wait(timeout=120)
        if rc != 0:
            with open(os.path.join(self.tmp, name + ".log")) as fh:
                raise RuntimeError("ray start (%s) failed: %s" % (name, fh.read()[-2000:]))

    def driver_env(self, **extra):
        """The environment of a convbench driver process using this cluster."""
        env = dict(self.env, **extra)
        return env

    def stop(self):
        """Stop what this cluster started, by process group and by tag (no `ray stop`)."""
        for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            for pgid in self.groups:
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            for pid in tagged_processes(self.tag):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
            deadline = time.time() + wait
            while tagged_processes(self.tag) and time.time() < deadline:
                time.sleep(0.2)
            if not tagged_processes(self.tag):
                return


def _ray_or_skip():
    """Ray is an extra: its tests skip without it, or fail where it is required (CI installs it)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        needs.missing("ray", "the ray extra is not installed; fix: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _ray_or_skip()
    c = Cluster(str(tmp_path_factory.mktemp("ray")))
    try:
        c.start()
        yield c
    finally:
        c.stop()
        assert tagged_processes(c.tag) == {}, "a Ray process outlived the test cluster"


# --- the tests --------------------------------------------------------------------------------

def test_ray_sweep_every_record_once_with_its_node_and_equal_to_local(cluster, tmp_path):
    matrix = ["--batch-size", "64,128", "--repeat", "2"] + SHORT
    local_path, ray_path = str(tmp_path / "local.jsonl"), str(tmp_path / "ray.jsonl")

    t0 = time.time()
    proc = convbench("sweep", "--executor", "ray", "--ray-address", cluster.address,
                     "--results", ray_path, *matrix, env=cluster.driver_env())
    ray_s = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    t0 = time.time()
    local = convbench("sweep", "--results", local_path, *matrix, env=cluster.driver_env())
    local_s = time.time() - t0
    assert local.returncode == 0, local.stderr[-3000:]
    print("4 jobs: ray sweep %.1f s (2 nodes), local sweep %.1f s" % (ray_s, local_s))

    assert validate_file(ray_path) == (4, [])
    on_ray, here = records_of(ray_path), records_of(local_path)
    keys = sorted(job_key(r) for r in on_ray)
    assert keys == sorted(job_key(r) for r in here)
    assert len(set(keys)) == 4, "every job's record arrives exactly once"
    assert len(set(r["sweep"]["id"] for r in on_ray)) == 1
    assert len(set(r["session_id"] for r in on_ray)) == 1
    nodes = set()
    for r in on_ray:
        assert r["status"] == "ok", r["reason"]
        ex = r["executor"]
        assert ex["kind"] == "ray" and len(ex["node_id"]) == 56 and ex["node_ip"] and ex["hostname"]
        assert r["machine"]["hostname"] == ex["hostname"]
        assert r["machine"]["matmul_peak_gflops"] > 0  # measured on the node
        nodes.add(ex["node_id"])
        assert r["sweep"]["axes"] == {"batch_size": [64, 128], "threads": [1]}
    assert len(nodes) == 2, "both nodes ran jobs"

    by_key = dict((job_key(r), r) for r in here)
    for r in on_ray:
        twin = by_key[job_key(r)]
        assert twin["executor"] == {"kind": "local"}
        assert comparable(r) == comparable(twin)
        assert r["step_loss"] == twin["step_loss"]  # bit for bit: same weights, batches, code


def _find_job_worker(cluster, deadline):
    """(Ray worker pid, benchmark worker pid) of a job running on the cluster."""
    while time.time() < deadline:
        procs = tagged_processes(cluster.tag)
        for pid, cmd in procs.items():
            if "bench.worker" in cmd:
                try:
                    parent = _ppid(pid)
                except OSError:
                    continue
                if procs.get(parent, "").startswith("ray::"):
                    return parent, pid
        time.sleep(0.1)
    raise AssertionError("no benchmark worker appeared on the cluster")


def _start_slow_ray_sweep(cluster, path, step_sleep_ms):
    """Two numpy jobs on the cluster, each step slowed by an injected sleep (time to interfere)."""
    env = cluster.driver_env(CONVBENCH_INJECT="step_sleep_ms=%d" % step_sleep_ms)
    return subprocess.Popen([sys.executable, "-m", "bench", "sweep", "--executor", "ray",
                             "--ray-address", cluster.address, "--results", path,
                             "--batch-size", "64", "--repeat", "2"] + SHORT,
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)


def test_killed_ray_worker_gives_one_record_retried_or_failed(cluster, tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = _start_slow_ray_sweep(cluster, path, step_sleep_ms=150)  # ~2.5 s per job: time to kill
    try:
        ray_worker, bench_worker = _find_job_worker(cluster, time.time() + 90)
        time.sleep(0.5)
        os.kill(ray_worker, signal.SIGKILL)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 1), err[-3000:]
    records = records_of(path)
    assert validate_file(path) == (2, [])
    assert sorted(job_key(r) for r in records) == [("numpy", "seed_convnet", 64, 1, 0),
                                                   ("numpy", "seed_convnet", 64, 1, 1)]
    print("killed Ray worker %d (%s) running benchmark worker %d; records: %s" % (
        ray_worker, "ray::", bench_worker, [(r["status"], r["wall_s"]) for r in records]))
    for r in records:
        assert r["status"] in ("ok", "failed"), r["reason"]
        assert r["executor"]["kind"] == "ray"
        assert r["injected"] == {"step_sleep_ms": "150"}
        if r["status"] == "failed":
            assert "Ray" in r["reason"] and "\n" not in r["reason"]
    # the killed task's benchmark process does not outlive it for long: its pipe is gone
    deadline = time.time() + 30
    while bench_worker in tagged_processes(cluster.tag) and time.time() < deadline:
        time.sleep(0.2)
    assert bench_worker not in tagged_processes(cluster.tag), "the orphaned benchmark worker kept running"


def test_ctrl_c_on_the_driver_cancels_the_jobs_and_keeps_what_was_written(cluster, tmp_path):
    path = str(tmp_path / "runs.jsonl")
    proc = _start_slow_ray_sweep(cluster, path, step_sleep_ms=300)  # ~5 s per job
    try:
        _find_job_worker(cluster, time.time() + 90)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err, err[-3000:]
    written = records_of(path) if os.path.exists(path) else []
    assert len(written) < 2 and all(r["status"] == "ok" for r in written)
    deadline = time.time() + 20
    while time.time() < deadline and any("bench.worker" in c for c in tagged_processes(cluster.tag).values()):
        time.sleep(0.2)
    assert not any("bench.worker" in c for c in tagged_processes(cluster.tag).values()), \
        "a benchmark worker outlived the cancelled sweep"


def test_driver_refuses_a_node_with_other_code(cluster, tmp_path):
    """The driver compares each node's git commit + dirty flag with its own, before any job."""
    script = (
        "import sys\n"
        "from backends import registry\n"
        "from backends.base import TrainConfig\n"
        "from bench.jobs import expand\n"
        "from bench.executors import SweepError, ray_driver\n"
        "from models.spec import load_spec\n"
        "ray_driver.code_version = lambda: {'git_commit': '0' * 40, 'git_dirty': False}\n"
        "jobs = expand([registry.get('numpy')], [load_spec('seed_convnet')],\n"
        "                    TrainConfig(batch_size=64, threads=1, limit_train=1024, limit_test=200))\n"
        "try:\n"
        "    ray_driver.run_jobs(jobs, address=sys.argv[1], results_path=sys.argv[2])\n"
        "except SweepError as exc:\n"
        "    print('ERROR', exc)\n")
    path = str(tmp_path / "runs.jsonl")
    proc = subprocess.run([sys.executable, "-c", script, cluster.address, path], cwd=REPO,
                          env=cluster.driver_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert "ERROR refusing to mix code versions in one sweep" in proc.stdout, proc.stderr[-3000:]
    assert "this driver runs 000000000000" in proc.stdout
    assert not os.path.exists(path), "no record was written"


OVERHEAD_SCRIPT = """
import json, sys, time
from backends import registry
from backends.base import TrainConfig
from bench.jobs import expand
from bench.executors import SweepError, ray_driver
from models.spec import load_spec
jobs = expand([registry.get("numpy")], [load_spec("seed_convnet")],
               TrainConfig(batch_size=64, threads=1, limit_train=1024, limit_test=200,
                           warmup_steps=1), repeat=4)
arrivals = []
t0 = time.time()
records = ray_driver.run_jobs(jobs, address=sys.argv[1], results_path=sys.argv[2],
                                on_record=lambda r: arrivals.append(time.time()))
print(json.dumps({"t0": t0, "total": time.time() - t0, "arrivals": arrivals,
                  "wall": [r["wall_s"] for r in records],
                  "node": [r["executor"]["node_id"] for r in records]}))
"""


def test_executor_overhead_per_job_is_well_under_two_seconds(cluster, tmp_path):
    """Time a job spends outside its benchmark worker under Ray (dispatch, task start, result,
    append): between two consecutive records of one node, minus the second job's worker time."""
    proc = subprocess.run([sys.executable, "-c", OVERHEAD_SCRIPT, cluster.address,
                           str(tmp_path / "runs.jsonl")], cwd=REPO, env=cluster.driver_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    per_node, first, steady = {}, [], []
    for arrived, wall, node in zip(m["arrivals"], m["wall"], m["node"]):
        previous = per_node.get(node)
        (first if previous is None else steady).append(arrived - (previous or m["t0"]) - wall)
        per_node[node] = arrived
    print("Ray executor overhead: first job of a node %s s (connect, preflight, worker start, "
          "matmul peak), later jobs %s s; 4 jobs in %.1f s, worker time %s s" % (
              ["%.2f" % x for x in first], ["%.3f" % x for x in steady], m["total"],
              ["%.2f" % w for w in m["wall"]]))
    assert len(per_node) == 2 and len(steady) == 2
    assert max(steady) < 2.0


def test_unreachable_ray_address_is_one_line_at_once(tmp_path):
    _ray_or_skip()
    port = _free_ports(1, set())[0]  # nothing listens there
    t0 = time.time()
    proc = convbench("sweep", "--executor", "ray", "--ray-address", "127.0.0.1:%d" % port,
                     "--results", str(tmp_path / "r.jsonl"), *SHORT)
    assert proc.returncode == 2 and time.time() - t0 < 30, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing answers at the Ray address" in lines[0], lines


def test_ray_not_installed_is_one_line_naming_the_extra(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None  # no Ray\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for command in ("sweep", "run"):
        proc = convbench(command, "--executor", "ray", "--results", str(tmp_path / "r.jsonl"),
                         *SHORT, env=env)
        assert proc.returncode == 2, proc.stderr
        lines = [l for l in proc.stderr.splitlines() if l.startswith("convbench: error")]
        assert len(lines) == 1 and "pip install 'convbench[ray]'" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.jsonl").exists()
