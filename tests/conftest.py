# the tests import their helpers (conformance.py) and the repo's packages without an install:
# the root conftest.py puts both on sys.path


def pytest_addoption(parser):
    parser.addoption("--backends", default="",
                     help="comma-separated backends the conformance suite runs (default: all registered)")


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        from backends import registry

        chosen = metafunc.config.getoption("--backends")
        names = [n.strip() for n in chosen.split(",") if n.strip()] or registry.names()
        for n in names:
            registry.get(n)  # an unknown name is an error, not an empty run
        metafunc.parametrize("backend_name", names)


import pytest  # noqa: E402


# --- the fault suite's figures: filled by tests/test_faults.py, printed after the run ----------

FAULT_LEDGER = pytest.StashKey()


class FaultLedger(object):
    """One row per injected fault, from what the test observed in the results file."""

    COLUMNS = ("fault injected", "records expected", "records found", "records lost",
               "corrupted files")

    def __init__(self):
        self.rows = []
        self.notes = []

    def note(self, text):
        self.notes.append(text)

    def add(self, fault, expected, found, corrupted):
        row = (fault, expected, found, max(0, expected - found), corrupted)
        self.rows.append(row)
        return row

    def table(self):
        rows = [self.COLUMNS] + [tuple(str(v) for v in r) for r in self.rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.COLUMNS))]
        fmt = lambda r: "  ".join(  # noqa: E731
            (v.ljust(w) if i == 0 else v.rjust(w)) for i, (v, w) in enumerate(zip(r, widths)))
        total = ("total", sum(r[1] for r in self.rows), sum(r[2] for r in self.rows),
                 sum(r[3] for r in self.rows), sum(r[4] for r in self.rows))
        lines = [fmt(rows[0]), "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows[1:]]
        lines += ["  ".join("-" * w for w in widths), fmt(tuple(str(v) for v in total))]
        return lines


@pytest.fixture(scope="session")
def baseline(tmp_path_factory):
    """One healthy numpy record (tests/faultkit.py): made once, shared by the fault suite's files."""
    from faultkit import baseline_file

    return baseline_file(tmp_path_factory.mktemp("baseline"))


@pytest.fixture(scope="session")
def fault_ledger(request):
    ledger = request.config.stash.setdefault(FAULT_LEDGER, FaultLedger())
    return ledger


# --- which backends' conformance ran: filled by tests/test_conformance.py --------------------

CONFORMANCE_LEDGER = pytest.StashKey()


class ConformanceLedger(object):
    """Per backend: ran, skipped (why) or failed (why); a failure outranks the rest."""

    def __init__(self):
        self.state = {}

    def _set(self, name, state, why=None):
        rank = {"skipped": 0, "ran": 1, "failed": 2}
        if name not in self.state or rank[state] >= rank[self.state[name][0]]:
            self.state[name] = (state, why)

    def ran(self, name):
        self._set(name, "ran")

    def skipped(self, name, why):
        self._set(name, "skipped", why)

    def failed(self, name, why):
        self._set(name, "failed", why)

    def lines(self):
        by = {}
        for name in sorted(self.state):
            by.setdefault(self.state[name][0], []).append(name)
        head = "conformance ran for %d of %d backend(s): %s" % (
            len(by.get("ran", [])), len(self.state), ", ".join(by.get("ran", [])) or "none")
        if by.get("failed"):
            head += "; FAILED: %s" % ", ".join(by["failed"])
        if by.get("skipped"):
            head += "; skipped %d: %s" % (len(by["skipped"]), ", ".join(by["skipped"]))
        lines = [head]
        lines += ["  %s skipped: %s" % (n, self.state[n][1]) for n in by.get("skipped", [])]
        lines += ["  %s failed: %s" % (n, self.state[n][1]) for n in by.get("failed", [])]
        return lines


@pytest.fixture(scope="session")
def conformance_ledger(request):
    return request.config.stash.setdefault(CONFORMANCE_LEDGER, ConformanceLedger())


def pytest_terminal_summary(terminalreporter, config):
    conf = config.stash.get(CONFORMANCE_LEDGER, None)
    if conf is not None and conf.state:
        terminalreporter.write_sep("=", "conformance: which backends were checked against the "
                                        "NumPy reference")
        for line in conf.lines():
            terminalreporter.write_line(line)
    ledger = config.stash.get(FAULT_LEDGER, None)
    if ledger is None or not (ledger.rows or ledger.notes):
        return
    terminalreporter.write_sep("=", "fault suite: records under injected faults")
    for line in ledger.table():
        terminalreporter.write_line(line)
    for note in ledger.notes:
        terminalreporter.write_line(note)
