"""The report, regenerated from the records: results/report.md and a self-contained report.html.

Tables (pandas) per model, device and batch size, one row per backend; plots (matplotlib):
step-time distributions, per-step training loss overlaid, test accuracy against training time,
peak memory. Statistics come from the raw step samples in the records (warm-up excluded).
Rendered through bench/document.py, which escapes every string from a record in the HTML.
"""
import os
import sys

import numpy as np
import pandas as pd

from backends.base import TrainConfig
from bench import palette, report_plots, verdict
from bench.methodology import METHODOLOGY
from bench import overhead as harness_overhead
from bench.document import (Bullets, Document, Grid, Image, Links, Preformatted, Section, Swatches,
                            Table, Text, to_html, to_markdown)
from bench.plot_cache import PlotCache
from bench.selection import (GROUP_KEYS, latest_rows, machine_label, pooled_row, records_frame,
                             recipe_words)


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
    return _for_reading(out.reset_index(drop=True), group.status)


def _for_reading(table, statuses):
    """Columns empty in every row left out; the reason column only where some row is not ok."""
    keep = [c for c in table.columns if c == "backend" or table[c].astype(str).str.strip().ne("").any()]
    if all(str(st).startswith("ok") for st in statuses) and "reason" in keep:
        keep.remove("reason")
    return table[keep]


def _ranges(lows, highs):
    return [("%s-%s" % (_fmt(lo), _fmt(hi))) if lo is not None and lo == lo else ""
            for lo, hi in zip(lows, highs)]


def _status_mark(status, injected, noise=""):
    """ok stays plain; anything else is upper-cased so it stands out; injected faults and a
    machine that was not quiet are named."""
    mark = status if status.startswith("ok") else status.upper()
    return mark + (" (injected: %s)" % injected if injected else "") + (
        " (%s)" % noise if noise else "")


def _group_title(key, config, seeds=None):
    """The configuration in words; what the suite's defaults leave out is named when set. seeds:
    the seeds pooled in the group (several: `--seeds`)."""
    machine, model, device, batch, opt, dtype, threads, mode, _ = key
    default = TrainConfig()
    extra = ["lr %g" % config.get("lr", default.lr),
             "%s epoch(s)" % config.get("epochs", default.epochs)]
    extra += [w for w in recipe_words(config) if "precision" not in w]
    if seeds and len(seeds) > 1:
        extra.append("seeds %s" % ", ".join(str(s) for s in seeds))
        config = dict(config, seed=default.seed)  # named once, above
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
    return report_plots.png(fig)


def _peak_note(m):
    peak = m.get("matmul_peak") or {}
    if not peak:
        return ""
    others = "; ".join("%s %.1f" % kv for kv in sorted((peak.get("by_library") or {}).items()))
    return " (best of: %s; measured %s%s)" % (others, peak.get("measured_at"),
                                              ", reused from the machine's cache" if peak.get("cached") else "")


def _machine_sections(records):
    """One machine-and-software section per machine (newest first), from its newest records."""
    by_machine = {}
    for r in records:
        by_machine.setdefault(machine_label(r), []).append(r)
    ordered = sorted(by_machine.items(), key=lambda kv: max(r.get("time") or "" for r in kv[1]),
                     reverse=True)
    return [Section("Machine and software: %s" % label, [Bullets(_context_lines(recs))],
                    anchor="machine-%d" % i) for i, (label, recs) in enumerate(ordered)]


def _context_lines(records):
    """Machine and software fingerprint of one machine's records (the newest for the machine)."""
    r = max(records, key=lambda rec: rec.get("time") or "")
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


def _ordered_groups(df):
    """Configuration groups, machines with the newest records first; on each machine the default
    configuration first (seed_convnet, batch 128, momentum, float32, CPU, step mode), then each
    other model's groups, the step mode and default batch before the rest."""
    newest = df.groupby("machine").time.max().sort_values(ascending=False)
    rank = {m: i for i, m in enumerate(newest.index)}
    default = TrainConfig()

    def order(item):
        machine, model, device, batch, optimizer, dtype, threads, mode, _ = item[0]
        return (rank[machine], model != "seed_convnet", model, mode != "step",
                batch != default.batch_size, optimizer != default.optimizer,
                dtype != default.dtype, device != default.device, str(batch), str(threads))
    return sorted(df.groupby(list(GROUP_KEYS), dropna=False, sort=True), key=order)


