"""convbench: run | list | report | check.  (`python -m bench` too.)

Errors the user can fix are one line on stderr naming the fix, with exit status 2; a run whose
backends did not all succeed exits 1 after writing every record it has.
"""
import argparse
import os
import sys

from backends import registry
from backends.base import DEVICES, DTYPES, OPTIMIZERS, TrainConfig
from bench import envs
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


def _add_config_options(p):
    d = TrainConfig()
    p.add_argument("--backend", default=DEFAULT_BACKENDS,
                   help="comma-separated backends (default: %(default)s; see `convbench list`)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="a model name from models/ or a path to a spec .toml (default: %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="momentum = SGD with momentum (default: %(default)s)")
    p.add_argument("--lr", type=_positive_float, default=d.lr,
                   help="learning rate on the batch-mean loss (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum)
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

    lst = sub.add_parser("list", help="backends (with availability) and models (with size, FLOPs)")
    lst.add_argument("--verbose", action="store_true", help="also print each model's layers")

    rep = sub.add_parser("report", help="regenerate results/report.{md,html} from the records")
    _add_results_option(rep)
    rep.add_argument("--out", default=None, help="output directory (default: beside the results)")

    chk = sub.add_parser("check", help="validate a results file; verify MNIST and backends")
    chk.add_argument("--results", default=None, help="validate only this results file")
    chk.add_argument("--data-dir", default=None)
    return parser


def _config_from_args(args):
    return TrainConfig(optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                       batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                       threads=args.threads or os.cpu_count() or 1, device=args.device,
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
    from bench.data import Mnist
    from bench.progress import Progress
    from bench.session import new_session_context, run_backend
    from models.spec import load_spec

    backends = _backends_from_arg(args.backend)
    spec = load_spec(args.model)
    config = _config_from_args(args)
    data = Mnist(args.data_dir)  # resolve and verify once, before any worker starts
    if config.batch_size > (config.limit_train or len(data.train_labels)):
        raise UsageError("--batch-size %d is larger than the training set (%d examples)"
                         % (config.batch_size, config.limit_train or len(data.train_labels)))
    if config.limit_train > len(data.train_labels) or config.limit_test > len(data.test_labels):
        raise UsageError("--limit-train/--limit-test exceed the data set (60000/10000)")
    session = new_session_context(config.threads)
    print("convbench: %s on %s, %d epoch(s), batch %d, %s lr %g, %d thread(s), device %s, "
          "results -> %s" % (spec.name, ", ".join(b.name for b in backends), config.epochs,
                             config.batch_size, config.optimizer, config.lr, config.threads,
                             config.device, args.results), file=sys.stderr)
    records = []
    try:
        for backend in backends:
            progress = Progress(backend.name)
            try:
                record = run_backend(backend, spec, config, session, data.directory, args.timeout,
                                     args.results, on_message=progress.update, log=progress.log)
            finally:
                progress.close()
            records.append(record)
            print(_one_line(record), file=sys.stderr)
    except KeyboardInterrupt:
        print("convbench: interrupted; the worker was stopped; %d complete record(s) kept in %s"
              % (len(records), args.results), file=sys.stderr)
        return 130
    if not args.no_report:
        from bench.report import write_report
        paths = write_report(args.results, args.report_dir)
        print("report: %s" % paths["html"])
        print("        %s" % paths["md"])
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        print("convbench: %d of %d backend(s) did not finish ok: %s" % (
            len(bad), len(records), "; ".join("%s %s (%s)" % (r["backend"], r["status"], r["reason"])
                                              for r in bad)), file=sys.stderr)
        return 1
    return 0


def _one_line(record):
    s = record.get("summary") or {}
    if record["status"] != "ok":
        return "  %-14s %s: %s" % (record["backend"], record["status"].upper(), record["reason"])
    return ("  %-14s ok  test acc %.4f  median step %.2f ms  %.0f img/s  peak RSS %.0f MB"
            % (record["backend"], s["test_accuracy"], s["median_step_ms"], s["images_per_s"],
               s["peak_rss_mb"]))


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


COMMANDS = {"run": cmd_run, "list": cmd_list, "report": cmd_report, "check": cmd_check}


def main(argv=None):
    from bench.data import DataError
    from models.spec import SpecError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        args = parser.parse_args(["run"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        return COMMANDS[args.command](args)
    except (UsageError, SpecError, DataError, envs.EnvError) as exc:
        print("convbench: error: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
