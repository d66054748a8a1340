"""What a run will do, from its command line: the backends and the TrainConfig (a flag wins, then
the model's [training] table, then the suite's default). bench/jobs.py expands them into jobs."""
from backends import registry
from backends.base import TrainConfig
from bench.cli_types import UsageError
from bench.context import usable_cpus

# the options whose default is the model's [training] table, then the suite's TrainConfig
TRAINING_OPTIONS = ("optimizer", "lr", "momentum", "batch_size", "epochs")


def config_from_args(args, spec=None):
    """The run's TrainConfig: a flag wins, then the model's [training] defaults, then the suite's."""
    d = TrainConfig()._asdict()
    d.update(dict(spec.training) if spec is not None else {})
    d.update((k, getattr(args, k)) for k in TRAINING_OPTIONS if getattr(args, k, None) is not None)
    return TrainConfig(optimizer=d["optimizer"], lr=d["lr"], momentum=d["momentum"],
                       batch_size=d["batch_size"], epochs=d["epochs"], seed=args.seed,
                       threads=args.threads or usable_cpus(), device=args.device,
                       dtype=args.dtype, limit_train=args.limit_train, limit_test=args.limit_test,
                       warmup_steps=args.warmup_steps, mode=args.mode)


def backends_from_arg(text):
    """The registry entries a comma-separated --backend names, in its order."""
    names = []
    for n in (n.strip() for n in text.split(",")):
        if n and n not in names:  # a backend given twice runs once
            names.append(n)
    if not names:
        raise UsageError("--backend is empty; give one or more of: %s" % ", ".join(registry.names()))
    try:
        backends = [registry.get(n) for n in names]
    except registry.UnknownBackend as exc:
        raise UsageError("%s; see `convbench list`" % exc)
    known = None
    for b in backends:
        if "@" in b.name and b.env != "base":
            from bench.envs import tox_env_list

            known = known or tox_env_list()
            if b.env not in known:
                raise UsageError("backend %s: no environment %r (tox.ini has: base, %s)"
                                 % (b.name, b.env, ", ".join(known)))
    return backends
