"""The scaling machinery (bench/scaling.py): derived specs, upsampled inputs, the overhead +
FLOPs / throughput fit on synthetic numbers, and a tiny `convbench sweep --width --resolution`
end to end (numpy and torch, a few steps each)."""
import numpy as np
import pytest

from bench import scaling
from bench.data import Mnist, Upsampled, at_resolution
from models.spec import load_spec

from test_sweep import convbench, records_of


def test_derive_scales_channels_and_resolution_only():
    base = load_spec("seed_convnet")
    w2 = scaling.derive(base, 2, 28)
    r56 = scaling.derive(base, 1, 56)
    assert w2.name == "seed_convnet-w2-r28" and r56.input_shape == (1, 56, 56)
    assert [getattr(l, "filters", None) for l in w2.layers if l.kind == "conv2d"] == [64, 128]
    assert w2.layers[-1].units == 10  # the logits layer keeps num_classes
    # conv1 has 1 input channel: width x2 doubles it, conv2 (both sides widened) quadruples
    f1, f2 = base.flops()["forward"], w2.flops()["forward"]
    assert 2 * f1 < f2 < 4 * f1
    # 2x resolution: each conv has ~4x the outputs
    assert 4 * f1 < r56.flops()["forward"] < 5.5 * f1  # valid convs: (54/26)^2, (25/11)^2
    mlp = scaling.derive(load_spec("mlp"), 4, 28)
    assert [l.units for l in mlp.layers if l.kind == "dense"] == [512, 10]


@pytest.mark.parametrize("width, size", [(0, 28), (1, 30), (1, 14)])
def test_derive_refuses_what_mnist_cannot_feed(width, size):
    with pytest.raises(ValueError, match="multiple of 28"):
        scaling.derive(load_spec("seed_convnet"), width, size)


def test_upsampled_batches_repeat_each_pixel():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    up = at_resolution(images, (1, 56, 56))
    assert isinstance(up, Upsampled) and len(up) == 2
    batch = up[np.array([1])]
    assert batch.shape == (1, 56, 56)
    assert np.array_equal(batch[0, ::2, ::2], images[1]) and np.array_equal(batch[0, 1::2, 1::2], images[1])
    assert Mnist.to_input(batch).shape == (1, 1, 56, 56)
    assert at_resolution(images, (1, 28, 28)) is images
    with pytest.raises(ValueError, match="square multiple"):
        at_resolution(images, (1, 42, 42))


def test_fit_recovers_overhead_and_throughput_from_synthetic_cells():
    flops = np.array([1e6, 4e6, 1.6e7, 6.4e7, 2.56e8, 1.0e9])
    overhead, rate = 2e-3, 50e9  # 2 ms, 50 GFLOP/s
    noise = np.array([1.01, 0.99, 1.02, 0.98, 1.01, 0.995])  # fixed: deterministic
    fit = scaling.fit(flops, (overhead + flops / rate) * noise)
    assert fit["overhead_ms"] == pytest.approx(2.0, rel=0.03)
    assert fit["gflops"] == pytest.approx(50.0, rel=0.03)
    assert fit["r2"] > 0.999 and max(abs(r) for r in fit["residuals_pct"]) < 3
    assert fit["crossover_flops"] == pytest.approx(overhead * rate, rel=0.05)  # 1e8 FLOPs
    # no curvature a line can explain: a poor R^2 is reported, not hidden
    bad = scaling.fit(flops, 1e-3 * np.array([1, 9, 1, 9, 1, 9.0]))
    assert bad["r2"] < 0.5
    with pytest.raises(ValueError, match="two different"):
        scaling.fit([1e6, 1e6], [1.0, 2.0])


def test_crossings_of_two_lines():
    # a: 1 ms + F / 10 GFLOP/s; b: 5 ms + F / 100 GFLOP/s -> equal at F = 4e-3 / (1e-10 - 1e-11)
    a = {"overhead_ms": 1.0, "gflops": 10.0}
    b = {"overhead_ms": 5.0, "gflops": 100.0}
    (p, q, at), = scaling.crossings({"a": a, "b": b})
    assert (p, q) == ("a", "b") and at == pytest.approx(4e-3 / 9e-11)
    assert scaling.crossings({"a": a, "c": dict(a, overhead_ms=2.0)}) == []  # parallel: never


def test_sweep_with_width_and_resolution_end_to_end(tmp_path):
    results = tmp_path / "runs.jsonl"
    out = convbench("sweep", "--backend", "numpy,torch", "--width", "1,2", "--resolution", "28,56",
                    "--batch-size", "16", "--limit-train", "96", "--limit-test", "50",
                    "--warmup-steps", "1", "--timing-runs", "1", "--results", str(results))
    assert out.returncode == 0, out.stderr[-3000:]
    records = records_of(results)
    assert len(records) == 8 and all(r["status"] == "ok" for r in records), \
        [(r["backend"], r["model"], r["reason"]) for r in records]
    assert {r["model"] for r in records} == {"seed_convnet-w%d-r%d" % (w, s)
                                             for w in (1, 2) for s in (28, 56)}
    assert records[0]["sweep"]["axes"]["width"] == [1, 2]
    from bench.scaling_report import fits
    found = fits(records)
    assert {k[1] for k in found} == {"numpy", "torch"}
    for f, pts in found.values():
        assert f["points"] == 4 and len(set(pts[0])) == 4
    report = (tmp_path / "report.md").read_text()
    assert "Where the time goes" in report and "overhead per step (ms)" in report
    # a backend fitted above the machine's measured GEMM peak: the report says the peak is a
    # lower bound, and whose GEMM set it
    from bench.document import Text
    from bench.report_plots import png
    from bench.scaling_report import section
    for r in records:
        r["machine"].update(matmul_peak_gflops=1e-3, matmul_peak={"library": "lib X", "gflops": 1e-3})
    texts = [b.text for b in section(records, png).blocks if isinstance(b, Text)]
    assert any(t.startswith("Above 100% of peak (numpy, torch)") and "lib X" in t
               for t in texts), texts


def test_sweep_refuses_a_resolution_mnist_cannot_feed(tmp_path):
    out = convbench("sweep", "--backend", "numpy", "--resolution", "30",
                    "--results", str(tmp_path / "r.jsonl"))
    assert out.returncode == 2
    assert "multiple of 28" in out.stderr.strip().splitlines()[-1]
