"""The jobs of a run or sweep: a matrix of backends x models x batch sizes x thread counts x
repeats (`expand`), in the order they run. Executors (bench/executors/) take them from here."""
import uuid
from typing import Any, NamedTuple, Optional


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
