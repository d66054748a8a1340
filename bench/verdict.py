"""The report's summary: per configuration group, what the statistics allow one to say.

Backends are ranked by the median of their process medians and cut into tiers: a backend joins
the current tier unless `convbench compare`'s own test, run with the tier's fastest as A and it as
B, would mark it `+` (Mann-Whitney U on process medians, p < 0.05, and slower by more than the
1.10 threshold); then it starts the next tier. So "not told apart" means exactly what compare
would say, at the run count the records have; with fewer than 4 processes a side no pair is
tested and the summary says so.
"""
from bench.compare import MIN_PROCESSES, judge


def tiers(ok):
    """[[(row, ratio to the tier's fastest, p), ...], ...] from one group's ok rows."""
    rows = [r for _, r in ok.sort_values("median_ms").iterrows() if r["median_ms"] == r["median_ms"]]
    out = []
    for row in rows:
        if out:
            leader = out[-1][0][0]
            ratio, p, mark = judge(leader["proc_medians"], row["proc_medians"])
            if mark != "+":
                out[-1].append((row, ratio, p))
                continue
        out.append([(row, 1.0, None)])
    return out


def _member(row, ratio, p):
    text = "%s %.1f ms" % (row["backend"], row["median_ms"])
    if ratio != 1.0:
        text += " (%.2fx%s)" % (ratio, ", p %.2f" % p if p is not None else "")
    return text


def group_verdict(group):
    """Sentences for one configuration group (a DataFrame of pooled rows), or None when fewer
    than two backends finished ok."""
    ok = group[group.status.str.startswith("ok") & group.median_ms.notna()]
    if len(ok) < 2:
        return None
    ranked = tiers(ok)
    fastest, runner_up = ranked[0][0][0], ok.sort_values("median_ms").iloc[1]
    lead = runner_up["median_ms"] / fastest["median_ms"]
    sentences = ["Fastest: **%s**, %.1f ms a step (%.2fx ahead of %s)." % (
        fastest["backend"], fastest["median_ms"], lead, runner_up["backend"])]
    tested = min(len(r["proc_medians"]) for _, r in ok.iterrows()) >= MIN_PROCESSES
    if not tested:
        sentences.append("Fewer than %d processes a backend: no difference is tested, the "
                         "ranking is not a verdict (run with --timing-runs 5)." % MIN_PROCESSES)
    else:
        if len(ranked[0]) > 1:
            sentences.append("Not told apart from %s at %d processes a backend: %s." % (
                fastest["backend"], int(ok.n_proc.min()),
                ", ".join(_member(*m) for m in ranked[0][1:])))
        else:
            sentences.append("Every other backend is significantly slower (Mann-Whitney on "
                             "process medians, p < 0.05, beyond 1.10x).")
        later = ranked[1:]
        if later:
            sentences.append("Then, in tiers whose members are not told apart from each other's "
                             "fastest: %s." % " < ".join(
                                 "[%s]" % ", ".join(_member(*m) for m in tier) for tier in later))
    acc = ok.test_acc.dropna()
    if len(acc):
        sentences.append("Test accuracy %.4f-%.4f." % (acc.min(), acc.max()))
    mem = ok[ok.train_mem_mb.notna()]
    if len(mem):
        lo, hi = mem.loc[mem.train_mem_mb.idxmin()], mem.loc[mem.train_mem_mb.idxmax()]
        sentences.append("Training memory %.0f MB (%s) to %.0f MB (%s)." % (
            lo["train_mem_mb"], lo["backend"], hi["train_mem_mb"], hi["backend"]))
    return " ".join(sentences)
