"""`convbench compare A B`: did B get slower, faster, less accurate or bigger than A?

A and B are each one of:

- a results file (JSON Lines): every record in it, the newest session per backend and configuration
  (the same selection the report makes: `bench.selection.latest_rows`);
- a session id (`session_id`: all the records one `convbench run` wrote) or a run id (`run_id`: one
  record), looked up in `--results` (default results/runs.jsonl); a unique prefix of 4 or more
  characters will do.

Records are paired by model, configuration (`bench.selection.CONFIG_KEYS`) and backend. Per pair:
median steady step time of A and B (warm-up excluded; `bench.metrics.steady_steps_ns`), their ratio
B/A, a two-sided Mann-Whitney U p-value on the two sets of steady step times, test accuracy, peak
RSS, and a mark in the style of asv's `compare`:

    +  significant regression: p < alpha and B/A > threshold
    -  significant improvement: p < alpha and B/A < 1/threshold
    ~  the ratio is past the threshold but the difference is not significant (p >= alpha)
    x  not comparable: a different network (spec_hash), configuration or machine (CPU model,
       cores, arch, GPUs; not the host name); figures shown, never counted as a regression
    !  ok in A, not ok in B (the status and reason are listed; nothing compared)

The note column names what else changed: accuracy by 0.005 or more, peak RSS by more than 10%,
the framework version, the host name, faults injected on either side (`CONVBENCH_INJECT`), and why
a pair is marked x or !.

Exit status: 1 when any pair is marked "+", else 0; 2 for usage errors (unknown id, missing file,
nothing in common).
"""
import math
import os

import numpy as np
import pandas as pd

from bench import metrics
from bench.document import Table, Text, blocks_markdown
from bench.results import read_records
from bench.selection import CONFIG_KEYS, latest_rows

PAIR_KEY = CONFIG_KEYS + ("backend",)
MIN_PREFIX = 4
LEGEND = ("+ significant regression, - significant improvement (p < alpha and ratio past the "
          "threshold), ~ past the threshold but not significant, x not comparable, ! not ok in B")


class CompareError(ValueError):
    """A usage error: one line, exit status 2."""


def resolve(spec, results_path):
    """(label, records) for A or B: a results file, or a session or run id in results_path."""
    if os.path.isfile(spec):
        records = read_records(spec)
        if not records:
            raise CompareError("%s holds no records" % spec)
        return "%s (%d record(s))" % (spec, len(records)), records
    if os.sep in spec or spec.endswith((".jsonl", ".json")):
        raise CompareError("no results file %s" % spec)
    if not os.path.isfile(results_path):
        raise CompareError("%r is not a file, and there is no results file %s to look it up in as "
                           "a session or run id; pass --results FILE" % (spec, results_path))
    records = read_records(results_path)
    for field in ("session_id", "run_id"):  # exact match first
        hit = [r for r in records if r.get(field) == spec]
        if hit:
            return _id_label(field, spec, hit), hit
    if len(spec) >= MIN_PREFIX:
        ids = {(f, r.get(f)) for r in records for f in ("session_id", "run_id")
               if str(r.get(f) or "").startswith(spec)}
        if len(ids) == 1:
            field, full = ids.pop()
            hit = [r for r in records if r.get(field) == full]
            return _id_label(field, full, hit), hit
        if len(ids) > 1:
            raise CompareError("id prefix %r is ambiguous in %s: %s" % (
                spec, results_path, ", ".join(sorted(i for _, i in ids)[:6])))
    raise CompareError("%r is neither a results file nor a session or run id in %s (newest "
                       "sessions: %s)" % (spec, results_path, _newest_sessions(records)))


def _id_label(field, value, records):
    r = records[-1]
    kind = "session" if field == "session_id" else "run"
    return "%s %s (%s, %s)" % (kind, value, r.get("time"),
                               ", ".join(sorted({x.get("backend") for x in records})))


def _newest_sessions(records, n=3):
    seen = []
    for r in reversed(records):
        sid = r.get("session_id")
        if sid and sid not in [s for s, _ in seen]:
            seen.append((sid, r.get("time")))
        if len(seen) == n:
            break
    return ", ".join("%s at %s" % s for s in seen) or "none"


