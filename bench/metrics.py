"""Statistics of raw step samples; used when a record is written and when the report is built."""
import numpy as np


def steady_steps_ns(record):
    """Step times without the first step of the run and the warm-up steps after it."""
    timing = record.get("timing") or {}
    steps = timing.get("step_ns") or []
    return np.asarray(steps[1 + int(timing.get("warmup_steps", 0)):], dtype=np.float64)


#: a step this many times the steady median is a compilation (tracing, XLA, graph building)
COMPILE_FACTOR = 5.0


def compile_steps(record):
    """(how many of the first step and the warm-up steps were compilations, their total ms): a
    warm-up that does not cover every compile shows as a count above 1 + warm-up's share."""
    timing = record.get("timing") or {}
    steps = timing.get("step_ns") or []
    head = steps[:1 + int(timing.get("warmup_steps", 0))]
    steady = steady_steps_ns(record)
    if not len(steady) or not head:
        return None, None
    limit = COMPILE_FACTOR * float(np.median(steady))
    slow = [t for t in head if t > limit]
    return len(slow), sum(slow) / 1e6


def epoch_step_ms(record):
    """Epoch mode's per-step figure: the framework's loop time (the first step's start to the last
    step's end, each epoch, evaluations excluded; not the call's one-off setup, which weighed ~1.7 s
    in a 56-step Keras fit against 0.9 s in a 468-step one) less the first step and the warm-up,
    over the steady steps. Unlike the callbacks' step intervals it
    includes what the framework's loop does between steps (Keras' iterator slicing and converting
    the next batch), so it is comparable with step mode's harness-timed steps. None in step mode."""
    if (record.get("config") or {}).get("mode") != "epoch":
        return None
    timing = record.get("timing") or {}
    steps = timing.get("step_ns") or []
    skip = 1 + int(timing.get("warmup_steps", 0))
    # loop_s: from the first step's start to the last step's end, evaluations out; records made
    # before it existed have only the whole training time, one-off setup included
    wall_s = timing.get("loop_s") or timing.get("train_s")
    if len(steps) <= skip or not wall_s:
        return None
    return (wall_s * 1e3 - sum(steps[:skip]) / 1e6) / (len(steps) - skip)


def cached_step_ms(record):
    """process_step_ms as the record's summary caches it (records made before the cache existed:
    computed from the raw steps)."""
    summary = record.get("summary") or {}
    if "process_step_ms" in summary:
        return summary["process_step_ms"]
    return process_step_ms(record)


def cached_iqr_ms(record):
    """The interquartile range of the steady steps, ms, from the summary's cache when present."""
    summary = record.get("summary") or {}
    if "step_ms_iqr" in summary:
        return summary["step_ms_iqr"]
    steady = steady_steps_ns(record) / 1e6
    return float(np.percentile(steady, 75) - np.percentile(steady, 25)) if len(steady) else None


def process_step_ms(record):
    """The one step-time figure of a process: epoch mode's epoch_step_ms, else the median steady
    step; None when no step was timed past the warm-up."""
    per_epoch = epoch_step_ms(record)
    if per_epoch is not None:
        return per_epoch
    steady = steady_steps_ns(record)
    return float(np.median(steady)) / 1e6 if len(steady) else None


def bootstrap_median_ci(samples, confidence=0.95, resamples=2000, seed=0):
    """Percentile bootstrap CI of the median (scipy.stats.bootstrap); the same samples give the
    same interval, so it is computed once per set (the report and compare ask for each twice)."""
    key = (tuple(float(v) for v in samples), confidence, resamples, seed)
    if key not in _CI_CACHE:
        _CI_CACHE[key] = _bootstrap_median_ci(*key)
    return _CI_CACHE[key]


_CI_CACHE = {}


