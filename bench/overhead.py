"""The suite's own cost per step: what the harness's step loop (bench/harness.py) spends outside
the adapter's train_step (slicing the batch out of the uint8 images, converting it to floats, the
two clock reads, the per-step bookkeeping and progress messages).

Measured with NullAdapter, whose train_step returns at once: the harness's epoch wall time (its
evaluations excluded, as always) less the sum of the timed train_step intervals, per step. That
is the time a real backend's step figure does NOT contain but its epoch does; as a share of the
fastest backend's step it says how much the loop around the steps could distort time to accuracy.

`python -m bench.overhead [--batch-size 128] [--steps 400] [--json FILE]` prints it; with --json
it also writes the measurement and the machine it ran on, and a report written beside that file
(`overhead.json` in the report's directory, as results/reference/ keeps one) states it in its
methodology section against the fastest step of the same machine and batch size.
"""
import argparse
import datetime
import json
import time

import numpy as np

from backends.base import Adapter, TrainConfig


class NullAdapter(Adapter):
    """No network: train_step returns a constant loss, predict zero logits."""
    name = "null"
    framework = "none"

    def build(self):
        pass

    def set_weights(self, params):
        pass

    def get_weights(self):
        return {}

    def train_step(self, x, y):
        return 0.0

    def predict(self, x):
        return np.zeros((len(x), 10), dtype=np.float32)


def measure(batch_size=128, steps=400, dtype="float32", data_dir=None, repeats=3):
    """{"per_step_us": wall, best of `repeats` epochs, "all_us": each, "cpu_per_step_us",
    "steps": n, "batch_size": b}.

    cpu_per_step_us: this process' CPU time per step, read at the harness's progress messages
    (every 20 steps) from the first to the last: data loading, build and evaluation fall outside.
    On a loaded machine the wall figure includes waiting for a core; the CPU figure does not."""
    from bench.harness import train
    from models.spec import load_spec

    spec = load_spec("seed_convnet")
    config = TrainConfig(batch_size=batch_size, limit_train=batch_size * steps, limit_test=100,
                         evals_per_epoch=1, warmup_steps=0, dtype=dtype)
    per_step, cpu = [], []
    for _ in range(repeats):
        marks = []

        def emit(message):
            if message.get("type") == "progress":
                marks.append((message["step"], time.process_time()))

        timing = train(NullAdapter(spec, config), spec, config, data_dir, emit)["timing"]
        inside = sum(timing["step_ns"]) / 1e9
        per_step.append((timing["train_s"] - inside) / len(timing["step_ns"]) * 1e6)
        (s0, c0), (s1, c1) = marks[0], marks[-1]
        cpu.append((c1 - c0) / (s1 - s0) * 1e6)
    return {"per_step_us": min(per_step), "all_us": per_step, "cpu_per_step_us": min(cpu),
            "steps": steps, "batch_size": batch_size}


#: the measurement's file name beside a report
FILE_NAME = "overhead.json"


def load(path):
    """A kept measurement (main's --json), checked for what describe() reads; ValueError when the
    file is not one."""
    with open(path) as fh:
        measured = json.load(fh)
    try:
        for key in ("cpu_per_step_us", "per_step_us"):
            float(measured[key])
        int(measured["batch_size"]), int(measured["steps"]), len(measured["all_us"])
        measured["time"][:16], measured["machine"].get("cpu_model")
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError("missing or malformed %s" % e)
    return measured


def describe(measured, rows):
    """The methodology's sentence for a kept measurement: its figure and, against `rows` (the
    report's pooled rows: machine, batch_size, median_ms, backend, model), its share of the fastest
    step measured on the same machine at the same batch size."""
    from bench.selection import machine_label

    machine = machine_label(measured)
    text = ("Measured for this report (%s, %s): %.0f us CPU per step at batch %d (%.0f us wall, "
            "best of %d epochs of %d steps)" % (
                measured["time"][:16].replace("T", " "), machine, measured["cpu_per_step_us"],
                measured["batch_size"], measured["per_step_us"], len(measured["all_us"]),
                measured["steps"]))
    same = rows[(rows.machine == machine) & (rows.batch_size == measured["batch_size"])
                & rows.median_ms.notna()] if len(rows) else rows
    if not len(same):
        return text + "; no step at that batch size on that machine in this report to compare."
    fastest = same.loc[same.median_ms.idxmin()]
    return text + "; the wall figure is %.1f%% of the fastest step here (%s, %s, %.1f ms)." % (
        100.0 * measured["per_step_us"] / 1e3 / fastest.median_ms, fastest.backend,
        fastest.model, fastest.median_ms)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", metavar="FILE", default=None,
                   help="also write the measurement and its machine here (a report beside it "
                        "quotes it: %s in the report's directory)" % FILE_NAME)
    args = p.parse_args(argv)
    t0 = time.time()
    m = measure(args.batch_size, args.steps, data_dir=args.data_dir)
    if args.json:
        from bench import context

        m.update(machine=context.machine(), time=datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds"))
        with open(args.json, "w") as fh:
            json.dump(m, fh, indent=1, sort_keys=True)
            fh.write("\n")
    print("harness overhead per step (batch %d, %d steps, best of %d epochs): %.1f us wall "
          "(epochs: %s), %.1f us CPU [%.1f s]" % (
              m["batch_size"], m["steps"], len(m["all_us"]), m["per_step_us"],
              ", ".join("%.1f" % v for v in m["all_us"]), m["cpu_per_step_us"], time.time() - t0))


if __name__ == "__main__":
    main()
