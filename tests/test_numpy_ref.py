"""The NumPy reference is the suite's oracle; these tests prove it without any framework.

- forward: every layer kind and every model against a naive loop implementation written here in the
  canonical NCHW layout (independent of the reference's NHWC/im2col internals);
- backward: every parameter gradient against central finite differences in float64, per layer kind
  (with a parametrized layer below the one under test, so its input gradient is checked too) and
  per model in models/*.toml (same layers on a 15x15 input; seed_convnet also at 28x28);
- the max-pool tie rule, batchnorm running statistics, the optimizer formulas and dropout;
- scratch-buffer hygiene (arrays reused across steps) and float32 staying float32.

Nothing here imports torch (or any other framework): test_no_framework_import checks the module too.
"""
import copy
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import backends.numpy_ref as nr
from backends.base import TrainConfig
from bench.paths import REPO
from models import init_weights, list_models, load_spec, spec_from_dict
from models.spec import MODELS_DIR

F64 = TrainConfig(dtype="float64", threads=1)


# --- helpers ------------------------------------------------------------------------------------

def make_spec(layers, input_shape=(2, 9, 8), num_classes=3):
    """A small spec: `layers` then the final linear dense layer that yields the logits."""
    return spec_from_dict({
        "name": "t", "input_shape": list(input_shape), "num_classes": num_classes,
        "layers": list(layers) + [{"kind": "dense", "units": num_classes, "name": "logits"}]})


def random_params(spec, seed=0, dtype="float64"):
    """Canonical initial weights with nonzero biases/beta and gamma/running stats away from 1/0,
    so that a dropped term (bias, gamma, mean) changes the numbers."""
    rng = np.random.RandomState(seed + 100)
    params = init_weights(spec, seed, dtype)
    for name, value in params.items():
        field = name.rsplit(".", 1)[1]
        if field in ("bias", "beta", "running_mean"):
            value[...] = rng.normal(0.0, 0.2, value.shape)
        elif field in ("gamma", "running_var"):
            value[...] = rng.uniform(0.5, 1.5, value.shape)
    return params


def make_adapter(spec, params=None, config=F64, seed=0):
    a = nr.NumpyReference(spec, config)
    a.build()
    a.set_weights(random_params(spec, seed, config.dtype) if params is None else params)
    return a


def batch(spec, n=3, seed=1, dtype="float64"):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, *spec.input_shape).astype(dtype)
    y = rng.randint(0, spec.num_classes, n)
    return x, y


def _fix_dropout(adapter):
    """Re-seed every dropout layer so that each forward draws the same mask."""
    for layer in adapter.layers:
        if isinstance(layer, nr.Dropout):
            layer.rng = np.random.RandomState(1234)


def loss_at(adapter, x, y):
    _fix_dropout(adapter)
    logits = adapter.forward(x, train=True)
    return nr.softmax_cross_entropy(logits, y)[0]


def analytic(adapter, x, y):
    _fix_dropout(adapter)
    loss, grads = adapter.gradients(x, y)
    return loss, OrderedDict((k, np.array(v)) for k, v in grads.items())


def _rel(a, b):
    """Relative difference; below 1e-3 it is absolute/1e-3, so that gradients that are zero in exact
    arithmetic (a conv bias before batchnorm) compare against rounding noise (~1e-11 at h=1e-5)."""
    return abs(a - b) / max(abs(a), abs(b), 1e-3)


def _check_direction(loss_along, a, h, tol):
    """Compare the analytic directional derivative `a` with finite differences of s -> loss(s).

    Central differences first (error O(h^2), ~1e-10 here). The loss is only piecewise smooth
    (relu, max-pool switches): when a switch lies within h of the point, the central difference
    straddles it. Then both one-sided derivatives are estimated with Richardson extrapolation
    (2 D(h/2) - D(h), error O(h^2)); if they really differ (a demonstrated kink), the analytic
    value must equal one of them. Returns (numeric, relative error, kind).
    """
    lp, lm = loss_along(h), loss_along(-h)
    central = (lp - lm) / (2 * h)
    if _rel(a, central) < tol:
        return central, _rel(a, central), "central"
    l0, lp2, lm2 = loss_along(0.0), loss_along(h / 2), loss_along(-h / 2)
    right = 2 * (lp2 - l0) / (h / 2) - (lp - l0) / h
    left = 2 * (l0 - lm2) / (h / 2) - (l0 - lm) / h
    if _rel(right, left) > 100 * tol:
        side = right if _rel(a, right) < _rel(a, left) else left
        return side, _rel(a, side), "kink"
    return central, _rel(a, central), "central"


