"""Per-layer micro-benchmarks: run benchmarks/bench_layers.py in every environment, summarize the JSON.

    convbench microbench [--env base,tf] [--backend ...] [--out results/microbench]
                         [--min-rounds N] [--max-time S]
    python -m bench.microbench run [same options]      # the same
    python -m bench.microbench show [DIR]              # the markdown table of saved results

`run` times each backend in its own process (pytest --benchmark-only, the framework's interpreter:
the base venv for numpy and torch, the tox env `tf` for tf, tf-xla and jax), and saves
pytest-benchmark's JSON as DIR/<backend>.json. `load(DIR)` reads those files into a DataFrame and
`section(DIR)` renders the report section (markdown, and HTML with an embedded PNG figure).

Imports no framework; pandas and matplotlib are imported where they are used.
"""
import argparse
import base64
import glob
import html
import io
import json
import os
import subprocess
import sys
from collections import OrderedDict

from backends import registry
from bench import envs
from bench.paths import REPO

BENCH_FILE = os.path.join("benchmarks", "bench_layers.py")
DEFAULT_DIR = os.path.join("results", "microbench")
LAYER_ORDER = ("conv1", "pool1", "conv2", "pool2", "dense1")
PASS_ORDER = ("fwd", "fwd+bwd")
BACKEND_ORDER = ("numpy", "torch", "tf", "tf-xla", "jax")
#: where the micro-benchmarks time a backend when that is not its registry env: the layers need
#: jax alone (no flax/optax), and the tf env has jax and pytest-benchmark; the jax env has no pytest
ENV_OVERRIDES = {"jax": "tf"}


def _env_backends():
    """env -> the micro-benchmark backends timed there, from the registry (each backend in one env:
    torch, also in the tf env, is timed in base only)."""
    table = OrderedDict()
    for name in BACKEND_ORDER:
        env = ENV_OVERRIDES.get(name, registry.get(name).env)
        table[env] = table.get(env, ()) + (name,)
    return table


#: where each backend of the micro-benchmarks runs
ENV_BACKENDS = _env_backends()
COLUMNS = ["layer", "pass", "backend", "framework", "framework_version", "median_ms", "iqr_ms",
           "q1_ms", "q3_ms", "min_ms", "rounds", "gflops_per_s", "threads", "batch", "dtype",
           "machine", "python", "commit", "datetime", "file"]


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


# --- loading -----------------------------------------------------------------------------------

def _machine(info):
    cpu = info.get("cpu") or {}
    brand = cpu.get("brand_raw") or info.get("processor") or info.get("machine") or "unknown CPU"
    count = cpu.get("count")
    return "%s, %s cores" % (brand, count) if count else str(brand)


def _rows(path):
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        return []
    info = data.get("machine_info") or {}
    commit = data.get("commit_info") or {}
    commit_id = (commit.get("id") or "")[:10]
    if commit_id and commit.get("dirty"):
        commit_id += "+dirty"
    rows = []
    for b in data["benchmarks"]:
        extra = b.get("extra_info") or {}
        params = b.get("params") or {}
        stats = b.get("stats") or {}
        layer = extra.get("layer") or params.get("layer")
        mode = extra.get("pass") or params.get("mode")
        backend = extra.get("backend") or params.get("backend")
        if not (layer and mode and backend) or "median" not in stats:
            continue  # another benchmark (bench_numpy_ref.py's, say) saved in the same file
        median = float(stats["median"])
        flops = extra.get("flops") or 0
        rows.append({
            "layer": str(layer), "pass": str(mode), "backend": str(backend),
            "framework": str(extra.get("framework", backend)),
            "framework_version": str(extra.get("framework_version", "")),
            "median_ms": median * 1e3, "iqr_ms": float(stats.get("iqr", 0.0)) * 1e3,
            "q1_ms": float(stats.get("q1", median)) * 1e3,
            "q3_ms": float(stats.get("q3", median)) * 1e3,
            "min_ms": float(stats.get("min", median)) * 1e3,
            "rounds": int(stats.get("rounds", 0)),
            "gflops_per_s": flops / median / 1e9 if flops and median > 0 else float("nan"),
            "threads": extra.get("threads"), "batch": extra.get("batch"), "dtype": extra.get("dtype"),
            "machine": _machine(info), "python": str(info.get("python_version", "")),
            "commit": commit_id, "datetime": str(data.get("datetime", "")),
            "file": os.path.basename(path)})
    return rows


