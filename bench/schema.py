"""Validate records against the documented schema (bench/record.schema.json, jsonschema).

Every reader validates every record before using it (bench/results.read_records), so validation
must be cheap: jsonschema walks a list item by item (~20 us each), and a record holds a thousand
step times and losses. Those two arrays are checked here in plain Python, by the same rules the
schema states, and jsonschema sees them cut to their first item.
"""
import json

from bench.paths import SCHEMA_PATH
from bench.results import numbered_records

_VALIDATOR = []


def _validator():
    if not _VALIDATOR:
        import jsonschema

        with open(SCHEMA_PATH) as fh:
            schema = json.load(fh)
        _VALIDATOR.append(jsonschema.Draft202012Validator(schema))
    return _VALIDATOR[0]


def _is_number(v):
    return type(v) in (int, float)  # bool is not a number to the schema


def _hot_arrays(record):
    """(problems of step_ns and step_loss, the record with both cut to one item)."""
    problems = []
    timing = record.get("timing")
    if isinstance(timing, dict) and isinstance(timing.get("step_ns"), list):
        steps = timing["step_ns"]
        if not all(type(v) is int and v >= 0 for v in steps):
            problems.append("timing/step_ns: every item must be an integer >= 0")
        record = dict(record, timing=dict(timing, step_ns=steps[:1]))
    losses = record.get("step_loss")
    if isinstance(losses, list):
        if not all(v is None or _is_number(v) for v in losses):
            problems.append("step_loss: every item must be a number or null")
        record = dict(record, step_loss=losses[:1])
    return problems, record


def record_problems(record, validator=None):
    """Human-readable problems of one record ([] when it is valid)."""
    validator = validator or _validator()
    problems, light = _hot_arrays(record) if isinstance(record, dict) else ([], record)
    return problems + [
        "%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(record)", e.message[:300])
        for e in sorted(validator.iter_errors(light), key=lambda e: [str(p) for p in e.absolute_path])]


def validate_file(path):
    """(number of valid records, list of problems, each naming its line) for a results file."""
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
