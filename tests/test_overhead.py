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