def _order(values, preferred):
    return sorted(set(values), key=lambda v: (preferred.index(v) if v in preferred else len(preferred), v))


def load(directory=DEFAULT_DIR):
    """Every micro-benchmark in the pytest-benchmark JSON files of `directory`, one row each.

    Columns: layer, pass (fwd | fwd+bwd), backend, framework, framework_version, median_ms,
    iqr_ms, q1_ms, q3_ms, min_ms, rounds, gflops_per_s, threads, batch, dtype, machine, python,
    commit, datetime, file. Files that are not pytest-benchmark JSON are ignored.
    """
    import pandas as pd

    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        rows.extend(_rows(path))
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    df["_l"] = df["layer"].map({v: i for i, v in enumerate(_order(df["layer"], LAYER_ORDER))})
    df["_p"] = df["pass"].map({v: i for i, v in enumerate(_order(df["pass"], PASS_ORDER))})
    df["_b"] = df["backend"].map({v: i for i, v in enumerate(_order(df["backend"], BACKEND_ORDER))})
    df = df.sort_values(["_l", "_p", "_b", "datetime"]).drop(columns=["_l", "_p", "_b"])
    return df.reset_index(drop=True)


def _latest(df):
    """One row per (backend, layer, pass): the newest run's."""
    return (df.sort_values("datetime").drop_duplicates(["backend", "layer", "pass"], keep="last")
            .sort_index().reset_index(drop=True))


# --- the report section ------------------------------------------------------------------------

TITLE = "Micro-benchmarks: each layer of seed_convnet"
EXPLAIN = ("Median time of one call in ms, [interquartile range] beside it, of each layer alone at "
           "batch {batch}, {dtype}: `fwd` is the forward pass, `fwd+bwd` the forward pass and the "
           "gradients with respect to the layer's input and parameters. pytest-benchmark timed "
           "each backend in its own process after 3 warm-up calls (tracing, compilation); each "
           "backend's output and gradients were first checked against the NumPy reference on the "
           "same seeded input. A layer is the spec's: conv = convolution + bias + relu. Fastest "
           "per row in bold; lower is better.")


def _fmt(v):
    return "%.3g" % v if v == v else "-"


def _tables(df):
    """(timing rows, backends, fastest backend per row, backend info rows) from the newest runs."""
    backends = _order(df["backend"], BACKEND_ORDER)
    layers = _order(df["layer"], LAYER_ORDER)
    passes = _order(df["pass"], PASS_ORDER)
    by_key = {(r["backend"], r["layer"], r["pass"]): r for r in df.to_dict("records")}
    rows, fastest = [], []
    for layer in layers:
        for mode in passes:
            cells = [by_key.get((b, layer, mode)) for b in backends]
            if all(c is None for c in cells):
                continue
            best = min((c["median_ms"], c["backend"]) for c in cells if c is not None)[1]
            rows.append((layer, mode, ["%s [%s]" % (_fmt(c["median_ms"]), _fmt(c["iqr_ms"]))
                                       if c is not None else "n/a" for c in cells]))
            fastest.append(best)
    info = []
    for b in backends:
        sub = df[df["backend"] == b]
        first = sub.iloc[0]
        rounds = "%d-%d" % (sub["rounds"].min(), sub["rounds"].max())
        threads = first["threads"]
        if threads is None or threads != threads:  # None or NaN: not recorded
            threads = ""
        elif isinstance(threads, float) and threads.is_integer():
            threads = str(int(threads))
        info.append([b, first["framework"], first["framework_version"], threads, rounds,
                     first["machine"], first["python"], first["commit"], first["datetime"][:19]])
    return rows, backends, fastest, info


INFO_HEADER = ["backend", "framework", "version", "threads", "rounds", "machine", "python",
               "commit", "when (UTC)"]


def _md_cells(rows):
    """Cells as strings a markdown table survives: no '|' or line break inside."""
    return [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in rows]


def _markdown(df):
    import pandas as pd

    rows, backends, fastest, info = _tables(df)
    body = []
    for (layer, mode, cells), best in zip(rows, fastest):
        body.append([layer, mode] + ["**%s**" % c if b == best else c for b, c in zip(backends, cells)])
    timing = pd.DataFrame(_md_cells(body), columns=_md_cells([["layer", "pass"] + backends])[0])
    first = df.iloc[0]
    parts = ["## " + TITLE, "",
             EXPLAIN.format(batch=first["batch"] or 128, dtype=first["dtype"] or "float32"), "",
             timing.to_markdown(index=False), "",
             pd.DataFrame(_md_cells(info), columns=INFO_HEADER).to_markdown(index=False), ""]
    return "\n".join(parts)


