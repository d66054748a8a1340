"""What a run will do, from its command line: the backends and the TrainConfig (a flag wins, then
the model's [training] table, then the suite's default). bench/jobs.py expands them into jobs."""
from backends import registry
from backends.base import DEFAULT_LR, TrainConfig
from backends.common import schedule
from bench.cli_types import UsageError
from bench.context import usable_cpus

# the options whose default is the model's [training] table, then the suite's TrainConfig
TRAINING_OPTIONS = ("optimizer", "lr", "momentum", "rho", "eps", "batch_size", "epochs",
                    "schedule", "decay", "gamma", "decay_steps")
MNIST_TRAIN = 60000


def config_from_args(args, spec=None):
    """The run's TrainConfig: a flag wins, then the model's [training] defaults (with
    --target-accuracy, its [training.target] recipe over them), then the suite's; the learning
    rate, when neither flag nor table sets it for the optimizer in use, is that optimizer's default
    (backends.base.DEFAULT_LR)."""
    return config_and_lr_source(args, spec)[0]


def config_and_lr_source(args, spec=None):
    """(TrainConfig, where its learning rate came from, in words for the run's header)."""
    d = TrainConfig()._asdict()
    table = dict(spec.training) if spec is not None else {}
    target = dict(table.pop("target", ()))
    target_accuracy = getattr(args, "target_accuracy", None) or 0.0
    if target_accuracy:
        table.update(target)
    d.update(table)
    d.update((k, getattr(args, k)) for k in TRAINING_OPTIONS if getattr(args, k, None) is not None)
    if getattr(args, "lr", None) is not None:
        lr_source = "--lr"
    elif "lr" in table and table.get("optimizer", TrainConfig().optimizer) == d["optimizer"]:
        lr_source = "the model's [training] table"
    else:  # a table's lr belongs to the table's optimizer: another optimizer gets its own default
        d["lr"] = DEFAULT_LR[d["optimizer"]]
        lr_source = "%s's default" % d["optimizer"]
    if d["schedule"] == "cosine" and not d["decay_steps"]:  # the whole run
        d["decay_steps"] = d["epochs"] * ((args.limit_train or MNIST_TRAIN) // d["batch_size"])
    config = TrainConfig(**dict(
        d, seed=args.seed, threads=args.threads or usable_cpus(), device=args.device,
        dtype=args.dtype, dropout=not getattr(args, "no_dropout", False),
        limit_train=args.limit_train, limit_test=args.limit_test,
        warmup_steps=args.warmup_steps, mode=args.mode, target_accuracy=target_accuracy,
        evals_per_epoch=getattr(args, "evals_per_epoch", None) or d["evals_per_epoch"],
        precision=getattr(args, "precision", None) or "full"))
    if config.precision == "bf16" and config.dtype != "float32":
        raise UsageError("--precision bf16 keeps float32 master weights: it needs --dtype float32")
    try:
        schedule.check(config)
    except schedule.ScheduleError as exc:
        raise UsageError("%s (flags --schedule, --decay, --gamma, --decay-steps, or the model's "
                         "[training] table)" % exc)
    return config, lr_source


def settings_line(config, lr_source):
    """Every setting that changes the work, for the line a run or sweep starts with."""
    parts = ["%d epoch(s)" % config.epochs, "batch %d" % config.batch_size,
             "%s lr %g (%s)" % (config.optimizer, config.lr, lr_source)]
    if config.optimizer in ("momentum", "nesterov"):
        parts.append("momentum %g" % config.momentum)
    if config.optimizer == "adadelta":
        parts.append("rho %g, eps %g" % (config.rho, config.eps))
    if config.schedule != "constant":
        parts.append("%s schedule (%s)" % (config.schedule, ", ".join(
            "%s %g" % (k, getattr(config, k)) for k in ("decay", "gamma", "decay_steps")
            if getattr(config, k) != getattr(TrainConfig(), k))))
    if config.target_accuracy:
        parts.append("until test accuracy %g" % config.target_accuracy)
    parts += [config.dtype + (" (bf16 mixed precision)" if config.precision == "bf16" else ""),
              "%s mode" % config.mode, "seed %d" % config.seed,
              "dropout %s" % ("on" if config.dropout else "off"),
              "train on %s" % (config.limit_train or "all 60000"),
              "test on %s" % (config.limit_test or "all 10000"),
              "warm-up %d step(s)" % config.warmup_steps,
              "%d evaluation(s) an epoch" % config.evals_per_epoch,
              "%d thread(s)" % config.threads, "device %s" % config.device]
    return ", ".join(parts)


def backends_from_arg(text):
    """The registry entries a comma-separated --backend names, in its order."""
    names = []
    for n in (n.strip() for n in text.split(",")):
        if n and n not in names:  # a backend given twice runs once
            names.append(n)
    if names == ["all"]:  # every registered backend (not the NAME@ENV controls)
        names = registry.names()
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


def load_run_spec(name_or_path):
    """The spec a run trains; one notice on stderr when a spec file's network differs from the
    built-in model whose name it takes (models/spec.py renames it `<name>@<hash>`)."""
    import sys

    from models.spec import load_spec

    spec = load_spec(name_or_path)
    if "@" in spec.name:
        base = spec.name.split("@")[0]
        print("convbench: note: %s is not the built-in %s (another network: %d parameters, the "
              "built-in has %d); its records say %s" % (name_or_path, base, spec.param_count,
                                                        load_spec(base).param_count, spec.name),
              file=sys.stderr)
    return spec
