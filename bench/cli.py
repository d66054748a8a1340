"""convbench: run | sweep | list | report | check | compare | microbench | new-backend.
(`python -m bench` too.) Each command is a module of bench/commands/.

Errors the user can fix are one line on stderr naming the fix, with exit status 2; a run whose
backends did not all succeed exits 1 after writing every record it has. SIGTERM and SIGHUP get
Ctrl-C's treatment (the worker stopped, complete records kept, an "interrupted" line) and exit
128 + the signal: 143, 129 (130 for Ctrl-C).
"""
import argparse
import signal
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
    _interrupt_on(signal.SIGTERM, signal.SIGHUP)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        args = parser.parse_args(["run"] + list(argv if argv is not None else sys.argv[1:]))
    try:
        return args.func(args)
    except (UsageError, SpecError, DataError, envs.EnvError, InjectError) as exc:
        print("convbench: error: %s" % exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a worker's run reported it; setup or report: nothing half-written
        if not getattr(exc, "reported", False):
            print("convbench: interrupted%s" % (
                " by %s" % exc.signal_name if getattr(exc, "signal_name", None) else ""),
                file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread is, so every path that stops the worker
    and keeps the records on Ctrl-C does so for them too."""

    def __init__(self, signum):
        KeyboardInterrupt.__init__(self)
        self.signum = signum
        self.signal_name = signal.Signals(signum).name


def _interrupt_on(*signums):
    def handler(signum, frame):
        signal.signal(signum, signal.SIG_IGN)  # once: a second TERM must not cut the cleanup
        raise Interrupted(signum)

    for signum in signums:
        try:
            if signal.getsignal(signum) in (signal.SIG_DFL, None):  # nohup's SIG_IGN is kept
                signal.signal(signum, handler)
        except ValueError:  # main() called from a thread other than the main one
            return


if __name__ == "__main__":
    sys.exit(main())
