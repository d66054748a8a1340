"""`convbench list`: backends (with availability) and models (with size, FLOPs)."""
from backends import registry
from bench import envs


def setup_arguments(subparsers):
    p = subparsers.add_parser("list", help="backends (with availability) and models (with size, FLOPs)")
    p.add_argument("--verbose", action="store_true", help="also print each model's layers")
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from models.spec import SpecError, list_models, load_spec

    print("backends:")
    rows = []
    for name in registry.names():
        b = registry.BACKENDS[name]
        ok, reason = envs.availability(b)
        rows.append((name, b.framework, "available" if ok else "MISSING", reason))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  %s  %s  %s  %s" % tuple(c.ljust(w) for c, w in zip(row, width + [0])))
    print("  aliases: %s" % ", ".join("%s -> %s" % kv for kv in sorted(registry.ALIASES.items())))
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
        if spec.training:
            print("    training defaults: %s" % ", ".join("%s=%s" % kv for kv in spec.training))
        if args.verbose:
            print("    " + spec.summary().replace("\n", "\n    "))
    return 0
