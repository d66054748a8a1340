"""The report's "Tuned track and bf16" section: every tuned backend beside the idiomatic backend it
tunes (registry `tunes`: torch-tuned / torch, keras-xla / keras, tf-xla / tf), and every bf16 row
beside the same backend's float32 row, the configuration otherwise the same, on the same machine.

Each pair gives both step times (median of the process medians), the speed-up (A / B: above 1, B
is faster) and whether it is significant as `compare` judges it (bench/compare.py: Mann-Whitney U
on the process medians, 10% threshold); accuracy on both sides, and B's first step, where a tuned
backend's compilation lands.
"""
import pandas as pd

from backends import registry
from bench.compare import judge
from bench.document import Section, Table, Text
from bench.jobs import work_hash
from bench.selection import recipe_words


def _work_but_precision(record):
    """What must match for two rows to pair: the network and the whole training configuration
    but the seed (bench/jobs.work_hash) and the precision."""
    config = dict((k, v) for k, v in (record.get("config") or {}).items() if k != "precision")
    return work_hash(record.get("spec_hash"), config)


def _tunes(backend):
    try:
        return registry.get(backend).tunes
    except registry.UnknownBackend:
        return ""


def pairs(df):
    """[(kind, row A, row B)]: ("tuned", idiomatic, tuned) and ("bf16", float32, bf16), from the
    report's pooled rows (bench/selection.latest_rows) that are ok and timed."""
    ok = df[(df.status == "ok") & df.median_ms.notna()]
    index = {}
    for _, row in ok.iterrows():
        index[(row.machine, _work_but_precision(row._record), row.precision, row.backend)] = row
    out = []
    for key, row in index.items():
        where, precision, backend = key[:-2], key[-2], key[-1]
        base = _tunes(backend)
        if base and (where + (precision, base)) in index:
            out.append(("tuned", index[where + (precision, base)], row))
        if precision == "bf16" and (where + ("full", backend)) in index:
            out.append(("bf16", index[where + ("full", backend)], row))
    order = {"tuned": 0, "bf16": 1}
    return sorted(out, key=lambda p: (p[1].machine, order[p[0]], p[1].model, p[1].batch_size,
                                      p[1]["mode"], p[2].backend))


def _side(row):
    return row.backend + (" bf16" if row.precision == "bf16" else "")


def _config(row):
    """The pair's configuration in words, its recipe included (a time-to-accuracy run's steps
    are timed too, over fewer processes)."""
    words = [w for w in recipe_words(row._record.get("config") or {}) if "precision" not in w]
    return ", ".join(["batch %s, %s mode, %s thread(s)" % (row.batch_size, row["mode"],
                                                          row.threads)] + words)


def _fmt(value, text="%.2f"):
    return "" if value is None or value != value else text % value


def table(df):
    """The pairs as a display table (one row per pair), or None without pairs."""
    rows = []
    for kind, a, b in pairs(df):
        ratio, p, mark = judge(a.proc_medians, b.proc_medians)
        rows.append({
            "kind": kind, "model": a.model,
            "config": _config(a), "A": _side(a), "B": _side(b),
            "A ms": _fmt(a.median_ms), "B ms": _fmt(b.median_ms),
            "speed-up A/B": _fmt(1.0 / ratio, "%.2fx"),
            "significant": {"-": "yes, faster", "+": "yes, slower"}.get(mark, "no"),
            "p": _fmt(p, "%.3f"), "n A/B": "%d/%d" % (a.n_proc, b.n_proc),
            "acc A": _fmt(a.test_acc, "%.4f"), "acc B": _fmt(b.test_acc, "%.4f"),
            "B first step ms": _fmt(b.first_step_ms, "%.0f"),
            "machine": a.machine,
        })
    return pd.DataFrame(rows) if rows else None


def section(df):
    """The section, or None when the report holds no pair."""
    frame = table(df)
    if frame is None:
        return None
    lead = Text(
        "Each tuned backend beside the idiomatic one it tunes, and each bf16 row (bfloat16 compute, "
        "float32 master weights) beside the same backend in float32; otherwise the same "
        "configuration on the same machine. Speed-up: A's median step / B's (above 1: B is "
        "faster); significant: as `convbench compare` judges it (Mann-Whitney U on the process "
        "medians, p < 0.05 and past 10%). B's first step holds a tuned backend's compilation.")
    return Section("Tuned track and bf16", [lead, Table(frame)], anchor="tuned-and-bf16")
