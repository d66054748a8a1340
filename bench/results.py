"""Results: append-only JSON Lines, one self-describing record per run, never edited in place.

Appends take an exclusive lock and write each record as one whole line (bench/safe_files.py), so
concurrent `convbench run` processes interleave whole lines; a record the file refuses (a full disk,
a file-size limit) is kept in a side file next to it, or printed (`keep_record`). A reader skips, with a warning instead of failing,
a line that is not valid JSON (a crash can truncate the last line), a record of a newer schema
version than this code reads (or with no integer schema_version), and a JSON object that lacks the
fields every record has (bench/record.schema.json's "required"; `convbench check` validates fully).
"""
import json
import os
import sys
import warnings

from bench import SCHEMA_VERSION, safe_files
from bench.paths import REPO, SCHEMA_PATH

DEFAULT_RESULTS = os.path.join(REPO, "results", "runs.jsonl")


def record_line(record):
    return (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()


def append_record(path, record):
    """Append one record as one whole line (bench/safe_files.py: locked, looped over short writes,
    fsynced, undone when it cannot finish); OSError when it did not land."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    safe_files.append_line(path, record_line(record))


def side_path(path):
    """Where a record that could not be appended to `path` is kept: a file next to it."""
    return path + ".unsaved.jsonl"


def keep_record(path, record, out=None):
    """Append `record` to `path`; when that fails, keep it in the side file next to it, and when
    that fails too, print its line on `out` (stdout). Returns None when it landed in `path`, else
    (where it went, why the results file refused it): a record is never silently lost."""
    try:
        append_record(path, record)
        return None
    except OSError as exc:
        why = exc.strerror or str(exc)
    side = side_path(path)
    try:
        if safe_files.not_regular(side):
            raise safe_files.UnsafeTarget("%s is not a regular file" % side)
        safe_files.append_line(side, record_line(record))
        return side, why
    except OSError:
        try:  # an empty side file it just created holds nothing: not left behind
            if os.path.isfile(side) and not os.path.islink(side) and os.path.getsize(side) == 0:
                os.unlink(side)
        except OSError:
            pass
        stream = out or sys.stdout
        stream.write(record_line(record).decode())
        stream.flush()
        return "stdout (printed as one JSON line)", why


def results_path_problem(path, report_dir=None):
    """Why records cannot be appended to `path` (None when they can), checked before any worker
    starts: a regular file or absent, in a writable directory, not one of the report's own files
    (the report would overwrite it)."""
    kind = safe_files.not_regular(path)
    if kind:
        return "--results %s is %s; fix: give a regular file (or a new name)" % (path, kind)
    parent = os.path.dirname(os.path.abspath(path))
    problem = safe_files.directory_problem(parent)
    if problem:
        return "--results %s: %s; fix: give a path in a writable directory" % (path, problem)
    if report_dir is not None:
        own = [os.path.join(os.path.abspath(report_dir), n) for n in ("report.md", "report.html")]
        files = os.path.join(os.path.abspath(report_dir), "report_files")
        real = os.path.abspath(path)
        if real in own or os.path.dirname(real) == files:
            return ("--results %s is one of the report's own files (the report would overwrite "
                    "it); fix: give another name, or --no-report" % path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "--results %s is not writable; fix: give a writable file" % path
    return None


def readable_problem(path):
    """Why `path` cannot be read as a results file (None when it can): missing, or not a regular
    file (a FIFO would block the reader forever; a directory is not a file)."""
    if not os.path.exists(path):
        return "no results file %s" % path
    kind = safe_files.not_regular(os.path.realpath(path))
    if kind:
        return "%s is %s, not a results file" % (path, kind)
    return None


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


#: a line longer than this, or nested deeper, is not a record (a record is ~10-200 KB, depth ~4):
#: the guards keep a hostile line from exhausting memory or the parser's recursion
MAX_LINE_BYTES = 64 * 2 ** 20
MAX_DEPTH = 32


_SCALARS = {int, float, str, bool, type(None)}


def _depth(value):
    """How deeply `value` nests (iteratively: a deep value must not exhaust the stack here). A
    list of plain numbers (the step times) is skipped at C speed."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        items = item.values() if isinstance(item, dict) else item
        if isinstance(item, list) and set(map(type, item)) <= _SCALARS:
            continue
        stack.extend((v, level + 1) for v in items if isinstance(v, (dict, list)))
    return deepest


def _lines(fh):
    """(number, bytes, too long) per line; an overlong line is skipped through, never held whole."""
    number = 0
    while True:
        raw = fh.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(2 ** 20)
            yield number, b"", True
            continue
        yield number, raw, False


def numbered_records(path, whole=True):
    """(line number, record or None, why it is not a record) for every non-blank line of a file.

    Strict JSON: NaN/Infinity, a non-object line, a line cut off by a crash, longer than
    MAX_LINE_BYTES or nested deeper than MAX_DEPTH is not a record, nor (whole=True) a record of a
    schema version this code cannot read."""
    with open(path, "rb") as fh:
        for number, raw, too_long in _lines(fh):
            if too_long:
                yield number, None, "longer than %d MB" % (MAX_LINE_BYTES // 2 ** 20)
                continue
            if not raw.strip():
                continue
            try:
                record = json.loads(raw, parse_constant=_no_constant)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                if _depth(record) > MAX_DEPTH:
                    raise ValueError("nested deeper than %d levels" % MAX_DEPTH)
            except RecursionError:
                yield number, None, "nested too deeply to parse"
                continue
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
    """All valid records of a file; a line that is not one (bad JSON, a newer schema, or a record
    that breaks bench/record.schema.json) is skipped with a warning naming it (and listed in
    problems). Every record returned has passed the schema, so readers may trust its types.
    whole=False accepts any JSON object (tests of the line mechanics write small ones)."""
    records = []
    if not os.path.exists(path):
        return records
    if readable_problem(path):
        raise OSError(readable_problem(path))
    if whole:
        from bench.schema import record_problems
    for number, record, why in numbered_records(path, whole):
        missing = missing_fields(record) if whole and record is not None else None
        if missing:
            record, why = None, "a JSON object without " + ", ".join(missing)
        elif whole and record is not None:
            found = record_problems(record)
            if found:
                record, why = None, "breaks the schema: " + "; ".join(found[:3])
        if record is None:
            msg = "%s line %d: skipped, not a valid record (%s)" % (path, number, why)
            warnings.warn(msg)
            if problems is not None:
                problems.append(msg)
            continue
        records.append(record)
    return records


def validate_file(path):
    """(number of valid records, list of problems, each naming its line) for a results file."""
    from bench.schema import _validator, record_problems  # schema depends on nothing here

    problems = []
    validator = _validator()
    valid = 0
    for number, record, why in numbered_records(path):
        if record is None:
            problems.append("line %d: not a valid record (%s)" % (number, why))
            continue
        found = record_problems(record, validator)
        if found:
            problems.append("line %d: record %s (%s/%s): %s" % (
                number, record.get("run_id"), record.get("backend"), record.get("model"),
                "; ".join(found[:5])))
        else:
            valid += 1
    return valid, problems
