"""Per-layer micro-benchmarks: run benchmarks/bench_layers.py in every environment, summarize the JSON.

    convbench microbench [--env base,tf] [--backend ...] [--out results/microbench]
                         [--min-rounds N] [--max-time S]
    python -m bench.microbench run [same options]      # the same
    python -m bench.microbench show [DIR]              # the markdown table of saved results

`run` times each backend in its own process (pytest --benchmark-only in the backend's registry
env: the base venv for numpy and torch, the tox env `tf` for tf and tf-xla, `jax` for jax, whose
blocks are Flax's), and saves pytest-benchmark's JSON as DIR/<backend>.json;
bench/microbench_results.py reads them (`load`) and draws the report section (`section`), both
re-exported here.

Imports no framework; pandas and matplotlib are imported where they are used.
"""
import argparse
import os
import subprocess
import sys
from collections import OrderedDict

from backends import registry
from bench import envs
from bench.document import section_markdown
from bench.microbench_results import (  # noqa: F401  (load and section: the reading side's API)
    BACKEND_ORDER, COLUMNS, DEFAULT_DIR, load, section)
from bench.paths import REPO

BENCH_FILE = os.path.join("benchmarks", "bench_layers.py")


def _env_backends():
    """env -> the micro-benchmark backends timed there, from the registry (each backend in one env:
    torch, also in the tf env, is timed in base only)."""
    table = OrderedDict()
    for name in BACKEND_ORDER:
        env = registry.get(name).env
        table[env] = table.get(env, ()) + (name,)
    return table


#: where each backend of the micro-benchmarks runs
ENV_BACKENDS = _env_backends()


class MicrobenchError(RuntimeError):
    """Something the user can fix (the message names the fix)."""


# --- running -----------------------------------------------------------------------------------

