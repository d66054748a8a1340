"""The command line's shared pieces: UsageError, argparse types, and the option groups that
several commands take."""
import argparse

from backends.base import DEVICES, DTYPES, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from bench.executors import EXECUTORS
from bench.results import DEFAULT_RESULTS

DEFAULT_BACKENDS = "numpy,torch"
DEFAULT_MODEL = "seed_convnet"


class UsageError(Exception):
    """A bad value the user gave: printed as one line, exit status 2."""


def int_at_least(minimum):
    """argparse type: a whole number >= minimum, with a one-line error otherwise."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be a whole number, got %r" % text)
        if value < minimum:
            raise argparse.ArgumentTypeError("must be >= %d, got %d" % (minimum, value))
        return value
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number, got %r" % text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number, got %r" % text)
    return value


def fraction(text):
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number, got %r" % text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1), got %r" % text)
    return value


def int_list(minimum):
    """argparse type: comma-separated whole numbers >= minimum, no repeats."""
    one = int_at_least(minimum)

    def parse(text):
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give one or more comma-separated numbers")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError("a value is repeated in %r" % text)
        return values
    return parse


def add_config_options(p):
    """The run's configuration, on `run` and `sweep`."""
    d = TrainConfig()
    p.add_argument("--backend", default=DEFAULT_BACKENDS,
                   help="comma-separated backends (default: %(default)s; see `convbench list`)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a model name from models/ or a path to a spec .toml (default: %(default)s)")
    # these five default to the model's [training] table, then to the suite's defaults
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="(default: the model's, else %d)" % d.epochs)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="(default: the model's, else %d)" % d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="momentum = SGD with momentum (default: the model's, else %s)" % d.optimizer)
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate on the batch-mean loss (default: the model's, else %g)" % d.lr)
    p.add_argument("--momentum", type=fraction, default=None,
                   help="(default: the model's, else %g)" % d.momentum)
    p.add_argument("--rho", type=fraction, default=None,
                   help="rmsprop / adadelta decay (default: the model's, else %g)" % d.rho)
    p.add_argument("--eps", type=positive_float, default=None,
                   help="adam / rmsprop / adadelta epsilon (default: the model's, else %g)" % d.eps)
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning-rate schedule: time lr/(1+decay*k), step lr*gamma^(k//decay_steps), "
                        "cosine over decay_steps (0: the whole run) (default: the model's, else "
                        "constant)")
    p.add_argument("--decay", type=positive_float, default=None, help="time schedule's decay")
    p.add_argument("--gamma", type=fraction, default=None, help="step schedule's factor")
    p.add_argument("--decay-steps", type=non_negative_int, default=None, metavar="N",
                   help="step schedule's period, cosine's length, in steps")
    p.add_argument("--target-accuracy", type=fraction, default=None, metavar="A",
                   help="time to accuracy: train until the test accuracy (evaluated "
                        "--evals-per-epoch times an epoch, untimed) reaches A, at most the epochs; "
                        "uses the model's [training.target] recipe where it has one")
    p.add_argument("--evals-per-epoch", type=positive_int, default=None, metavar="N",
                   help="test evaluations per epoch (default %d)" % d.evals_per_epoch)
    p.add_argument("--seed", type=non_negative_int, default=d.seed,
                   help="initial weights and data order (default: %(default)s); --seeds for several")
    p.add_argument("--no-dropout", action="store_true",
                   help="train with the spec's dropout layers off (the identity)")
    p.add_argument("--device", choices=DEVICES, default=d.device)
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype)
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="full: compute in --dtype (default); bf16: bfloat16 compute with float32 "
                        "master weights, through the framework's autocast / mixed-precision "
                        "policy (backends without one record 'unsupported')")
    p.add_argument("--threads", type=non_negative_int, default=d.threads,
                   help="thread budget of every backend (default 0: all cores)")
    p.add_argument("--limit-train", type=non_negative_int, default=0, metavar="N",
                   help="train on the first N examples only (default: all 60000)")
    p.add_argument("--limit-test", type=non_negative_int, default=0, metavar="N",
                   help="evaluate on the first N test examples only (default: all 10000)")
    p.add_argument("--warmup-steps", type=non_negative_int, default=d.warmup_steps,
                   help="steps after the first excluded from statistics (default: %(default)s)")
    p.add_argument("--mode", choices=("step", "epoch"), default=d.mode,
                   help="step: harness-timed train_step loop; epoch: the framework's own epoch "
                        "loop where the adapter has one (Keras fit, Estimator)")
    p.add_argument("--data-dir", default=None,
                   help="directory with the four MNIST .gz files (else $CONVBENCH_DATA, "
                        "../shared/data/mnist, or a download)")
    p.add_argument("--timeout", type=positive_float, default=1800.0,
                   help="seconds before a worker is killed (default: %(default)s)")
    p.add_argument("--memory-limit-mb", type=non_negative_int, default=0, metavar="N",
                   help="cap each worker's address space at N MiB (RLIMIT_AS); a worker that "
                        "needs more ends as failed (default 0: no limit)")


def add_results_option(p):
    p.add_argument("--results", default=DEFAULT_RESULTS,
                   help="results file, JSON Lines (default: results/runs.jsonl)")


def add_report_options(p):
    """Where `run` and `sweep` write the report, or none."""
    p.add_argument("--report-dir", default=None,
                   help="where the report goes (default: beside the results file)")
    p.add_argument("--no-report", action="store_true", help="append records only")


def add_matrix_options(p, timing_runs):
    """--repeat, the timing processes and the executor (bench/executors/), on `run` and `sweep`."""
    from bench.jobs import DEFAULT_TIMING_STEPS

    p.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                   help="run every job N times with the same seed (default: %(default)s): the "
                        "same numbers again, for run-to-run timing")
    p.add_argument("--seeds", type=int_list(0), default=None, metavar="S,S,...",
                   help="one training run per seed (initial weights and data order, the same for "
                        "every backend in a run); the report gives the accuracy's mean and spread "
                        "over the seeds. Instead of --repeat and --seed")
    p.add_argument("--timing-runs", type=positive_int, default=timing_runs, metavar="N",
                   help="fresh processes per backend whose step times make its figure: the "
                        "training run plus N-1 timing-only ones, interleaved across backends "
                        "(default: %(default)s; 1: the training run alone, no CI across processes)")
    p.add_argument("--timing-steps", type=positive_int, default=DEFAULT_TIMING_STEPS, metavar="S",
                   help="steady steps a timing-only process times, after its first step and "
                        "warm-up (default: %(default)s)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: one job after another here (default); ray: each job on a node of "
                        "a Ray cluster, one job per node (pip install 'convbench[ray]', docs/ray.md); "
                        "inline: in this process, for a debugger or profiler (no timeout)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster to use with --executor ray (default: $RAY_ADDRESS, else "
                        "a new single-node Ray instance here)")
