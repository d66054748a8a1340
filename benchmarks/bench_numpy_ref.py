"""pytest-benchmark timings of the NumPy reference on seed_convnet, batch 128, float32.

A plain `pytest` runs each of these once, untimed, as a smoke test (benchmarks/conftest.py);
`pytest --benchmark-only` times them with the rest. Run them alone:

    .venv/bin/python -m pytest benchmarks/bench_numpy_ref.py --benchmark-columns=min,median,iqr

- test_train_step: one full optimizer step (forward, loss, backward, momentum update);
- test_layer_forward_backward[...]: each layer of seed_convnet (conv1, pool1, conv2, pool2, dense1)
  on its real input, as the adapter built it (fused relu, cropping), forward then backward;
- test_torch_train_step: the PyTorch adapter's step on the same batch, for the ratio (skipped
  without torch). The project's target: numpy <= 2x torch on this step.

The machine this runs on is usually shared: compare minimums or medians taken in the same run.
"""
import numpy as np
import pytest

from backends.base import TrainConfig
from backends.numpy_ref import NumpyReference
from models import init_weights, load_spec

BATCH = 128
LAYERS = ("conv1", "pool1", "conv2", "pool2", "dense1")
CONFIG = TrainConfig(threads=2, dtype="float32")


@pytest.fixture(scope="module")
def setup():
    spec = load_spec("seed_convnet")
    weights = init_weights(spec, 0)
    rng = np.random.RandomState(1)
    x = rng.rand(BATCH, *spec.input_shape).astype("float32")
    y = rng.randint(0, spec.num_classes, BATCH)
    return spec, weights, x, y


def _adapter(spec, weights):
    a = NumpyReference(spec, CONFIG)
    a.build()
    a.set_weights(weights)
    return a


@pytest.mark.benchmark(group="seed_convnet train step, batch 128")
def test_train_step(benchmark, setup):
    spec, weights, x, y = setup
    a = _adapter(spec, weights)
    for _ in range(3):  # warm: scratch buffers allocated, pages touched
        a.train_step(x, y)
    loss = benchmark(a.train_step, x, y)
    assert np.isfinite(loss)


@pytest.mark.benchmark(group="seed_convnet train step, batch 128")
def test_torch_train_step(benchmark, setup):
    pytest.importorskip("torch")
    from backends.torch_backend import TorchAdapter

    spec, weights, x, y = setup
    a = TorchAdapter(spec, CONFIG)
    a.build()
    a.set_weights(weights)
    for _ in range(3):
        a.train_step(x, y)
    loss = benchmark(a.train_step, x, y)
    assert np.isfinite(loss)


@pytest.mark.benchmark(group="seed_convnet layers, forward + backward, batch 128")
@pytest.mark.parametrize("name", LAYERS)
def test_layer_forward_backward(benchmark, setup, name):
    spec, weights, x, y = setup
    a = _adapter(spec, weights)
    index = [layer.name for layer in spec.layers].index(name)
    # the layer's real input: the forward pass of the layers below it
    h = a._to_internal(x)
    for layer in a.layers[:index]:
        h = np.array(layer.forward(h, a.params, True))  # a copy: later layers reuse their buffers
    layer = a.layers[index]
    out = layer.forward(h, a.params, True)
    dy = np.random.RandomState(2).standard_normal(out.shape).astype("float32")
    grads = {}

    def step():
        layer.forward(h, a.params, True)
        return layer.backward(dy, grads)

    for _ in range(3):
        step()
    benchmark(step)
    assert set(grads) == set(layer.names)