def _has_pytest_benchmark(python):
    proc = subprocess.run([python, "-c", "import pytest, pytest_benchmark"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc.returncode == 0


def _tox_notest(env, log):
    tox = envs.tox_command()
    if tox is None:
        raise MicrobenchError("tox env %r needs tox, which is not installed; fix: pip install "
                              "'convbench[test]'" % env)
    log("convbench microbench: updating the %r environment (tox -e %s --notest)..." % (env, env))
    proc = subprocess.run(tox + ["-e", env, "--notest", "-c", os.path.join(REPO, "tox.ini")],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stdout.strip().splitlines()[-3:])
        raise MicrobenchError("could not build tox env %r (%s); fix: run `tox -e %s --notest` and "
                              "read its output" % (env, tail, env))


def plan(env_names=None, backends=None, log=print):
    """[(env, python, [backends])] to run. Unnamed envs run only when already built; named ones
    are built (tox) when missing or when they lack pytest-benchmark."""
    explicit = env_names is not None
    env_names = list(env_names) if explicit else list(ENV_BACKENDS)
    unknown = [e for e in env_names if e not in ENV_BACKENDS]
    if unknown:
        raise MicrobenchError("unknown environment(s) %s for the micro-benchmarks (known: %s)"
                              % (", ".join(unknown), ", ".join(ENV_BACKENDS)))
    if backends is not None:
        known = [b for bs in ENV_BACKENDS.values() for b in bs]
        bad = [b for b in backends if b not in known]
        if bad:
            raise MicrobenchError("unknown backend(s) %s for the micro-benchmarks (known: %s)"
                                  % (", ".join(bad), ", ".join(known)))
    steps = []
    for env in env_names:
        chosen = [b for b in ENV_BACKENDS[env] if backends is None or b in backends]
        if not chosen:
            continue
        python = envs.env_python(env)
        if env == "base":
            if not _has_pytest_benchmark(python):
                raise MicrobenchError("pytest-benchmark is not installed in %s; fix: pip install "
                                      "'convbench[test]'" % python)
        elif not envs.env_exists(env) and not explicit:
            log("convbench microbench: skipping %s (tox env %r not built; `convbench microbench "
                "--env %s` or `tox -e %s --notest` builds it)" % (", ".join(chosen), env, env, env))
            continue
        elif not envs.env_exists(env) or not _has_pytest_benchmark(python):
            _tox_notest(env, log)  # first use, or an env built before pytest joined its deps
            if not _has_pytest_benchmark(python):
                raise MicrobenchError("tox env %r has no pytest-benchmark after `tox -e %s "
                                      "--notest`; fix: check its deps in tox.ini" % (env, env))
        steps.append((env, python, chosen))
    return steps


def thread_environment(threads):
    """Variables that give every framework `threads` threads, set before any of them starts."""
    if not threads:
        return {}
    n = str(threads)
    env = {"CONVBENCH_MICROBENCH_THREADS": n, "TF_NUM_INTRAOP_THREADS": n,
           "TF_NUM_INTEROP_THREADS": n}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = n
    if threads == 1:  # XLA's CPU client (jax, tf-xla) can be limited to one thread only
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def run(env_names=None, backends=None, out_dir=DEFAULT_DIR, min_rounds=None, max_time=None,
        threads=0, extra_args=(), log=print):
    """Time every planned backend in its own pytest process; 0 when all succeeded, else 1."""
    steps = plan(env_names, backends, log)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    status = 0
    for env, python, chosen in steps:
        for backend in chosen:
            out = os.path.join(out_dir, backend + ".json")
            cmd = [python, "-m", "pytest", BENCH_FILE, "--benchmark-only", "-q",
                   "-p", "no:cacheprovider", "--benchmark-json=" + out,
                   "--benchmark-columns=min,median,iqr,rounds", "--benchmark-sort=name"]
            if min_rounds is not None:
                cmd.append("--benchmark-min-rounds=%d" % min_rounds)
            if max_time is not None:
                cmd.append("--benchmark-max-time=%s" % max_time)
            cmd += list(extra_args)
            child_env = dict(os.environ)
            child_env["PYTHONPATH"] = REPO + (os.pathsep + child_env["PYTHONPATH"]
                                              if child_env.get("PYTHONPATH") else "")
            child_env["CONVBENCH_MICROBENCH_BACKENDS"] = backend
            child_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            child_env.update(thread_environment(threads))
            log("convbench microbench: %s (env %s) -> %s" % (backend, env, os.path.relpath(out)))
            sys.stdout.flush()
            proc = subprocess.run(cmd, cwd=REPO, env=child_env)
            if proc.returncode != 0:
                log("convbench microbench: %s FAILED (pytest exit %d)" % (backend, proc.returncode))
                status = 1
    return status


def _csv(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def add_arguments(p):
    p.add_argument("--env", type=_csv, default=None,
                   help="environments to run in, of %s (default: base and every one already "
                        "built)" % ", ".join(ENV_BACKENDS))
    p.add_argument("--backend", type=_csv, default=None,
                   help="only these backends (default: all of the chosen envs': %s)"
                        % ", ".join(b for bs in ENV_BACKENDS.values() for b in bs))
    p.add_argument("--out", default=DEFAULT_DIR,
                   help="directory for the JSON files, one per backend (default: %(default)s)")
    p.add_argument("--min-rounds", type=int, default=None,
                   help="pytest-benchmark --benchmark-min-rounds (its default: 5)")
    p.add_argument("--max-time", type=float, default=None,
                   help="pytest-benchmark --benchmark-max-time in seconds per benchmark (its default: 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="thread budget of every framework (default 0: each framework's own, one "
                        "per core)")


def cmd(args):
    """`convbench microbench`: run, then print the summary table."""
    try:
        status = run(args.env, args.backend, args.out, args.min_rounds, args.max_time,
                     args.threads)
        found = section(args.out)
    except MicrobenchError as exc:
        print("convbench: error: %s" % exc, file=sys.stderr)
        return 2
    if found:
        print("\n" + section_markdown(found, with_images=False))
    print("micro-benchmark JSON: %s" % os.path.relpath(os.path.abspath(args.out)))
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.microbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_arguments(sub.add_parser("run", help="time the layers in every environment, save JSON"))
    show = sub.add_parser("show", help="print the markdown summary of saved results")
    show.add_argument("dir", nargs="?", default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    if args.command == "run":
        return cmd(args)
    if args.command == "show":
        found = section(args.dir)
        print(section_markdown(found, with_images=False) if found else "no micro-benchmark results in %s (run: convbench microbench)" % args.dir)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
