"""The report, regenerated from the records: results/report.md and a self-contained report.html.

Tables (pandas) per model, device and batch size, one row per backend; plots (matplotlib):
step-time distributions, per-step training loss overlaid, test accuracy against training time,
peak memory. Statistics come from the raw step samples in the records (warm-up excluded).
Rendered through bench/document.py, which escapes every string from a record in the HTML.
"""
import io
import os

import numpy as np
import pandas as pd

from backends.base import TrainConfig
from bench import metrics
from bench.document import (Bullets, Document, Image, Preformatted, Section, Table, Text, to_html,
                            to_markdown)
from bench.results import read_records
from bench.selection import GROUP_KEYS, latest_rows, machine_label, pooled_row, records_frame


def _fmt(value, digits=2):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return "%.*f" % (digits, value)
    return str(value)


def _display_table(group):
    out = pd.DataFrame({
        "backend": group.backend, "framework": group.framework, "version": group.version,
        "status": [_status_mark(st, inj, noise)
                   for st, inj, noise in zip(group.status, group.injected, group.noise)],
        "processes": group.n_proc,
        "test acc": [_fmt(v, 4) + ((" ± %.4f" % sd) if sd is not None and sd == sd else "")
                     for v, sd in zip(group.test_acc, group.acc_sd)],
        "median step ms": group.median_ms.map(_fmt),
        "95% CI ms": _ranges(group.ci_lo, group.ci_hi),
        "process range ms": _ranges(group.proc_lo, group.proc_hi),
        "IQR ms": group.iqr_ms.map(_fmt),
        "images/s": group.images_per_s.map(lambda v: _fmt(v, 0)),
        "trained img/s": group.trained_per_s.map(lambda v: _fmt(v, 0)),
        "x fastest": group.ratio.map(_fmt),
        "GFLOP/s": group.gflops.map(lambda v: _fmt(v, 1)),
        "% peak": group.pct_peak.map(lambda v: _fmt(v, 1)),
        "first step ms": group.first_step_ms.map(lambda v: _fmt(v, 1)),
        "train mem MB": group.train_mem_mb.map(lambda v: _fmt(v, 0)),
        "peak RSS MB": group.peak_rss_mb.map(lambda v: _fmt(v, 0)),
        "time to 98% s": group.t98.map(lambda v: _fmt(v, 1)),
        "time to 99% s": group.t99.map(lambda v: _fmt(v, 1)),
        "reason": group.reason.map(lambda r: r if len(r) < 160 else r[:157] + "..."),
    })
    return out.reset_index(drop=True)


def _ranges(lows, highs):
    return [("%s-%s" % (_fmt(lo), _fmt(hi))) if lo is not None and lo == lo else ""
            for lo, hi in zip(lows, highs)]


def _status_mark(status, injected, noise=""):
    """ok stays plain; anything else is upper-cased so it stands out; injected faults and a
    machine that was not quiet are named."""
    mark = status if status.startswith("ok") else status.upper()
    return mark + (" (injected: %s)" % injected if injected else "") + (
        " (%s)" % noise if noise else "")


