"""The commands of `convbench`, one module each with setup_arguments(subparsers) and
run_from_args(args) -> exit status."""
from bench.commands import check, compare, listing, microbench, new_backend, report, run, sweep

# the order `convbench --help` lists them in
COMMANDS = (run, sweep, listing, report, check, compare, microbench, new_backend)
