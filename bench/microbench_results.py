"""The micro-benchmarks' results: pytest-benchmark JSON files read into one DataFrame (`load`)
and the report section drawn from them (`section`, a bench/document.py Section with a figure).
bench/microbench.py runs the benchmarks that write those files.

Imports no framework; pandas and matplotlib are imported where they are used.
"""
import glob
import io
import json
import os

DEFAULT_DIR = os.path.join("results", "microbench")
LAYER_ORDER = ("conv1", "pool1", "conv2", "pool2", "dense1")
PASS_ORDER = ("fwd", "fwd+bwd")
BACKEND_ORDER = ("numpy", "torch", "tf", "tf-xla", "jax")
COLUMNS = ["layer", "pass", "backend", "framework", "framework_version", "median_ms", "iqr_ms",
           "q1_ms", "q3_ms", "min_ms", "rounds", "gflops_per_s", "threads", "batch", "dtype",
           "machine", "python", "commit", "datetime", "file"]


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


def section(directory=DEFAULT_DIR):
    """The micro-benchmark section of the report (bench/document.py), or None when `directory`
    has no results."""
    import pandas as pd
    from bench.document import Image, Section, Table, Text

    df = load(directory)
    if df.empty:
        return None
    df = _latest(df)
    rows, backends, fastest, info = _tables(df)
    timing = pd.DataFrame([[layer, mode] + cells for layer, mode, cells in rows],
                          columns=["layer", "pass"] + backends)
    strong = frozenset((i, best) for i, best in enumerate(fastest))
    first = df.iloc[0]
    return Section(TITLE, [
        Text(EXPLAIN.format(batch=first["batch"] or 128, dtype=first["dtype"] or "float32")),
        Table(timing, css="microbench", strong=strong),
        Image("microbench.png", figure_png(df), "median time per layer and backend",
              caption="Median ms per call of each layer, by backend; whiskers: first to third "
                      "quartile."),
        Table(pd.DataFrame(info, columns=INFO_HEADER), css="microbench-context"),
    ], anchor="microbench")


# --- command line ------------------------------------------------------------------------------
