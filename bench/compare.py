"""`convbench compare A B`: did B get slower, faster, less accurate or bigger than A?

A and B are each one of:

- a results file (JSON Lines): every record in it, the newest session per backend and configuration
  (the same selection the report makes: `bench.selection.latest_rows`);
- a session id (`session_id`: all the records one `convbench run` wrote) or a run id (`run_id`: one
  record), looked up in `--results` (default results/runs.jsonl); a unique prefix of 4 or more
  characters will do.

Records are paired by model, configuration (`bench.selection.CONFIG_KEYS`) and backend. The unit
of evidence is a process, never a step: each side's figure is the median of its process medians
(the training run and its timing-only processes, `convbench run --timing-runs N`), and the test
is a two-sided Mann-Whitney U on the two sets of process medians. Steps of one process are
correlated and share that process' luck, so a test on pooled steps calls any two runs different
(with ~460 steps a side, p ~ 0 for a 2% shift that the next run reverses). Per pair: both
figures, their ratio B/A, p, test accuracy, training memory, and a mark in the style of asv's
`compare`:

    +  significant regression: p < alpha and B/A > threshold
    -  significant improvement: p < alpha and B/A < 1/threshold
    ~  the ratio is past the threshold but the difference is not significant (p >= alpha), or
       cannot be tested: fewer than MIN_PROCESSES processes on a side (with 3 against 3 the
       smallest two-sided p Mann-Whitney U can give is 0.1)
    x  not comparable: a different network (spec_hash), configuration or machine (CPU model,
       cores, arch, GPUs; not the host name); figures shown, never counted as a regression
    !  ok in A, not ok in B (the status and reason are listed; nothing compared)

Processes that ran beside other work (their record's `load` says noisy: other processes used more
than 0.25 cores on average during the job, bench/load.py) are left out unless --include-noisy;
the note says how many.

The threshold guards against what no test here can see: drift between sessions on one machine
(measured on these machines: 5-10% between runs minutes apart) is shared by all processes of a
session, so it must be smaller than the threshold (default 10%) for a `+` to mean the code.

The note column names what else changed: accuracy by 0.005 or more, training memory by more
than 10%,
the framework version, the host name, faults injected on either side (`CONVBENCH_INJECT`), and why
a pair is marked x or !.

Records that break the schema are skipped with a warning naming their line (bench/results.py), so
no line of a results file can crash a comparison.

Exit status: 0 when nothing is marked "+"; 1 when any pair is (a significant regression); 2 for
usage errors (unknown or ambiguous id, missing file, bad option); 3 when there is nothing to compare
(a side with no valid record, or no backend and configuration in common). A script can tell "B is
slower" from "this could not be compared".
"""
import math
import os

import numpy as np
import pandas as pd

from backends import registry
from bench.console import printable
from bench.document import Table, Text, blocks_markdown
from bench.results import read_records
from bench.selection import (CONFIG_KEYS, cpu_isa, latest_rows, old_work_hashes,
                             process_medians, record_work_hash)

PAIR_KEY = CONFIG_KEYS + ("backend",)
MIN_PREFIX = 4
#: processes a side needs for a test: Mann-Whitney U's smallest two-sided p is 0.029 at 4 vs 4
MIN_PROCESSES = 4
LEGEND = ("+ significant regression, - significant improvement (p < alpha and ratio past the "
          "threshold), ~ past the threshold but not significant, x not comparable, ! not ok in B")


class CompareError(ValueError):
    """A usage error: one line, exit status 2."""


class NothingToCompare(CompareError):
    """No comparison was possible: one line, exit status 3 (never 1, which means a regression)."""


def resolve(spec, results_path):
    """(label, records) for A or B: a results file, or a session or run id in results_path."""
    if os.path.isfile(spec):
        records = read_records(spec)
        if not records:
            raise NothingToCompare("%s holds no valid record" % spec)
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


def _noisy(record):
    return bool((record.get("load") or {}).get("noisy"))


def _rows(records, include_noisy=False):
    """The newest row per (configuration, backend), with its session's process medians (ms);
    processes that ran beside other work (bench/load.py) are left out unless include_noisy."""
    df = latest_rows(records)
    if df.empty:
        return {}
    df = df.sort_values("time")
    old_hashes = old_work_hashes(records)
    out = {}
    for _, row in df.iterrows():
        rec = row["_record"]
        # every process of that session: its training run(s) and timing-only processes
        same = [r for r in records if r.get("session_id") == rec.get("session_id")
                and registry.canonical(r.get("backend")) == row["backend"] and r.get("model") == rec.get("model")
                and record_work_hash(r, old_hashes) == row["work_hash"] and not r.get("sweep")
                and r.get("status") == "ok"]
        row = row.copy()
        row["left_out"] = 0 if include_noisy else sum(_noisy(r) for r in same)
        same = [r for r in same if include_noisy or not _noisy(r)]
        key = tuple(row[k] for k in PAIR_KEY)
        out[key] = (row, process_medians(same))  # sorted by time: a later machine's row wins
    return out


def judge(medians_a, medians_b, threshold=1.10, alpha=0.05):
    """(ratio B/A of the medians of process medians, p or None, mark) for one pair."""
    from scipy import stats

    ratio = float(np.median(medians_b) / np.median(medians_a))
    p = None
    if len(medians_a) >= MIN_PROCESSES and len(medians_b) >= MIN_PROCESSES:
        p = float(stats.mannwhitneyu(medians_a, medians_b, alternative="two-sided").pvalue)
        p = None if math.isnan(p) else p
    past = ratio > threshold or ratio < 1.0 / threshold
    if past and p is not None and p < alpha:
        return ratio, p, "+" if ratio > 1 else "-"
    return ratio, p, "~" if past else ""