def _group_title(key, config):
    """The configuration in words; what the suite's defaults leave out is named when set."""
    machine, model, device, batch, opt, dtype, threads, mode, _ = key
    default = TrainConfig()
    extra = ["lr %g" % config.get("lr", default.lr),
             "%s epoch(s)" % config.get("epochs", default.epochs)]
    for name, words in (("limit_train", "%s training examples"), ("limit_test", "%s test examples"),
                        ("seed", "seed %s"), ("warmup_steps", "%s warm-up steps"),
                        ("momentum", "momentum %s")):
        if config.get(name, getattr(default, name)) != getattr(default, name):
            extra.append(words % config.get(name))
    if not config.get("dropout", True):
        extra.append("no dropout")
    if config.get("precision", "full") != "full":
        dtype = "%s with %s mixed precision" % (dtype, config["precision"])
    return "%s on %s: batch %s, %s, %s, %s, %s thread(s), %s mode — %s" % (
        model, device, batch, opt, ", ".join(extra), dtype, threads, mode, machine)


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _plots(group):
    """PNG bytes of the group's plots: {name: png}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = group[group.status.str.startswith("ok")]
    plots = {}
    if ok.empty:
        return plots
    # runs too short to time a step past the warm-up have no distribution to draw
    timed = [(name, metrics.steady_steps_ns(r) / 1e6) for name, r in zip(ok.backend, ok._record)]
    timed = [(name, ms) for name, ms in timed if len(ms)]
    if timed:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(timed)))
        ax.boxplot([ms for _, ms in timed], vert=False, showfliers=True, flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(timed) + 1))
        ax.set_yticklabels([name for name, _ in timed])
        ax.set_xscale("log")  # a few long outliers (other processes, GC) must not squash the boxes
        ax.set_xlabel("step time, ms, log scale (warm-up excluded)")
        ax.set_title("Step-time distribution")
        plots["steps"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, r in zip(ok.backend, ok._record):
        losses = np.asarray(r.get("step_loss") or [], dtype=float)
        ax.plot(np.arange(1, len(losses) + 1), losses, label=name, linewidth=0.9, alpha=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_yscale("log")
    ax.set_title("Per-step training loss: same weights, same batches")
    ax.legend(fontsize=8)
    plots["loss"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, r in zip(ok.backend, ok._record):
        curve = r.get("curve") or []
        ax.plot([p["train_s"] for p in curve], [p["test_accuracy"] for p in curve], "o-", label=name)
    ax.axhline(0.98, color="grey", linestyle=":", linewidth=0.8)
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("training time, s (evaluation excluded)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy against training time")
    ax.legend(fontsize=8)
    plots["accuracy"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(ok)))
    names = list(ok.backend)
    base = pd.to_numeric(ok.rss_after_build_mb, errors="coerce")
    train = pd.to_numeric(ok.train_mem_mb, errors="coerce")
    if train.notna().any():  # records made before training memory was measured have no split
        ax.barh(names, list(base.fillna(0)), color="lightgrey", label="after build (import, data, model)")
        ax.barh(names, list(train.fillna(0)), left=list(base.fillna(0)), color="tab:blue",
                label="training")
    ax.plot(list(ok.peak_rss_mb), names, "k|", markersize=14, label="whole-process peak")
    if ok.device_peak_mb.notna().any():
        ax.barh(names, list(ok.device_peak_mb.fillna(0)), color="tab:orange",
                label="device peak", height=0.3)
    ax.set_xlabel("resident MB (worker process)")
    ax.set_title("Memory: baseline, training, and the whole process' peak (evaluation included)")
    ax.legend(fontsize=8, loc="lower right")
    plots["memory"] = _figure_png(fig)
    return plots


SWEEP_AXES = (("batch_size", "batch size"), ("threads", "threads"))
MAX_SWEEPS_SHOWN = 5


def _sweep_rows(records):
    """{sweep id: pooled rows (one per backend and swept point)}, newest sweeps last."""
    if not records:
        return {}
    df = records_frame(records)
    df = df[df.sweep_id.notna()]
    sweeps = {}
    for sweep_id, same in sorted(df.groupby("sweep_id"), key=lambda kv: kv[1].time.max()):
        keys = ["backend", "model", "batch_size", "threads"]
        rows = pd.DataFrame([pooled_row(g) for _, g in same.groupby(keys, dropna=False, sort=False)])
        sweeps[sweep_id] = rows.sort_values(keys)
    return dict(list(sweeps.items())[-MAX_SWEEPS_SHOWN:])


def _sweep_table(rows):
    return pd.DataFrame({
        "backend": rows.backend, "model": rows.model, "batch size": rows.batch_size,
        "threads": rows.threads,
        "status": [_status_mark(st, inj, noise)
                   for st, inj, noise in zip(rows.status, rows.injected, rows.noise)],
        "runs": rows.n_runs, "median step ms": rows.median_ms.map(_fmt),
        "IQR ms": rows.iqr_ms.map(_fmt), "images/s": rows.images_per_s.map(lambda v: _fmt(v, 0)),
        "ms per image": (rows.median_ms / rows.batch_size).map(lambda v: _fmt(v, 3)),
        "test acc": rows.test_acc.map(lambda v: _fmt(v, 4)),
        "reason": rows.reason.map(lambda r: r if len(r) < 160 else r[:157] + "..."),
    }).reset_index(drop=True)


def _sweep_plot(rows):
    """Step time and throughput against each swept value, one line per backend (and other axis)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ok = rows[rows.status.str.startswith("ok")]
    swept = [(col, label) for col, label in SWEEP_AXES if ok[col].nunique() > 1]
    if ok.empty or not swept:
        return None
    fig, axes = plt.subplots(len(swept), 2, figsize=(10, 3.3 * len(swept)), squeeze=False)
    for (col, label), (ax_t, ax_x) in zip(swept, axes):
        others = [c for c, _ in SWEEP_AXES if c != col]
        for key, line in ok.groupby(["backend"] + others, sort=True):
            line = line.sort_values(col)
            name = key[0] + "".join(", %s %s" % (c, v) for c, v in zip(others, key[1:])
                                    if ok[c].nunique() > 1)
            ax_t.plot(line[col], line.median_ms, "o-", label=name)
            ax_x.plot(line[col], line.images_per_s, "o-", label=name)
        for ax, ylabel in ((ax_t, "median step, ms"), (ax_x, "images / s")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(ok[col].unique()))
            ax.set_xticklabels([str(v) for v in sorted(ok[col].unique())])
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        ax_t.set_yscale("log")
        ax_t.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax_t.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax_t.set_title("Step time against %s" % label)
        ax_x.set_title("Throughput against %s" % label)
        ax_x.legend(fontsize=8)
    fig.tight_layout()
    return _figure_png(fig)


