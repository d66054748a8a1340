"""Validate records against the documented schema (bench/record.schema.json, jsonschema).

Every reader validates every record before using it (bench/results.read_records), so validation
must be cheap: jsonschema spends ~20 us on every value it descends into. So the two long arrays
(step times, losses) are checked here in plain Python, by the same rules the schema states, and
jsonschema sees them cut to their first item; and the blocks that records of one session share
(machine, environment, config, spec facts) are validated once per distinct value, then looked up.
Before any of that, bench/schema_fast.py says yes or no in a fraction of the time; only a record
it calls invalid goes to jsonschema, for the messages.
"""
import json

from bench.paths import SCHEMA_PATH

#: top-level blocks shared by many records: validated once per distinct value
SHARED = ("machine", "environment", "config", "spec_facts")
_VALIDATORS = {}
_SHARED_CACHE = {}
_CACHE_LIMIT = 20000


def _validators():
    """{None: the record's validator with SHARED left to their own, name: that block's,
    "fast": schema_fast's yes/no check of a whole record (None if it cannot compile it)}."""
    if not _VALIDATORS:
        import jsonschema

        from bench.schema_fast import compile_schema

        with open(SCHEMA_PATH) as fh:
            schema = json.load(fh)
        _VALIDATORS["fast"] = compile_schema(schema)
        light = dict(schema, properties=dict(schema["properties"]))
        for name in SHARED:
            _VALIDATORS[name] = jsonschema.Draft202012Validator(schema["properties"][name])
            light["properties"][name] = {}
        _VALIDATORS[None] = jsonschema.Draft202012Validator(light)
    return _VALIDATORS


def _validator():
    return _validators()[None]


def _errors(validator, instance, prefix=()):
    return [("/".join(str(p) for p in prefix + tuple(e.absolute_path)) or "(record)", e.message[:300])
            for e in validator.iter_errors(instance)]


def _shared_errors(record):
    found = []
    for name in SHARED:
        if name not in record:
            continue  # "required" says so
        key = (name, json.dumps(record[name], sort_keys=True))
        if key not in _SHARED_CACHE:
            if len(_SHARED_CACHE) > _CACHE_LIMIT:
                _SHARED_CACHE.clear()
            _SHARED_CACHE[key] = _errors(_validators()[name], record[name], (name,))
        found += _SHARED_CACHE[key]
    return found


def _hot_arrays(record):
    """(problems of step_ns and step_loss, the record with both cut to one item)."""
    problems = []
    timing = record.get("timing")
    if isinstance(timing, dict) and isinstance(timing.get("step_ns"), list):
        steps = timing["step_ns"]
        if not (set(map(type, steps)) <= {int} and (not steps or min(steps) >= 0)):  # C speed
            problems.append("timing/step_ns: every item must be an integer >= 0")
        record = dict(record, timing=dict(timing, step_ns=steps[:1]))
    losses = record.get("step_loss")
    if isinstance(losses, list):
        if not set(map(type, losses)) <= {int, float, type(None)}:  # a bool is not a number
            problems.append("step_loss: every item must be a number or null")
        record = dict(record, step_loss=losses[:1])
    return problems, record


def record_problems(record, validator=None):
    """Human-readable problems of one record ([] when it is valid)."""
    validator = validator or _validator()
    if not isinstance(record, dict):
        return ["%s: %s" % e for e in _errors(validator, record)]
    problems, light = _hot_arrays(record)
    fast = _validators()["fast"]
    if not problems and fast is not None and fast(light):
        return []
    found = sorted(_errors(validator, light) + _shared_errors(record))
    return problems + ["%s: %s" % e for e in found]
