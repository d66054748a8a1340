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


def _first_group(document):
    """The first configuration group's section (after the summary and the track headlines)."""
    return [s for s in document.sections if s.anchor == "g0"][0]


def test_the_summary_comes_first_then_the_default_configuration(document):
    summary = document.sections[0]
    first = _first_group(document)
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

    first = [b for b in _first_group(document).blocks if isinstance(b, Table)][0].frame
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


def test_images_drawn_in_parallel_are_the_sequential_ones_and_a_rewrite_draws_none(records,
                                                                                  monkeypatch):
    from bench import plot_cache, report_plots

    drawn_here = []
    group_plots = report_plots.group_plots
    monkeypatch.setattr(report_plots, "group_plots",
                        lambda group: drawn_here.append(1) or group_plots(group))
    monkeypatch.setattr(plot_cache, "_usable_cores", lambda: 2)
    parallel = plot_cache.PlotCache()
    build_document(records, plots=parallel)
    assert drawn_here == [], "a cold report draws its images in the forked children"

    monkeypatch.setattr(plot_cache, "_usable_cores", lambda: 1)
    sequential = plot_cache.PlotCache()
    build_document(records, plots=sequential)
    assert drawn_here, "one core: drawn here, one by one"
    assert parallel.stored == sequential.stored and parallel.used == sequential.used
    assert sum(len(images) for images in parallel.stored.values()) >= 10

    def no_drawing(group):
        raise AssertionError("an image whose data did not change was drawn again")
    monkeypatch.setattr(report_plots, "group_plots", no_drawing)
    monkeypatch.setattr(plot_cache, "_usable_cores", lambda: 2)
    rewrite = plot_cache.PlotCache(stored=dict(parallel.stored))
    build_document(records, plots=rewrite)
    assert rewrite.used == parallel.used


def test_a_cpu_name_shared_by_different_vector_units_makes_two_machines():
    from bench.selection import machine_label

    def record(flags):
        return {"machine": {"hostname": "vm", "cpu_model": "AMD EPYC", "cores": 2,
                            "cpu_flags": flags}}
    avx2 = machine_label(record(["avx", "avx2", "fma", "sse4_2"]))
    avx512 = machine_label(record(["avx", "avx2", "avx512_bf16", "avx512f", "fma"]))
    assert avx2 == "vm (AMD EPYC, AVX2, 2 cores)"
    assert avx512 == "vm (AMD EPYC, AVX-512 + bf16, 2 cores)"
    assert machine_label(record([])) == "vm (AMD EPYC, 2 cores)"  # records without flags


def _twin(records, backend, scale, **config):
    """Copies of `backend`'s newest session, its steps times `scale` and its config updated by
    `config`: a made-up variant whose speed-up is known."""
    import copy
    from bench import jobs, metrics
    # a session of 5 processes (its timing-only ones tell it apart from seeds or a target run)
    newest = max((r for r in records if r["backend"] == backend and r.get("role") == "timing"),
                 key=lambda r: r["time"])
    session = [r for r in records
               if r["session_id"] == newest["session_id"] and r["backend"] == backend]
    train = [r for r in session if r.get("role") == "train"][0]
    # another configuration is other work: its own hash, which the timing processes share
    work = jobs.work_hash(train["spec_hash"], dict(train["config"], **config))
    out = []
    for r in session:
        r = copy.deepcopy(r)
        r["config"].update(config)
        r["work_hash"] = work
        r["timing"]["step_ns"] = [int(ns * scale) for ns in r["timing"]["step_ns"]]
        r["summary"] = metrics.summarize(r)
        out.append(r)
    return out


def test_tuned_and_bf16_rows_sit_beside_their_base_with_the_speed_up(records):
    from bench import variants_report

    mine = [r for r in records if r["backend"] not in ("torch-tuned",)
            and (r.get("config") or {}).get("precision", "full") == "full"]
    tuned = [dict(r, backend="torch-tuned") for r in _twin(mine, "torch", 0.5)]
    bf16 = _twin(mine, "torch", 1.0 / 3, precision="bf16")
    frame = variants_report.table(latest_rows(mine + tuned + bf16))
    got = dict(((k, a, b), (s, sig)) for k, a, b, s, sig in zip(
        frame["kind"], frame["A"], frame["B"], frame["speed-up A/B"], frame["significant"]))
    assert got[("tuned", "torch", "torch-tuned")] == ("2.00x", "yes, faster"), got
    assert got[("bf16", "torch", "torch bf16")] == ("3.00x", "yes, faster"), got
    # a tuned backend pairs with its own base only, a bf16 row with the same backend in float32
    assert ("tuned", "numpy", "torch-tuned") not in got and ("bf16", "numpy", "torch bf16") not in got
    document = build_document(mine + tuned + bf16)
    assert "tuned-and-bf16" in [s.anchor for s in document.sections]


def test_time_to_accuracy_counts_a_seed_that_never_reached_it_as_not_reached(records):
    import copy
    from bench import jobs, target_report

    records = [r for r in records if not r["config"].get("target_accuracy")]  # the made-up ones
    base = max((r for r in records if r["backend"] == "numpy" and r.get("role") == "train"
                and r["model"] == "seed_convnet" and not r.get("sweep")), key=lambda r: r["time"])

    def run(backend, seed, train_s, status="ok"):
        r = copy.deepcopy(base)
        r.update(backend=backend, session_id="s-" + backend, status=status,
                 reason=None if status == "ok" else "momentum with the 'cosine' schedule: ...")
        r["config"].update(seed=seed, target_accuracy=0.99, schedule="cosine", epochs=6)
        r["work_hash"] = jobs.work_hash(r["spec_hash"], r["config"])
        r["target"] = {"accuracy": 0.99, "status": "reached" if train_s else "not_reached",
                       "train_s": train_s, "steps": 900 if train_s else None,
                       "epoch": 1.92 if train_s else None, "evaluations": 8, "eval_s": 3.0}
        return r
    target = [run("numpy", 0, 60.0), run("numpy", 1, 80.0), run("numpy", 2, 70.0),
              run("torch", 0, 20.0), run("torch", 1, None), run("torch", 2, 30.0),
              run("keras", 0, None, status="unsupported")]
    (title, frame), = target_report.tables(records + target)
    assert title.startswith("seed_convnet to 99% on ") and "cosine schedule" in title
    rows = frame.set_index("backend")
    assert list(frame.backend) == ["numpy", "torch", "keras"]  # all seeds reached first
    assert rows.loc["numpy", "reached"] == "3 of 3" and rows.loc["torch", "reached"] == "2 of 3"
    assert rows.loc["numpy", "time to 99% s (median)"] == "70.0"
    assert rows.loc["numpy", "range s"] == "60.0-80.0"
    assert rows.loc["torch", "time to 99% s (median)"] == "25.0"  # the two that reached it
    assert rows.loc["keras", "reached"] == "0 of 1" and "unsupported: momentum" in rows.loc[
        "keras", "status"]
    assert "time-to-accuracy" in [s.anchor for s in build_document(records + target).sections]


def test_a_drawing_child_that_dies_leaves_its_images_to_the_parent(monkeypatch):
    """A child killed mid-drawing (the OOM killer) must neither hang the report nor lose images."""
    import signal
    from bench import plot_cache

    parent = os.getpid()

    def draw():
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"x.png": b"png"}
    monkeypatch.setattr(plot_cache, "_usable_cores", lambda: 2)
    cache = plot_cache.PlotCache()
    cache.prefetch([(["a"], draw), (["b"], draw)])
    assert cache.stored == {}
    assert cache.draw(["a"], draw) == {"x.png": b"png"}