def _html_table(header, rows, css):
    e = html.escape
    out = ['<table class="%s">' % e(css), "<thead><tr>"]
    out += ["<th>%s</th>" % e(str(h)) for h in header]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(
            ("<td><strong>%s</strong></td>" % e(str(c[1]))) if isinstance(c, tuple) else
            "<td>%s</td>" % e(str(c)) for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def figure_png(df):
    """Grouped bars: median ms per layer, one bar per backend (IQR whiskers), fwd and fwd+bwd."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    backends = _order(df["backend"], BACKEND_ORDER)
    layers = _order(df["layer"], LAYER_ORDER)
    passes = _order(df["pass"], PASS_ORDER)
    by_key = {(r["backend"], r["layer"], r["pass"]): r for r in df.to_dict("records")}
    fig, axes = plt.subplots(1, len(passes), figsize=(5.2 * len(passes), 3.9), sharey=True,
                             squeeze=False)
    width = 0.8 / max(len(backends), 1)
    x = np.arange(len(layers))
    values = df["median_ms"][df["median_ms"] > 0]
    log = len(values) > 0 and values.max() / values.min() > 20
    for ax, mode in zip(axes[0], passes):
        for i, b in enumerate(backends):
            rows = [by_key.get((b, layer, mode)) for layer in layers]
            med = np.array([r["median_ms"] if r is not None else np.nan for r in rows])
            lo = np.array([r["median_ms"] - r["q1_ms"] if r is not None else 0 for r in rows])
            hi = np.array([r["q3_ms"] - r["median_ms"] if r is not None else 0 for r in rows])
            ax.bar(x + (i - (len(backends) - 1) / 2) * width, med, width, label=b,
                   yerr=np.vstack([np.clip(lo, 0, None), np.clip(hi, 0, None)]), capsize=2,
                   error_kw={"elinewidth": 0.8})
        ax.set_xticks(x)
        ax.set_xticklabels(layers)
        ax.set_title(mode)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0][0].set_ylabel("median ms per call (IQR whiskers)" + (", log scale" if log else ""))
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle("seed_convnet layers, batch %s" % (df.iloc[0]["batch"] or 128), fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _html(df):
    e = html.escape
    rows, backends, fastest, info = _tables(df)
    body = [[layer, mode] + [("b", c) if b == best else c for b, c in zip(backends, cells)]
            for (layer, mode, cells), best in zip(rows, fastest)]
    first = df.iloc[0]
    png = base64.b64encode(figure_png(df)).decode("ascii")
    explain = EXPLAIN.format(batch=first["batch"] or 128, dtype=first["dtype"] or "float32")
    return "\n".join([
        '<section id="microbench">',
        "<h2>%s</h2>" % e(TITLE),
        "<p>%s</p>" % e(explain.replace("`", "")),
        _html_table(["layer", "pass"] + backends, body, "microbench"),
        '<figure><img alt="%s" src="data:image/png;base64,%s">' % (
            e("median time per layer and backend"), png),
        "<figcaption>%s</figcaption></figure>" % e(
            "Median ms per call of each layer, by backend; whiskers: first to third quartile."),
        _html_table(INFO_HEADER, info, "microbench-context"),
        "</section>"])


def section(directory=DEFAULT_DIR):
    """(markdown, html) of the micro-benchmark section; ("", "") when `directory` has no results."""
    df = load(directory)
    if df.empty:
        return "", ""
    df = _latest(df)
    return _markdown(df), _html(df)


# --- command line ------------------------------------------------------------------------------

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
                        "per core; jax is limited only for 1)")


def cmd(args):
    """`convbench microbench`: run, then print the summary table."""
    try:
        status = run(args.env, args.backend, args.out, args.min_rounds, args.max_time,
                     args.threads)
        md, _ = section(args.out)
    except MicrobenchError as exc:
        print("convbench: error: %s" % exc, file=sys.stderr)
        return 2
    if md:
        print("\n" + md)
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
        md, _ = section(args.dir)
        print(md or "no micro-benchmark results in %s (run: convbench microbench)" % args.dir)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
