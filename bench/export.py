"""`convbench report --csv`: the report's rows as one CSV, for people who keep results in their
own sheets. One row per machine x configuration x backend (the rows the report's tables show,
bench/selection.py), headline figures in plain units, no formatting."""
import csv

from bench.selection import latest_rows

#: (CSV column, the pooled row's column)
COLUMNS = (
    ("machine", "machine"), ("model", "model"), ("device", "device"), ("batch_size", "batch_size"),
    ("optimizer", "optimizer"), ("dtype", "dtype"), ("threads", "threads"), ("mode", "mode"),
    ("work_hash", "work_hash"), ("backend", "backend"), ("framework", "framework"),
    ("framework_version", "version"), ("status", "status"), ("processes", "n_proc"),
    ("training_runs", "n_runs"), ("test_accuracy", "test_acc"), ("test_accuracy_sd", "acc_sd"),
    ("median_step_ms", "median_ms"), ("ci95_low_ms", "ci_lo"), ("ci95_high_ms", "ci_hi"),
    ("process_min_ms", "proc_lo"), ("process_max_ms", "proc_hi"), ("iqr_ms", "iqr_ms"),
    ("images_per_s", "images_per_s"), ("trained_images_per_s", "trained_per_s"),
    ("x_fastest", "ratio"), ("gflops", "gflops"), ("pct_of_peak", "pct_peak"),
    ("first_step_ms", "first_step_ms"), ("training_memory_mb", "train_mem_mb"),
    ("peak_rss_mb", "peak_rss_mb"), ("time_to_98_s", "t98"), ("time_to_99_s", "t99"),
    ("noise", "noise"), ("reason", "reason"), ("time", "time"),
)


def _cell(value):
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return value


def write_csv(records, path):
    """Write the rows; returns how many."""
    df = latest_rows(records)
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([name for name, _ in COLUMNS])
        for _, row in df.iterrows():
            out.writerow([_cell(row.get(col)) for _, col in COLUMNS])
    return len(df)
