"""`convbench sweep`: a job matrix of backends x models x batch sizes x threads x repeats,
locally or on a Ray cluster; then the report."""
import sys

from backends.base import TrainConfig
from bench.cli_types import (DEFAULT_MODEL, UsageError, add_config_options, add_matrix_options,
                             add_report_options, add_results_option, int_list)
from bench.commands.run import (check_data, check_inject, check_outputs, check_seeds, finish,
                                label_width, matrix_note,
                                run_matrix)
from bench.context import usable_cpus
from bench.plan import backends_from_arg, config_from_args, load_run_spec


def setup_arguments(subparsers):
    p = subparsers.add_parser("sweep", help="a job matrix: backends x models x batch sizes x threads x "
                                            "repeats, locally or on a Ray cluster; then the report",
                              conflict_handler="resolve")  # list-valued --model/--batch-size/--threads
    add_config_options(p)
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="comma-separated models (names or spec paths; default: %(default)s)")
    p.add_argument("--batch-size", type=int_list(1), default=None, metavar="B[,B...]",
                   help="comma-separated batch sizes (default: each model's, else %d)"
                        % TrainConfig().batch_size)
    p.add_argument("--threads", type=int_list(0), default=[0], metavar="T[,T...]",
                   help="comma-separated thread budgets (default 0: every CPU this process may use)")
    p.add_argument("--width", type=int_list(1), default=None, metavar="W[,W...]",
                   help="the scaling sweep: each model with its conv filters and hidden units "
                        "times W (e.g. 1,2,4,8); the report fits overhead + FLOPs / throughput")
    p.add_argument("--resolution", type=int_list(28), default=None, metavar="R[,R...]",
                   help="the scaling sweep: each model on MNIST upsampled to R x R (multiples of "
                        "28, e.g. 28,56,112; nearest neighbour, the same for every backend)")
    add_results_option(p)
    add_report_options(p)
    add_matrix_options(p, timing_runs=1)  # a sweep's cells are many: processes are opt-in
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench.jobs import expand

    backends = backends_from_arg(args.backend)
    check_seeds(args)
    check_inject()
    check_outputs(args)
    names = unique(n.strip() for n in args.model.split(",") if n.strip())
    if not names:
        raise UsageError("--model is empty; give one or more models (see `convbench list`)")
    specs = list(dict((s.spec_hash, s) for s in (load_run_spec(n) for n in names)).values())
    scaling_axes = {}
    if args.width or args.resolution:
        from bench import scaling
        widths, sizes = args.width or [1], args.resolution or [scaling.MNIST_SIZE]
        try:
            specs = [scaling.derive(s, w, r) for s in specs for w in widths for r in sizes]
        except ValueError as exc:
            raise UsageError(str(exc))
        scaling_axes = {"width": widths, "resolution": sizes}
    configs = dict((s.spec_hash, config_from_args(args, s)) for s in specs)
    args.batch_size = unique(args.batch_size) if args.batch_size else None
    batch_sizes = args.batch_size or sorted(set(c.batch_size for c in configs.values()))
    data_dir = None
    for config in configs.values():
        data_dir = check_data(args, args.batch_size or [config.batch_size], config)
    # 0 is all CPUs: on 2 of them `--threads 0,2` is one value, and each job runs once
    threads = unique(t or usable_cpus() for t in args.threads) if args.executor == "local" \
        else unique(args.threads)
    jobs = expand(backends, specs, lambda spec: configs[spec.spec_hash], batch_sizes=args.batch_size,
                  threads=threads, repeat=args.repeat, timing_runs=args.timing_runs,
                  timing_steps=args.timing_steps, seeds=args.seeds,
                  sweep_axes=dict({"batch_size": batch_sizes, "threads": threads}, **scaling_axes))
    print("convbench: sweep of %d job(s): %s x %s x batch %s x threads %s x %d repeat(s)%s, "
          "results -> %s" % (len(jobs), ",".join(b.name for b in backends), ",".join(names),
                             ",".join(map(str, batch_sizes)),
                             ",".join(str(t or "all") for t in threads),
                             args.repeat, matrix_note(args, repeats=False),
                             args.results), file=sys.stderr)
    width = label_width(backends, args) + max(len(" %s b%d t%d" % (s.name, b, t or 0))
                                              for s in specs for b in batch_sizes for t in threads)
    records = run_matrix(args, jobs, data_dir, width)
    return finish(args, records, "job(s)")


def unique(values):
    """The values in their order, each once (a value given twice is one point of the matrix)."""
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen
