"""Where the time goes: the same architecture at several channel widths and input resolutions
(`convbench sweep --width 1,2,4,8 --resolution 28,56,112`), and per backend a fit of

    step time = overhead + FLOPs per step / throughput

by non-negative least squares over its cells. `overhead` is what a step costs however small the
model (dispatch, graph launch, the optimizer's per-tensor work, allocation); `throughput` is the
rate it approaches on large models. Where FLOPs / throughput = overhead (FLOPs = overhead x
throughput) compute starts to dominate; where two backends' lines cross, their ranking flips.

Parent side only (NumPy; SciPy inside fit()).
"""
from models.spec import spec_from_dict

WIDTHS = (1, 2, 4, 8)
RESOLUTIONS = (28, 56, 112)
MNIST_SIZE = 28


def derive(spec, width, resolution):
    """`spec` with every conv's filters and every hidden dense layer's units times `width`, and an
    input of resolution x resolution (a multiple of 28: MNIST nearest-upsampled, bench/data.py).
    The logits layer keeps num_classes units. Named <name>-w<width>-r<resolution>."""
    if width < 1 or resolution < MNIST_SIZE or resolution % MNIST_SIZE:
        raise ValueError("scaling: width must be >= 1 and resolution a multiple of %d, got width "
                         "%r, resolution %r" % (MNIST_SIZE, width, resolution))
    if spec.input_shape[1:] != (MNIST_SIZE, MNIST_SIZE):
        raise ValueError("scaling: %s takes %s inputs, not MNIST's 28 x 28"
                         % (spec.name, "x".join(map(str, spec.input_shape))))
    data = spec.to_dict()
    dense = [i for i, layer in enumerate(data["layers"]) if layer["kind"] == "dense"]
    for i, layer in enumerate(data["layers"]):
        if layer["kind"] == "conv2d":
            layer["filters"] = layer["filters"] * width
        elif layer["kind"] == "dense" and i != dense[-1]:
            layer["units"] = layer["units"] * width
    data["input_shape"] = [spec.input_shape[0], resolution, resolution]
    data["name"] = "%s-w%d-r%d" % (spec.name, width, resolution)
    data["description"] = "%s at width x%d, %dx%d input" % (spec.name, width, resolution,
                                                             resolution)
    return spec_from_dict(data, where=data["name"])


def fit(flops, step_s):
    """Non-negative least squares of step_s = overhead + flops / throughput.

    Returns {"overhead_ms", "gflops" (asymptotic GFLOP/s; None when the slope is 0), "r2",
    "residuals_pct" (per point, (measured - fitted) / fitted x 100), "points", "crossover_flops"
    (FLOPs per step where compute time equals the overhead; None without a slope)}."""
    import numpy as np
    from scipy.optimize import nnls

    f = np.asarray(flops, dtype=float)
    t = np.asarray(step_s, dtype=float)
    if len(f) < 2 or len(set(f.tolist())) < 2:
        raise ValueError("scaling fit: needs at least two different FLOP counts, got %d point(s)"
                         % len(f))
    # relative weighting: steps span orders of magnitude, and each cell's error is relative
    w = 1.0 / t
    (a, b), _ = nnls(np.stack([w, f * w], axis=1), t * w)
    pred = a + b * f
    ss_res = float(np.sum((t - pred) ** 2))
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return {"overhead_ms": a * 1e3, "gflops": (1.0 / b / 1e9) if b > 0 else None,
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
            "residuals_pct": ((t - pred) / pred * 100).tolist(), "points": len(f),
            "crossover_flops": (a / b) if b > 0 else None}


def crossings(fits):
    """[(backend a, backend b, FLOPs per step)] where two fitted lines cross at positive FLOPs:
    below it one is faster, above it the other. fits: {backend: fit()}."""
    names = sorted(fits)
    out = []
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            a1, a2 = fits[p]["overhead_ms"] / 1e3, fits[q]["overhead_ms"] / 1e3
            s1, s2 = _slope(fits[p]), _slope(fits[q])
            if s1 != s2:
                at = (a2 - a1) / (s1 - s2)
                if at > 0:
                    out.append((p, q, at))
    return sorted(out, key=lambda c: c[2])


def _slope(f):
    return 1.0 / (f["gflops"] * 1e9) if f["gflops"] else 0.0


def is_scaling_record(record):
    axes = ((record.get("sweep") or {}).get("axes") or {})
    return "width" in axes or "resolution" in axes


def points(records):
    """{(machine, backend, precision): ([flops per step], [median step s], [model])} from ok
    scaling-sweep records (one point per model and batch size: the median of its records)."""
    import numpy as np

    from bench.selection import machine_label

    cells = {}
    for r in records:
        s = r.get("summary") or {}
        flops = (r.get("spec_facts") or {}).get("flops_train")
        if (r.get("status") != "ok" or not is_scaling_record(r) or not flops
                or s.get("median_step_ms") is None):
            continue
        c = r.get("config") or {}
        key = (machine_label(r), r.get("backend"), c.get("precision", "full"))
        cell = (r.get("model"), c.get("batch_size"))
        cells.setdefault(key, {}).setdefault(cell, []).append(s["median_step_ms"] / 1e3)
    out = {}
    for key, by_cell in cells.items():
        rows = sorted((flops_of(records, m, b), float(np.median(v)), m)
                      for (m, b), v in by_cell.items())
        out[key] = ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return out


def flops_of(records, model, batch):
    for r in records:
        if r.get("model") == model and (r.get("spec_facts") or {}).get("flops_train"):
            return r["spec_facts"]["flops_train"] * batch
    return None
