"""`convbench microbench`: per-layer micro-benchmarks in every built environment
(bench/microbench.py)."""


def setup_arguments(subparsers):
    from bench import microbench

    p = subparsers.add_parser("microbench", help="per-layer micro-benchmarks (pytest-benchmark) in every "
                                                 "built environment; JSON in results/microbench/")
    microbench.add_arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def run_from_args(args):
    from bench import microbench

    return microbench.cmd(args)
