"""The report's "Time to accuracy" section: the `--target-accuracy` track's headline, per machine,
model and recipe, one row per backend over its seeds (`--seeds`: the seed changes the initial
weights and the data order, the same for every backend).

Time to target is training seconds until the first test evaluation at or above the target
(evaluations excluded: their count and time are in the record's `target`). A seed that ran out of
epochs first counts as not reached: the row says how many of its seeds reached the target, and its
time figures come from those that did, so a backend is never faster for having failed.
"""
import numpy as np
import pandas as pd

from bench.document import Section, Table, Text
from bench.selection import machine_label, record_work_hash


def _target_groups(records):
    """{(machine, model, work hash): {backend: [training records]}}: the target track, each
    backend's newest session per machine and work."""
    sessions = {}  # (machine, model, work, backend) -> {session id: [records]}
    for r in records:
        if (r.get("config") or {}).get("target_accuracy") and r.get("role", "train") == "train":
            key = (machine_label(r), r.get("model"), record_work_hash(r), r.get("backend"))
            sessions.setdefault(key, {}).setdefault(r.get("session_id"), []).append(r)
    groups = {}
    for (machine, model, work, backend), by_session in sessions.items():
        newest = max(by_session.values(), key=lambda rs: max(r.get("time", "") for r in rs))
        groups.setdefault((machine, model, work), {})[backend] = newest
    return groups


def _fmt(value, text="%.1f"):
    return "" if value is None or value != value else text % value


def _row(backend, runs):
    target = runs[0]["config"]["target_accuracy"]
    ok = [r for r in runs if r.get("status") == "ok"]
    reached = [r for r in ok if (r.get("target") or {}).get("status") == "reached"]
    times = np.array([r["target"]["train_s"] for r in reached], dtype=float)
    epochs = [r["target"]["epoch"] for r in reached]
    not_ok = [r for r in runs if r.get("status") != "ok"]
    return {
        "backend": backend,
        "seeds": ",".join(str(r["config"].get("seed")) for r in runs),
        "reached": "%d of %d" % (len(reached), len(runs)),
        "time to %g%% s (median)" % (100 * target): _fmt(np.median(times) if len(times) else None),
        "range s": ("%.1f-%.1f" % (times.min(), times.max())) if len(times) > 1 else "",
        "epochs (median)": _fmt(np.median(epochs) if epochs else None, "%.2f"),
        "final test acc": ", ".join("%.4f" % r["summary"]["test_accuracy"] for r in ok
                                    if (r.get("summary") or {}).get("test_accuracy") is not None),
        "eval s excluded": _fmt(np.median([r["target"]["eval_s"] for r in ok])
                                if ok else None),
        "status": "; ".join(sorted({"%s: %s" % (r.get("status"), r.get("reason") or "")
                                    for r in not_ok})) or "ok",
    }


def tables(records):
    """[(title, DataFrame)]: one table per machine, model and recipe of the target track; the
    backends that reached the target on every seed first, fastest first."""
    out = []
    for (machine, model, _), by_backend in sorted(_target_groups(records).items()):
        frame = pd.DataFrame([_row(b, sorted(rs, key=lambda r: r["config"].get("seed") or 0))
                              for b, rs in by_backend.items()])
        column = [c for c in frame.columns if c.startswith("time to ")][0]
        frame["_all"] = [not r.startswith("0 of") and r.split(" of ")[0] == r.split(" of ")[1]
                         for r in frame.reached]
        frame["_t"] = pd.to_numeric(frame[column], errors="coerce")
        frame = frame.sort_values(["_all", "_t"], ascending=[False, True], na_position="last")
        config = next(iter(by_backend.values()))[0]["config"]
        recipe = "%s lr %s, %s schedule, batch %s, up to %s epoch(s), %s mode" % (
            config.get("optimizer"), config.get("lr"), config.get("schedule", "constant"),
            config.get("batch_size"), config.get("epochs"), config.get("mode", "step"))
        out.append(("%s to %g%% on %s: %s" % (model, 100 * config["target_accuracy"], machine,
                                              recipe), frame.drop(columns=["_all", "_t"])))
    return out


def section(records):
    """The section, or None without target-track records."""
    found = tables(records)
    if not found:
        return None
    blocks = [Text(
        "`convbench run --target-accuracy A`: training seconds until the first test evaluation at "
        "or above A (4 evaluations an epoch; their time is excluded and given), per backend over "
        "its seeds. Times are over the seeds that reached the target; `reached` says how many did.")]
    for title, frame in found:
        blocks += [Text("**%s**" % title), Table(frame)]
    return Section("Time to accuracy", blocks, anchor="time-to-accuracy")
