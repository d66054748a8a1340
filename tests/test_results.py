"""Append-only results: whole lines under concurrency, a truncated last line skipped with a warning,
records of a schema version this code cannot read skipped with a warning and listed by `check`."""
import json
import multiprocessing
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import SCHEMA_VERSION
from bench.paths import REPO, SCHEMA_PATH
from bench.results import append_record, read_records
from bench.schema import SHARED


def _writer(path, tag, n):
    for i in range(n):
        append_record(path, {"tag": tag, "i": i, "pad": "x" * 5000})


def test_concurrent_appends_keep_whole_lines(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    procs = [multiprocessing.Process(target=_writer, args=(path, t, 50)) for t in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    records = read_records(path, whole=False)
    assert len(records) == 100
    assert sorted((r["tag"], r["i"]) for r in records) == sorted((t, i) for t in "ab" for i in range(50))


def test_truncated_last_line_is_skipped_and_next_append_starts_fresh(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    append_record(path, {"n": 1})
    with open(path, "a") as fh:
        fh.write('{"n": 2, "cut off')
    problems = []
    with pytest.warns(UserWarning, match="line 2"):
        assert [r["n"] for r in read_records(path, problems, whole=False)] == [1]
    assert len(problems) == 1
    append_record(path, {"n": 3})
    with pytest.warns(UserWarning):
        assert [r["n"] for r in read_records(path, whole=False)] == [1, 3]
    with open(path) as fh:
        assert json.loads(fh.read().splitlines()[-1]) == {"n": 3}


def test_a_json_object_that_is_not_a_record_is_skipped(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    with open(os.path.join(REPO, "results", "reference",
                           "runs.jsonl")) as fh:
        real = json.loads(fh.readline())
    append_record(path, {"schema_version": 1, "run_id": "x", "note": "not a record"})
    append_record(path, real)
    problems = []
    with pytest.warns(UserWarning, match="line 1: skipped.*without session_id, time"):
        assert [r["run_id"] for r in read_records(path, problems)] == [real["run_id"]]
    assert len(problems) == 1


def test_nan_is_refused_rather_than_written_as_invalid_json(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    with pytest.raises(ValueError):
        append_record(path, {"x": float("nan")})
    assert not os.path.exists(path) or read_records(path, whole=False) == []


def _reference_record():
    with open(os.path.join(REPO, "results", "reference", "runs.jsonl")) as fh:
        return json.loads(fh.readline())


def _file_with_versions(tmp_path):
    """A results file: a readable record, then records this code must not read (lines 2-5)."""
    path = str(tmp_path / "runs.jsonl")
    real = _reference_record()
    append_record(path, real)
    append_record(path, dict(real, schema_version=SCHEMA_VERSION + 1, run_id="newer"))
    no_version = dict(real, run_id="none")
    del no_version["schema_version"]
    append_record(path, no_version)
    append_record(path, dict(real, schema_version=str(SCHEMA_VERSION), run_id="text"))
    append_record(path, dict(real, schema_version=True, run_id="bool"))
    return path, real


def test_a_record_of_a_newer_or_unknown_schema_version_is_skipped_with_a_warning(tmp_path):
    path, real = _file_with_versions(tmp_path)
    problems = []
    with pytest.warns(UserWarning) as caught:
        assert [r["run_id"] for r in read_records(path, problems)] == [real["run_id"]]
    messages = [str(w.message) for w in caught]
    assert messages == problems and len(problems) == 4
    for line, message in zip((2, 3, 4, 5), messages):
        assert message.startswith("%s line %d: skipped" % (path, line)), message
        assert "upgrade convbench" in message, message
    assert "schema_version %d is newer than this convbench's %d" % (
        SCHEMA_VERSION + 1, SCHEMA_VERSION) in messages[0]
    assert "no schema_version" in messages[1]
    assert 'schema_version "%d" is not an integer' % SCHEMA_VERSION in messages[2]
    assert "schema_version true is not an integer" in messages[3]


def test_check_lists_a_record_of_a_newer_schema_version_as_a_problem(tmp_path):
    path, _ = _file_with_versions(tmp_path)
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "bench", "check", "--results", path], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "%s: 1 valid record(s), 4 problem(s)" % path, proc.stdout
    for line in (2, 3, 4, 5):
        assert any(l.startswith("  line %d: " % line) and "upgrade convbench" in l
                   for l in lines), proc.stdout
    assert "newer than this convbench's %d" % SCHEMA_VERSION in proc.stdout


# --- the fast schema check agrees with jsonschema ----------------------------------------------

def _reference_records():
    path = os.path.join(REPO, "results", "reference", "runs.jsonl")
    records = [json.loads(line) for line in open(path)]
    failed = [r for r in records if r["status"] != "ok"]
    return [r for r in records if r["status"] == "ok"][::10] + failed[:2]


def _verdicts(record):
    from bench.schema import _hot_arrays, _validators

    validators = _validators()
    hot, light = _hot_arrays(record)
    full = not hot and not list(validators[None].iter_errors(light)) and not any(
        list(validators[name].iter_errors(record[name])) for name in SHARED if name in record)
    return validators["fast"](light) and not hot, full


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.sampled_from([0.0, 1.0, -1.5, 1e308])
    | st.text(max_size=6) | st.sampled_from(["ok", "failed", "cpu", "float32", "step", "a" * 12]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


def _paths(value, prefix=()):
    """Every path into a record (dict keys and list indexes), the long arrays sampled."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i in sorted({0, len(value) - 1}) if value else []:
            yield from _paths(value[i], prefix + (i,))


def test_fast_schema_check_gives_jsonschemas_verdict():
    from bench.schema_fast import compile_schema
    from record_mutations import MUTATIONS, mutant

    records = _reference_records()
    assert compile_schema(json.load(open(SCHEMA_PATH))) is not None  # no fallback in practice
    checked = 0
    for record in records:
        assert _verdicts(record) == (True, True)
        for field, value in MUTATIONS:
            try:
                changed = mutant(record, field, value)
            except (KeyError, IndexError, TypeError):
                continue  # a failed record has no curve to mutate
            fast, full = _verdicts(changed)
            assert fast == full, (field, value, record["status"])
            checked += 1
    assert checked > 500

    paths = sorted(set(p for p in _paths(records[0]) if p), key=str)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(paths), JSON_VALUES)
    def random_field(path, value):
        fast, full = _verdicts(mutant(records[0], path, value))
        assert fast == full, (path, value)

    random_field()
