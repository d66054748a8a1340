"""What a run will do, from its command line: the backends and the TrainConfig (a flag wins, then
the model's [training] table, then the suite's default). bench/jobs.py expands them into jobs."""
from backends import registry
from backends.base import TrainConfig
from backends.common import schedule
from bench.cli_types import UsageError
from bench.context import usable_cpus

# the options whose default is the model's [training] table, then the suite's TrainConfig
TRAINING_OPTIONS = ("optimizer", "lr", "momentum", "rho", "eps", "batch_size", "epochs",
                    "schedule", "decay", "gamma", "decay_steps")
MNIST_TRAIN = 60000


def config_from_args(args, spec=None):
    """The run's TrainConfig: a flag wins, then the model's [training] defaults (with
    --target-accuracy, its [training.target] recipe over them), then the suite's."""
    d = TrainConfig()._asdict()
    training = dict(spec.training) if spec is not None else {}
    target = dict(training.pop("target", ()))
    d.update(training)
    target_accuracy = getattr(args, "target_accuracy", None) or 0.0
    if target_accuracy:
        d.update(target)
    d.update((k, getattr(args, k)) for k in TRAINING_OPTIONS if getattr(args, k, None) is not None)
    if d["schedule"] == "cosine" and not d["decay_steps"]:  # the whole run
        d["decay_steps"] = d["epochs"] * ((args.limit_train or MNIST_TRAIN) // d["batch_size"])
    config = TrainConfig(**dict(
        d, seed=args.seed, threads=args.threads or usable_cpus(), device=args.device,
        dtype=args.dtype, limit_train=args.limit_train, limit_test=args.limit_test,
        warmup_steps=args.warmup_steps, mode=args.mode, target_accuracy=target_accuracy,
        evals_per_epoch=getattr(args, "evals_per_epoch", None) or d["evals_per_epoch"]))
    try:
        schedule.check(config)
    except schedule.ScheduleError as exc:
        raise UsageError("%s (flags --schedule, --decay, --gamma, --decay-steps, or the model's "
                         "[training] table)" % exc)
    return config


def backends_from_arg(text):
    """The registry entries a comma-separated --backend names, in its order."""
    names = [n.strip() for n in text.split(",") if n.strip()]
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
