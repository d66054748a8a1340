"""One line per record on the console, as a run or sweep finishes each job; and `printable`, which
every command applies to text from a record before it reaches a terminal."""
import re

# C0 and C1 controls and DEL (ESC starts a terminal escape sequence), bidi overrides
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text, keep_newlines=True):
    """`text` with control characters shown as \\xNN / \\uNNNN escapes: a record's strings
    (reason, stderr, backend names) come from anyone who can write the results file."""
    text = _CONTROL.sub(lambda m: "\\x%02x" % ord(m.group()) if ord(m.group()) < 256
                        else "\\u%04x" % ord(m.group()), str(text))
    return text if keep_newlines else text.replace("\n", "\\n")


def record_label(record):
    """The backend, plus the matrix cell for sweep and repeat records (batch, threads, repeat)."""
    label = record["backend"]
    if record.get("sweep"):
        label += " %s b%d t%d" % (record["model"], record["config"]["batch_size"], record["threads"])
    if record.get("repeat"):
        label += " r%d/%d" % (record["repeat"]["index"] + 1, record["repeat"]["of"])
    if record.get("role") == "timing" and record.get("timing_run"):
        label += " timing %d/%d" % (record["timing_run"]["index"] + 1, record["timing_run"]["of"])
    if (record.get("executor") or {}).get("kind") == "ray":
        label += " @%s" % record["executor"].get("hostname")
    return label


def one_line(record, width=14):
    """The record's outcome: status, accuracy, step time, throughput and memory, or the reason;
    the label padded to `width`."""
    return printable(_one_line(record, width), keep_newlines=False)


def _one_line(record, width):
    s = record.get("summary") or {}
    label = record_label(record).ljust(width)
    if record["status"] != "ok":
        return "  %s %s: %s" % (label, record["status"].upper(), record["reason"])
    if record.get("role") == "timing":  # its accuracy (a few dozen steps) means nothing
        return "  %s ok  median step %s ms  (timing only)" % (
            label, num(s.get("median_step_ms"), "%.2f"))
    line = ("  %s ok  test acc %s  median step %s ms  %s img/s (%s trained)  train mem %s MB  "
            "peak RSS %s MB") % (
        label, num(s.get("test_accuracy"), "%.4f"),
        num(s.get("median_step_ms"), "%.2f"), num(s.get("images_per_s"), "%.0f"),
        num(s.get("train_images_per_s"), "%.0f"),
        num(s.get("training_memory_mb"), "%.0f"), num(s.get("peak_rss_mb"), "%.0f"))
    target = record.get("target")
    if target:  # time to accuracy
        line += ("  %.4f reached after %.1f s, %d steps (%d evaluations, %.1f s, untimed)"
                 % (target["accuracy"], target["train_s"], target["steps"], target["evaluations"],
                    target["eval_s"]) if target["status"] == "reached" else
                 "  %.4f NOT reached in %d epochs" % (target["accuracy"], record["config"]["epochs"]))
    if s.get("median_step_ms") is None:
        timing = record.get("timing") or {}
        line += "  (no step timed past the first and the %s warm-up steps: train longer)" % (
            timing.get("warmup_steps", "?"))
    return line


def num(value, fmt):
    return "n/a" if value is None else fmt % value
