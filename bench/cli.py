"""convbench: run | sweep | list | report | check | compare | microbench | new-backend.
(`python -m bench` too.) Each command is a module of bench/commands/.

Errors the user can fix are one line on stderr naming the fix, with exit status 2; a run whose
backends did not all succeed exits 1 after writing every record it has.
"""
import argparse
import sys

from bench import envs
# UsageError lives beside the commands that raise it, so they need not import this module
from bench.cli_types import UsageError
from bench.commands import COMMANDS


def build_parser():
    parser = argparse.ArgumentParser(
        prog="convbench",
        description="One ConvNet spec, many frameworks, trained on MNIST and measured honestly.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.setup_arguments(sub)
    return parser


def _warn_in_one_line(message, category, filename, lineno, file=None, line=None):
    """Warnings (a cut-off results line, a library's deprecation) in the CLI's own format."""
    text = " ".join(str(message).split())
    print("convbench: warning: %s" % text, file=file or sys.stderr)


def main(argv=None):
    import warnings

    from bench.data import DataError
    from bench.inject import InjectError
    from models.spec import SpecError

    warnings.showwarning = _warn_in_one_line
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        args = parser.parse_args(["run"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        return args.func(args)
    except (UsageError, SpecError, DataError, envs.EnvError, InjectError) as exc:
        print("convbench: error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a worker (setup, report): nothing half-written either
        print("convbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
