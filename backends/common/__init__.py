"""What every adapter shares, written once: the spec walker (walker.py), weight bindings
(weights.py), the canonical <-> channels-last layout (layout.py), the padding rule (padding.py),
the optimizer and activation tables' lookup (tables.py) and per-process setup (setup.py).

NumPy only, CPython 3.6-compatible: the CNTK worker imports it.
"""
