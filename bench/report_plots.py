"""The report's plots (matplotlib, PNG bytes), each backend in its bench/palette.py style.

Per configuration group: throughput with its CI, first step (compilation), the step-time
distribution, each backend's training-loss difference from the NumPy reference, test accuracy
against training time, and memory split into baseline and training. Across groups: speed relative
to the fastest, per model (`overview`). Legends sit outside the axes so they never cover data.
"""
import io

import numpy as np
import pandas as pd

from bench import metrics, palette

#: the loss difference from the reference that counts as "the trajectories have parted"
PARTED = 1e-3
WIDTH = 6.4  # inches: two plots side by side fill the report's page


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def log_scale(ax, which):
    """A log x or y axis whose tick labels are plain text ("1e-05", "100", "60"): matplotlib's
    default typesets each one as TeX-like math, a quarter of a log plot's drawing time. Minor ticks
    are labelled as by default (when the axis spans under a decade), as plain text too."""
    from matplotlib.ticker import LogFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _legend_outside(ax):
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _bar_height(n):
    return 0.6 + 0.32 * n


def throughput(ok):
    """images/s per backend (batch / median of the process medians), the CI across processes as
    an error bar; fastest at the top."""
    rows = ok[ok.median_ms.notna()].sort_values("median_ms", ascending=False)
    if rows.empty:
        return None
    fig, ax = _plt().subplots(figsize=(WIDTH, _bar_height(len(rows))))
    ips = rows.batch_size / (rows.median_ms / 1e3)
    # the slowest end of the step-time CI is the lowest throughput; no CI (under 3 processes): none
    lo = [b / (h / 1e3) if pd.notna(h) else v for b, h, v in zip(rows.batch_size, rows.ci_hi, ips)]
    hi = [b / (l / 1e3) if pd.notna(l) else v for b, l, v in zip(rows.batch_size, rows.ci_lo, ips)]
    err = np.array([np.subtract(ips, lo), np.subtract(hi, ips)])
    ax.barh(list(rows.backend), list(ips), xerr=err, capsize=3,
            color=[palette.colour(b) for b in rows.backend])
    ax.set_xlabel("images / s (batch / median step; bar: 95% CI across processes)")
    ax.set_title("Throughput")
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def first_step(ok):
    """The first step (graph building, tracing, compilation) per backend, log scale."""
    rows = ok[ok.first_step_ms.notna()].sort_values("first_step_ms", ascending=False)
    if rows.empty:
        return None
    fig, ax = _plt().subplots(figsize=(WIDTH, _bar_height(len(rows))))
    ax.barh(list(rows.backend), list(rows.first_step_ms),
            color=[palette.colour(b) for b in rows.backend])
    log_scale(ax, "x")
    ax.set_xlabel("first step, ms, log scale (building, tracing, compiling)")
    ax.set_title("First step")
    ax.grid(axis="x", alpha=0.3)
    return png(fig)


def step_distribution(ok):
    timed = [(name, metrics.steady_steps_ns(r) / 1e6) for name, r in zip(ok.backend, ok._record)]
    timed = [(name, ms) for name, ms in timed if len(ms)]
    if not timed:
        return None
    fig, ax = _plt().subplots(figsize=(WIDTH, _bar_height(len(timed))))
    # `orientation` from matplotlib 3.10 (where `vert` is deprecated); the oldest allowed has `vert`
    import matplotlib
    horizontal = ({"orientation": "horizontal"} if tuple(
        int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10) else {"vert": False})
    box = ax.boxplot([ms for _, ms in timed], showfliers=True, patch_artist=True,
                     flierprops={"markersize": 2}, **horizontal)
    for patch, (name, _) in zip(box["boxes"], timed):
        patch.set_facecolor(palette.colour(name))
        patch.set_alpha(0.6)
    ax.set_yticks(range(1, len(timed) + 1))
    ax.set_yticklabels([name for name, _ in timed])
    log_scale(ax, "x")  # a few long outliers (other processes, GC) must not squash the boxes
    ax.set_xlabel("step time, ms, log scale (training run, warm-up excluded)")
    ax.set_title("Step-time distribution within the training run")
    return png(fig)


