"""`convbench new-backend`: write an adapter skeleton and its registry entry (bench/scaffold.py)."""
from bench.cli_types import UsageError


def setup_arguments(subparsers):
    p = subparsers.add_parser("new-backend", help="write the adapter skeleton backends/NAME_backend.py "
                                                  "and its registry entry (docs/adding-a-backend.md)")
    p.add_argument("name", metavar="NAME", help="the new backend's name: lower-case letters, "
                                                "digits and _")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench import scaffold

    try:
        module_path, registry_path = scaffold.new_backend(args.name)
    except scaffold.ScaffoldError as exc:
        raise UsageError(str(exc))
    print("wrote %s\nadded %r to %s\nnext: fill in the methods (%s), then run\n"
          "  python -m pytest tests/test_conformance.py --backends %s"
          % (module_path, args.name, registry_path, scaffold.GUIDE, args.name))
    return 0