def _provenance(group):
    """Which commits, dates, machine and framework versions a section's figures come from."""
    records = list(group._record)  # each row's newest training record
    commits = sorted({(r.get("git_commit") or "?")[:10] + ("+dirty" if r.get("git_dirty") else "")
                      for r in records})
    times = sorted(r.get("time") or "" for r in records)
    versions = ", ".join("%s %s" % (b, v) for b, v in zip(group.backend, group.version) if v)
    return "Commit(s) %s; records from %s to %s; %s. Versions: %s." % (
        ", ".join(commits), times[0][:16].replace("T", " "), times[-1][:16].replace("T", " "),
        group.machine.iloc[0], versions or "n/a")


def _anchor(i):
    return "g%d" % i


def _machines(groups):
    """[(machine, [(index, (key, group)), ...])] in the report's order."""
    machines = list(dict.fromkeys(key[0] for _, (key, _) in groups))
    return [(m, [(i, kg) for i, kg in groups if kg[0][0] == m]) for m in machines]


def _overview_job(index, mine):
    """(inputs, draw) of a machine's speed-at-a-glance chart: the first (most default) group of
    each model."""
    headline = {}
    for i, (key, group) in mine:
        headline.setdefault(key[1], group)
    rows = pd.concat(list(headline.values()))
    name = "overview_%d.png" % index
    return _group_inputs(name, rows), lambda: {name: report_plots.overview(rows)}


def _group_job(i, group):
    """(inputs, draw) of a configuration group's plots."""
    prefix = "g%d_" % i
    return _group_inputs(prefix, group), lambda: dict(
        (prefix + kind + ".png", png) for kind, png in report_plots.group_plots(group).items())


def _sweep_job(sweep_id, rows):
    name = "sweep_%s.png" % sweep_id
    inputs = [name] + [[r.get("run_id"), r.get("time")] for r in rows._record]
    return inputs, lambda: {name: _sweep_plot(rows)} if len(rows) else {}


def _summary_section(groups, plots):
    """Per machine: the speed-at-a-glance chart of each model's headline group, then one
    verdict per configuration group, in the report's order."""
    blocks = []
    for index, (machine, mine) in enumerate(_machines(groups)):
        name = "overview_%d.png" % index
        chart = plots.draw(*_overview_job(index, mine)).get(name)
        blocks.append(Text("**%s**" % machine))
        if chart:
            blocks.append(Image(name, chart, "speed at a glance on %s" % machine))
        for i, (key, group) in mine:
            text = verdict.group_verdict(group)
            if text:
                blocks.append(Text("[%s] %s" % (_short_title(key, group), text), css="verdict"))
    return Section("Summary", blocks, anchor="summary")


def _short_title(key, group):
    machine, model, device, batch, opt, dtype, threads, mode, _ = key
    config = group._record.iloc[0].get("config") or {}
    return ", ".join(["%s, batch %s, %s, %s, %s mode, %s thread(s)" % (
        model, batch, opt, dtype, mode, threads)] + recipe_words(config))


def _palette_block(df):
    names = palette.order(set(df.backend)) if not df.empty else []
    return Swatches([(b, palette.colour(b)) for b in names], title="Colours: ")


#: the pooled figures the plots draw: part of what keys an image (bench/plot_cache.py)
PLOTTED = ("batch_size", "median_ms", "ci_lo", "ci_hi", "ratio", "first_step_ms",
           "rss_after_build_mb", "train_mem_mb", "peak_rss_mb", "device_peak_mb")


def _group_inputs(prefix, group):
    """What a group's images show: each ok row's record and pooled figures (bench/plot_cache.py)."""
    ok = group[group.status.str.startswith("ok")]
    return [prefix] + [[row["backend"], row["model"], row["_record"].get("run_id"),
                        row["_record"].get("time")] + [row[c] for c in PLOTTED]
                       for _, row in ok.iterrows()]