def _peak_note(m):
    peak = m.get("matmul_peak") or {}
    if not peak:
        return ""
    others = "; ".join("%s %.1f" % kv for kv in sorted((peak.get("by_library") or {}).items()))
    return " (best of: %s; measured %s%s)" % (others, peak.get("measured_at"),
                                              ", reused from the machine's cache" if peak.get("cached") else "")


def _context_lines(records):
    """Machine and software fingerprint of the newest records."""
    r = records[-1]
    m = r.get("machine") or {}
    gpus = ", ".join("%s (%s, driver %s)" % (g.get("name"), g.get("memory"), g.get("driver"))
                     for g in m.get("gpus") or []) or "none"
    lines = [
        "CPU: %s, %s cores, %.1f GB RAM, %s" % (m.get("cpu_model"), m.get("cores"),
                                               m.get("ram_gb") or 0, m.get("os")),
        "CPU features: %s" % " ".join(m.get("cpu_flags") or []),
        "GPU: %s" % gpus,
        "Measured fp32 matmul peak: %s GFLOP/s%s" % (_fmt(m.get("matmul_peak_gflops"), 1), _peak_note(m)),
        "Math-kernel settings in the environment: %s" % (", ".join(
            "%s=%s" % kv for kv in sorted((m.get("math_env") or {}).items())) or "none"),
        "git commit: %s%s" % (r.get("git_commit"), " (uncommitted changes)" if r.get("git_dirty") else ""),
    ]
    soft = {}
    for rec in records:
        env = rec.get("environment") or {}
        if env:
            soft[rec["backend"]] = "%s %s, Python %s, NumPy %s%s%s%s" % (
                env.get("framework"), env.get("framework_version"), env.get("python"),
                env.get("numpy"), (", BLAS " + env["blas"]) if env.get("blas") else "",
                (", kernels " + env["cpu_capability"]) if env.get("cpu_capability") else "",
                (", loaded: " + " ".join(env["math_libraries"])) if env.get("math_libraries") else "")
    lines += ["%s: %s" % (k, v) for k, v in sorted(soft.items())]
    return lines


