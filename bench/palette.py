"""One colour and one marker per backend, the same in every plot of every page.

The registered backends have fixed entries, in registry order of their frameworks (related
backends in related hues: the TensorFlow family in blues and purples, the Keras family in greens,
PyTorch in orange, JAX in reds). A backend the table does not know (a new adapter, `NAME@ENV`)
gets a stable entry from the spare colours, chosen by a hash of its name, so it keeps its colour
from run to run; a control `NAME@ENV` takes its base's colour with a hollow marker. The report
writes the palette it used into the page (docs/report.md).
"""
import hashlib
from typing import NamedTuple


class Style(NamedTuple):
    colour: str
    marker: str
    hollow: bool = False  # a control (NAME@ENV): its base's colour, marker drawn unfilled

    def plot_kwargs(self):
        """Keyword arguments for matplotlib's plot()."""
        kw = {"color": self.colour, "marker": self.marker}
        if self.hollow:
            kw["markerfacecolor"] = "white"
        return kw


#: fixed entries (colour-blind-aware hues from the Tableau 20 and Okabe-Ito sets)
FIXED = {
    "numpy": Style("#000000", "o"),
    "torch": Style("#e8710a", "s"),
    "torch-tuned": Style("#ffbb78", "s"),
    "tf": Style("#1f77b4", "^"),
    "tf-xla": Style("#6baed6", "v"),
    "tf-layers": Style("#393b79", "<"),
    "tf-estimator": Style("#9467bd", ">"),
    "keras": Style("#2ca02c", "D"),
    "keras-xla": Style("#98df8a", "D"),
    "keras-torch": Style("#8c6d31", "P"),
    "keras-jax": Style("#17becf", "X"),
    "jax": Style("#d62728", "h"),
    "cntk": Style("#e377c2", "*"),
}

#: what a backend outside the table draws from
SPARE_COLOURS = ("#7f7f7f", "#bcbd22", "#ff9896", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
                 "#c5b0d5", "#aec7e8", "#637939", "#843c39", "#7b4173")
SPARE_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h", "*", "p")


def style(backend):
    """The backend's Style: its fixed entry, its base's (hollow) for `NAME@ENV`, else a stable
    entry from the spare colours and markers."""
    if backend in FIXED:
        return FIXED[backend]
    base, at, _ = backend.partition("@")
    if at and base in FIXED:
        return FIXED[base]._replace(hollow=True)
    digest = int(hashlib.sha256(backend.encode("utf-8")).hexdigest(), 16)
    return Style(SPARE_COLOURS[digest % len(SPARE_COLOURS)],
                 SPARE_MARKERS[(digest // len(SPARE_COLOURS)) % len(SPARE_MARKERS)])


def colour(backend):
    return style(backend).colour


def order(backends):
    """Backends in the palette's order (the fixed ones first, then the others by name)."""
    known = list(FIXED)
    return sorted(backends, key=lambda b: (known.index(b.partition("@")[0])
                                           if b.partition("@")[0] in known else len(known), b))
