"""`convbench check`: validate a results file; verify MNIST and backends."""
import argparse
import os

from bench.cli_types import UsageError
from bench.console import printable
from bench.commands.listing import run_from_args as list_backends_and_models
from bench.results import DEFAULT_RESULTS, readable_problem


def setup_arguments(subparsers):
    p = subparsers.add_parser("check", help="validate a results file; verify MNIST and backends")
    p.add_argument("--results", default=None, help="validate only this results file")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench.results import validate_file

    if args.results:
        if readable_problem(args.results):
            raise UsageError(readable_problem(args.results))
        n_ok, problems = validate_file(args.results)
        for p in problems:
            print("  " + printable(p, keep_newlines=False))
        print("%s: %d valid record(s), %d problem(s)" % (args.results, n_ok, len(problems)))
        return 1 if problems else 0
    from bench.data import Mnist
    data = Mnist(args.data_dir)
    print("MNIST: ok (%s, checksums verified)" % data.directory)
    list_backends_and_models(argparse.Namespace(verbose=False))
    if os.path.exists(DEFAULT_RESULTS):
        n_ok, problems = validate_file(DEFAULT_RESULTS)
        print("%s: %d valid record(s), %d problem(s)" % (DEFAULT_RESULTS, n_ok, len(problems)))
        return 1 if problems else 0
    return 0
