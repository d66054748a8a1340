#!/usr/bin/env bash
# Regenerate the reference run in results/reference/ (records + report) in ONE session on a quiet
# machine, so every figure in its report was taken under the same conditions; run it after an
# adapter changes and commit the result (git add -f results/reference). ~30 min on 2 cores.
# The per-layer micro-benchmark JSON in results/reference/microbench/ is refreshed apart:
#   .venv/bin/convbench microbench --out results/reference/microbench
set -euo pipefail
cd "$(dirname "$0")/.."
cb=.venv/bin/convbench
all=tf_layers,tf_estimator,tf,keras,torch,numpy,cntk,tf-xla,keras-torch,jax,keras-jax
new=$(mktemp -d)/runs.jsonl
$cb run --backend "$all" --results "$new" --no-report                        # seed_convnet
$cb run --backend "$all" --model tf_tutorial --results "$new" --no-report
$cb run --backend numpy,torch,cntk,jax --model cntk_103d --results "$new" --no-report
$cb run --backend keras,keras-torch,keras-jax,tf_estimator --mode epoch --results "$new" --no-report
$cb sweep --backend numpy,torch --batch-size 32,64,128,256 --results "$new" --no-report
$cb check --results "$new"
mv "$new" results/reference/runs.jsonl
rm -rf results/reference/report_files
$cb report --results results/reference/runs.jsonl
