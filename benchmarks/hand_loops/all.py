"""Every adapter against its framework's hand-written loop, one table: the issue's 5% check.

Runs each hand loop with --vs-adapter (the adapter and the loop alternate in one process, so both
see the same machine state) in the backend's own environment and worker variables, one after the
other, and prints a Markdown table: hand and adapter median step ms, adapter / hand, the hand loop's
GFLOP/s. tf-estimator's row is its step mode (the harness's default); its JSON also holds the
epoch mode and a lockstep comparison, paired step by step, which is the tightest.

    .venv/bin/python benchmarks/hand_loops/all.py [--only tf,keras] [--json FILE]

A backend whose environment is not built is listed as skipped (build it: tox -e ENV --notest).
Take these figures on a quiet machine: 2 cores shared with anything else move them by 10-30%.
"""
import argparse
import json
import os
import subprocess
import sys

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from common import REPO

HERE = os.path.dirname(os.path.abspath(__file__))

#: (row label, backend, loop script, its arguments); the loop compares itself with that backend's
#: adapter in the same mode (Keras: train_on_batch steps, or fit over the epoch)
LOOPS = (
    ("tf", "tf", "tf_function_loop.py", []),
    ("tf-xla", "tf-xla", "tf_function_loop.py", ["--xla"]),
    ("keras", "keras", "keras_loop.py", ["--backend", "tensorflow"]),
    ("keras fit", "keras", "keras_loop.py", ["--backend", "tensorflow", "--mode", "epoch"]),
    ("keras-torch", "keras-torch", "keras_loop.py", ["--backend", "torch"]),
    ("keras-torch fit", "keras-torch", "keras_loop.py", ["--backend", "torch", "--mode", "epoch"]),
    ("keras-jax", "keras-jax", "keras_loop.py", ["--backend", "jax"]),
    ("keras-jax fit", "keras-jax", "keras_loop.py", ["--backend", "jax", "--mode", "epoch"]),
    ("tf-layers", "tf-layers", "tf_layers_loop.py", []),
    ("tf-estimator", "tf-estimator", "tf_estimator_loop.py", []),
    ("cntk", "cntk", "cntk_loop.py", []),
    ("jax", "jax", "jax_loop.py", []),
)


def row_of(backend, out):
    """(hand ms, adapter ms, adapter/hand, note) from a loop's JSON."""
    if backend == "tf-estimator":
        note = "step mode; lockstep paired: step %.3f, epoch %.3f" % (
            out["lockstep_adapter_step_over_hand_paired_median"],
            out["lockstep_adapter_epoch_over_hand_paired_median"])
        return (out["hand_median_step_ms"], out["adapter_step_median_step_ms"],
                out["adapter_step_over_hand"], note)
    note = ""
    if "adapter_over_hand_paired_median" in out:
        note = "paired per round: %.3f" % out["adapter_over_hand_paired_median"]
    return out["hand_median_step_ms"], out["adapter_median_step_ms"], out["adapter_over_hand"], note


def main():
    import pandas as pd
    from backends import registry
    from bench import envs

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated backends (default: all with a hand loop)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write every loop's JSON, one line each, to this file")
    args = p.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows, raw = [], []
    for label, name, script, extra in LOOPS:
        if only and name not in only:
            continue
        backend = registry.get(name)
        if not envs.env_exists(backend.env):
            rows.append({"loop": label, "note": "skipped: tox env %r not built (tox -e %s --notest)"
                         % (backend.env, backend.env)})
            continue
        print("%s: %s %s --vs-adapter ..." % (label, script, " ".join(extra)), file=sys.stderr)
        env = envs.worker_environment(backend, args.threads)
        if backend.env == "cntk":
            envs.ensure_cntk_mpi_shim()
        proc = subprocess.run([envs.env_python(backend.env), os.path.join(HERE, script),
                               "--vs-adapter", "--threads", str(args.threads)] + extra,
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
            rows.append({"loop": label, "note": "failed: " + tail})
            continue
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["backend"], out["row"] = name, label
        raw.append(out)
        hand, adapter, ratio, note = row_of(name, out)
        rows.append({"loop": label, "hand ms": round(hand, 2), "adapter ms": round(adapter, 2),
                     "adapter / hand": round(ratio, 3),
                     "hand GFLOP/s": round(out["hand_gflops"], 1) if out.get("hand_gflops") else None,
                     "note": note})
    if args.json:
        with open(args.json, "w") as fh:
            for out in raw:
                fh.write(json.dumps(out) + "\n")
    print(pd.DataFrame(rows).to_markdown(index=False))
    return 0 if all("hand ms" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
