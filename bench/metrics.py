"""Statistics of raw step samples; used when a record is written and when the report is built."""
import numpy as np


def steady_steps_ns(record):
    """Step times without the first step of the run and the warm-up steps after it."""
    timing = record.get("timing") or {}
    steps = timing.get("step_ns") or []
    return np.asarray(steps[1 + int(timing.get("warmup_steps", 0)):], dtype=np.float64)


def bootstrap_median_ci(samples, confidence=0.95, resamples=2000, seed=0):
    """Percentile bootstrap CI of the median (scipy.stats.bootstrap)."""
    from scipy import stats

    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < 3 or np.ptp(samples) == 0:
        m = float(np.median(samples)) if len(samples) else float("nan")
        return m, m
    res = stats.bootstrap((samples,), np.median, confidence_level=confidence, n_resamples=resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def time_to_accuracy(curve, target):
    """Training seconds until the test accuracy first reached `target`, or None."""
    for point in curve or []:
        if point.get("test_accuracy") is not None and point["test_accuracy"] >= target:
            return point["train_s"]
    return None


def summarize(record):
    """The stable `summary` block of a record (names users script against)."""
    steady = steady_steps_ns(record) / 1e6
    epochs = record.get("epochs") or []
    batch = record["config"]["batch_size"]
    median = float(np.median(steady)) if len(steady) else None
    flops = record.get("spec_facts", {}).get("flops_train")
    peak = (record.get("machine") or {}).get("matmul_peak_gflops")
    gflops = (flops * batch / (median / 1e3) / 1e9) if (median and flops) else None
    timing = record.get("timing") or {}
    return {
        "test_accuracy": epochs[-1]["test_accuracy"] if epochs else None,
        "median_step_ms": median,
        "step_ms_q1": float(np.percentile(steady, 25)) if len(steady) else None,
        "step_ms_q3": float(np.percentile(steady, 75)) if len(steady) else None,
        "images_per_s": batch / (median / 1e3) if median else None,
        "first_step_ms": timing["step_ns"][0] / 1e6 if timing.get("step_ns") else None,
        "achieved_gflops": gflops,
        "pct_of_peak": 100.0 * gflops / peak if (gflops and peak) else None,
        "peak_rss_mb": (record.get("memory") or {}).get("peak_rss_mb"),
        "device_peak_mb": (record.get("memory") or {}).get("device_peak_mb"),
        "time_to_98_s": time_to_accuracy(record.get("curve"), 0.98),
        "time_to_99_s": time_to_accuracy(record.get("curve"), 0.99),
        "train_s": timing.get("train_s"),
        "steps": len(timing.get("step_ns") or []),
    }