def fd_errors(adapter, x, y, grads=None, coords=6, h=1e-5, tol=1e-6, seed=0):
    """The analytic gradient against finite differences, for every trainable tensor.

    Per tensor: `coords` random coordinates, plus one random unit direction over the whole tensor
    (a directional derivative, so every coordinate takes part). Returns a list of
    (label, analytic, numeric, relative error, "central" | "kink").
    """
    if grads is None:
        _, grads = analytic(adapter, x, y)
    trainable = [k for k, v in adapter.spec.params().items() if v.trainable]
    assert list(grads) != [] and sorted(grads) == sorted(trainable)
    rng = np.random.RandomState(seed)
    out = []
    for name in trainable:
        p, g = adapter.params[name], grads[name]
        assert g.shape == p.shape and g.dtype == p.dtype, name
        base = p.copy()
        picks = rng.choice(p.size, min(coords, p.size), replace=False)
        d = rng.normal(size=p.shape)
        directions = [("%s[%d]" % (name, i), np.eye(1, p.size, i).reshape(p.shape)) for i in picks]
        directions.append(("%s<dir>" % name, d / np.linalg.norm(d)))
        for label, direction in directions:
            def loss_along(step):
                p[...] = base + step * direction  # in place: the adapter holds this very array
                return loss_at(adapter, x, y)
            a = float(np.sum(g * direction))
            num, err, kind = _check_direction(loss_along, a, h, tol)
            p[...] = base
            out.append((label, a, num, err, kind))
    return out


