"""`python tests/lowest_pins.py OUT`: pip constraints pinning every base dependency of
pyproject.toml to its lower bound (`numpy>=1.24` -> `numpy==1.24`), for `tox -e lowest`.

Read from pyproject.toml itself, so the bounds are stated once and the env proves them."""
import os
import re
import sys
import tomllib

# tox runs this before convbench is installed, from tests/: bench.paths is not importable yet
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lowest_pins(path=os.path.join(REPO, "pyproject.toml")):
    with open(path, "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    pins = []
    for dep in deps:
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", dep)
        if not m:
            raise SystemExit("pyproject.toml: %r has no lower bound (name>=version)" % dep)
        pins.append("%s==%s" % (re.sub(r"\[.*\]", "", m.group(1)), m.group(2)))
    return pins


if __name__ == "__main__":
    with open(sys.argv[1], "w") as fh:
        fh.write("\n".join(lowest_pins()) + "\n")
