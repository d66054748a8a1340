"""`convbench run --device cuda` on a machine without a GPU, through the real CLI: one
`unavailable` record per backend naming why and the fix, one-line messages, no traceback, exit 1."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from backends import registry
from bench import envs
from bench.paths import REPO
from bench.results import validate_file


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_device_cuda_without_gpu_gives_unavailable_records(tmp_path):
    names = ["numpy", "torch"] + [n for n in ("jax",) if envs.env_exists(registry.get(n).env)]
    results = str(tmp_path / "runs.jsonl")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--backend", ",".join(names), "--device", "cuda",
         "--limit-train", "256", "--limit-test", "100", "--batch-size", "64", "--timing-runs", "1",
         "--results", results,
         "--no-report"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    with open(results) as fh:
        records = [json.loads(line) for line in fh]
    assert [r["backend"] for r in records] == names
    assert validate_file(results) == (len(names), [])
    for r in records:
        assert r["status"] == "unavailable" and r["device"] == "cuda", r["reason"]
        assert "cuda" in r["reason"].lower() or "CPU only" in r["reason"], r["reason"]
    for r in records[1:]:  # the frameworks that have a GPU path say what they probed and the fix
        assert r["reason"].startswith("no CUDA device: ") and "--device cpu" in r["reason"]
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    for name in names:  # one line per backend
        assert len([l for l in lines if l.split()[0] == name and "UNAVAILABLE" in l]) == 1
    assert lines[-1].startswith("convbench: %d of %d backend(s) did not finish ok" % (len(names), len(names)))
