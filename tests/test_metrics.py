"""bench/metrics.py on records whose numbers are known: what the measured throughput says and why
it falls short of the per-step figure."""
import pytest

from bench import metrics


def _record(step_ms, train_s, batch=100, warmup=1, other_cores=0.0):
    return {"config": {"batch_size": batch}, "load": {"other_cores": other_cores},
            "timing": {"step_ns": [int(ms * 1e6) for ms in step_ms], "train_s": train_s,
                       "warmup_steps": warmup}}


def test_measured_throughput_is_images_over_the_training_wall_time():
    record = _record([10.0] * 10, train_s=0.2)
    assert metrics.measured_images_per_s(record) == pytest.approx(10 * 100 / 0.2)


def test_agreeing_figures_need_no_note():
    record = _record([10.0] * 20, train_s=0.21)  # 10 ms steps, 10 ms between them in all
    per_step = 100 / 0.010
    assert metrics.throughput_note(record, per_step, metrics.measured_images_per_s(record)) is None


def test_a_shortfall_is_explained_by_where_the_time_went():
    # a 500 ms first step, 8 median steps of 10 ms, one 410 ms stall (990 ms), 10 ms between: 1 s
    steps = [500.0, 10.0] + [10.0] * 7 + [410.0]
    record = _record(steps, train_s=1.0, other_cores=1.5)
    per_step = 100 / 0.010
    measured = metrics.measured_images_per_s(record)
    note = metrics.throughput_note(record, per_step, measured)
    assert note.startswith("measured 1000 images/s is 10% of batch / median step")
    # first step and warm-up: 510 ms less two median steps; the stall: 400 ms past the median
    assert "first step and warm-up 49%" in note and "steps slower than the median 40%" in note
    assert "between steps (batches, callbacks) 1%" in note
    assert "other processes used 1.50 cores" in note


def test_epoch_modes_figure_is_the_loop_not_the_calls_setup():
    """A 1.7 s one-off before the first step (Keras fit's setup) must not spread over 50 steps."""
    steps = [300.0] + [60.0] * 55  # the first step, 5 warm-up and 50 steady steps of 60 ms
    record = _record(steps, train_s=sum(steps) / 1e3 + 1.7 + 0.05 * 55 / 1e3, warmup=5)
    record["config"]["mode"] = "epoch"
    record["timing"]["loop_s"] = sum(steps) / 1e3 + 0.05 * 55 / 1e3  # 50 us between steps
    assert metrics.epoch_step_ms(record) == pytest.approx(60.05, abs=0.01)
    del record["timing"]["loop_s"]  # an older record: the whole training time
    assert metrics.epoch_step_ms(record) == pytest.approx(60.05 + 1700 / 50, abs=0.01)