def _rows(records):
    """The newest row per (configuration, backend), with its records' steady step samples."""
    df = latest_rows(records)
    if df.empty:
        return {}
    df = df.sort_values("time")
    out = {}
    for _, row in df.iterrows():
        rec = row["_record"]
        # the pooled repeats of that session (one record unless `--repeat N`)
        same = [r for r in records if r.get("session_id") == rec.get("session_id")
                and r.get("backend") == rec.get("backend") and r.get("model") == rec.get("model")
                and r.get("config") == rec.get("config") and not r.get("sweep")
                and r.get("status") == "ok"]
        steady = np.concatenate([metrics.steady_steps_ns(r) / 1e6 for r in same]) if same \
            else np.empty(0)
        key = tuple(row[k] for k in PAIR_KEY)
        out[key] = (row, steady)  # sorted by time: a later machine's row wins
    return out


def _ok(row):
    return str(row["status"]).startswith("ok")


def _num(value):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _incomparable(ra, rb):
    """Why two paired records are not comparable ([] when they are)."""
    a, b = ra["_record"], rb["_record"]
    why = []
    if a.get("spec_hash") != b.get("spec_hash"):
        why.append("different network (spec_hash %s vs %s)" % (a.get("spec_hash"), b.get("spec_hash")))
    ca, cb = a.get("config") or {}, b.get("config") or {}
    diff = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
    if diff:
        why.append("config differs: " + ", ".join("%s %s vs %s" % (k, ca.get(k), cb.get(k))
                                                  for k in diff))
    if _hardware(a) != _hardware(b):
        why.append("different machine: %s vs %s" % (_hardware(a), _hardware(b)))
    return why


def _hardware(record):
    """What makes step times comparable across records: the hardware, not the host's name (a CI
    container gets a new one every run), the OS build or the measured matmul peak."""
    m = record.get("machine") or {}
    gpus = "+".join(str(g.get("name")) for g in m.get("gpus") or []) or "no GPU"
    return "%s, %s cores, %s, %s" % (m.get("cpu_model"), m.get("cores"), m.get("arch"), gpus)


def _notes(ra, rb):
    a, b = ra["_record"], rb["_record"]
    notes = []
    va = (a.get("environment") or {}).get("framework_version")
    vb = (b.get("environment") or {}).get("framework_version")
    if va and vb and va != vb:
        notes.append("version %s -> %s" % (va, vb))
    acc_a, acc_b = _num(ra["test_acc"]), _num(rb["test_acc"])
    if acc_a is not None and acc_b is not None and abs(acc_b - acc_a) >= 0.005:
        notes.append("accuracy %+.4f" % (acc_b - acc_a))
    rss_a, rss_b = _num(ra["peak_rss_mb"]), _num(rb["peak_rss_mb"])
    if rss_a and rss_b and abs(rss_b / rss_a - 1) > 0.10:
        notes.append("peak RSS %+.0f%%" % (100 * (rss_b / rss_a - 1)))
    ha, hb = ((r.get("machine") or {}).get("hostname") for r in (a, b))
    if ha != hb:
        notes.append("host %s -> %s" % (ha, hb))
    for side, rec in (("A", a), ("B", b)):
        if rec.get("injected"):
            notes.append("%s injected %s" % (side, ",".join(
                "%s=%s" % kv for kv in sorted(rec["injected"].items()))))
    return notes


def compare(records_a, records_b, threshold=1.10, alpha=0.05):
    """(table DataFrame, only_in_a, only_in_b): one row per (configuration, backend) in both."""
    from scipy import stats

    if threshold < 1.0:
        raise CompareError("--threshold must be >= 1 (a ratio B/A, e.g. 1.10 for 10%% slower), "
                           "got %g" % threshold)
    if not 0 < alpha < 1:
        raise CompareError("--alpha must be between 0 and 1, got %g" % alpha)
    rows_a, rows_b = _rows(records_a), _rows(records_b)
    common = [k for k in rows_a if k in rows_b]
    only_a = [k for k in rows_a if k not in rows_b]
    only_b = [k for k in rows_b if k not in rows_a]
    table = []
    for key in sorted(common, key=lambda k: tuple(str(x) for x in k)):
        (ra, sa), (rb, sb) = rows_a[key], rows_b[key]
        entry = {
            "backend": ra["backend"], "model": ra["model"], "config": _config_label(ra),
            "status": ra["status"] if ra["status"] == rb["status"]
            else "%s -> %s" % (ra["status"], rb["status"]),
            "median A ms": None, "median B ms": None, "ratio": None, "p": None,
            "acc A": _num(ra["test_acc"]), "acc B": _num(rb["test_acc"]),
            "RSS A MB": _num(ra["peak_rss_mb"]), "RSS B MB": _num(rb["peak_rss_mb"]),
            "mark": "", "note": "",
        }
        notes = []
        if not (_ok(ra) and _ok(rb)):
            if _ok(ra):
                entry["mark"] = "!"
            for side, r in (("A", ra), ("B", rb)):
                if not _ok(r):
                    notes.append("%s %s: %s" % (side, r["status"], _short(r["reason"])))
            entry["note"] = "; ".join(notes)
            table.append(entry)
            continue
        ma, mb = float(np.median(sa)), float(np.median(sb))
        entry.update({"median A ms": ma, "median B ms": mb, "ratio": mb / ma})
        if len(sa) >= 3 and len(sb) >= 3:
            p = float(stats.mannwhitneyu(sa, sb, alternative="two-sided").pvalue)
            entry["p"] = None if math.isnan(p) else p
        else:
            notes.append("too few steady steps for a test (%d, %d)" % (len(sa), len(sb)))
        why = _incomparable(ra, rb)
        ratio, p = entry["ratio"], entry["p"]
        past = ratio > threshold or ratio < 1.0 / threshold
        if why:
            entry["mark"] = "x"
            notes += why
        elif past and p is not None and p < alpha:
            entry["mark"] = "+" if ratio > 1 else "-"
        elif past:
            entry["mark"] = "~"
        entry["note"] = "; ".join(notes + _notes(ra, rb))
        table.append(entry)
    return pd.DataFrame(table), only_a, only_b


