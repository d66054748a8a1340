"""The harness's own cost per step (bench/overhead.py), measured with the null adapter on real
MNIST: present, and small next to any framework's step."""
from bench.overhead import NullAdapter, measure


def test_null_adapter_measures_the_loop_around_train_step():
    m = measure(batch_size=64, steps=100, repeats=1)
    assert m["steps"] == 100 and len(m["all_us"]) == 1
    # the loop costs something (slicing, conversion, clocks): a zero means nothing was measured
    assert m["cpu_per_step_us"] > 0 and m["per_step_us"] > 0
    # and far less than a step of any backend (>= 1 ms on seed_convnet): 20 ms of CPU per step
    # would mean work per step that grows with the data set (the whole set converted each step)
    assert m["cpu_per_step_us"] < 20000, m


def test_null_adapter_is_an_adapter():
    a = NullAdapter(None, None)
    a.build()
    assert a.train_step(None, None) == 0.0 and a.predict([0, 0]).shape == (2, 10)


def _reference():
    import os
    from bench.paths import REPO
    from bench.results import read_records
    return read_records(os.path.join(REPO, "results", "reference", "runs.jsonl"))


def test_a_kept_measurement_is_quoted_against_the_fastest_step_of_its_machine(tmp_path, capsys):
    import json
    from bench.report import build_report
    from bench.selection import latest_rows, machine_label

    records = _reference()
    newest = max(records, key=lambda r: r["time"])
    kept = {"cpu_per_step_us": 150.0, "per_step_us": 400.0, "all_us": [400.0, 410.0, 420.0],
            "steps": 400, "batch_size": 128, "machine": newest["machine"],
            "time": "2026-12-02T12:00:00+00:00"}
    (tmp_path / "overhead.json").write_text(json.dumps(kept))
    md = build_report(records, out_dir=str(tmp_path))[0]
    line = [l for l in md.splitlines() if l.startswith("**Harness overhead.**")]
    rows = latest_rows(records)
    same = rows[(rows.machine == machine_label(newest)) & (rows.batch_size == 128)]
    fastest = same.median_ms.min()
    assert len(line) == 1 and "150 us CPU per step at batch 128 (400 us wall" in line[0], line
    assert "%.1f%% of the fastest step here" % (100 * 0.4 / fastest) in line[0], line

    (tmp_path / "overhead.json").write_text('{"per_step_us": "fast"}')
    md = build_report(records, out_dir=str(tmp_path))[0]
    assert "Harness overhead" not in md
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a harness-overhead measurement" in err, err
