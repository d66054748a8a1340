"""A yes/no check of a record against bench/record.schema.json, about fifty times faster than
jsonschema, for readers that validate a thousand records before using them.

The schema is compiled into nested closures for the keywords it uses (the JSON Schema 2020-12
meaning of each); a schema with any other keyword is not compiled (`compile_schema` returns None)
and callers fall back to jsonschema. It only says valid or not: when a record is not,
bench/schema.py asks jsonschema why, so every message comes from the reference implementation.
tests/test_results.py holds the two to the same verdict on hundreds of broken records.
"""
import re

IGNORED = {"$schema", "title", "description"}


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    # 1.0 is an integer to JSON Schema
    "integer": lambda v: _is_number(v) and (isinstance(v, int) or float(v).is_integer()),
}


def _equal(a, b):
    """JSON equality: a bool is never a number, 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_number(a) and _is_number(b):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


class Unsupported(Exception):
    pass


def _compile(schema):
    if schema is True or schema == {}:
        return lambda v: True
    if not isinstance(schema, dict):
        raise Unsupported(repr(schema))
    checks = []
    for key, arg in schema.items():
        if key in IGNORED or key in ("then", "else"):
            continue
        if key == "type":
            tests = [TYPES[t] for t in ([arg] if isinstance(arg, str) else arg)]
            checks.append(tests[0] if len(tests) == 1 else (
                lambda v, tests=tests: any(t(v) for t in tests)))
        elif key == "enum":
            checks.append(lambda v, arg=arg: any(_equal(v, e) for e in arg))
        elif key == "const":
            checks.append(lambda v, arg=arg: _equal(v, arg))
        elif key == "required":
            checks.append(lambda v, arg=arg: not isinstance(v, dict) or all(k in v for k in arg))
        elif key == "properties":
            checks.append(_properties([(k, _compile(s)) for k, s in arg.items()]))
        elif key == "additionalProperties":
            known, sub = set(schema.get("properties", ())), _compile(arg)
            checks.append(lambda v, known=known, sub=sub: not isinstance(v, dict) or all(
                sub(x) for k, x in v.items() if k not in known))
        elif key == "items":
            sub = _compile(arg)
            checks.append(lambda v, sub=sub: not isinstance(v, list) or all(sub(x) for x in v))
        elif key == "minItems":
            checks.append(lambda v, arg=arg: not isinstance(v, list) or len(v) >= arg)
        elif key == "minLength":
            checks.append(lambda v, arg=arg: not isinstance(v, str) or len(v) >= arg)
        elif key == "pattern":
            rx = re.compile(arg)
            checks.append(lambda v, rx=rx: not isinstance(v, str) or rx.search(v) is not None)
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            test = {"minimum": lambda v, a: v >= a, "maximum": lambda v, a: v <= a,
                    "exclusiveMinimum": lambda v, a: v > a,
                    "exclusiveMaximum": lambda v, a: v < a}[key]
            checks.append(lambda v, arg=arg, test=test: not _is_number(v) or test(v, arg))
        elif key == "allOf":
            subs = [_compile(s) for s in arg]
            checks.append(lambda v, subs=subs: all(s(v) for s in subs))
        elif key == "if":
            cond = _compile(arg)
            then = _compile(schema.get("then", {}))
            other = _compile(schema.get("else", {}))
            checks.append(lambda v, c=cond, t=then, o=other: t(v) if c(v) else o(v))
        else:
            raise Unsupported(key)
    return _all(checks)


# plain loops, not all(generator): a record runs these closures a few hundred times


def _all(checks):
    if len(checks) == 1:
        return checks[0]

    def valid(v):
        for check in checks:
            if not check(v):
                return False
        return True
    return valid


def _properties(props):
    def valid(v):
        if isinstance(v, dict):
            for key, check in props:
                if key in v and not check(v[key]):
                    return False
        return True
    return valid


def compile_schema(schema):
    """valid(instance) -> bool for `schema`, or None when it uses a keyword not compiled here."""
    try:
        return _compile(schema)
    except (Unsupported, KeyError):
        return None
