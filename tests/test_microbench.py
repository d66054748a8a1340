"""The per-layer micro-benchmarks run for real (a tiny subset) and their JSON becomes a report section."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from bench import microbench
from bench.document import section_html, section_markdown
from bench.paths import REPO

pytest.importorskip("pytest_benchmark")


@pytest.fixture(scope="module")
def real_json(tmp_path_factory):
    """`pytest --benchmark-only -k "numpy and conv1"` on the benchmark file, JSON saved to tmp."""
    out = tmp_path_factory.mktemp("microbench")
    path = out / "numpy.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", os.path.join("benchmarks", "bench_layers.py"),
         "--benchmark-only", "-k", "numpy and conv1", "-q", "-p", "no:cacheprovider",
         "--benchmark-min-rounds=3", "--benchmark-max-time=0.05", "--benchmark-json=%s" % path],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout, proc.stdout[-3000:]
    return out


def test_the_benchmarks_ran_and_saved_pytest_benchmark_json(real_json):
    data = json.loads((real_json / "numpy.json").read_text())
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["test_layer[numpy-conv1-fwd+bwd]", "test_layer[numpy-conv1-fwd]"]
    for b in data["benchmarks"]:
        assert b["stats"]["rounds"] >= 3 and b["stats"]["median"] > 0
        assert b["extra_info"]["framework_version"] and b["extra_info"]["batch"] == 128


def test_load_reads_one_row_per_benchmark(real_json):
    df = microbench.load(str(real_json))
    assert list(df.columns) == microbench.COLUMNS
    assert [(r["layer"], r["pass"], r["backend"]) for r in df.to_dict("records")] == [
        ("conv1", "fwd", "numpy"), ("conv1", "fwd+bwd", "numpy")]
    assert (df["median_ms"] > 0).all() and (df["rounds"] >= 3).all()
    assert (df["iqr_ms"] >= 0).all() and (df["gflops_per_s"] > 0).all()
    assert df["machine"].iloc[0] and df["framework_version"].iloc[0]


def test_section_renders_markdown_and_escaped_html(real_json, tmp_path):
    # a second file with hostile strings where the JSON carries text: all of it must be escaped
    data = json.loads((real_json / "numpy.json").read_text())
    for b in data["benchmarks"]:
        b["extra_info"]["backend"] = "<script>alert(1)</script>"
        b["extra_info"]["framework_version"] = "1.0 & <b>"
    data["machine_info"]["cpu"] = {"brand_raw": "<img src=x onerror=alert(2)>", "count": 2}
    shutil.copy(str(real_json / "numpy.json"), str(tmp_path / "numpy.json"))
    (tmp_path / "evil.json").write_text(json.dumps(data))
    (tmp_path / "not-a-benchmark.json").write_text('{"hello": 1}')

    found = microbench.section(str(tmp_path))
    md, html_text = section_markdown(found), section_html(found)
    assert "| conv1" in md and "fwd+bwd" in md and "numpy" in md
    assert "<script>" not in html_text and "<img src=x" not in html_text and "<b>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "1.0 &amp; &lt;b&gt;" in html_text
    assert html_text.count("<tr>") >= 1 + 2 + 1  # header, two timing rows, context rows
    assert 'src="data:image/png;base64,' in html_text


def test_section_is_empty_without_results(tmp_path):
    assert microbench.section(str(tmp_path)) is None
    assert microbench.section(str(tmp_path / "missing")) is None
    assert microbench.load(str(tmp_path)).empty


def test_a_plain_pytest_run_smoke_runs_the_benchmarks_untimed():
    """No paths (testpaths): each benchmark runs once, untimed (--benchmark-disable semantics)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-k", "bench_layers and numpy and dense1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "2 passed" in proc.stdout, proc.stdout[-3000:]
    assert "Name (time in" not in proc.stdout  # no timing table: the benchmarks were disabled


def test_cli_rejects_an_unknown_env_or_backend(tmp_path, capsys):
    from bench import cli

    assert cli.main(["microbench", "--env", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown environment(s) nope" in capsys.readouterr().err
    assert cli.main(["microbench", "--backend", "mxnet", "--out", str(tmp_path / "o")]) == 2
    assert "unknown backend(s) mxnet" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
