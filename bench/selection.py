"""Which records a table shows: per machine, configuration and backend, the newest session.

Shared by the report (bench/report.py) and `convbench compare` (bench/compare.py), so both pick
the same rows from the same records. A session's records of one backend (its repeats, its
timing-only processes) become one row: `pooled_row` says how.
"""
import numpy as np
import pandas as pd

from backends import registry
from bench import metrics
from bench.jobs import work_hash

# what makes two runs comparable (the configuration); the report also splits by machine
CONFIG_KEYS = ("model", "device", "batch_size", "optimizer", "dtype", "threads", "mode")
# a table never mixes two networks or two training configurations (bench/jobs.py: work_hash)
GROUP_KEYS = ("machine",) + CONFIG_KEYS + ("work_hash",)
ROW_KEY = GROUP_KEYS + ("backend",)

COLUMNS = [
    ("backend", "backend"), ("framework", "framework"), ("version", "version"),
    ("status", "status"), ("test_acc", "test acc"), ("median_ms", "median step ms"),
    ("ci95", "95% CI ms"), ("proc_range", "process range ms"), ("iqr_ms", "IQR ms"), ("images_per_s", "images/s"),
    ("trained_per_s", "trained img/s"),
    ("ratio", "x fastest"), ("gflops", "GFLOP/s"), ("pct_peak", "% peak"),
    ("first_step_ms", "first step ms"), ("train_mem_mb", "train mem MB"),
    ("peak_rss_mb", "peak RSS MB"),
    ("t98", "time to 98% s"), ("t99", "time to 99% s"), ("reason", "reason"),
]


def _flatten(record, old_hashes=None):
    s = record.get("summary") or {}
    c = record.get("config") or {}
    env = record.get("environment") or {}
    repeat = record.get("repeat") or {}
    sweep = record.get("sweep") or {}
    return {
        "machine": machine_label(record),
        "session_id": record.get("session_id"), "role": record.get("role") or "train",
        "work_hash": record_work_hash(record, old_hashes),
        "repeat_index": repeat.get("index"), "sweep_id": sweep.get("id"),
        "injected": ", ".join("%s=%s" % kv for kv in sorted((record.get("injected") or {}).items())),
        "noisy": bool((record.get("load") or {}).get("noisy")),
        "other_cores": (record.get("load") or {}).get("other_cores"),
        "model": record.get("model"), "device": record.get("device"),
        "batch_size": c.get("batch_size"), "optimizer": c.get("optimizer"), "dtype": c.get("dtype"),
        "seed": c.get("seed"), "precision": c.get("precision") or "full",
        "threads": record.get("threads"), "mode": c.get("mode", "step"),
        "backend": registry.canonical(record.get("backend")), "framework": record.get("framework"),
        "version": env.get("framework_version", ""), "status": record.get("status"),
        "reason": record.get("reason") or "", "time": record.get("time"),
        "test_acc": s.get("test_accuracy"), "median_ms": s.get("median_step_ms"),
        "iqr_ms": (s["step_ms_q3"] - s["step_ms_q1"]) if s.get("step_ms_q1") is not None else None,
        "images_per_s": s.get("images_per_s"), "trained_per_s": s.get("train_images_per_s"),
        "gflops": s.get("achieved_gflops"),
        "pct_peak": s.get("pct_of_peak"), "first_step_ms": s.get("first_step_ms"),
        "peak_rss_mb": s.get("peak_rss_mb"), "device_peak_mb": s.get("device_peak_mb"),
        "train_mem_mb": s.get("training_memory_mb"),
        "rss_after_build_mb": (record.get("memory") or {}).get("rss_after_build_mb"),
        "t98": s.get("time_to_98_s"), "t99": s.get("time_to_99_s"),
        "epochs": c.get("epochs"), "limit_train": c.get("limit_train"),
        "_record": record,
    }


def record_work_hash(record, old_hashes=None):
    """The record's work_hash; records made before it existed get it from their own fields, and
    hashes of the seed-including kind (before --seeds) are mapped by `old_hashes`."""
    stored = record.get("work_hash")
    if not stored:
        return work_hash(record.get("spec_hash"), record.get("config") or {})
    return (old_hashes or {}).get(stored, stored)


def old_work_hashes(records):
    """{stored hash: current hash} for records whose stored work_hash included the seed: learnt
    from their training runs (whose config is the work), applied to their timing processes too."""
    mapping = {}
    for r in records:
        if r.get("work_hash") and r.get("role", "train") == "train" and r.get("config"):
            current = work_hash(r.get("spec_hash"), r["config"])
            if current != r["work_hash"]:
                mapping[r["work_hash"]] = current
    return mapping


def recipe_words(config):
    """What sets a configuration's recipe apart beyond the grouping keys, in words: a target, a
    schedule, mixed precision (the report's titles and its tuned/bf16 table say it alike)."""
    words = []
    if config.get("target_accuracy"):
        words.append("to %g%%" % (100 * config["target_accuracy"]))
    if config.get("schedule", "constant") != "constant":
        words.append("%s schedule" % config["schedule"])
    if config.get("precision", "full") != "full":
        words.append("%s mixed precision" % config["precision"])
    return words


