"""Results: append-only JSON Lines, one self-describing record per run, never edited in place.

Appends take an exclusive lock and write each record as one line in one write, so concurrent
`convbench run` processes interleave whole lines. A reader skips, with a warning instead of failing,
a line that is not valid JSON (a crash can truncate the last line), a record of a newer schema
version than this code reads (or with no integer schema_version), and a JSON object that lacks the
fields every record has (bench/record.schema.json's "required"; `convbench check` validates fully).
"""
import fcntl
import json
import os
import warnings

from bench import SCHEMA_VERSION
from bench.paths import REPO, SCHEMA_PATH

DEFAULT_RESULTS = os.path.join(REPO, "results", "runs.jsonl")


def append_record(path, record):
    """Append one record as one line, atomically with respect to other convbench processes."""
    line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # a previous writer killed mid-line leaves no newline: start ours on a fresh line
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _no_constant(name):
    raise ValueError("%s is not JSON (the writer never emits it)" % name)


def version_problem(record):
    """Why this code cannot read `record` by its schema_version; None when it can.

    Records only gain versions: one newer than SCHEMA_VERSION may mean anything, so it is skipped
    rather than misread."""
    fix = "fix: upgrade convbench"
    unknown = "a newer convbench's record, or not a record; " + fix
    if "schema_version" not in record:
        return "no schema_version: " + unknown
    version = record["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):  # True is an int to Python
        return "schema_version %s is not an integer: %s" % (json.dumps(version), unknown)
    if version > SCHEMA_VERSION:
        return "schema_version %d is newer than this convbench's %d; %s" % (
            version, SCHEMA_VERSION, fix)
    return None


def numbered_records(path, whole=True):
    """(line number, record or None, why it is not a record) for every non-blank line of a file.

    Strict JSON: NaN/Infinity, a non-object line or a line cut off by a crash is not a record, nor
    (whole=True) a record of a schema version this code cannot read."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw, parse_constant=_no_constant)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:  # UnicodeDecodeError included
                cut = "" if raw.endswith(b"\n") else ", cut off (no newline)"
                yield number, None, "%s%s" % (exc, cut)
                continue
            unreadable = version_problem(record) if whole else None
            if unreadable:
                yield number, None, unreadable
                continue
            yield number, record, None


_REQUIRED = []


def missing_fields(record):
    """The top-level fields every record has that this one lacks (none for a record)."""
    if not _REQUIRED:
        with open(SCHEMA_PATH) as fh:
            _REQUIRED.extend(json.load(fh)["required"])
    return [key for key in _REQUIRED if key not in record]


def read_records(path, problems=None, whole=True):
    """All valid records of a file; bad lines are skipped with a warning (and listed in problems).
    whole=False accepts any JSON object (tests of the line mechanics write small ones)."""
    records = []
    if not os.path.exists(path):
        return records
    for number, record, why in numbered_records(path, whole):
        missing = missing_fields(record) if whole and record is not None else None
        if missing:
            record, why = None, "a JSON object without " + ", ".join(missing)
        if record is None:
            msg = "%s line %d: skipped, not a valid record (%s)" % (path, number, why)
            warnings.warn(msg)
            if problems is not None:
                problems.append(msg)
            continue
        records.append(record)
    return records
