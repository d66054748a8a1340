"""What a test needs beyond `pip install -e '.[test]'` (a system package, a framework environment,
an extra), and whether its absence skips the test or fails it.

A missing piece skips with the fix in the reason, unless it is required: `CONVBENCH_REQUIRE=all`
(or a comma-separated list of pieces: backend names, `chromium`, `ray`) requires it, and so does
`CI=true` when CONVBENCH_REQUIRE is not set (`.ci/run` installs everything, so nothing may skip
there). `CONVBENCH_REQUIRE=none` requires nothing, even under CI.
"""
import os

import pytest

REQUIRE_VAR = "CONVBENCH_REQUIRE"
OLD_REQUIRE_VAR = "CONVBENCH_REQUIRE_BACKENDS"  # the name before chromium and ray joined it


def _required_names():
    raw = os.environ.get(REQUIRE_VAR, os.environ.get(OLD_REQUIRE_VAR))
    if raw is None:
        raw = "all" if os.environ.get("CI", "").strip().lower() == "true" else ""
    return {n.strip() for n in raw.split(",") if n.strip()}


def nothing_required():
    return "none" in _required_names()


def explicitly_required(piece):
    names = _required_names()
    return "none" not in names and ("all" in names or piece in names)


def missing(piece, text):
    """Skip the running test because `piece` is not here (`text` says why and names the fix), or
    fail it when the piece is required."""
    if explicitly_required(piece):
        pytest.fail("%s is required here (%s=%s) but %s" % (
            piece, REQUIRE_VAR, os.environ.get(REQUIRE_VAR) or "all, from CI=true", text),
            pytrace=False)
    pytest.skip("%s not available here: %s (set %s=%s to make this a failure)"
                % (piece, text, REQUIRE_VAR, piece))
