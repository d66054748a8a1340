"""Validate records against the documented schema (bench/record.schema.json, jsonschema)."""
import json
import os

from bench.results import read_records

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "record.schema.json")


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
    """(number of valid records, list of problems) for a results file."""
    problems = []
    records = read_records(path, problems=problems)
    validator = _validator()
    valid = 0
    for record in records:
        found = record_problems(record, validator)
        if found:
            problems.append("record %s (%s/%s): %s" % (record.get("run_id"), record.get("backend"),
                                                      record.get("model"), "; ".join(found[:5])))
        else:
            valid += 1
    return valid, problems
