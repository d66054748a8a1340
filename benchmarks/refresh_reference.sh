#!/usr/bin/env bash
# Regenerate the reference run in results/reference/ (records + report) in ONE session on a quiet
# machine, so every figure in its report was taken under the same conditions; run it after an
# adapter changes and commit the result (git add -f results/reference). Every figure comes from 5
# fresh processes a backend (the run's default --timing-runs): about 3 hours on 2 cores.
# The per-layer micro-benchmark JSON in results/reference/microbench/ is refreshed apart:
#   .venv/bin/convbench microbench --out results/reference/microbench
set -euo pipefail
cd "$(dirname "$0")/.."
cb=.venv/bin/convbench
all=tf-layers,tf-estimator,tf,keras,torch,numpy,cntk,tf-xla,keras-torch,jax,keras-jax,torch-tuned,keras-xla
new=$(mktemp -d)/runs.jsonl
# seed_convnet, with the tf adapter on TF 2.15 (tf@tf_legacy) beside tf-layers and tf-estimator:
# the same TF version, another API; and beside tf on 2.21: the same API, another version
$cb run --backend "$all,tf@tf_legacy" --results "$new" --no-report
$cb run --backend "$all" --model tf_tutorial --results "$new" --no-report
$cb run --backend numpy,torch,cntk,jax --model cntk_103d --results "$new" --no-report
$cb run --backend keras,keras-torch,keras-jax,tf-estimator --mode epoch --results "$new" --no-report
$cb sweep --backend numpy,torch --batch-size 32,64,128,256 --results "$new" --no-report
# bf16 beside float32 where a framework has a mixed-precision policy (the report pairs them)
$cb run --backend torch,torch-tuned,keras,keras-xla,keras-torch,keras-jax --precision bf16 \
    --results "$new" --no-report
# where the time goes: the scaling sweep (width at 28 x 28, then resolution at width 1)
scale="--limit-train 1280 --limit-test 500 --warmup-steps 2 --results $new --no-report"
$cb sweep --backend "$all" --width 1,2,4,8 --resolution 28 $scale
$cb sweep --backend "$all" --width 1 --resolution 56,112 $scale
# time to 99% with seed_convnet's [training.target] recipe, 3 seeds
$cb run --backend "$all" --target-accuracy 0.99 --seeds 0,1,2 --timing-runs 1 --results "$new" \
    --no-report
# the harness's own cost per step, quoted in the report's methodology
.venv/bin/python -m bench.overhead --json results/reference/overhead.json
$cb check --results "$new"
mv "$new" results/reference/runs.jsonl
rm -rf results/reference/report_files
$cb report --results results/reference/runs.jsonl
# each adapter against its hand-written loop, and a TF step kernel by kernel
{ printf "# Adapters against their frameworks' hand-written loops\n\n"
  printf "seed_convnet, batch 128, 2 threads, each loop and its adapter alternating in one process "
  printf "(\`benchmarks/hand_loops/all.py\`; JSON of every loop in \`hand_loops.jsonl\`).\n\n"
  .venv/bin/python benchmarks/hand_loops/all.py --json results/reference/hand_loops.jsonl
} > results/reference/hand_loops.md
.tox/tf/bin/python benchmarks/tf_op_profile.py > results/reference/tf_op_profile_tf2.21.json
.tox/tf_legacy/bin/python benchmarks/tf_op_profile.py > results/reference/tf_op_profile_tf2.15.json
