"""`convbench report`: regenerate results/report.{md,html} from the records."""
from bench.cli_types import UsageError, add_results_option


def setup_arguments(subparsers):
    p = subparsers.add_parser("report", help="regenerate results/report.{md,html} from the records")
    add_results_option(p)
    p.add_argument("--out", default=None, help="output directory (default: beside the results)")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="also write the report's rows, one per machine x configuration x "
                        "backend with the headline figures, as CSV")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench.report_writer import ReportWriteError, write_report
    from bench.results import readable_problem

    if readable_problem(args.results):
        raise UsageError("%s; run `convbench run` first or pass --results FILE"
                         % readable_problem(args.results))
    try:
        paths = write_report(args.results, args.out)
    except ReportWriteError as exc:
        raise UsageError(str(exc))
    print("report: %s" % paths["html"])
    print("        %s" % paths["md"])
    if args.csv:
        from bench.export import write_csv
        from bench.results import read_records

        print("        %s (%d rows)" % (args.csv, write_csv(read_records(args.results), args.csv)))
    return 0
