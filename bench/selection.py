"""Which records a table shows: per machine, configuration and backend, the newest session.

Shared by the report (bench/report.py) and `convbench compare` (bench/compare.py), so both pick
the same rows from the same records. The repeats of a `--repeat N` session are pooled into one row.
"""
import numpy as np
import pandas as pd

from bench import metrics

# what makes two runs comparable (the configuration); the report also splits by machine
CONFIG_KEYS = ("model", "device", "batch_size", "optimizer", "dtype", "threads", "mode")
GROUP_KEYS = ("machine",) + CONFIG_KEYS
ROW_KEY = GROUP_KEYS + ("backend",)

COLUMNS = [
    ("backend", "backend"), ("framework", "framework"), ("version", "version"),
    ("status", "status"), ("test_acc", "test acc"), ("median_ms", "median step ms"),
    ("ci95", "95% CI ms"), ("iqr_ms", "IQR ms"), ("images_per_s", "images/s"),
    ("ratio", "x fastest"), ("gflops", "GFLOP/s"), ("pct_peak", "% peak"),
    ("first_step_ms", "first step ms"), ("peak_rss_mb", "peak RSS MB"),
    ("t98", "time to 98% s"), ("t99", "time to 99% s"), ("reason", "reason"),
]


def _flatten(record):
    s = record.get("summary") or {}
    c = record.get("config") or {}
    env = record.get("environment") or {}
    steady = metrics.steady_steps_ns(record) / 1e6
    lo, hi = metrics.bootstrap_median_ci(steady) if len(steady) else (None, None)
    repeat = record.get("repeat") or {}
    sweep = record.get("sweep") or {}
    return {
        "machine": machine_label(record),
        "session_id": record.get("session_id"),
        "repeat_index": repeat.get("index"), "sweep_id": sweep.get("id"),
        "injected": ", ".join("%s=%s" % kv for kv in sorted((record.get("injected") or {}).items())),
        "model": record.get("model"), "device": record.get("device"),
        "batch_size": c.get("batch_size"), "optimizer": c.get("optimizer"), "dtype": c.get("dtype"),
        "threads": record.get("threads"), "mode": c.get("mode", "step"),
        "backend": record.get("backend"), "framework": record.get("framework"),
        "version": env.get("framework_version", ""), "status": record.get("status"),
        "reason": record.get("reason") or "", "time": record.get("time"),
        "test_acc": s.get("test_accuracy"), "median_ms": s.get("median_step_ms"),
        "ci_lo": lo, "ci_hi": hi,
        "iqr_ms": (s["step_ms_q3"] - s["step_ms_q1"]) if s.get("step_ms_q1") is not None else None,
        "images_per_s": s.get("images_per_s"), "gflops": s.get("achieved_gflops"),
        "pct_peak": s.get("pct_of_peak"), "first_step_ms": s.get("first_step_ms"),
        "peak_rss_mb": s.get("peak_rss_mb"), "device_peak_mb": s.get("device_peak_mb"),
        "t98": s.get("time_to_98_s"), "t99": s.get("time_to_99_s"),
        "epochs": c.get("epochs"), "limit_train": c.get("limit_train"),
        "_record": record,
    }


def machine_label(record):
    """Which machine a record was measured on: hostname, CPU model and cores."""
    m = record.get("machine") or {}
    return "%s (%s, %s cores)" % (m.get("hostname") or "?", m.get("cpu_model") or "unknown CPU",
                                  m.get("cores") or "?")


def pooled_row(rows):
    """One row from the records of one backend's newest session (several when --repeat N)."""
    if len(rows) == 1:
        row = rows.iloc[0].copy()
        row["acc_sd"], row["n_runs"] = None, 1
        return row
    ok = rows[rows.status == "ok"]
    row = (ok if len(ok) else rows).sort_values("time").iloc[-1].copy()
    row["n_runs"] = len(rows)
    if ok.empty:
        row["acc_sd"] = None
        return row
    # statistics over every repeat's steady steps; accuracy as mean and spread over the repeats
    steady = np.concatenate([metrics.steady_steps_ns(r) / 1e6 for r in ok._record])
    row["status"] = "ok" if len(ok) == len(rows) else "ok %d of %d" % (len(ok), len(rows))
    row["median_ms"] = float(np.median(steady))
    row["ci_lo"], row["ci_hi"] = metrics.bootstrap_median_ci(steady)
    row["iqr_ms"] = float(np.percentile(steady, 75) - np.percentile(steady, 25))
    scale = ok.median_ms.iloc[-1] / row["median_ms"]  # throughput figures follow the pooled median
    for col in ("images_per_s", "gflops", "pct_peak"):
        row[col] = ok[col].iloc[-1] * scale if ok[col].iloc[-1] is not None else None
    row["test_acc"] = float(ok.test_acc.mean())
    row["acc_sd"] = float(ok.test_acc.std(ddof=1)) if len(ok) > 1 else None
    for col in ("first_step_ms", "peak_rss_mb", "t98", "t99"):
        row[col] = ok[col].median()
    return row


def records_frame(records):
    """One flattened row per record; the record itself rides along in the `_record` column."""
    df = pd.DataFrame([_flatten(r) for r in records])
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
