"""convbench: run | sweep | list | report | check | compare | microbench | new-backend.
(`python -m bench` too.)

Errors the user can fix are one line on stderr naming the fix, with exit status 2; a run whose
backends did not all succeed exits 1 after writing every record it has.
"""
import argparse
import os
import sys

from backends import registry
from backends.base import DEVICES, DTYPES, OPTIMIZERS, TrainConfig
from bench import envs
from bench.context import usable_cpus
from bench.results import DEFAULT_RESULTS

DEFAULT_BACKENDS = "numpy,torch"
DEFAULT_MODEL = "seed_convnet"


class UsageError(Exception):
    """A bad value the user gave: printed as one line, exit status 2."""


def _int_at_least(minimum):
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


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number, got %r" % text)
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number, got %r" % text)
    return value


def _fraction(text):
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number, got %r" % text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1), got %r" % text)
    return value


def _add_config_options(p):
    d = TrainConfig()
    p.add_argument("--backend", default=DEFAULT_BACKENDS,
                   help="comma-separated backends (default: %(default)s; see `convbench list`)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a model name from models/ or a path to a spec .toml (default: %(default)s)")
    # these five default to the model's [training] table, then to the suite's defaults
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="(default: the model's, else %d)" % d.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="(default: the model's, else %d)" % d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                   help="momentum = SGD with momentum (default: the model's, else %s)" % d.optimizer)
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate on the batch-mean loss (default: the model's, else %g)" % d.lr)
    p.add_argument("--momentum", type=_fraction, default=None,
                   help="(default: the model's, else %g)" % d.momentum)
    p.add_argument("--seed", type=_non_negative_int, default=d.seed,
                   help="initial weights and data order (default: %(default)s)")
    p.add_argument("--device", choices=DEVICES, default=d.device)
    p.add_argument("--dtype", choices=DTYPES, default=d.dtype)
    p.add_argument("--threads", type=_non_negative_int, default=d.threads,
                   help="thread budget of every backend (default 0: all cores)")
    p.add_argument("--limit-train", type=_non_negative_int, default=0, metavar="N",
                   help="train on the first N examples only (default: all 60000)")
    p.add_argument("--limit-test", type=_non_negative_int, default=0, metavar="N",
                   help="evaluate on the first N test examples only (default: all 10000)")
    p.add_argument("--warmup-steps", type=_non_negative_int, default=d.warmup_steps,
                   help="steps after the first excluded from statistics (default: %(default)s)")
    p.add_argument("--mode", choices=("step", "epoch"), default=d.mode,
                   help="step: harness-timed train_step loop; epoch: the framework's own epoch "
                        "loop where the adapter has one (Keras fit, Estimator)")
    p.add_argument("--data-dir", default=None,
                   help="directory with the four MNIST .gz files (else $CONVBENCH_DATA, "
                        "../shared/data/mnist, or a download)")
    p.add_argument("--timeout", type=_positive_float, default=1800.0,
                   help="seconds before a worker is killed (default: %(default)s)")
    p.add_argument("--memory-limit-mb", type=_non_negative_int, default=0, metavar="N",
                   help="cap each worker's address space at N MiB (RLIMIT_AS); a worker that "
                        "needs more ends as failed (default 0: no limit)")


def _add_results_option(p):
    p.add_argument("--results", default=DEFAULT_RESULTS,
                   help="results file, JSON Lines (default: results/runs.jsonl)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="convbench",
        description="One ConvNet spec, many frameworks, trained on MNIST and measured honestly.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="train backends on MNIST, append records, write the report")
    _add_config_options(run)
    _add_results_option(run)
    run.add_argument("--report-dir", default=None,
                     help="where the report goes (default: beside the results file)")
    run.add_argument("--no-report", action="store_true", help="append records only")
    _add_matrix_options(run)

    swp = sub.add_parser("sweep", help="a job matrix: backends x models x batch sizes x threads x "
                                       "repeats, locally or on a Ray cluster; then the report",
                         conflict_handler="resolve")  # list-valued --model/--batch-size/--threads
    _add_config_options(swp)
    swp.add_argument("--model", default=DEFAULT_MODEL,
                     help="comma-separated models (names or spec paths; default: %(default)s)")
    swp.add_argument("--batch-size", type=_int_list(1), default=None, metavar="B[,B...]",
                     help="comma-separated batch sizes (default: each model's, else %d)"
                          % TrainConfig().batch_size)
    swp.add_argument("--threads", type=_int_list(0), default=[0], metavar="T[,T...]",
                     help="comma-separated thread budgets (default 0: all cores of the machine)")
    _add_results_option(swp)
    swp.add_argument("--report-dir", default=None,
                     help="where the report goes (default: beside the results file)")
    swp.add_argument("--no-report", action="store_true", help="append records only")
    _add_matrix_options(swp)

    lst = sub.add_parser("list", help="backends (with availability) and models (with size, FLOPs)")
    lst.add_argument("--verbose", action="store_true", help="also print each model's layers")

    rep = sub.add_parser("report", help="regenerate results/report.{md,html} from the records")
    _add_results_option(rep)
    rep.add_argument("--out", default=None, help="output directory (default: beside the results)")

    chk = sub.add_parser("check", help="validate a results file; verify MNIST and backends")
    chk.add_argument("--results", default=None, help="validate only this results file")
    chk.add_argument("--data-dir", default=None)

    cmp_ = sub.add_parser("compare", help="compare two runs: step time (Mann-Whitney U), accuracy, "
                                          "memory; exit 1 on a significant regression")
    cmp_.add_argument("a", metavar="A", help="baseline: a results file, or a session/run id in --results")
    cmp_.add_argument("b", metavar="B", help="candidate: a results file, or a session/run id in --results")
    _add_results_option(cmp_)
    cmp_.add_argument("--threshold", type=_positive_float, default=1.10,
                      help="a slowdown ratio B/A past which a significant change is marked "
                           "(default: %(default)s, i.e. 10%% slower; improvement below 1/threshold)")
    cmp_.add_argument("--alpha", type=_positive_float, default=0.05,
                      help="significance level of the Mann-Whitney U test (default: %(default)s)")
    cmp_.add_argument("--markdown", action="store_true", help="print the table as Markdown")

    from bench import microbench
    mb = sub.add_parser("microbench", help="per-layer micro-benchmarks (pytest-benchmark) in every "
                                           "built environment; JSON in results/microbench/")
    microbench.add_arguments(mb)

    nb = sub.add_parser("new-backend", help="write the adapter skeleton backends/NAME_backend.py "
                                            "and its registry entry (docs/adding-a-backend.md)")
    nb.add_argument("name", metavar="NAME", help="the new backend's name: lower-case letters, "
                                                 "digits and _")
    return parser


def _int_list(minimum):
    """argparse type: comma-separated whole numbers >= minimum, no repeats."""
    one = _int_at_least(minimum)

    def parse(text):
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give one or more comma-separated numbers")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError("a value is repeated in %r" % text)
        return values
    return parse


def _add_matrix_options(p):
    """--repeat and the executor (bench/sweep.py), on `run` and `sweep`."""
    p.add_argument("--repeat", type=_positive_int, default=1, metavar="N",
                   help="run every job N times (default: %(default)s); the report gives the "
                        "accuracy's mean and spread over the repeats")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: one job after another here (default); ray: each job on a node of "
                        "a Ray cluster, one job per node (pip install 'convbench[ray]', docs/ray.md)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster to use with --executor ray (default: $RAY_ADDRESS, else "
                        "a new single-node Ray instance here)")


TRAINING_OPTIONS = ("optimizer", "lr", "momentum", "batch_size", "epochs")


def _config_from_args(args, spec=None):
    """The run's TrainConfig: a flag wins, then the model's [training] defaults, then the suite's."""
    d = TrainConfig()._asdict()
    d.update(dict(spec.training) if spec is not None else {})
    d.update((k, getattr(args, k)) for k in TRAINING_OPTIONS if getattr(args, k, None) is not None)
    return TrainConfig(optimizer=d["optimizer"], lr=d["lr"], momentum=d["momentum"],
                       batch_size=d["batch_size"], epochs=d["epochs"], seed=args.seed,
                       threads=args.threads or usable_cpus(), device=args.device,
                       dtype=args.dtype, limit_train=args.limit_train, limit_test=args.limit_test,
                       warmup_steps=args.warmup_steps, mode=args.mode)


def _backends_from_arg(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--backend is empty; give one or more of: %s" % ", ".join(registry.names()))
    try:
        return [registry.get(n) for n in names]
    except registry.UnknownBackend as exc:
        raise UsageError("%s; see `convbench list`" % exc)


def cmd_run(args):
    from bench import inject
    from bench.sweep import expand
    from models.spec import load_spec

    backends = _backends_from_arg(args.backend)
    inject.parse(os.environ.get(inject.ENV_VAR))  # a malformed fault spec fails before any worker
    spec = load_spec(args.model)
    config = _config_from_args(args, spec)
    data_dir = _check_data(args, [config.batch_size], config)
    print("convbench: %s on %s, %d epoch(s), batch %d, %s lr %g, %d thread(s), device %s, "
          "results -> %s%s" % (spec.name, ", ".join(b.name for b in backends), config.epochs,
                               config.batch_size, config.optimizer, config.lr, config.threads,
                               config.device, args.results, _matrix_note(args)), file=sys.stderr)
    # with Ray, --threads 0 (all cores) is resolved on the node that runs the job
    jobs = expand(backends, [spec], config, repeat=args.repeat,
                  threads=[args.threads if args.executor == "ray" else config.threads])
    records = _run_matrix(args, jobs, data_dir)
    if records is None:
        return 130
    return _finish(args, records, "backend(s)" if args.repeat == 1 else "job(s)")


def _matrix_note(args, repeats=True):
    note = ", %d repeats" % args.repeat if repeats and args.repeat > 1 else ""
    if args.executor == "ray":
        note += ", on Ray (%s)" % (args.ray_address or os.environ.get("RAY_ADDRESS") or "local instance")
    return note


def _check_data(args, batch_sizes, config):
    """Resolve and verify MNIST once, before any worker starts (with Ray, each node does its
    own: the driver only checks the sizes); returns the data directory the jobs get.
    With --executor ray, Ray must be importable here (else one line naming the extra)."""
    if args.executor == "ray":
        from bench.ray_executor import check_address, import_ray
        from bench.sweep import SweepError

        try:
            import_ray()
            check_address(args.ray_address)
        except SweepError as exc:
            raise UsageError(str(exc))
        data_dir, n_train, n_test = args.data_dir, 60000, 10000
    else:
        from bench.data import Mnist

        data = Mnist(args.data_dir)
        data_dir, n_train, n_test = data.directory, len(data.train_labels), len(data.test_labels)
    if max(batch_sizes) > (config.limit_train or n_train):
        raise UsageError("--batch-size %d is larger than the training set (%d examples)"
                         % (max(batch_sizes), config.limit_train or n_train))
    if config.limit_train > n_train or config.limit_test > n_test:
        raise UsageError("--limit-train/--limit-test exceed the data set (%d/%d)" % (n_train, n_test))
    return data_dir


def _run_matrix(args, jobs, data_dir):
    """Run the jobs with the chosen executor; None when interrupted (records written are kept)."""
    from bench.sweep import SweepError, run_jobs

    try:
        return run_jobs(jobs, executor=args.executor, ray_address=args.ray_address,
                        data_dir=data_dir, timeout_s=args.timeout, results_path=args.results,
                        on_record=_one_line, memory_limit_mb=args.memory_limit_mb)
    except SweepError as exc:
        raise UsageError(str(exc))
    except KeyboardInterrupt as exc:
        print("convbench: interrupted; the worker was stopped; %d complete record(s) kept in %s"
              % (len(getattr(exc, "records_so_far", [])), args.results), file=sys.stderr)
        return None


def cmd_sweep(args):
    from bench import inject
    from bench.sweep import expand
    from models.spec import load_spec

    backends = _backends_from_arg(args.backend)
    inject.parse(os.environ.get(inject.ENV_VAR))  # a malformed fault spec fails before any worker
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    if not names:
        raise UsageError("--model is empty; give one or more models (see `convbench list`)")
    specs = [load_spec(n) for n in names]
    configs = dict((s.spec_hash, _config_from_args(args, s)) for s in specs)
    batch_sizes = args.batch_size or sorted(set(c.batch_size for c in configs.values()))
    data_dir = None
    for config in configs.values():
        data_dir = _check_data(args, args.batch_size or [config.batch_size], config)
    threads = [t or usable_cpus() for t in args.threads] if args.executor == "local" \
        else list(args.threads)
    jobs = expand(backends, specs, lambda spec: configs[spec.spec_hash], batch_sizes=args.batch_size,
                  threads=threads, repeat=args.repeat,
                  sweep_axes={"batch_size": batch_sizes, "threads": threads})
    print("convbench: sweep of %d job(s): %s x %s x batch %s x threads %s x %d repeat(s)%s, "
          "results -> %s" % (len(jobs), ",".join(b.name for b in backends), ",".join(names),
                             ",".join(map(str, batch_sizes)),
                             ",".join(str(t or "all") for t in threads),
                             args.repeat, _matrix_note(args, repeats=False),
                             args.results), file=sys.stderr)
    records = _run_matrix(args, jobs, data_dir)
    if records is None:
        return 130
    return _finish(args, records, "job(s)")


def _finish(args, records, unit):
    """The report, then the exit status: 1 when some job did not finish ok."""
    if not args.no_report:
        from bench.report import write_report
        paths = write_report(args.results, args.report_dir)
        print("report: %s" % paths["html"])
        print("        %s" % paths["md"])
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        print("convbench: %d of %d %s did not finish ok: %s" % (
            len(bad), len(records), unit, "; ".join("%s %s (%s)" % (
                _record_label(r), r["status"], r["reason"]) for r in bad)), file=sys.stderr)
        return 1
    return 0


def _record_label(record):
    """The backend, plus the matrix cell for sweep and repeat records (batch, threads, repeat)."""
    label = record["backend"]
    if record.get("sweep"):
        label += " %s b%d t%d" % (record["model"], record["config"]["batch_size"], record["threads"])
    if record.get("repeat"):
        label += " r%d/%d" % (record["repeat"]["index"] + 1, record["repeat"]["of"])
    if (record.get("executor") or {}).get("kind") == "ray":
        label += " @%s" % record["executor"].get("hostname")
    return label


def _one_line(record):
    s = record.get("summary") or {}
    if record["status"] != "ok":
        return "  %-14s %s: %s" % (_record_label(record), record["status"].upper(), record["reason"])
    line = "  %-14s ok  test acc %s  median step %s ms  %s img/s  peak RSS %s MB" % (
        _record_label(record), _num(s.get("test_accuracy"), "%.4f"),
        _num(s.get("median_step_ms"), "%.2f"), _num(s.get("images_per_s"), "%.0f"),
        _num(s.get("peak_rss_mb"), "%.0f"))
    if s.get("median_step_ms") is None:
        timing = record.get("timing") or {}
        line += "  (no step timed past the first and the %s warm-up steps: train longer)" % (
            timing.get("warmup_steps", "?"))
    return line


def _num(value, fmt):
    return "n/a" if value is None else fmt % value


def cmd_list(args):
    from models.spec import SpecError, list_models, load_spec

    print("backends:")
    for name in registry.names():
        b = registry.BACKENDS[name]
        ok, reason = envs.availability(b)
        print("  %-14s %-20s %-11s %s" % (name, b.framework, "available" if ok else "MISSING", reason))
    print("\nmodels:")
    print("  %-14s %10s %14s %14s  %s" % ("name", "params", "fwd FLOP/ex", "train FLOP/ex", "layers"))
    for name in list_models():
        try:
            spec = load_spec(name)
        except SpecError as exc:
            print("  %-14s INVALID: %s" % (name, exc))
            continue
        f = spec.flops()
        print("  %-14s %10d %14d %14d  %s" % (name, spec.param_count, f["forward"], f["train"],
                                              "-".join(l.kind for l in spec.layers)))
        if spec.training:
            print("    training defaults: %s" % ", ".join("%s=%s" % kv for kv in spec.training))
        if args.verbose:
            print("    " + spec.summary().replace("\n", "\n    "))
    return 0


def cmd_report(args):
    from bench.report import write_report

    if not os.path.exists(args.results):
        raise UsageError("no results file %s; run `convbench run` first or pass --results FILE"
                         % args.results)
    paths = write_report(args.results, args.out)
    print("report: %s" % paths["html"])
    print("        %s" % paths["md"])
    return 0


def cmd_check(args):
    from bench.schema import validate_file

    if args.results:
        if not os.path.exists(args.results):
            raise UsageError("no results file %s" % args.results)
        n_ok, problems = validate_file(args.results)
        for p in problems:
            print("  " + p)
        print("%s: %d valid record(s), %d problem(s)" % (args.results, n_ok, len(problems)))
        return 1 if problems else 0
    from bench.data import Mnist
    data = Mnist(args.data_dir)
    print("MNIST: ok (%s, checksums verified)" % data.directory)
    cmd_list(argparse.Namespace(verbose=False))
    if os.path.exists(DEFAULT_RESULTS):
        n_ok, problems = validate_file(DEFAULT_RESULTS)
        print("%s: %d valid record(s), %d problem(s)" % (DEFAULT_RESULTS, n_ok, len(problems)))
        return 1 if problems else 0
    return 0


def cmd_compare(args):
    from bench import compare

    try:
        return compare.run(args)
    except compare.CompareError as exc:
        raise UsageError(str(exc))


def cmd_microbench(args):
    from bench import microbench

    return microbench.cmd(args)


def cmd_new_backend(args):
    from bench import scaffold

    try:
        module_path, registry_path = scaffold.new_backend(args.name)
    except scaffold.ScaffoldError as exc:
        raise UsageError(str(exc))
    print("wrote %s\nadded %r to %s\nnext: fill in the methods (%s), then run\n"
          "  python -m pytest tests/test_conformance.py --backends %s"
          % (module_path, args.name, registry_path, scaffold.GUIDE, args.name))
    return 0


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "report": cmd_report,
            "check": cmd_check, "compare": cmd_compare, "microbench": cmd_microbench,
            "new-backend": cmd_new_backend}


def main(argv=None):
    from bench.data import DataError
    from bench.inject import InjectError
    from models.spec import SpecError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        args = parser.parse_args(["run"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        return COMMANDS[args.command](args)
    except (UsageError, SpecError, DataError, envs.EnvError, InjectError) as exc:
        print("convbench: error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a worker (setup, report): nothing half-written either
        print("convbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
