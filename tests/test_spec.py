"""Spec parsing, validation, shape inference, counts, hashing and canonical weights."""
import numpy as np
import pytest

from models.spec import SpecError, init_weights, list_models, load_spec, spec_from_dict, weights_digest


def _spec(*layers, **top):
    data = {"name": "t", "input_shape": [1, 28, 28], "num_classes": 10, "layers": list(layers)}
    data.update(top)
    return spec_from_dict(data, where="t.toml")


def test_all_models_load_and_round_trip():
    assert set(list_models()) >= {"seed_convnet", "tf_tutorial", "cntk_103d", "torch_bn", "mlp"}
    for name in list_models():
        spec = load_spec(name)
        again = spec_from_dict(spec.to_dict())
        assert again == spec and again.spec_hash == spec.spec_hash


def test_seed_convnet_shapes_params_flops():
    spec = load_spec("seed_convnet")
    assert spec.shapes == ((32, 26, 26), (32, 13, 13), (64, 11, 11), (64, 5, 5), (1600,), (10,))
    # Keras reports 34,826 parameters for this net: 320 + 18,496 + 16,010
    assert spec.param_count == 34826
    fwd = 2 * (1 * 9 * 32 * 26 * 26 + 32 * 9 * 64 * 11 * 11 + 1600 * 10)
    assert spec.flops()["forward"] == fwd
    # training: + weight grads of all layers + input grads of all but the first
    assert spec.flops()["train"] == 3 * fwd - 2 * 1 * 9 * 32 * 26 * 26


