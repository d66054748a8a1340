"""`convbench run`: train backends on MNIST, append records, write the report.

Also the steps `sweep` shares: check the data, run the job matrix, report and exit status."""
import os
import sys

from bench.cli_types import (UsageError, add_config_options, add_matrix_options,
                             add_report_options, add_results_option)
from bench.console import one_line, record_label
from bench.jobs import DEFAULT_TIMING_RUNS
from bench.plan import backends_from_arg, config_from_args


def setup_arguments(subparsers):
    p = subparsers.add_parser("run", help="train backends on MNIST, append records, write the report")
    add_config_options(p)
    add_results_option(p)
    add_report_options(p)
    add_matrix_options(p, timing_runs=DEFAULT_TIMING_RUNS)
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench import inject
    from bench.jobs import expand
    from models.spec import load_spec

    backends = backends_from_arg(args.backend)
    inject.parse(os.environ.get(inject.ENV_VAR))  # a malformed fault spec fails before any worker
    spec = load_spec(args.model)
    config = config_from_args(args, spec)
    data_dir = check_data(args, [config.batch_size], config)
    recipe = "%s lr %g" % (config.optimizer, config.lr)
    if config.schedule != "constant":
        recipe += " (%s schedule)" % config.schedule
    if config.target_accuracy:
        recipe += ", until test accuracy %g" % config.target_accuracy
    print("convbench: %s on %s, %d epoch(s), batch %d, %s, %d thread(s), device %s, "
          "results -> %s%s" % (spec.name, ", ".join(b.name for b in backends), config.epochs,
                               config.batch_size, recipe, config.threads,
                               config.device, args.results, matrix_note(args)), file=sys.stderr)
    # with Ray, --threads 0 (all cores) is resolved on the node that runs the job
    jobs = expand(backends, [spec], config, repeat=args.repeat,
                  threads=[args.threads if args.executor == "ray" else config.threads],
                  timing_runs=args.timing_runs, timing_steps=args.timing_steps)
    records = run_matrix(args, jobs, data_dir)
    if records is None:
        return 130
    return finish(args, records, "backend(s)" if len(jobs) == len(backends) else "job(s)")


def matrix_note(args, repeats=True):
    """The repeats and the executor, for the line a run or sweep starts with."""
    note = ", %d repeats" % args.repeat if repeats and args.repeat > 1 else ""
    if args.timing_runs > 1:
        note += ", step times from %d processes a backend (%d training + %d x %d steps)" % (
            args.timing_runs + args.repeat - 1, args.repeat, args.timing_runs - 1,
            args.timing_steps)
    if args.executor == "ray":
        note += ", on Ray (%s)" % (args.ray_address or os.environ.get("RAY_ADDRESS") or "local instance")
    return note


def check_data(args, batch_sizes, config):
    """Resolve and verify MNIST once, before any worker starts (with Ray, each node does its
    own: the driver only checks the sizes); returns the data directory the jobs get.
    With --executor ray, Ray must be importable here (else one line naming the extra)."""
    if args.executor == "ray":
        from bench.executors import SweepError
        from bench.executors.ray_driver import check_address, import_ray

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


def run_matrix(args, jobs, data_dir):
    """Run the jobs with the chosen executor; None when interrupted (records written are kept)."""
    from bench.executors import SweepError, run_jobs

    try:
        return run_jobs(jobs, executor=args.executor, ray_address=args.ray_address,
                        data_dir=data_dir, timeout_s=args.timeout, results_path=args.results,
                        on_record=one_line, memory_limit_mb=args.memory_limit_mb)
    except SweepError as exc:
        raise UsageError(str(exc))
    except KeyboardInterrupt as exc:
        print("convbench: interrupted; the worker was stopped; %d complete record(s) kept in %s"
              % (len(getattr(exc, "records_so_far", [])), args.results), file=sys.stderr)
        return None


def finish(args, records, unit):
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
                record_label(r), r["status"], r["reason"]) for r in bad)), file=sys.stderr)
        return 1
    return 0