METHODOLOGY = """\
- Every backend trains the same network (models/*.toml) from the same initial weights
  (`init_weights_digest`), on the same MNIST batches in the same order (`order_digest`), with the
  same optimizer, learning rate (on the batch-mean loss), thread budget and dtype. The
  conformance suite (tests/test_conformance.py) proves it numerically against the NumPy reference:
  logits, one optimizer step, and a 100-step loss trajectory.
- Each backend runs in its own fresh worker process (its own environment where frameworks clash),
  so threads, allocators and imports of one never touch another's figures.
- Timed: one optimizer step, from handing over a prepared batch until its loss is back as a Python
  float (the device sync point). Not timed: batch slicing, evaluation, logging.
- The first step (graph building, compilation) is reported apart ("first step ms"); it and the next
  warm-up steps are excluded from the statistics.
- A step time is a property of a process as much as of a framework: where its buffers landed, what
  else ran, how the CPU clocked. The spread between fresh processes is several times the spread
  within one, and consecutive steps of one process are correlated, so a CI from one process' steps
  claims far more than it knows. So each backend is measured in several fresh processes
  (`--timing-runs`, default 5 for `convbench run`): the training run, plus timing-only processes
  that time the first steps of the same training (same weights, same batches; 50 steady steps by
  default), run after all training runs, interleaved across backends with the order rotated each
  round. "median step ms" is the median of the process medians; "95% CI ms" is a percentile
  bootstrap of that median over processes (scipy; shown from 3 processes up: it covers
  process-to-process variation on this machine in this session, not other machines or days);
  "process range ms" is the lowest and highest process median; "IQR ms" is the median of the
  processes' own interquartile ranges (the jitter within a process). Accuracy, time to accuracy
  and memory come from the training run(s) only.
- Epoch mode (the framework's own loop: Keras `fit`, `Estimator.train`, timed by its callbacks):
  a process' figure is the epochs' training wall time less the first step and the warm-up, per
  steady step, so it includes what the loop does between steps (Keras' iterator slicing and
  converting the next batch) and is comparable with step mode's; the callbacks' own step
  intervals give the IQR. Mid-epoch evaluations run on the same schedule in both modes, in epoch
  mode from inside the framework's call (a Keras callback; an Estimator hook that first writes a
  checkpoint, which Estimator.predict reads), their time left out of the training time, so time to
  98% / 99% means the same in both. Backends whose framework trains step by step have no epoch
  mode: `--mode epoch` gives them an "unsupported" record.
- Load: the CPU time other processes used during each job is measured (/proc/stat less the worker
  and convbench); above 0.25 cores on average the status says "noisy", and `compare` leaves such
  processes out unless asked. Python's garbage collector gets the same treatment in every worker:
  a full collection before the first step, `gc.freeze()` where available, then left on.
- GFLOP/s: the spec's training FLOPs per example (conv and dense multiply-adds x 2, forward +
  weight and input gradients) x batch / median step, against this machine's fp32 matmul peak:
  the best float32 1024^3 GEMM of every library the suite's interpreter has (NumPy's BLAS and
  torch's, interleaved), measured once per machine, thread budget and math-kernel settings and
  then reused, so every record of a machine divides by the same figure.
- Memory: MNIST stays uint8 in every worker, made float one batch at a time. "train mem MB" is
  what training itself adds: the peak resident set from the first step to the first evaluation
  (the kernel's high-water mark, reset before the first step) minus the resident set after the
  framework import and model build. "peak RSS MB" is the whole process' peak, import, data and
  evaluation at batch 1000 included. Device peak where the framework reports it.
- Time to 98% / 99%: training seconds (evaluation excluded) until a test-set evaluation (4 per
  epoch) first reached it.
- The suite's own cost per step, the loop around train_step (slicing the batch, uint8 to float,
  two clock reads, bookkeeping, progress), is outside every step figure and inside the epoch's
  wall time. Measured with a null adapter whose train_step returns at once (`python -m
  bench.overhead`: the epoch's wall time less its timed steps, and the CPU time between the first
  and last progress message): 142 us CPU per step at batch 128 (1.1 ms wall), measured on a
  2-core machine loaded about five-fold by other work, niced; that is 1.2% of the fastest step in
  the reference (12.2 ms, seed_convnet at batch 128 on 2 threads), against a 1% target. Rerun it on
  the quiet machine before quoting it.
- Tuned track and precision: `torch-tuned` and `keras-xla` are the idiomatic rows with their
  framework's performance guide applied (docs/adding-a-backend.md#the-tuned-track); their
  compilation is the first step's. `--precision bf16` rows (bfloat16 compute, float32 master
  weights) pass the conformance suite within tolerances derived from bf16's 8-bit significand
  (tests/bf16_tolerance.py); `environment.cpu_native_bf16` says whether the CPU computes bf16 in
  hardware.
"""