def build_document(records, microbench_dir=None, extra_links=(), plots=None, overhead=None):
    """The report as a document (bench/document.py): a summary (a verdict per configuration,
    speed at a glance), a section per configuration group, one per sweep, the micro-benchmarks
    (from the pytest-benchmark JSON files in microbench_dir, when it exists), the machine and the
    methodology. extra_links: (label, relative path) of files kept beside the report. plots: a
    bench/plot_cache.PlotCache holding an earlier report's images (only images whose data changed
    are drawn). overhead: a kept harness-overhead measurement (bench/overhead.py), quoted in the
    methodology."""
    plots = plots or PlotCache()
    df = latest_rows(records)
    intro = [Text("Generated from %d record(s); the newest session per backend and configuration "
                  "is shown." % len(records))]
    if df.empty:
        intro.append(Text("No records yet: run `convbench run`."))
    groups = [] if df.empty else _ordered_groups(df)
    groups = list(enumerate(groups))
    sweeps = _sweep_rows(records)
    plots.prefetch([_overview_job(i, mine) for i, (_, mine) in enumerate(_machines(groups))]
                   + [_group_job(i, group) for i, (_, group) in groups]
                   + [_sweep_job(sweep_id, rows) for sweep_id, rows in sweeps.items()])
    from bench import scaling_report, target_report, variants_report

    sections = [_summary_section(groups, plots)] if groups else []
    to_target = target_report.section(records)  # the time-to-accuracy track's headline
    sections += [to_target] if to_target else []
    toc = {}  # anchor -> a short label for the contents
    for i, (key, group) in groups:
        blocks = [Text(_provenance(group), css="provenance"), Table(_display_table(group))]
        ratio = _speed_target(group)
        if ratio:
            blocks.append(Text(ratio, css="target"))
        prefix = "g%d_" % i
        images = plots.draw(*_group_job(i, group))
        # the plots' own order, whether drawn now or read back from the cache (sorted by name)
        kinds = [kind for kind, _ in report_plots.GROUP_PLOTS]
        shown = sorted(images.items(), key=lambda item: kinds.index(item[0][len(prefix):-4]))
        blocks.append(Grid([Image(name, png, name[len(prefix):-4]) for name, png in shown]))
        config = group._record.iloc[0].get("config") or {}
        seeds = sorted(set().union(*group.seeds)) if "seeds" in group else None
        sections.append(Section(_group_title(key, config, seeds), blocks, anchor=_anchor(i)))
        toc[_anchor(i)] = "%s (%s)" % (_short_title(key, group), key[0].split(" (")[0])
    for sweep_id, rows in sweeps.items():
        title = "Sweep %s: %s on %s" % (sweep_id, ", ".join(sorted(rows.model.unique())),
                                         machine_label(rows._record.iloc[-1]))
        blocks = [Table(_sweep_table(rows))]
        name = "sweep_%s.png" % sweep_id
        png = plots.draw(*_sweep_job(sweep_id, rows)).get(name)
        if png:
            blocks.append(Image(name, png, "sweep %s" % sweep_id))
        sections.append(Section(title, blocks, anchor="sweep-%s" % sweep_id))
    variants = variants_report.section(df) if not df.empty else None
    sections += [variants] if variants else []

    where = scaling_report.section(records, report_plots.png)
    sections += [where._replace(anchor="where-the-time-goes")] if where else []
    if microbench_dir:
        from bench import microbench_results

        micro = microbench_results.section(microbench_dir)
        sections += [micro._replace(anchor="micro-benchmarks")] if micro else []
    if records:
        sections += _machine_sections(records)
    method = [Preformatted(METHODOLOGY)]
    if overhead:
        method.append(Text("**Harness overhead.** " + harness_overhead.describe(overhead, df)))
    sections.append(Section("Methodology", method, anchor="methodology"))
    contents = [(toc.get(s.anchor) or (s.title if len(s.title) < 60 else s.title[:57] + "..."),
                 "#" + s.anchor) for s in sections if s.anchor]
    intro.append(Links(contents, lead="Contents: "))
    if extra_links:
        intro.append(Links(list(extra_links), lead="Beside this report: "))
    if not df.empty:
        intro.append(_palette_block(df))
    return Document("convbench report", intro, sections)


#: files kept beside a report that it links to (the reference keeps them in results/reference/)
COMPANIONS = (("hand-written loops", "hand_loops.md"),
              ("TF kernel profile, TF 2.15", "tf_op_profile_tf2.15.json"),
              ("TF kernel profile, TF 2.21", "tf_op_profile_tf2.21.json"))


def build_report(records, microbench_dir=None, plots=None, out_dir=None):
    """(markdown text, html text, {png name: bytes}) for a list of records; out_dir: where the
    report goes, for links to the COMPANIONS found there."""
    links = [(label, name) for label, name in COMPANIONS
             if out_dir and os.path.isfile(os.path.join(out_dir, name))]
    doc = build_document(records, microbench_dir, links, plots, _kept_overhead(out_dir))
    md, pngs = to_markdown(doc)
    return md, to_html(doc), pngs


def _kept_overhead(out_dir):
    """The harness-overhead measurement kept beside the report (bench/overhead.py), or None."""
    path = os.path.join(out_dir, harness_overhead.FILE_NAME) if out_dir else None
    if not path or not os.path.isfile(path):
        return None
    try:
        return harness_overhead.load(path)
    except (OSError, ValueError) as e:
        print("convbench: warning: %s is not a harness-overhead measurement (%s); the report "
              "leaves it out (remake it: python -m bench.overhead --json %s)"
              % (path, e, path), file=sys.stderr)
        return None


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
