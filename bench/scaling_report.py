"""The report's "Where the time goes" section: the scaling fit (bench/scaling.py) per backend, a
log-log plot of step time against FLOPs per step with the machine's peak as a line, where compute
starts to dominate and where rankings cross. Present only when scaling-sweep records exist."""
import pandas as pd

from bench import scaling
from bench.document import Bullets, Image, Section, Table, Text


def _peak(records, machine):
    """(the machine's float32 GEMM peak, GFLOP/s, and which library's GEMM set it), from its newest
    record that has one; (None, '') without."""
    from bench.selection import machine_label

    for r in reversed(records):
        if machine_label(r) == machine:
            m = r.get("machine") or {}
            if m.get("matmul_peak_gflops"):
                return (float(m["matmul_peak_gflops"]),
                        (m.get("matmul_peak") or {}).get("library") or "no library named")
    return None, ""


def fits(records):
    """{(machine, backend, precision): (fit dict, (flops, step_s, models))}; cells whose backend
    has fewer than two distinct FLOP counts are left out."""
    out = {}
    for key, pts in sorted(scaling.points(records).items()):
        try:
            out[key] = (scaling.fit(pts[0], pts[1]), pts)
        except ValueError:
            continue
    return out


def _label(backend, precision):
    return backend + (" (bf16)" if precision != "full" else "")


def section(records, figure_png):
    """The Section, or None when no record comes from a scaling sweep. figure_png(fig) -> bytes."""
    found = fits(records)
    if not found:
        return None
    blocks = [Text("step time = overhead + FLOPs per step / throughput, fitted per backend by "
                   "non-negative least squares (relative residuals) over the cells of `convbench "
                   "sweep --width ... --resolution ...`; R^2 and the largest residual say how "
                   "well one line explains the cells.")]
    for index, machine in enumerate(sorted({k[0] for k in found})):
        mine = dict((k, v) for k, v in found.items() if k[0] == machine)
        peak, library = _peak(records, machine)
        rows = []
        for (_, backend, precision), (f, pts) in sorted(mine.items()):
            rows.append({
                "backend": _label(backend, precision), "cells": f["points"],
                "overhead per step (ms)": "%.3f" % f["overhead_ms"],
                "asymptotic GFLOP/s": "%.1f" % f["gflops"] if f["gflops"] else "",
                "% of peak": ("%.1f" % (100 * f["gflops"] / peak)) if f["gflops"] and peak else "",
                "R^2": "%.4f" % f["r2"],
                "largest residual %": "%+.1f" % max(f["residuals_pct"], key=abs),
                "compute dominates from (MFLOP/step)": ("%.1f" % (f["crossover_flops"] / 1e6)
                                                        if f["crossover_flops"] else "")})
        blocks.append(Text("%s (matmul peak %s GFLOP/s)" % (machine, "%.1f" % peak if peak else "?")))
        blocks.append(Table(pd.DataFrame(rows)))
        above = sorted(_label(k[1], k[2]) for k, (f, _) in mine.items()
                       if peak and f["gflops"] and f["gflops"] > peak)
        if above:
            blocks.append(Text(
                "Above 100%% of peak (%s): these frameworks' own kernels outrun the best float32 "
                "GEMM the suite measured on this machine (%s), so that peak is a lower bound "
                "here, not the CPU's limit; the machine section names each library's figure and "
                "its math-kernel settings." % (", ".join(above), "%s, %.1f GFLOP/s" % (library, peak))))
        by_label = dict((_label(k[1], k[2]), v[0]) for k, v in mine.items())
        cross = scaling.crossings(by_label)
        blocks.append(Bullets(["%s and %s swap places at %.1f MFLOP per step" % (a, b, at / 1e6)
                               for a, b, at in cross] or ["no two fitted lines cross"]))
        png = _plot(mine, peak, machine, figure_png)
        blocks.append(Image("scaling_%d.png" % index, png, "scaling fit"))
    return Section("Where the time goes: overhead against throughput", blocks)


def _plot(mine, peak, machine, figure_png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5))
    lo = min(min(p[0]) for _, p in mine.values())
    hi = max(max(p[0]) for _, p in mine.values())
    grid = np.logspace(np.log10(lo / 2), np.log10(hi * 2), 100)
    for (_, backend, precision), (f, pts) in sorted(mine.items()):
        line = ax.plot(pts[0], [t * 1e3 for t in pts[1]], "o", label=_label(backend, precision))[0]
        slope = 1.0 / (f["gflops"] * 1e9) if f["gflops"] else 0.0
        ax.plot(grid, (f["overhead_ms"] / 1e3 + grid * slope) * 1e3, "-", color=line.get_color(),
                alpha=0.6)
    if peak:
        ax.plot(grid, grid / (peak * 1e9) * 1e3, "k--", label="matmul peak %.0f GFLOP/s" % peak)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOPs per training step")
    ax.set_ylabel("median step, ms")
    ax.set_title("Step time against work per step (%s)" % machine)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return figure_png(fig)