def cpu_isa(machine):
    """The widest vector instructions the CPU reports ("AVX-512 + bf16", "AVX2", ...; '' for
    records without flags). Cloud VMs name different CPUs alike ("AMD EPYC" for an AVX2 part with
    a 69 GFLOP/s float32 peak and an AVX-512 one with 238): the name alone must not group them."""
    flags = set(machine.get("cpu_flags") or [])
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            extras = [x for f, x in (("avx512_bf16", "bf16"), ("amx_tile", "AMX")) if f in flags]
            return " + ".join([name] + extras)
    return ""


def machine_label(record):
    """Which machine a record was measured on: hostname, CPU model, its vector instructions and
    cores."""
    m = record.get("machine") or {}
    cpu = ", ".join(p for p in (m.get("cpu_model") or "unknown CPU", cpu_isa(m)) if p)
    return "%s (%s, %s cores)" % (m.get("hostname") or "?", cpu, m.get("cores") or "?")


def process_medians(records):
    """Each process' step-time figure, ms (bench/metrics.py: process_step_ms: the median steady
    step, or in epoch mode the epoch wall time per steady step); processes too short to time a
    step are left out."""
    figures = (metrics.cached_step_ms(r) for r in records)
    return np.array([f for f in figures if f is not None])


def noise_note(rows):
    """'' when every record ran on a quiet machine, else how many did not and the worst load."""
    noisy = rows[rows.noisy]
    if noisy.empty:
        return ""
    return "noisy: %d of %d process(es) ran beside other work (up to %.2f cores)" % (
        len(noisy), len(rows), noisy.other_cores.max())


def pooled_row(rows):
    """One row from one backend's records of one session: its training run(s) and, with
    `--timing-runs N`, its timing-only processes.

    Step time: the median of the process medians, a 95% bootstrap CI across processes (3 or more;
    none for fewer: the steps of one process cannot show the spread between processes) and the
    range of the process medians. Accuracy: mean and spread over the training runs."""
    train = rows[rows.role != "timing"]
    ok, ok_train = rows[rows.status == "ok"], train[train.status == "ok"]
    source = ok_train if len(ok_train) else (train if len(train) else rows)
    # a dict, not a Series: setting a new key on a Series copies it (a thousand records, slowly)
    row = source.sort_values("time").iloc[-1].to_dict()
    row["n_runs"] = len(train)
    row["seeds"] = sorted(int(v) for v in set(train.seed.dropna()))  # several with --seeds
    row["noise"] = noise_note(rows)
    medians = process_medians(ok._record)
    row["n_proc"] = len(medians)
    row["proc_medians"] = [float(m) for m in medians]  # what the summary and compare test
    row["status"] = "ok" if len(ok) == len(rows) else (
        row["status"] if ok.empty else "ok %d of %d" % (len(ok), len(rows)))
    row["acc_sd"] = float(ok_train.test_acc.std(ddof=1)) if len(ok_train) > 1 else None
    row["proc_lo"] = row["proc_hi"] = row["ci_lo"] = row["ci_hi"] = None
    if not len(medians):
        return row
    median = float(np.median(medians))
    if row["median_ms"] is not None and row["median_ms"] == row["median_ms"]:
        scale = row["median_ms"] / median  # throughput figures follow the headline median
        for col in ("images_per_s", "gflops", "pct_peak"):
            row[col] = row[col] * scale if row[col] is not None else None
    row["median_ms"] = median
    row["proc_lo"], row["proc_hi"] = float(medians.min()), float(medians.max())
    if len(medians) >= 3:
        row["ci_lo"], row["ci_hi"] = metrics.bootstrap_median_ci(medians)
    iqrs = [v for v in (metrics.cached_iqr_ms(r) for r in ok._record) if v is not None]
    row["iqr_ms"] = float(np.median(iqrs)) if iqrs else None
    if len(ok_train):
        row["test_acc"] = float(ok_train.test_acc.mean())
        for col in ("first_step_ms", "train_mem_mb", "peak_rss_mb", "rss_after_build_mb", "t98",
                    "t99", "trained_per_s"):
            row[col] = ok_train[col].median()
    return row


def records_frame(records):
    """One flattened row per record; the record itself rides along in the `_record` column."""
    old_hashes = old_work_hashes(records)
    df = pd.DataFrame([_flatten(r, old_hashes) for r in records])
    return df.astype({"time": str})


def latest_rows(records, include_sweeps=False):
    """One row per (machine, configuration, backend): that backend's newest session there; the
    repeats of a `--repeat N` session are pooled into that row. Sweep records are left to the
    sweep section unless include_sweeps."""
    if not records:
        return pd.DataFrame(columns=[k for k, _ in COLUMNS])
    df = records_frame(records)
    if not include_sweeps:
        df = df[df.sweep_id.isna()]
    if df.empty:
        return df
    rows = []
    for _, same in df.groupby(list(ROW_KEY), dropna=False, sort=False):
        newest = same.sort_values("time").session_id.iloc[-1]
        rows.append(pooled_row(same[same.session_id == newest]))
    df = pd.DataFrame(rows)
    fastest = df[df.status.str.startswith("ok")].groupby(
        list(GROUP_KEYS), dropna=False)["median_ms"].transform("min")
    df["ratio"] = df["median_ms"] / fastest
    return df.sort_values(list(GROUP_KEYS) + ["median_ms"], na_position="last")
