"""`convbench compare`: two runs side by side (bench/compare.py); exit 1 on a significant
regression, 2 on a usage error, 3 when nothing could be compared."""
import sys

from bench.cli_types import UsageError, add_results_option, positive_float
from bench.console import printable

#: the exit status when nothing could be compared (1 means a regression)
NOTHING_TO_COMPARE = 3


def setup_arguments(subparsers):
    p = subparsers.add_parser("compare", help="compare two runs: step time (Mann-Whitney U), accuracy, "
                                              "memory; exit 1 on a significant regression")
    p.add_argument("a", metavar="A", help="baseline: a results file, or a session/run id in --results")
    p.add_argument("b", metavar="B", help="candidate: a results file, or a session/run id in --results")
    add_results_option(p)
    p.add_argument("--threshold", type=positive_float, default=1.10,
                   help="a slowdown ratio B/A past which a significant change is marked "
                        "(default: %(default)s, i.e. 10%% slower; improvement below 1/threshold)")
    p.add_argument("--alpha", type=positive_float, default=0.05,
                   help="significance level of the Mann-Whitney U test (default: %(default)s)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--include-noisy", action="store_true",
                   help="also test processes that ran beside other work (records whose `load` "
                        "says noisy; left out by default)")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench import compare  # numpy and pandas: only when comparing

    try:
        return compare.run(args)
    except compare.NothingToCompare as exc:
        print("convbench: cannot compare: %s" % printable(exc, keep_newlines=False), file=sys.stderr)
        return NOTHING_TO_COMPARE
    except compare.CompareError as exc:
        raise UsageError(printable(exc, keep_newlines=False))
