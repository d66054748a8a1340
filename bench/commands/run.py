"""`convbench run`: train backends on MNIST, append records, write the report.

Also the steps `sweep` shares: check the data, run the job matrix, report and exit status."""
import os
import sys

from bench.cli_types import (UsageError, add_config_options, add_matrix_options,
                             add_report_options, add_results_option)
from bench.console import one_line, record_label
from bench.jobs import DEFAULT_TIMING_RUNS
from bench.plan import (backends_from_arg, config_and_lr_source, load_run_spec,
                        settings_line)


def setup_arguments(subparsers):
    p = subparsers.add_parser("run", help="train backends on MNIST, append records, write the report")
    add_config_options(p)
    add_results_option(p)
    add_report_options(p)
    add_matrix_options(p, timing_runs=DEFAULT_TIMING_RUNS)
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench.jobs import expand

    backends = backends_from_arg(args.backend)
    check_seeds(args)
    check_inject()
    check_outputs(args)
    spec = load_run_spec(args.model)
    config, lr_source = config_and_lr_source(args, spec)
    if args.seeds:
        config = config._replace(seed=args.seeds[0])
    data_dir = check_data(args, [config.batch_size], config)
    print("convbench: %s on %s: %s; results -> %s%s" % (
        spec.name, ", ".join(b.name for b in backends), settings_line(config, lr_source),
        args.results, matrix_note(args)), file=sys.stderr)
    # with Ray, --threads 0 (all cores) is resolved on the node that runs the job
    jobs = expand(backends, [spec], config, repeat=args.repeat,
                  threads=[args.threads if args.executor == "ray" else config.threads],
                  timing_runs=args.timing_runs, timing_steps=args.timing_steps, seeds=args.seeds)
    records = run_matrix(args, jobs, data_dir, label_width(backends, args))
    return finish(args, records, "backend(s)" if len(jobs) == len(backends) else "job(s)")


def check_seeds(args):
    if args.seeds and args.repeat > 1:
        raise UsageError("--seeds and --repeat both ask for repeats: give --seeds S,S,... (one "
                         "run per seed) or --repeat N (N runs with --seed)")
    if args.seeds and args.seed != 0:
        raise UsageError("--seeds and --seed both set the seed: give one of them")


def label_width(backends, args):
    """The console's label column: the longest backend name plus what a label may add."""
    width = max(len(b.name) for b in backends)
    runs = len(args.seeds or []) or args.repeat
    if runs > 1:
        width += len(" r%d/%d" % (runs, runs))
    if args.timing_runs > 1:
        width += len(" timing %d/%d" % (args.timing_runs, args.timing_runs))
    return width


def matrix_note(args, repeats=True):
    """The repeats and the executor, for the line a run or sweep starts with."""
    note = ", %d repeats" % args.repeat if repeats and args.repeat > 1 else ""
    if args.seeds:
        note += ", one training run per seed (%s)" % ",".join(map(str, args.seeds))
    if args.timing_runs > 1:
        runs = len(args.seeds or []) or args.repeat
        note += ", step times from %d processes a backend (%d training + %d x %d steps)" % (
            args.timing_runs + runs - 1, runs, args.timing_runs - 1, args.timing_steps)
    if args.executor == "ray":
        note += ", on Ray (%s)" % (args.ray_address or os.environ.get("RAY_ADDRESS") or "local instance")
    return note


def check_inject():
    """A malformed fault spec, or one scoped to no backend, fails before any worker."""
    from backends import registry
    from bench import inject

    inject.parse(os.environ.get(inject.ENV_VAR), known=registry.get)


def check_outputs(args):
    """Where the records and the report go must take them, checked before the first worker
    starts (a run must not train for an hour and then fail to write)."""
    from bench.report_writer import output_problem
    from bench.results import results_path_problem

    report_dir = None if args.no_report else (
        args.report_dir or os.path.dirname(os.path.abspath(args.results)))
    problem = results_path_problem(args.results, report_dir)
    if problem:
        raise UsageError(problem)
    if report_dir is not None:
        problem = output_problem(report_dir)
        if problem:
            raise UsageError("cannot write the report: %s; fix: pass another --report-dir, or "
                             "--no-report" % problem)


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


def run_matrix(args, jobs, data_dir, width=14):
    """Run the jobs with the chosen executor. On Ctrl-C, SIGTERM or SIGHUP (bench/cli.py makes
    them KeyboardInterrupt) the worker is stopped, the records written are kept, and the
    interruption propagates to the CLI, which exits 128 + the signal. width: the console's label
    column."""
    from bench.executors import SweepError, run_jobs

    try:
        return run_jobs(jobs, executor=args.executor, ray_address=args.ray_address,
                        data_dir=data_dir, timeout_s=args.timeout, results_path=args.results,
                        on_record=lambda record: one_line(record, width),
                        memory_limit_mb=args.memory_limit_mb)
    except SweepError as exc:
        raise UsageError(str(exc))
    except KeyboardInterrupt as exc:
        kept = getattr(exc, "records_so_far", [])
        unsaved = _unsaved(kept, args.results)
        print("convbench: interrupted%s; the worker was stopped; %d complete record(s) kept in %s%s"
              % (" by %s" % exc.signal_name if getattr(exc, "signal_name", None) else "",
                 len(kept), args.results, "; " + unsaved if unsaved else ""), file=sys.stderr)
        exc.reported = True
        raise


def _unsaved(records, results):
    """Where the records the results file refused went (bench/results.keep_record), or ''."""
    unsaved = [r for r in records if r.get("_kept_in")]
    if not unsaved:
        return ""
    places = sorted(set(r["_kept_in"][0] for r in unsaved))
    return "%d record(s) could not be written to %s (%s) and are kept in %s" % (
        len(unsaved), results, unsaved[0]["_kept_in"][1], ", ".join(places))


def finish(args, records, unit):
    """The report, then the exit status: 1 when some job did not finish ok or some record could
    not be written to the results file (it is then in the side file, or on stdout)."""
    status = 0
    if not args.no_report:
        from bench.report_writer import ReportWriteError, write_report
        try:
            paths = write_report(args.results, args.report_dir)
            print("report: %s" % paths["html"])
            print("        %s" % paths["md"])
        except ReportWriteError as exc:
            print("convbench: %s" % exc, file=sys.stderr)
            status = 1
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        print("convbench: %d of %d %s did not finish ok: %s" % (
            len(bad), len(records), unit, "; ".join("%s %s (%s)" % (
                record_label(r), r["status"], r["reason"]) for r in bad)), file=sys.stderr)
        status = 1
    unsaved = _unsaved(records, args.results)
    if unsaved:  # the last line: what a user must act on
        print("convbench: %s; fix: free space (or lift the file-size limit), then append them to "
              "%s" % (unsaved, args.results), file=sys.stderr)
        status = 1
    return status