def build_document(records, microbench_dir=None):
    """The report as a document (bench/document.py): a section per configuration group, one per
    sweep, the micro-benchmarks (from the pytest-benchmark JSON files in microbench_dir, when it
    exists), the machine and the methodology."""
    df = latest_rows(records)
    intro = [Text("Generated from %d record(s); the newest record per backend and configuration "
                  "is shown." % len(records))]
    if df.empty:
        intro.append(Text("No records yet: run `convbench run`."))
    sections = []
    groups = [] if df.empty else df.groupby(list(GROUP_KEYS), dropna=False, sort=True)
    for i, (key, group) in enumerate(groups):
        blocks = [Table(_display_table(group))]
        ratio = _speed_target(group)
        if ratio:
            blocks.append(Text(ratio, css="target"))
        blocks += [Image("g%d_%s.png" % (i, name), png, name) for name, png in _plots(group).items()]
        config = group._record.iloc[0].get("config") or {}
        sections.append(Section(_group_title(key, config), blocks))
    for sweep_id, rows in _sweep_rows(records).items():
        title = "Sweep %s: %s on %s" % (sweep_id, ", ".join(sorted(rows.model.unique())),
                                         machine_label(rows._record.iloc[-1]))
        blocks = [Table(_sweep_table(rows))]
        png = _sweep_plot(rows)
        if png:
            blocks.append(Image("sweep_%s.png" % sweep_id, png, "sweep %s" % sweep_id))
        sections.append(Section(title, blocks))
    from bench import scaling_report

    where = scaling_report.section(records, _figure_png)
    sections += [where] if where else []
    if microbench_dir:
        from bench import microbench_results

        micro = microbench_results.section(microbench_dir)
        sections += [micro] if micro else []
    if records:
        sections.append(Section("Machine and software", [Bullets(_context_lines(records))]))
    sections.append(Section("Methodology", [Preformatted(METHODOLOGY)]))
    return Document("convbench report", intro, sections)


def build_report(records, microbench_dir=None):
    """(markdown text, html text, {png name: bytes}) for a list of records."""
    doc = build_document(records, microbench_dir)
    md, pngs = to_markdown(doc)
    return md, to_html(doc), pngs


def _speed_target(group):
    ok = group[group.status.str.startswith("ok")].set_index("backend")
    if "numpy" in ok.index and "torch" in ok.index:
        r = ok.loc["numpy", "median_ms"] / ok.loc["torch", "median_ms"]
        line = "NumPy reference / PyTorch median step: %.2fx" % r
        # the suite's speed target is set for the default job: seed_convnet at batch 128
        if set(group.model) == {"seed_convnet"} and set(group.batch_size) == {128}:
            line += " (target <= 2x: %s)" % ("met" if r <= 2 else "NOT met")
        return line
    return None


def write_report(results_path, out_dir=None):
    """Regenerate report.md, report.html and report_files/*.png beside the results (or in out_dir)."""
    records = read_records(results_path)
    out_dir = out_dir or os.path.dirname(os.path.abspath(results_path))
    microbench_dir = os.path.join(os.path.dirname(os.path.abspath(results_path)), "microbench")
    md, page, pngs = build_report(records, microbench_dir if os.path.isdir(microbench_dir) else None)
    files_dir = os.path.join(out_dir, "report_files")
    os.makedirs(files_dir, exist_ok=True)
    for name in os.listdir(files_dir):
        if name.endswith(".png"):
            os.unlink(os.path.join(files_dir, name))
    for name, png in pngs.items():
        with open(os.path.join(files_dir, name), "wb") as fh:
            fh.write(png)
    paths = {"md": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html")}
    for key, text in (("md", md), ("html", page)):
        tmp = paths[key] + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, paths[key])
    return paths