def loss_difference(ok):
    """Each backend's per-step |loss - the NumPy reference's loss| (log scale), the step where it
    first exceeds PARTED marked: from the same weights and batches the curves agree to float32
    rounding at first, then training amplifies the rounding. Without a NumPy row: the losses."""
    losses = {name: np.asarray(r.get("step_loss") or [], dtype=float)
              for name, r in zip(ok.backend, ok._record)}
    plt = _plt()
    fig, ax = plt.subplots(figsize=(WIDTH, 3.4))
    reference = losses.pop("numpy", None)
    if reference is None or not len(reference):
        for name, loss in losses.items():
            ax.plot(np.arange(1, len(loss) + 1), loss, label=name, linewidth=0.9,
                    color=palette.colour(name))
        ax.set_ylabel("training loss (batch)")
        ax.set_title("Per-step training loss (no NumPy reference in this group)")
    else:
        for name in palette.order(losses):
            n = min(len(losses[name]), len(reference))
            diff = np.abs(losses[name][:n] - reference[:n])
            steps = np.arange(1, n + 1)
            style = palette.style(name)
            ax.plot(steps, np.maximum(diff, 1e-9), linewidth=0.8, color=style.colour, label=name)
            parted = np.flatnonzero(diff > PARTED)
            if len(parted):
                ax.plot(steps[parted[0]], diff[parted[0]], linestyle="none", markersize=7,
                        **style.plot_kwargs())
        ax.axhline(PARTED, color="grey", linestyle=":", linewidth=0.8)
        ax.set_ylabel("|loss - NumPy reference's loss|")
        ax.set_title("Loss difference from the reference (marker: first step past %g)" % PARTED)
    log_scale(ax, "y")
    log_scale(ax, "x")  # the first tens of steps, where the curves still agree, get room
    ax.set_xlabel("step (log scale)")
    _legend_outside(ax)
    return png(fig)


def accuracy(ok):
    fig, ax = _plt().subplots(figsize=(WIDTH, 3.4))
    for name, r in sorted(zip(ok.backend, ok._record), key=lambda nr: palette.order(
            list(ok.backend)).index(nr[0])):
        curve = r.get("curve") or []
        ax.plot([p["train_s"] for p in curve], [p["test_accuracy"] for p in curve], label=name,
                linewidth=1, markersize=4, **palette.style(name).plot_kwargs())
    for level in (0.98, 0.99):
        ax.axhline(level, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("training time, s (evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy against training time")
    _legend_outside(ax)
    return png(fig)


def memory(ok):
    """Resident memory: the baseline after import, data and build, what training adds on top,
    and the whole process' peak as a tick."""
    rows = ok.iloc[::-1]
    names = list(rows.backend)
    fig, ax = _plt().subplots(figsize=(WIDTH, _bar_height(len(rows))))
    base = pd.to_numeric(rows.rss_after_build_mb, errors="coerce").fillna(0)
    train = pd.to_numeric(rows.train_mem_mb, errors="coerce")
    colours = [palette.colour(b) for b in names]
    if train.notna().any():  # records made before training memory was measured have no split
        ax.barh(names, list(base), color="lightgrey", label="baseline (import, data, build)")
        ax.barh(names, list(train.fillna(0)), left=list(base), color=colours, label="training")
    ax.plot(list(rows.peak_rss_mb), names, "k|", markersize=14, label="whole-process peak")
    if rows.device_peak_mb.notna().any():
        ax.barh(names, list(rows.device_peak_mb.fillna(0)), color="tab:orange",
                label="device peak", height=0.3)
    ax.set_xlabel("resident MB (worker process)")
    ax.set_title("Memory: baseline + training, and the whole process' peak")
    _legend_outside(ax)
    return png(fig)


GROUP_PLOTS = (("throughput", throughput), ("first_step", first_step),
               ("loss", loss_difference), ("accuracy", accuracy),
               ("steps", step_distribution), ("memory", memory))


def group_plots(group):
    """{name: png} of one configuration group's ok rows."""
    ok = group[group.status.str.startswith("ok")]
    if ok.empty:
        return {}
    out = {}
    for name, draw in GROUP_PLOTS:
        image = draw(ok)
        if image:
            out[name] = image
    return out


def overview(headline):
    """Speed relative to the fastest backend, one row of dots per model (log scale), for the
    headline group of each model on one machine; None with fewer than two backends."""
    ok = headline[headline.status.str.startswith("ok") & headline.ratio.notna()]
    if ok.backend.nunique() < 2:
        return None
    models = list(dict.fromkeys(ok.model))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(2 * WIDTH, 0.9 + 0.55 * len(models)))
    for name in palette.order(set(ok.backend)):
        mine = ok[ok.backend == name]
        ys = [models.index(m) for m in mine.model]
        ax.plot(list(mine.ratio), ys, linestyle="none", markersize=9, label=name,
                **palette.style(name).plot_kwargs())
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels(models)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticks = [t for t in (1, 1.25, 1.5, 2, 3, 4, 6, 8, 12, 16) if t <= max(ok.ratio.max(), 1.3) * 1.1]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["%gx" % t for t in ticks])
    ax.set_xlabel("median step relative to the model's fastest backend (log scale; 1x = fastest)")
    ax.set_title("Speed at a glance")
    ax.grid(axis="x", alpha=0.3)
    _legend_outside(ax)
    return png(fig)