def _memory(row):
    """Training memory, MB; the whole process' peak for records made before it was measured."""
    return _num(row["train_mem_mb"]) if _num(row["train_mem_mb"]) is not None \
        else _num(row["peak_rss_mb"])


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
    return "%s, %s cores, %s, %s" % (", ".join(p for p in (m.get("cpu_model"), cpu_isa(m)) if p),
                                     m.get("cores"), m.get("arch"), gpus)


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
    mem_a, mem_b = _memory(ra), _memory(rb)
    if mem_a and mem_b and abs(mem_b / mem_a - 1) > 0.10:
        notes.append("memory %+.0f%%" % (100 * (mem_b / mem_a - 1)))
    ha, hb = ((r.get("machine") or {}).get("hostname") for r in (a, b))
    if ha != hb:
        notes.append("host %s -> %s" % (ha, hb))
    for side, rec in (("A", a), ("B", b)):
        if rec.get("injected"):
            notes.append("%s injected %s" % (side, ",".join(
                "%s=%s" % kv for kv in sorted(rec["injected"].items()))))
    return notes


def compare(records_a, records_b, threshold=1.10, alpha=0.05, include_noisy=False):
    """(table DataFrame, only_in_a, only_in_b): one row per (configuration, backend) in both."""
    if threshold < 1.0:
        raise CompareError("--threshold must be >= 1 (a ratio B/A, e.g. 1.10 for 10%% slower), "
                           "got %g" % threshold)
    if not 0 < alpha < 1:
        raise CompareError("--alpha must be between 0 and 1, got %g" % alpha)
    rows_a, rows_b = _rows(records_a, include_noisy), _rows(records_b, include_noisy)
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
            "n A": len(sa), "n B": len(sb),
            "acc A": _num(ra["test_acc"]), "acc B": _num(rb["test_acc"]),
            "mem A MB": _memory(ra), "mem B MB": _memory(rb),
            "mark": "", "note": "",
        }
        notes = ["%s: %d noisy process(es) left out (--include-noisy keeps them)" % (side, r["left_out"])
                 for side, r in (("A", ra), ("B", rb)) if r["left_out"]]
        if not (_ok(ra) and _ok(rb)):
            if _ok(ra):
                entry["mark"] = "!"
            for side, r in (("A", ra), ("B", rb)):
                if not _ok(r):
                    notes.append("%s %s: %s" % (side, r["status"], _short(r["reason"])))
            entry["note"] = "; ".join(notes)
            table.append(entry)
            continue
        if not (len(sa) and len(sb)):
            entry["mark"] = "~"
            entry["note"] = "; ".join(notes + ["no process left to compare (%d, %d)" % (
                len(sa), len(sb))] + _notes(ra, rb))
            table.append(entry)
            continue
        ratio, p, mark = judge(sa, sb, threshold, alpha)
        entry.update({"median A ms": float(np.median(sa)), "median B ms": float(np.median(sb)),
                      "ratio": ratio, "p": p})
        if p is None:
            notes.append("too few processes for a test (%d, %d; --timing-runs %d or more)"
                         % (len(sa), len(sb), MIN_PROCESSES))
        why = _incomparable(ra, rb)
        if why:
            entry["mark"] = "x"
            notes += why
        else:
            entry["mark"] = mark
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
        "n A": table["n A"], "n B": table["n B"],
        "median A ms": [f(v, "%.2f") for v in table["median A ms"]],
        "median B ms": [f(v, "%.2f") for v in table["median B ms"]],
        "ratio": [f(v, "%.3f") for v in table["ratio"]],
        "p": [fp(v) for v in table["p"]],
        "acc A": [f(v, "%.4f") for v in table["acc A"]],
        "acc B": [f(v, "%.4f") for v in table["acc B"]],
        "mem A MB": [f(v, "%.0f") for v in table["mem A MB"]],
        "mem B MB": [f(v, "%.0f") for v in table["mem B MB"]],
        "note": table["note"],
    }), css="compare")


def _describe(key):
    return " ".join("%s=%s" % kv for kv in zip(PAIR_KEY, key))


def run(args):
    """The `convbench compare` command; returns the exit status."""
    label_a, records_a = resolve(args.a, args.results)
    label_b, records_b = resolve(args.b, args.results)
    table, only_a, only_b = compare(records_a, records_b, args.threshold, args.alpha,
                                    args.include_noisy)
    if table.empty:
        raise NothingToCompare("A and B have no backend and configuration in common (A: %s; B: %s)"
                           % (", ".join(_describe(k) for k in only_a) or "no records",
                              ", ".join(_describe(k) for k in only_b) or "no records"))
    head = ["A: %s" % label_a, "B: %s" % label_b,
            "median: of the process medians (n: processes); ratio = median B / median A; p: "
            "Mann-Whitney U on the process medians, two-sided; threshold %.2fx, alpha %g; mem: "
            "training memory" % (args.threshold, args.alpha)]
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
    print(printable(blocks_markdown([Text("\n".join(head)), _shown(table), Text("\n".join(tail))],
                                    tablefmt="pipe" if args.markdown else "simple")))
    return 1 if len(worse) else 0