def test_padding_same_and_pool_stride():
    spec = load_spec("cntk_103d")
    assert spec.shapes[:4] == ((32, 28, 28), (32, 13, 13), (32, 13, 13), (32, 6, 6))
    assert spec.layers[0].padding == ((2, 2), (2, 2))
    # TF 'same' with stride 2 on an even size puts the extra pixel bottom/right
    s = _spec({"kind": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
              {"kind": "flatten"}, {"kind": "dense", "units": 10})
    assert s.shapes[0] == (4, 14, 14) and s.layers[0].padding == ((0, 1), (0, 1))


def test_avgpool_and_max_norm_parse_and_change_the_hash_only_when_given():
    base = load_spec("seed_convnet").to_dict()
    layers = [dict(l) for l in base["layers"]]
    assert "max_norm" not in layers[0]  # absent when not given: older specs keep their hash
    layers[1]["kind"] = "avgpool2d"
    avg = spec_from_dict(dict(base, layers=layers))
    assert avg.layers[1].kind == "avgpool2d" and avg.shapes[1] == (32, 13, 13)
    assert avg.spec_hash != load_spec("seed_convnet").spec_hash
    layers[0]["max_norm"] = 3
    constrained = spec_from_dict(dict(base, layers=layers))
    assert dict(constrained.max_norms()) == {"conv1.weight": 3.0}
    assert constrained.to_dict()["layers"][0]["max_norm"] == 3.0
    assert spec_from_dict(constrained.to_dict()).spec_hash == constrained.spec_hash != avg.spec_hash


def test_spec_hash_ignores_description_but_not_structure():
    base = load_spec("seed_convnet").to_dict()
    a = spec_from_dict(dict(base, description="other words"))
    assert a.spec_hash == load_spec("seed_convnet").spec_hash
    layers = [dict(l) for l in base["layers"]]
    layers[0]["filters"] = 16
    assert spec_from_dict(dict(base, layers=layers)).spec_hash != a.spec_hash


@pytest.mark.parametrize("layers, field", [
    ([{"kind": "conv2d", "filters": 0, "kernel": 3}], "filters"),
    ([{"kind": "conv2d", "filters": 8}], "kernel"),
    ([{"kind": "conv2d", "filters": "8", "kernel": 3}], "filters"),
    ([{"kind": "conv2d", "filters": 8, "kernel": 3, "activation": "gelu"}], "activation"),
    ([{"kind": "conv2d", "filters": 8, "kernel": 3, "colour": 1}], "colour"),
    ([{"kind": "dropout", "rate": 1.5}], "rate"),
    ([{"kind": "dropout"}], "rate"),
    ([{"kind": "warp"}], "kind"),
    ([{"kind": "maxpool2d", "size": [2, 2, 2]}], "size"),
    ([{"kind": "avgpool2d"}], "size"),
    ([{"kind": "conv2d", "filters": 8, "kernel": 3, "max_norm": 0}], "max_norm"),
    ([{"kind": "conv2d", "filters": 8, "kernel": 3, "max_norm": "3"}], "max_norm"),
    ([{"kind": "maxpool2d", "size": 2, "max_norm": 3.0}], "max_norm"),
])
def test_malformed_layers_name_file_layer_and_field(layers, field):
    with pytest.raises(SpecError) as err:
        _spec(*(layers + [{"kind": "flatten"}, {"kind": "dense", "units": 10}]))
    msg = str(err.value)
    assert "t.toml" in msg and "layer 1" in msg and "'%s'" % field in msg


def test_structural_errors():
    with pytest.raises(SpecError, match="collapses"):
        _spec({"kind": "conv2d", "filters": 8, "kernel": 29}, {"kind": "flatten"}, {"kind": "dense", "units": 10})
    with pytest.raises(SpecError, match="flatten"):
        _spec({"kind": "dense", "units": 10})
    with pytest.raises(SpecError, match="10 logits"):
        _spec({"kind": "flatten"}, {"kind": "dense", "units": 7})
    with pytest.raises(SpecError, match="without activation"):
        _spec({"kind": "flatten"}, {"kind": "dense", "units": 10, "activation": "relu"})
    with pytest.raises(SpecError, match="layers"):
        spec_from_dict({"name": "x", "layers": []}, "t.toml")
    with pytest.raises(SpecError, match="input_shape"):
        _spec({"kind": "flatten"}, {"kind": "dense", "units": 10}, input_shape=[28, 28])


def test_load_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="unknown model 'nosuch'"):
        load_spec("nosuch")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[[layers]\nkind = 1\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(str(bad))
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(str(tmp_path / "missing.toml"))


def test_init_weights_canonical_and_reproducible():
    spec = load_spec("torch_bn")
    a, b = init_weights(spec, seed=3), init_weights(spec, seed=3)
    assert weights_digest(a) == weights_digest(b)
    assert weights_digest(a) != weights_digest(init_weights(spec, seed=4))
    assert a["conv1.weight"].shape == (16, 1, 5, 5) and a["dense1.weight"].shape == (1568, 10)
    assert a["conv1.weight"].dtype == np.float32
    limit = np.sqrt(6.0 / (1 * 25 + 16 * 25))  # Glorot, Keras fans for conv kernels
    assert np.abs(a["conv1.weight"]).max() <= limit and np.abs(a["conv1.weight"]).max() > 0.9 * limit
    assert (a["bn1.gamma"] == 1).all() and (a["bn1.running_var"] == 1).all()
    assert (a["conv1.bias"] == 0).all() and (a["bn1.running_mean"] == 0).all()
    assert init_weights(spec, 3, "float64")["conv1.weight"].dtype == np.float64


DENSE10 = {"kind": "dense", "units": 10}


def test_training_table_gives_defaults_but_is_not_part_of_the_network():
    plain = _spec({"kind": "flatten"}, DENSE10)
    tuned = _spec({"kind": "flatten"}, DENSE10, training={"lr": 0.05, "batch_size": 64,
                                                          "optimizer": "adam"})
    assert dict(tuned.training) == {"lr": 0.05, "batch_size": 64, "optimizer": "adam"}
    assert tuned.spec_hash == plain.spec_hash  # same network, other training defaults
    assert spec_from_dict(tuned.to_dict()) == tuned  # crosses to a worker intact
    assert dict(load_spec("cntk_103d").training) == {"lr": 0.03, "batch_size": 64}
    # a [training.target] recipe (for --target-accuracy) crosses intact too
    recipe = _spec({"kind": "flatten"}, DENSE10, training={
        "optimizer": "adadelta", "rho": 0.95, "target": {"schedule": "cosine", "epochs": 4}})
    assert dict(dict(recipe.training)["target"]) == {"schedule": "cosine", "epochs": 4}
    assert spec_from_dict(recipe.to_dict()) == recipe and recipe.spec_hash == plain.spec_hash


@pytest.mark.parametrize("training, field", [
    ({"lr": 0}, "lr"), ({"lr": "fast"}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"batch_size": 0}, "batch_size"), ({"epochs": 1.5}, "epochs"),
    ({"optimizer": "lbfgs"}, "optimizer"), ({"warmup": 3}, "warmup"), ("lr=0.1", "training"),
    ({"schedule": "linear"}, "schedule"), ({"gamma": 1.0}, "gamma"), ({"rho": 1.0}, "rho"),
    ({"target": {"epochs": 0}}, "epochs"), ({"target": {"target": {}}}, "target"),
])
def test_bad_training_table_names_the_field(training, field):
    with pytest.raises(SpecError, match="t.toml.*'%s'" % field):
        _spec({"kind": "flatten"}, DENSE10, training=training)
