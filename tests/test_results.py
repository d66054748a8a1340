"""Append-only results: whole lines under concurrency, a truncated last line skipped with a warning."""
import json
import multiprocessing
import os

import pytest

from bench.paths import REPO
from bench.results import append_record, read_records


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
