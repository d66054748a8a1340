"""The jobs of a run or sweep: a matrix of backends x models x batch sizes x thread counts x
repeats (`expand`), in the order they run, plus each training job's timing-only processes.
Executors (bench/executors/) take them from here.

Why timing processes: a step time measured in one process carries that process' luck (where its
buffers landed, what else ran, how the CPU clocked), which its own steps cannot show: the spread
between fresh processes is several times the spread within one. So every training job gets
`timing_runs - 1` siblings: fresh processes of the same backend and configuration that only time
`timing_steps` steady steps (same weights, same first batches) and skip the accuracy work. They
run after the training jobs, interleaved across backends with the order rotated each round
(A B C, B C A, C A B ...), so slow drift of the machine touches every backend alike. A figure
is then the median of the process medians (bench/selection.py), with a CI across processes.
"""
import hashlib
import json
import uuid
from typing import Any, NamedTuple, Optional

#: fresh processes per backend and configuration whose step times make a figure (`run`'s default)
DEFAULT_TIMING_RUNS = 5
#: steady steps (after the first step and the warm-up) that a timing-only process times
DEFAULT_TIMING_STEPS = 50
#: test examples a timing-only process evaluates (the harness ends every epoch with one; its
#: accuracy means nothing and is never shown)
TIMING_TEST_EXAMPLES = 1000


class Job(NamedTuple):
    """One cell of the matrix: one backend trained once on one model with one configuration (or,
    role "timing", a fresh process that only times steps of that cell)."""
    index: int
    backend: Any          # backends.registry.Backend
    spec: Any             # models.spec.Spec
    config: Any           # backends.base.TrainConfig; threads 0 = all cores of the machine that runs it
    repeat: Optional[dict]  # {"index": i, "of": n} (0-based) or None when the job is not repeated
    sweep: Optional[dict]   # {"id": ..., "axes": {...}} or None outside `convbench sweep`
    role: str = "train"     # "train": the full run; "timing": step times only
    timing: Optional[dict] = None  # {"index": i, "of": n}: this process among the cell's timers
    training: Optional[Any] = None  # a timing job's training config (None: `config` is it)

    @property
    def training_config(self):
        return self.training if self.training is not None else self.config

    def fields(self):
        """The record fields that group this job with its siblings. A timing-only process carries
        its training run's `work_hash`: the same work, timed apart."""
        return {"sweep": self.sweep, "repeat": self.repeat, "role": self.role,
                "timing_run": self.timing,
                "work_hash": work_hash(self.spec.spec_hash, self.training_config.to_dict())}

    def label(self):
        text = "%s %s b%d t%s" % (self.backend.name, self.spec.name, self.config.batch_size,
                                  self.config.threads or "all")
        if self.repeat:
            text += " r%d/%d" % (self.repeat["index"] + 1, self.repeat["of"])
        if self.role == "timing":
            text += " timing %d/%d" % (self.timing["index"] + 1, self.timing["of"])
        return text


def work_hash(spec_hash, config):
    """What makes two records the same work: the network and the whole training configuration
    but the seed (sha256, 12 hex). The report's tables never mix two hashes; the seed changes
    which numbers are computed, not how much work, so the runs of `--seeds` pool into one row."""
    config = dict((k, v) for k, v in config.items() if k != "seed")
    text = json.dumps([spec_hash, config], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def new_sweep_id():
    return uuid.uuid4().hex[:12]


def timing_config(config, steps=DEFAULT_TIMING_STEPS):
    """The config of a timing-only process: the first step, the warm-up and `steps` steady steps
    of the training run's first epoch (the same training set, so the same batch order), no
    mid-epoch evaluation, a token evaluation at the end (no target: it trains too little)."""
    return config._replace(epochs=1, max_steps=1 + config.warmup_steps + steps, evals_per_epoch=0,
                           limit_test=min(config.limit_test or TIMING_TEST_EXAMPLES,
                                          TIMING_TEST_EXAMPLES), target_accuracy=0.0)


def expand(backends, specs, base_config, batch_sizes=None, threads=None, repeat=1, sweep_axes=None,
           timing_runs=1, timing_steps=DEFAULT_TIMING_STEPS, seeds=None):
    """All jobs of the matrix, in the order they run.

    base_config: a TrainConfig, or a function spec -> TrainConfig (models carry their own training
    defaults); batch_sizes/threads None: the base config's value.

    Thread counts vary slowest (one session context each), then models and batch sizes; repeats
    come before backends, so every backend's k-th run is next to the others' (slow drift of the
    machine then touches every backend alike). After a cell's training jobs come its timing-only
    processes (timing_runs - 1 per backend), in rounds with the backend order rotated.
    `sweep_axes` (a dict) makes the jobs part of one sweep with a fresh id; None leaves `sweep`
    null (a plain `convbench run`). `seeds` (a list) makes the repeats: repeat k trains every
    backend with seed seeds[k] (initial weights and data order); the timing processes use the first.
    """
    config_for = base_config if callable(base_config) else (lambda spec: base_config)
    sweep = {"id": new_sweep_id(), "axes": sweep_axes} if sweep_axes is not None else None
    timed = timing_runs > 1
    jobs = []

    def add(backend, spec, config, rep, role="train", timing=None, training=None):
        jobs.append(Job(len(jobs), backend, spec, config, rep, sweep, role, timing, training))

    for t in (threads if threads is not None else [None]):
        for spec in specs:
            base = config_for(spec)
            for b in (batch_sizes or [base.batch_size]):
                config = base._replace(batch_size=b, threads=base.threads if t is None else t)
                runs = [config._replace(seed=s) for s in seeds] if seeds else [config] * repeat
                for r, run_config in enumerate(runs):
                    for backend in backends:
                        rep = {"index": r, "of": len(runs)} if len(runs) > 1 else None
                        add(backend, spec, run_config, rep,
                            timing={"index": 0, "of": timing_runs} if timed else None)
                config = runs[0]
                quick = timing_config(config, timing_steps)
                for i in range(1, timing_runs):
                    shift = i % len(backends)
                    for backend in backends[shift:] + backends[:shift]:
                        add(backend, spec, quick, None, "timing", {"index": i, "of": timing_runs},
                            training=config)
    return jobs