def _config_label(row):
    def n(v):
        return "%d" % v if isinstance(v, (int, float, np.number)) and v == v and v == int(v) else str(v)
    return "%s batch %s %s %s %s thread(s) %s" % (row["device"], n(row["batch_size"]),
                                                  row["optimizer"], row["dtype"],
                                                  n(row["threads"]), row["mode"])


def _short(text, n=100):
    text = str(text or "").replace("\n", " ")
    return text if len(text) <= n else text[:n - 3] + "..."


def _shown(table):
    """The compare table as display strings (a bench/document.py Table)."""
    def f(v, fmt):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v

    def fp(v):
        return "" if v is None else ("<0.001" if v < 0.001 else "%.3f" % v)

    return Table(pd.DataFrame({
        "": table["mark"], "backend": table["backend"], "model": table["model"],
        "config": table["config"], "status": table["status"],
        "median A ms": [f(v, "%.2f") for v in table["median A ms"]],
        "median B ms": [f(v, "%.2f") for v in table["median B ms"]],
        "ratio": [f(v, "%.3f") for v in table["ratio"]],
        "p": [fp(v) for v in table["p"]],
        "acc A": [f(v, "%.4f") for v in table["acc A"]],
        "acc B": [f(v, "%.4f") for v in table["acc B"]],
        "RSS A MB": [f(v, "%.0f") for v in table["RSS A MB"]],
        "RSS B MB": [f(v, "%.0f") for v in table["RSS B MB"]],
        "note": table["note"],
    }), css="compare")


def _describe(key):
    return " ".join("%s=%s" % kv for kv in zip(PAIR_KEY, key))


def run(args):
    """The `convbench compare` command; returns the exit status."""
    label_a, records_a = resolve(args.a, args.results)
    label_b, records_b = resolve(args.b, args.results)
    table, only_a, only_b = compare(records_a, records_b, args.threshold, args.alpha)
    if table.empty:
        raise CompareError("A and B have no backend and configuration in common (A: %s; B: %s)"
                           % (", ".join(_describe(k) for k in only_a) or "no records",
                              ", ".join(_describe(k) for k in only_b) or "no records"))
    head = ["A: %s" % label_a, "B: %s" % label_b,
            "ratio = median B / median A (steady steps); p: Mann-Whitney U, two-sided; "
            "threshold %.2fx, alpha %g" % (args.threshold, args.alpha)]
    tail = ["marks: " + LEGEND]
    for side, keys in (("A", only_a), ("B", only_b)):
        tail += ["only in %s: %s" % (side, _describe(k)) for k in keys]
    worse = table[table["mark"] == "+"]
    better = table[table["mark"] == "-"]
    odd = table[table["mark"].isin(["x", "!"])]
    if len(odd):
        tail.append("warning: %d pair(s) not compared (x: not comparable, !: not ok in B): %s"
                    % (len(odd), ", ".join(odd.backend)))
    tail.append("%d significant regression(s), %d significant improvement(s) of %d pair(s)"
                % (len(worse), len(better), len(table)))
    print(blocks_markdown([Text("\n".join(head)), _shown(table), Text("\n".join(tail))],
                          tablefmt="pipe" if args.markdown else "simple"))
    return 1 if len(worse) else 0