def _bootstrap_median_ci(samples, confidence, resamples, seed):
    """scipy.stats.bootstrap's percentile interval of the median, in NumPy: the same resampling
    (one (resamples, n) draw of indexes from default_rng(seed)) and percentiles, so the same
    interval to the last bits (tests/test_compare_stats.py), without scipy.stats' import, which
    costs a report more than all its statistics."""
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < 3 or np.ptp(samples) == 0:
        m = float(np.median(samples)) if len(samples) else float("nan")
        return m, m
    index = np.random.default_rng(seed).integers(0, len(samples), (resamples, len(samples)))
    medians = np.median(samples[index], axis=-1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def time_to_accuracy(curve, target):
    """Training seconds until the test accuracy first reached `target`, or None."""
    for point in curve or []:
        if point.get("test_accuracy") is not None and point["test_accuracy"] >= target:
            return point["train_s"]
    return None


#: measured throughput below this fraction of the per-step figure gets a note saying why
THROUGHPUT_AGREEMENT = 0.8


def measured_images_per_s(record):
    """Images trained per second of training wall time (evaluations excluded; the first step,
    the warm-up, stalls and the loop between steps included): what a user's epoch delivers."""
    timing = record.get("timing") or {}
    steps, train_s = timing.get("step_ns") or [], timing.get("train_s")
    if not steps or not train_s:
        return None
    return len(steps) * record["config"]["batch_size"] / train_s


def throughput_note(record, per_step, measured):
    """Why the measured images/s falls short of batch / median step, when it does: where the
    training wall time went beyond median-length steps, and the machine's load."""
    if not per_step or not measured or measured >= THROUGHPUT_AGREEMENT * per_step:
        return None
    timing = record["timing"]
    steps = np.asarray(timing["step_ns"], dtype=np.float64) / 1e9
    wall, median = timing["train_s"], float(np.median(steady_steps_ns(record))) / 1e9
    skip = 1 + int(timing.get("warmup_steps", 0))
    parts = [("first step and warm-up", steps[:skip].sum() - median * min(skip, len(steps))),
             ("steps slower than the median", np.clip(steps[skip:] - median, 0, None).sum()),
             ("between steps (batches, callbacks)", wall - steps.sum())]
    text = ", ".join("%s %.0f%%" % (name, 100.0 * max(sec, 0.0) / wall) for name, sec in parts)
    load = record.get("load") or {}
    if load.get("other_cores") is not None:
        text += "; other processes used %.2f cores" % load["other_cores"]
    return "measured %.0f images/s is %.0f%% of batch / median step; of the training time: %s" % (
        measured, 100.0 * measured / per_step, text)


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
    compiles, compile_ms = compile_steps(record)
    per_step = batch / (median / 1e3) if median else None
    measured = measured_images_per_s(record)
    q1 = float(np.percentile(steady, 25)) if len(steady) else None
    q3 = float(np.percentile(steady, 75)) if len(steady) else None
    return {
        "compile_steps": compiles,
        "compile_ms": compile_ms,
        "epoch_step_ms": epoch_step_ms(record),
        "test_accuracy": epochs[-1]["test_accuracy"] if epochs else None,
        "median_step_ms": median,
        "step_ms_q1": q1,
        "step_ms_q3": q3,
        # cached here, computed once when the record is written: the report and compare read a
        # thousand records and must not re-derive them from the raw steps every time
        "step_ms_iqr": q3 - q1 if q1 is not None else None,
        "process_step_ms": process_step_ms(record),
        "images_per_s": per_step,
        "train_images_per_s": measured,
        "throughput_note": throughput_note(record, per_step, measured),
        "first_step_ms": timing["step_ns"][0] / 1e6 if timing.get("step_ns") else None,
        "achieved_gflops": gflops,
        "pct_of_peak": 100.0 * gflops / peak if (gflops and peak) else None,
        "peak_rss_mb": (record.get("memory") or {}).get("peak_rss_mb"),
        "training_memory_mb": (record.get("memory") or {}).get("training_mb"),
        "device_peak_mb": (record.get("memory") or {}).get("device_peak_mb"),
        "time_to_98_s": time_to_accuracy(record.get("curve"), 0.98),
        "time_to_99_s": time_to_accuracy(record.get("curve"), 0.99),
        "train_s": timing.get("train_s"),
        "steps": len(timing.get("step_ns") or []),
    }
