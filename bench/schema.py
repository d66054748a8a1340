"""Validate records against the documented schema (bench/record.schema.json, jsonschema)."""
import json

from bench.paths import SCHEMA_PATH
from bench.results import numbered_records


def _validator():
    import jsonschema

    with open(SCHEMA_PATH) as fh:
        schema = json.load(fh)
    return jsonschema.Draft202012Validator(schema)


def record_problems(record, validator=None):
    """Human-readable problems of one record ([] when it is valid)."""
    validator = validator or _validator()
    return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(record)", e.message)
            for e in sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))]


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