def assert_fd(adapter, x, y, tol=1e-6, **kw):
    errs = fd_errors(adapter, x, y, tol=tol, **kw)
    worst = max(errs, key=lambda e: e[3])
    assert worst[3] < tol, "worst: %s analytic %.10g numeric %.10g rel %.2e (%s)" % worst
    kinks = [e[0] for e in errs if e[4] == "kink"]
    # a kink within h of the point is rare with continuous data; many would mean a broken forward
    assert len(kinks) <= max(1, len(errs) // 10), kinks
    return errs


# --- an independent forward pass, canonical NCHW, written with loops ----------------------------

def _act(v, f):
    return np.maximum(v, 0) if f == "relu" else np.tanh(v) if f == "tanh" else v


def naive_forward(spec, params, x, train, masks=None):
    """Logits by the book, one output position at a time. masks: dropout name -> mask (or None)."""
    h = np.asarray(x, dtype=np.float64)
    for layer in spec.layers:
        if layer.kind == "conv2d":
            w = params[layer.name + ".weight"]
            (pt, pb), (pl, pr) = layer.padding
            hp = np.pad(h, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
            kh, kw = layer.kernel
            sh, sw = layer.stride
            oh = (hp.shape[2] - kh) // sh + 1
            ow = (hp.shape[3] - kw) // sw + 1
            out = np.zeros((h.shape[0], w.shape[0], oh, ow))
            for i in range(oh):
                for j in range(ow):
                    patch = hp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
            if layer.use_bias:
                out += params[layer.name + ".bias"][None, :, None, None]
            h = _act(out, layer.activation)
        elif layer.kind in ("maxpool2d", "avgpool2d"):
            reduce = np.max if layer.kind == "maxpool2d" else np.mean
            (ph, pw), (sh, sw) = layer.size, layer.stride
            oh = (h.shape[2] - ph) // sh + 1
            ow = (h.shape[3] - pw) // sw + 1
            out = np.empty(h.shape[:2] + (oh, ow))
            for i in range(oh):
                for j in range(ow):
                    out[:, :, i, j] = reduce(h[:, :, i * sh:i * sh + ph, j * sw:j * sw + pw], axis=(2, 3))
            h = out
        elif layer.kind == "flatten":
            h = h.reshape(h.shape[0], -1)  # NCHW: (C, H, W) order
        elif layer.kind == "dense":
            h = h.dot(params[layer.name + ".weight"])
            if layer.use_bias:
                h = h + params[layer.name + ".bias"]
            h = _act(h, layer.activation)
        elif layer.kind == "activation":
            h = _act(h, layer.function)
        elif layer.kind == "batchnorm":
            axes = (0, 2, 3) if h.ndim == 4 else (0,)
            shape = (1, -1, 1, 1) if h.ndim == 4 else (1, -1)
            if train:
                mean, var = h.mean(axis=axes), h.var(axis=axes)
            else:
                mean = params[layer.name + ".running_mean"]
                var = params[layer.name + ".running_var"]
            g, b = params[layer.name + ".gamma"], params[layer.name + ".beta"]
            h = ((h - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + layer.eps)
                 * g.reshape(shape) + b.reshape(shape))
        elif layer.kind == "dropout":
            if train and masks is not None and masks.get(layer.name) is not None:
                h = h * masks[layer.name]
        else:
            raise AssertionError(layer.kind)
    return h


def naive_loss(logits, y):
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


# --- layer specs: each with a parametrized layer below the layer under test ----------------------

PRE = {"kind": "conv2d", "name": "pre", "filters": 3, "kernel": 1}  # linear 1x1: checks input grads


def _conv(**kw):
    d = {"kind": "conv2d", "filters": 4, "kernel": 3}
    d.update(kw)
    return d


FLAT = {"kind": "flatten"}
LAYER_CASES = OrderedDict([
    ("conv_valid_stride", [PRE, _conv(kernel=[3, 2], stride=[2, 1], activation="tanh"), FLAT]),
    ("conv_valid_relu", [PRE, _conv(activation="relu"), FLAT]),
    ("conv_same_stride2", [PRE, _conv(padding="same", stride=2, activation="relu"), FLAT]),
    ("conv_same_even_kernel", [PRE, _conv(padding="same", kernel=[4, 2]), FLAT]),
    ("conv_explicit_nobias", [PRE, _conv(padding=[1, 2], use_bias=False, activation="tanh"), FLAT]),
    ("conv_stride3_uncovered", [PRE, _conv(kernel=2, stride=3), FLAT]),
    ("pool2_unfused_uncovered", [_conv(kernel=2), {"kind": "maxpool2d", "size": 2}, FLAT]),
    ("pool2_unfused_tanh", [_conv(kernel=1, activation="tanh"), {"kind": "maxpool2d", "size": 2}, FLAT]),
    ("pool2_fused", [_conv(kernel=1, activation="relu"), {"kind": "maxpool2d", "size": 2}, FLAT]),
    ("pool2_fused_covered", [_conv(kernel=[2, 1], activation="relu"), {"kind": "maxpool2d", "size": 2},
                             FLAT]),
    ("pool2_fused_nhwc", [PRE, _conv(kernel=[2, 1], activation="relu"),  # not window-major
                          {"kind": "maxpool2d", "size": 2}, FLAT]),
    ("pool3s2_fused", [_conv(kernel=1, activation="relu"),
                       {"kind": "maxpool2d", "size": 3, "stride": 2}, FLAT]),
    ("pool3s2_unfused", [_conv(kernel=1), {"kind": "maxpool2d", "size": 3, "stride": 2}, FLAT]),
    ("pool_rect", [_conv(kernel=1, activation="relu"), {"kind": "maxpool2d", "size": [3, 2],
                                                        "stride": [2, 3]}, FLAT]),
    ("pool_stride_gt_size", [_conv(kernel=[1, 2], padding=[0, 1]),  # 9x9: 3 windows, gaps
                             {"kind": "maxpool2d", "size": 2, "stride": 3}, FLAT]),
    ("pool_after_activation", [_conv(kernel=1), {"kind": "activation", "function": "relu"},
                               {"kind": "maxpool2d", "size": 2}, FLAT]),
    ("avgpool2", [PRE, _conv(kernel=1, activation="relu"), {"kind": "avgpool2d", "size": 2}, FLAT]),
    ("avgpool3s2_uncovered", [PRE, _conv(kernel=2), {"kind": "avgpool2d", "size": 3, "stride": 2},
                              FLAT]),
    ("avgpool_rect_first", [{"kind": "avgpool2d", "size": [2, 3], "stride": [3, 1]}, FLAT]),
    ("dense_relu", [PRE, FLAT, {"kind": "dense", "units": 5, "activation": "relu"}]),
    ("dense_tanh", [PRE, FLAT, {"kind": "dense", "units": 5, "activation": "tanh"}]),
    ("dense_linear_nobias", [PRE, FLAT, {"kind": "dense", "units": 5, "use_bias": False}]),
    ("activation_spatial_relu", [PRE, {"kind": "activation", "function": "relu"}, FLAT]),
    ("activation_spatial_tanh", [PRE, {"kind": "activation", "function": "tanh"}, FLAT]),
    ("activation_flat_tanh", [FLAT, {"kind": "dense", "units": 5},
                              {"kind": "activation", "function": "tanh"}]),
    ("flatten_only", [FLAT]),
    ("batchnorm_spatial", [PRE, {"kind": "batchnorm"}, FLAT]),
    ("batchnorm_flat", [FLAT, {"kind": "dense", "units": 5}, {"kind": "batchnorm", "eps": 1e-3},
                        {"kind": "activation", "function": "relu"}]),
    ("dropout", [FLAT, {"kind": "dense", "units": 6, "activation": "relu"},
                 {"kind": "dropout", "rate": 0.5}]),
])


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_gradients_match_finite_differences(case):
    spec = make_spec(LAYER_CASES[case])
    a = make_adapter(spec)
    x, y = batch(spec, n=4)
    assert_fd(a, x, y, coords=8)


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_forward_matches_naive(case):
    spec = make_spec(LAYER_CASES[case])
    a = make_adapter(spec)
    x, y = batch(spec, n=4)
    np.testing.assert_allclose(a.predict(x), naive_forward(spec, a.params, x, train=False),
                               rtol=1e-12, atol=1e-12)
    if not spec.has_dropout:
        train_logits = np.array(a.forward(x, train=True))
        np.testing.assert_allclose(train_logits, naive_forward(spec, a.params, x, train=True),
                                   rtol=1e-12, atol=1e-12)


def test_conv_padding_cases_are_what_they_claim():
    """Guards the layer cases above: 'same' with an odd size is asymmetric, explicit is explicit."""
    spec = make_spec(LAYER_CASES["conv_same_stride2"])
    assert spec.layers[1].padding == ((1, 1), (0, 1)) and spec.shapes[1] == (4, 5, 4)
    spec = make_spec(LAYER_CASES["conv_same_even_kernel"])
    assert spec.layers[1].padding == ((1, 2), (0, 1)) and spec.shapes[1] == (4, 9, 8)
    spec = make_spec(LAYER_CASES["conv_explicit_nobias"])
    assert spec.layers[1].padding_mode == "explicit" and spec.shapes[1] == (4, 9, 10)


def test_conv_pool_cases_take_the_paths_they_claim():
    """The fused cases above really exercise MaxPool2D(fused_relu=True), the others don't."""
    fused = make_adapter(make_spec(LAYER_CASES["pool2_fused"]))
    assert fused.layers[0].activation == "linear" and fused.layers[1].fused_relu
    plain = make_adapter(make_spec(LAYER_CASES["pool_after_activation"]))
    assert not plain.layers[2].fused_relu
    tanh = make_adapter(make_spec(LAYER_CASES["pool2_unfused_tanh"]))
    assert tanh.layers[0].activation == "tanh" and not tanh.layers[1].fused_relu
    # and both layouts between conv and pool are exercised: window-major below a tiling pool when
    # the conv needs no input gradient, NHWC otherwise
    assert fused.layers[0].window_major == (2, 2)
    for case in ("pool3s2_fused", "pool_stride_gt_size"):
        assert make_adapter(make_spec(LAYER_CASES[case])).layers[0].window_major is None
    below = make_adapter(make_spec(LAYER_CASES["pool2_fused_nhwc"]))
    assert below.layers[1].window_major is None and below.layers[1].need_input_grad
    assert below.layers[2].fused_relu


def test_finite_difference_check_can_fail():
    """The checker itself: a gradient that is off by 0.1% in one tensor is caught."""
    spec = make_spec(LAYER_CASES["conv_valid_relu"])
    a = make_adapter(spec)
    x, y = batch(spec)
    _, grads = analytic(a, x, y)
    worst = max(e[3] for e in fd_errors(a, x, y, grads=grads))
    assert worst < 1e-6
    grads["pre.weight"] = grads["pre.weight"] * 1.001
    assert max(e[3] for e in fd_errors(a, x, y, grads=grads)) > 1e-4


def test_kink_handling_of_the_checker():
    """A switch 3e-6 away: central differences straddle it, the one-sided side that is smooth wins;
    a wrong value still fails, and a smooth function never takes the kink branch."""
    kinked = lambda s: abs(s - 3e-6) + 0.5 * s * s  # derivative at 0: -1
    num, err, kind = _check_direction(kinked, -1.0, 1e-5, 1e-6)
    assert kind == "kink" and err < 1e-6
    assert _check_direction(kinked, 1.0, 1e-5, 1e-6)[1] > 0.1
    assert _check_direction(kinked, -0.99, 1e-5, 1e-6)[1] > 1e-3
    smooth = lambda s: np.sin(s + 0.3)
    num, err, kind = _check_direction(smooth, np.cos(0.3) * 1.001, 1e-5, 1e-6)
    assert kind == "central" and err > 1e-4


# --- whole models --------------------------------------------------------------------------------

def small_model(model, size=15):
    """models/<model>.toml with a size x size input: the same layers, cheaper finite differences
    (at 28x28, tf_tutorial's 3136x1024 dense kernel is read on every forward). 15 makes some pools
    leave a row and column over, as 28 does for others."""
    import tomllib

    with open(os.path.join(MODELS_DIR, model + ".toml"), "rb") as fh:
        data = tomllib.load(fh)
    data["input_shape"] = [data.get("input_shape", [1, 28, 28])[0], size, size]
    return spec_from_dict(data, where=model)


@pytest.mark.parametrize("model", list_models() + ["seed_convnet@28"])
def test_model_gradients_match_finite_differences(model):
    spec = load_spec("seed_convnet") if model == "seed_convnet@28" else small_model(model)
    a = make_adapter(spec, config=F64._replace(dropout=True))
    x, y = batch(spec, n=3)
    assert_fd(a, x, y, coords=5)


@pytest.mark.parametrize("model", list_models())
def test_model_forward_and_loss_match_naive(model):
    spec = load_spec(model)
    a = make_adapter(spec, config=F64._replace(dropout=False))
    x, y = batch(spec, n=2)
    expected = naive_forward(spec, a.params, x, train=False)
    np.testing.assert_allclose(a.predict(x), expected, rtol=1e-11, atol=1e-12)
    train_logits = naive_forward(spec, a.params, x, train=True)
    loss, _ = a.gradients(x, y)
    assert abs(loss - naive_loss(train_logits, y)) < 1e-12


def test_float32_stays_float32_and_agrees_with_float64():
    """No silent promotion to float64 on the float32 path (that would double the memory traffic)."""
    spec = load_spec("seed_convnet")
    a32 = make_adapter(spec, config=TrainConfig(dtype="float32"))
    a64 = make_adapter(spec, params=OrderedDict((k, v.astype("float64")) for k, v in a32.params.items()))
    x, y = batch(spec, n=8, dtype="float32")
    seen = []

    def spy(orig, label):
        def wrapper(*args, **kw):
            out = orig(*args, **kw)
            if out is not None:
                seen.append((label, out.dtype))
            return out
        return wrapper

    for layer in a32.layers:
        for meth in ("forward", "backward"):
            setattr(layer, meth, spy(getattr(layer, meth), "%s.%s" % (type(layer).__name__, meth)))
    loss32, g32 = a32.gradients(x, y)
    assert len(seen) >= 2 * len(a32.layers) - 1
    assert all(dt == np.float32 for _, dt in seen), seen
    assert all(g.dtype == np.float32 for g in g32.values())
    loss64, g64 = a64.gradients(x.astype("float64"), y)
    assert abs(loss32 - loss64) < 1e-5
    for k in g64:
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-5 * np.abs(g64[k]).max())
    a32.train_step(x, y)
    assert all(v.dtype == np.float32 for v in a32.get_weights().values())


def test_gradients_are_not_overwritten_by_later_calls():
    """Scratch buffers are reused across steps; what gradients() returned must stay valid."""
    spec = load_spec("seed_convnet")
    a = make_adapter(spec)
    x1, y1 = batch(spec, n=4, seed=1)
    x2, y2 = batch(spec, n=4, seed=2)
    loss1, g1 = a.gradients(x1, y1)
    kept = copy.deepcopy(g1)
    a.predict(batch(spec, n=3, seed=3)[0])  # another batch size: buffers reshaped
    loss2, g2 = a.gradients(x2, y2)
    for k in kept:
        np.testing.assert_array_equal(g1[k], kept[k])
        assert not np.array_equal(g1[k], g2[k])
    loss1b, g1b = a.gradients(x1, y1)
    assert loss1b == loss1
    for k in kept:
        np.testing.assert_array_equal(g1b[k], kept[k])


@pytest.mark.parametrize("case", list(LAYER_CASES) + ["seed_convnet", "tf_tutorial"])
def test_scratch_buffers_are_rewritten_before_use(case):
    """Scratch arrays are reused across steps: fill them all with NaN between two identical calls;
    anything read before being rewritten (a gap a max-pool never writes) shows up as NaN."""
    if case in LAYER_CASES:
        spec = make_spec(LAYER_CASES[case])
    else:
        spec = small_model(case)
    a = make_adapter(spec)
    x, y = batch(spec, n=4)

    def poison():
        for buf in a.bufs.arrays.values():
            buf[...] = np.nan if buf.dtype.kind == "f" else 77

    logits = a.predict(x)  # eval mode first: train mode moves the batchnorm running stats
    if any(layer.kind in ("conv2d", "maxpool2d") for layer in spec.layers):
        assert a.bufs.arrays  # the reference does keep scratch arrays here
    poison()
    np.testing.assert_array_equal(a.predict(x), logits)
    loss, grads = analytic(a, x, y)
    poison()
    loss2, grads2 = analytic(a, x, y)
    assert loss2 == loss
    for k in grads:
        np.testing.assert_array_equal(grads2[k], grads[k], err_msg=k)


# --- the max-pool tie rule -----------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_pool_tie_gradient_goes_to_first_maximum_through_the_adapter(activation):
    """A 2x2 window whose four conv outputs are equal: the gradient goes to the first in row-major.

    Input channels differ per position and the 1x1 conv maps them all to the same value, so the
    weight gradient shows which position got the window's gradient: (0,0) -> channel 0.
    relu: the fused conv+relu -> pool path; linear: the plain pool.
    """
    spec = make_spec([{"kind": "conv2d", "filters": 1, "kernel": 1, "activation": activation},
                      {"kind": "maxpool2d", "size": 2}, FLAT], input_shape=(4, 2, 2), num_classes=2)
    params = OrderedDict([("conv1.weight", np.ones((1, 4, 1, 1))), ("conv1.bias", np.zeros(1)),
                          ("logits.weight", np.array([[1.0, -1.0]])), ("logits.bias", np.zeros(2))])
    a = make_adapter(spec, params)
    assert a.layers[1].fused_relu == (activation == "relu")
    for first, order in (((0, 0), [(0, 0), (0, 1), (1, 0), (1, 1)]),
                         ((0, 1), [(0, 1), (1, 0), (1, 1)]),   # row-major: (0,1) before (1,0)
                         ((1, 0), [(1, 0), (1, 1)])):
        x = np.zeros((1, 4, 2, 2))
        for c, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            if (i, j) in order:
                x[0, c, i, j] = 0.5  # tied maximum 0.5 at every position in `order`
        loss, grads = a.gradients(x, np.array([0]))
        gw = grads["conv1.weight"].reshape(4)
        expected = np.zeros(4)
        dlogit = np.exp([0.5, -0.5]) / np.exp([0.5, -0.5]).sum() - [1, 0]
        expected[[(0, 0), (0, 1), (1, 0), (1, 1)].index(first)] = 0.5 * dlogit.dot([1.0, -1.0])
        np.testing.assert_allclose(gw, expected, rtol=1e-12, atol=1e-15)
        assert grads["conv1.bias"][0] == pytest.approx(dlogit.dot([1.0, -1.0]), rel=1e-12)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("size,stride", [((2, 2), (2, 2)), ((3, 3), (2, 2))])
def test_pool_layer_tie_rule_direct(fused, size, stride):
    """MaxPool2D on its own (internal NHWC): ties, including across overlapping windows."""
    layer = spec_from_dict({"name": "p", "input_shape": [2, 5, 5], "num_classes": 2, "layers": [
        {"kind": "maxpool2d", "size": list(size), "stride": list(stride)}, FLAT,
        {"kind": "dense", "units": 2}]}).layers[0]
    pool = nr.MaxPool2D(layer, nr._Buffers(np.float64), fused_relu=fused)
    rng = np.random.RandomState(0)
    x = rng.choice([-1.0, 0.0, 1.0, 2.0], size=(3, 5, 5, 2))  # many ties, positive and negative
    out = pool.forward(x, {}, True).copy()
    dy = rng.rand(*out.shape) + 0.5
    dx = np.array(pool.backward(dy, {}))
    expected_dx = np.zeros_like(x)
    (ph, pw), (sh, sw) = size, stride
    for n in range(x.shape[0]):
        for c in range(x.shape[3]):
            for i in range(out.shape[1]):
                for j in range(out.shape[2]):
                    win = x[n, i * sh:i * sh + ph, j * sw:j * sw + pw, c]
                    m = win.max()
                    assert out[n, i, j, c] == (max(m, 0.0) if fused else m)
                    if fused and m <= 0:
                        continue  # relu'(max) = 0
                    a, b = divmod(int(np.argmax(win)), pw)  # np.argmax: first, row-major
                    expected_dx[n, i * sh + a, j * sw + b, c] += dy[n, i, j, c]
    np.testing.assert_array_equal(dx, expected_dx)
    ties = 0  # the input really has windows whose maximum occurs more than once
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            win = x[:, i * sh:i * sh + ph, j * sw:j * sw + pw, :]
            ties += int(((win == win.max(axis=(1, 2), keepdims=True)).sum(axis=(1, 2)) > 1).sum())
    assert ties >= 3


# --- batchnorm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spatial", [True, False])
def test_batchnorm_running_stats_and_eval_mode(spatial):
    if spatial:  # batchnorm straight on a (C, H, W) input: statistics over N, H, W
        spec = make_spec([{"kind": "batchnorm", "momentum": 0.3, "eps": 1e-3}, FLAT],
                         input_shape=(2, 3, 2))
        axes = (0, 2, 3)
    else:
        spec = make_spec([FLAT, {"kind": "batchnorm", "momentum": 0.3, "eps": 1e-3}],
                         input_shape=(1, 2, 3))
        axes = (0,)
    a = make_adapter(spec)
    rm0, rv0 = a.params["bn1.running_mean"].copy(), a.params["bn1.running_var"].copy()
    x, y = batch(spec, n=4)
    xin = x if spatial else x.reshape(4, -1)
    # eval mode: the running statistics, and no update
    p = a.get_weights()
    shape = (1, -1, 1, 1) if spatial else (1, -1)
    xhat = (xin - rm0.reshape(shape)) / np.sqrt(rv0.reshape(shape) + 1e-3)
    h = (xhat * p["bn1.gamma"].reshape(shape) + p["bn1.beta"].reshape(shape)).reshape(4, -1)
    np.testing.assert_allclose(a.predict(x), h.dot(p["logits.weight"]) + p["logits.bias"], rtol=1e-12)
    np.testing.assert_array_equal(a.params["bn1.running_mean"], rm0)
    np.testing.assert_array_equal(a.params["bn1.running_var"], rv0)
    # train mode: running = (1 - m) * running + m * batch, with the UNBIASED batch variance
    a.train_step(x, y)
    mean, var_unbiased = xin.mean(axis=axes), xin.var(axis=axes, ddof=1)
    np.testing.assert_allclose(a.params["bn1.running_mean"], 0.7 * rm0 + 0.3 * mean, rtol=1e-12)
    np.testing.assert_allclose(a.params["bn1.running_var"], 0.7 * rv0 + 0.3 * var_unbiased, rtol=1e-12)
    biased = 0.7 * rv0 + 0.3 * xin.var(axis=axes)
    assert np.abs(a.params["bn1.running_var"] - biased).min() > 1e-4  # the two rules differ here
    # the update does not depend on the optimizer and the stats are not trained
    assert "bn1.running_mean" not in a.gradients(x, y)[1]


def test_batchnorm_train_mode_uses_batch_stats_not_running():
    spec = make_spec([PRE, {"kind": "batchnorm"}, FLAT])
    a = make_adapter(spec)
    x, _ = batch(spec, n=4)
    train = np.array(a.forward(x, train=True))
    a.params["bn1.running_mean"] += 5.0  # irrelevant in train mode, decisive in eval mode
    assert np.allclose(np.array(a.forward(x, train=True)), train, rtol=1e-12)
    assert not np.allclose(a.predict(x), train, atol=1e-3)


# --- optimizers ----------------------------------------------------------------------------------

def _expected_two_steps(opt, c, p0, grad_at):
    """The formulas of docs/results-schema.md#optimizers, PyTorch's, written out for two steps."""
    p1, p2 = OrderedDict(), OrderedDict()
    g1 = grad_at(p0)
    state = {}
    for k in p0:
        g = g1[k]
        if opt == "sgd":
            p1[k] = p0[k] - c.lr * g
        elif opt == "momentum":
            state[k] = g                                   # first step: buffer = gradient
            p1[k] = p0[k] - c.lr * g
        elif opt == "nesterov":
            state[k] = g
            p1[k] = p0[k] - c.lr * (g + c.momentum * g)
        elif opt == "adadelta":                            # eps inside both roots, u starts at 0
            v = (1 - c.rho) * g * g
            d = np.sqrt(c.eps) / np.sqrt(v + c.eps) * g
            state[k] = (v, (1 - c.rho) * d * d)
            p1[k] = p0[k] - c.lr * d
        elif opt == "adam":
            m, v = (1 - c.beta1) * g, (1 - c.beta2) * g * g
            state[k] = (m, v)
            p1[k] = p0[k] - c.lr * (m / (1 - c.beta1)) / (np.sqrt(v / (1 - c.beta2)) + c.eps)
        elif opt == "rmsprop":
            v = (1 - c.rho) * g * g
            state[k] = v
            p1[k] = p0[k] - c.lr * g / (np.sqrt(v) + c.eps)
    g2 = grad_at(p1)
    for k in p0:
        g = g2[k]
        if opt == "sgd":
            p2[k] = p1[k] - c.lr * g
        elif opt == "momentum":
            buf = c.momentum * state[k] + g
            p2[k] = p1[k] - c.lr * buf
        elif opt == "nesterov":
            buf = c.momentum * state[k] + g
            p2[k] = p1[k] - c.lr * (g + c.momentum * buf)
        elif opt == "adadelta":
            v, u = state[k]
            v = c.rho * v + (1 - c.rho) * g * g
            p2[k] = p1[k] - c.lr * np.sqrt(u + c.eps) / np.sqrt(v + c.eps) * g
        elif opt == "adam":
            m, v = state[k]
            m = c.beta1 * m + (1 - c.beta1) * g
            v = c.beta2 * v + (1 - c.beta2) * g * g
            p2[k] = p1[k] - c.lr * (m / (1 - c.beta1 ** 2)) / (np.sqrt(v / (1 - c.beta2 ** 2)) + c.eps)
        elif opt == "rmsprop":
            v = c.rho * state[k] + (1 - c.rho) * g * g
            p2[k] = p1[k] - c.lr * g / (np.sqrt(v) + c.eps)
    return p1, p2


@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov", "adam", "rmsprop", "adadelta"])
def test_optimizer_two_steps_follow_the_formulas(opt):
    # unusual hyperparameters so that swapped betas or eps inside the sqrt change the result
    c = F64._replace(optimizer=opt, lr=0.3, momentum=0.7, beta1=0.8, beta2=0.95, rho=0.6, eps=1e-2)
    spec = make_spec([FLAT], input_shape=(1, 1, 3), num_classes=2)
    p0 = random_params(spec, seed=3)
    x, y = batch(spec, n=4, seed=5)

    def grad_at(p):
        probe = make_adapter(spec, p, config=c)
        return probe.gradients(x, y)[1]

    p1, p2 = _expected_two_steps(opt, c, p0, grad_at)
    a = make_adapter(spec, p0, config=c)
    a.train_step(x, y)
    got1 = a.get_weights()
    a.train_step(x, y)
    got2 = a.get_weights()
    for k in p0:
        np.testing.assert_allclose(got1[k], p1[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got2[k], p2[k], rtol=1e-12, atol=1e-14)
        assert np.abs(got2[k] - got1[k]).max() > 1e-3  # the second step moved


@pytest.mark.parametrize("sched,kw,lr1,lr2,lr4", [
    # lr at updates k = 0, 1, 3 of lr 0.3, written out from docs/results-schema.md#schedules
    ("time", {"decay": 0.5}, 0.3, 0.3 / 1.5, 0.3 / 2.5),
    ("step", {"gamma": 0.1, "decay_steps": 2}, 0.3, 0.3, 0.03),
    ("cosine", {"decay_steps": 2}, 0.3, 0.15, 0.0),  # past T it stays at 0 (not periodic)
])
def test_schedule_sets_each_updates_learning_rate(sched, kw, lr1, lr2, lr4):
    c = F64._replace(optimizer="sgd", lr=0.3, schedule=sched, **kw)
    spec = make_spec([FLAT], input_shape=(1, 1, 3), num_classes=2)
    p0 = random_params(spec, seed=3)
    x, y = batch(spec, n=4, seed=5)
    a = make_adapter(spec, p0, config=c)
    seen = []
    for _ in range(4):
        before = a.get_weights()
        g = a.gradients(x, y)[1]
        a.train_step(x, y)
        after = a.get_weights()
        k = next(name for name in g if name.endswith(".weight"))
        seen.append(float(np.sum((before[k] - after[k]) * g[k]) / np.sum(g[k] * g[k])))
    np.testing.assert_allclose([seen[0], seen[1], seen[3]], [lr1, lr2, lr4], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_max_norm_rescales_each_unit_after_the_update_as_keras_does(dtype):
    """After the optimizer's update, each output unit of a constrained kernel (a conv filter over
    I x H x W, a dense column) is scaled by clip(n, 0, c) / (1e-7 + n); biases and unconstrained
    kernels are the optimizer's alone."""
    c = F64._replace(optimizer="sgd", lr=5.0, dtype=dtype)
    layers = [_conv(filters=3), FLAT, {"kind": "dense", "units": 4, "activation": "tanh"}]
    plain = make_spec(layers)
    p0 = random_params(plain, seed=4)
    x, y = batch(plain, n=4, seed=6)
    a = make_adapter(plain, p0, config=c)
    a.train_step(x, y)
    expected = a.get_weights()  # the optimizer's update alone
    bounds = {}
    for name, axes in (("conv1.weight", (1, 2, 3)), ("dense1.weight", (0,))):
        w = expected[name].astype(np.float64)
        n = np.sqrt((w * w).sum(axis=axes, keepdims=True))
        bounds[name] = float(np.median(n)) * 1.01  # some units above the bound, some below
        expected[name] = w * np.clip(n, 0, bounds[name]) / (1e-7 + n)
        assert (n > bounds[name]).any() and (n < bounds[name]).any()
    layers[0]["max_norm"], layers[2]["max_norm"] = bounds["conv1.weight"], bounds["dense1.weight"]
    spec = make_spec(layers)
    a = make_adapter(spec, p0, config=c)
    a.train_step(x, y)
    got = a.get_weights()
    tol = 1e-12 if dtype == "float64" else 1e-6
    for name in p0:
        np.testing.assert_allclose(got[name], expected[name], rtol=tol, atol=tol, err_msg=name)
    assert sorted(spec.max_norms()) == ["conv1.weight", "dense1.weight"]


def test_set_weights_resets_optimizer_state():
    c = F64._replace(optimizer="momentum")
    spec = make_spec([FLAT], input_shape=(1, 1, 3), num_classes=2)
    p0 = random_params(spec, seed=3)
    x, y = batch(spec, n=4, seed=5)
    a = make_adapter(spec, p0, config=c)
    a.train_step(x, y)
    a.set_weights(p0)
    a.train_step(x, y)
    fresh = make_adapter(spec, p0, config=c)
    fresh.train_step(x, y)
    for k, v in fresh.get_weights().items():
        np.testing.assert_array_equal(a.get_weights()[k], v)


# --- dropout -------------------------------------------------------------------------------------

DROP_SPEC = [FLAT, {"kind": "dense", "units": 64, "activation": "relu"}, {"kind": "dropout", "rate": 0.4}]


def _dropout_layer(a):
    (layer,) = [l for l in a.layers if isinstance(l, nr.Dropout)]
    return layer


def test_dropout_mask_is_seeded_and_reproducible():
    spec = make_spec(DROP_SPEC)
    x, y = batch(spec, n=16)
    runs = []
    for seed in (0, 0, 1):
        a = make_adapter(spec, config=F64._replace(seed=seed, optimizer="sgd"))
        losses = [a.train_step(x, y) for _ in range(3)]
        runs.append((losses, _dropout_layer(a).mask.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][0] != runs[2][0] and not np.array_equal(runs[0][1], runs[2][1])


def test_dropout_rate_and_scale():
    spec = make_spec(DROP_SPEC)
    a = make_adapter(spec)
    x, _ = batch(spec, n=2000)
    a.forward(x, train=True)
    mask = _dropout_layer(a).mask
    assert mask.shape == (2000, 64)
    assert set(np.unique(mask)) == {0.0, 1.0 / 0.6}  # inverted dropout: kept units scaled 1/keep
    assert abs((mask == 0).mean() - 0.4) < 0.01      # 128,000 draws: sd 0.0014
    # a different mask on the next step
    a.forward(x, train=True)
    assert not np.array_equal(_dropout_layer(a).mask, mask)


def test_predict_and_disabled_dropout_are_deterministic():
    spec = make_spec(DROP_SPEC)
    x, y = batch(spec, n=32)
    a = make_adapter(spec)
    off = make_adapter(spec, config=F64._replace(dropout=False))
    naive = naive_forward(spec, a.params, x, train=False)
    np.testing.assert_allclose(a.predict(x), naive, rtol=1e-12)
    np.testing.assert_allclose(a.predict(x), naive, rtol=1e-12)  # no mask drawn in predict
    np.testing.assert_allclose(np.array(off.forward(x, train=True)), naive, rtol=1e-12)
    assert _dropout_layer(off).mask is None
    on = np.array(a.forward(x, train=True))
    assert not np.allclose(on, naive)
    masks = {"dropout1": _dropout_layer(a).mask}
    np.testing.assert_allclose(on, naive_forward(spec, a.params, x, train=True, masks=masks), rtol=1e-12)


# --- the adapter's edges -------------------------------------------------------------------------

def test_flatten_order_is_channels_height_width():
    """Canonical flatten is (C, H, W) although the reference is NHWC inside."""
    spec = make_spec([FLAT], input_shape=(2, 3, 4), num_classes=24)
    w = OrderedDict([("logits.weight", np.eye(24)), ("logits.bias", np.zeros(24))])
    a = make_adapter(spec, w)
    x = np.arange(48.0).reshape(2, 2, 3, 4)
    np.testing.assert_array_equal(a.predict(x), x.reshape(2, 24))


def test_conv_layout_is_oihw_and_cross_correlation():
    """One output pixel by hand: OIHW kernel, no flip (cross-correlation, as every framework)."""
    spec = make_spec([{"kind": "conv2d", "filters": 1, "kernel": [2, 3], "use_bias": False}, FLAT],
                     input_shape=(2, 2, 3), num_classes=2)
    w = np.arange(12.0).reshape(1, 2, 2, 3)
    params = OrderedDict([("conv1.weight", w), ("logits.weight", np.array([[1.0, 0.0]])),
                          ("logits.bias", np.zeros(2))])
    a = make_adapter(spec, params)
    x = np.random.RandomState(0).rand(1, 2, 2, 3)
    assert a.predict(x)[0, 0] == pytest.approx(float((x[0] * w[0]).sum()), rel=1e-14)


def test_no_framework_import():
    code = ("import sys; import backends.numpy_ref\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'tensorflow', 'jax', 'cntk', 'mxnet', 'keras'))\n"
            "assert not bad, bad\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env)
