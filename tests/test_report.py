"""The report's reading aids on the kept reference records: order, verdict, columns, palette,
CSV. (tests/test_report_browser.py checks the page as Chromium shows it.)"""
import csv
import os

import pytest

from bench import palette, verdict
from bench.compare import judge
from bench.paths import REPO
from bench.report import build_document
from bench.results import read_records
from bench.selection import latest_rows

REFERENCE = os.path.join(REPO, "results", "reference", "runs.jsonl")


@pytest.fixture(scope="module")
def records():
    return read_records(REFERENCE)


@pytest.fixture(scope="module")
def document(records):
    return build_document(records)


def test_the_summary_comes_first_then_the_default_configuration(document):
    summary, first = document.sections[:2]
    assert summary.anchor == "summary"
    assert first.title.startswith("seed_convnet on cpu: batch 128, momentum")
    assert "step mode" in first.title
    verdicts = [b.text for b in summary.blocks if getattr(b, "css", None) == "verdict"]
    assert verdicts[0].startswith("[seed_convnet, batch 128, momentum, float32, step mode")
    assert "Fastest: **" in verdicts[0] and "Test accuracy" in verdicts[0]


def test_tiers_say_what_compare_would_say(records):
    """Within a tier compare (tier's fastest as A) marks nothing '+'; each tier's fastest is
    marked '+' against the tier before."""
    rows = latest_rows(records)
    key = rows[(rows.model == "seed_convnet") & (rows["mode"] == "step") & (rows.n_proc >= 5)]
    assert key.backend.nunique() >= 10
    tiers = verdict.tiers(key[key.status.str.startswith("ok")])
    assert len(tiers) >= 2
    for before, tier in zip([None] + tiers, tiers):
        leader = tier[0][0]
        for row, ratio, p in tier[1:]:
            assert judge(leader.proc_medians, row.proc_medians)[2] != "+", row.backend
        if before:
            assert judge(before[0][0].proc_medians, leader.proc_medians)[2] == "+", leader.backend


def test_a_group_under_four_processes_makes_no_verdict(records):
    rows = latest_rows(records)
    one = rows[(rows.n_proc == 1) & (rows.model == "seed_convnet") & (rows["mode"] == "step")]
    text = verdict.group_verdict(one[one.machine == one.machine.iloc[0]])
    assert "no difference is tested, the ranking is not a verdict" in text


def test_tables_leave_out_empty_columns_and_the_reason_when_all_are_ok(document):
    from bench.document import Table

    first = [b for b in document.sections[1].blocks if isinstance(b, Table)][0].frame
    assert "reason" not in first.columns and "time to 99% s" not in first.columns
    assert {"backend", "median step ms", "95% CI ms", "train mem MB"} <= set(first.columns)


def test_every_backend_keeps_its_colour():
    names = ["numpy", "torch", "tf", "tf-xla", "tf-layers", "tf-estimator", "keras", "keras-torch",
             "keras-jax", "jax", "cntk"]
    colours = [palette.colour(n) for n in names]
    assert len(set(colours)) == len(names)
    assert palette.style("tf@tf_legacy").colour == palette.colour("tf")
    assert palette.style("tf@tf_legacy").hollow
    assert palette.style("my-new-backend") == palette.style("my-new-backend")  # stable
    assert palette.colour("my-new-backend") not in colours


def test_csv_has_the_reports_rows(records, tmp_path):
    from bench.export import write_csv

    path = str(tmp_path / "rows.csv")
    n = write_csv(records, path)
    rows = list(csv.DictReader(open(path)))
    assert n == len(rows) == len(latest_rows(records))
    numpy = [r for r in rows if r["backend"] == "numpy" and r["processes"] == "5"][0]
    assert float(numpy["median_step_ms"]) > 0 and float(numpy["ci95_low_ms"]) <= float(
        numpy["median_step_ms"]) <= float(numpy["ci95_high_ms"])
