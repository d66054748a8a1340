"""The run's configuration precedence (bench/plan.py): a flag wins over the model's [training]
table, which wins over the suite's defaults; against the real specs in models/."""
import pytest

from backends.base import TrainConfig
from bench.cli import build_parser
from bench.cli_types import UsageError
from bench.context import usable_cpus
from backends import registry
from backends.base import DEFAULT_LR
from bench.plan import (TRAINING_OPTIONS, backends_from_arg, config_and_lr_source, config_from_args,
                        settings_line)
from models.spec import load_spec

SUITE = TrainConfig()


def _args(*flags):
    """The namespace `convbench run` parses from these flags, with every real default."""
    return build_parser().parse_args(["run"] + list(flags))


def _training(config):
    return {k: getattr(config, k) for k in TRAINING_OPTIONS}


def test_the_suite_defaults_apply_when_neither_flag_nor_model_sets_one():
    spec = load_spec("seed_convnet")
    assert [k for k, _ in spec.training] == ["target"]  # its recipe for --target-accuracy only
    assert _training(config_from_args(_args(), spec)) == _training(SUITE)
    assert _training(config_from_args(_args(), None)) == _training(SUITE)


def test_the_models_training_table_beats_the_suite_defaults():
    spec = load_spec("cntk_103d")
    assert dict(spec.training) == {"batch_size": 64, "lr": 0.03}
    config = config_from_args(_args(), spec)
    assert (config.batch_size, config.lr) == (64, 0.03)
    # what the model leaves out stays the suite's
    assert (config.optimizer, config.momentum, config.epochs) == (
        SUITE.optimizer, SUITE.momentum, SUITE.epochs)


def test_a_flag_beats_the_models_training_table():
    spec = load_spec("cntk_103d")
    config = config_from_args(_args("--batch-size", "32", "--lr", "0.5"), spec)
    assert (config.batch_size, config.lr) == (32, 0.5)


@pytest.mark.parametrize("option,model_value,flag,flag_value", [
    ("optimizer", "adam", "--optimizer", "rmsprop"),
    ("momentum", 0.5, "--momentum", "0.25"),
    ("epochs", 3, "--epochs", "2"),
    ("lr", 0.01, "--lr", "0.2"),
    ("batch_size", 16, "--batch-size", "256"),
])
def test_each_training_option_is_flag_then_model_then_suite(option, model_value, flag, flag_value):
    # a real spec with this option in its [training] table (as a .toml would give it)
    spec = load_spec("cntk_103d")
    spec = spec._replace(training=tuple(sorted(dict(spec.training, **{option: model_value}).items())))
    assert getattr(config_from_args(_args(), load_spec("seed_convnet")), option) == getattr(SUITE, option)
    assert getattr(config_from_args(_args(), spec), option) == model_value
    parsed = getattr(_args(flag, flag_value), option)
    assert getattr(config_from_args(_args(flag, flag_value), spec), option) == parsed != model_value


def test_the_other_flags_pass_through_and_threads_0_means_every_usable_cpu():
    spec = load_spec("cntk_103d")
    config = config_from_args(_args("--seed", "7", "--limit-train", "512", "--limit-test", "100",
                                    "--warmup-steps", "2", "--mode", "epoch"), spec)
    assert (config.seed, config.limit_train, config.limit_test, config.warmup_steps, config.mode) == (
        7, 512, 100, 2, "epoch")
    assert config.threads == usable_cpus()
    assert config_from_args(_args("--threads", "3"), spec).threads == 3


def test_backends_from_arg_keeps_the_order_and_names_the_fix():
    assert [b.name for b in backends_from_arg(" torch, numpy ,")] == ["torch", "numpy"]
    with pytest.raises(UsageError, match="--backend is empty; give one or more of: .*numpy"):
        backends_from_arg(" , ")
    with pytest.raises(UsageError, match="see `convbench list`"):
        backends_from_arg("numpy,nope")


def test_name_at_env_runs_an_adapter_in_another_of_its_environments():
    (b,) = backends_from_arg("tf@tf_legacy")
    assert (b.name, b.env, b.target) == ("tf@tf_legacy", "tf_legacy", "backends.tf_backend:TfAdapter")
    assert b.framework == "TensorFlow [tf_legacy env]"
    with pytest.raises(UsageError, match=r"no environment 'nowhere' \(tox.ini has: base, tf"):
        backends_from_arg("tf@nowhere")
    with pytest.raises(UsageError, match="unknown backend 'nope@tf'"):
        backends_from_arg("nope@tf")
    with pytest.raises(UsageError, match="after '@' comes an environment name"):
        backends_from_arg("tf@../x")


@pytest.mark.parametrize("optimizer", sorted(DEFAULT_LR))
def test_each_optimizer_gets_its_own_learning_rate_unless_lr_or_the_table_sets_one(optimizer):
    seed = load_spec("seed_convnet")
    config, source = config_and_lr_source(_args("--optimizer", optimizer), seed)
    assert (config.lr, source) == (DEFAULT_LR[optimizer], "%s's default" % optimizer)
    assert config_from_args(_args("--optimizer", optimizer, "--lr", "0.3"), seed).lr == 0.3
    # cntk_103d's table sets lr 0.03 for the suite's optimizer (momentum): it holds for momentum
    # only; another optimizer gets its own default, not momentum's rate
    table = config_from_args(_args("--optimizer", optimizer), load_spec("cntk_103d")).lr
    assert table == (0.03 if optimizer == SUITE.optimizer else DEFAULT_LR[optimizer])


def test_adams_default_is_not_momentums():
    assert config_from_args(_args("--optimizer", "adam"), load_spec("seed_convnet")).lr == 0.001


def test_the_header_names_every_setting_that_changes_the_work():
    config, source = config_and_lr_source(_args("--optimizer", "adam", "--no-dropout",
                                                "--limit-train", "2048", "--mode", "epoch",
                                                "--dtype", "float64", "--seed", "3"),
                                          load_spec("seed_convnet"))
    line = settings_line(config, source)
    for part in ("1 epoch(s)", "batch 128", "adam lr 0.001 (adam's default)", "float64",
                 "epoch mode", "seed 3", "dropout off", "train on 2048", "test on all 10000",
                 "warm-up 5 step(s)", "4 evaluation(s) an epoch", "device cpu"):
        assert part in line, part
    assert config.dropout is False


def test_backend_all_and_the_old_names():
    assert [b.name for b in backends_from_arg("all")] == registry.names()
    assert [b.name for b in backends_from_arg("tf_layers,tf_estimator")] == [
        "tf-layers", "tf-estimator"]
    assert registry.canonical("tf_layers@tf") == "tf-layers@tf"


def test_seeds_make_the_repeats_and_pool_into_one_work_hash():
    from bench.jobs import expand

    spec = load_spec("seed_convnet")
    jobs = expand(backends_from_arg("numpy,torch"), [spec], SUITE, seeds=[4, 5, 6], timing_runs=3)
    train = [j for j in jobs if j.role == "train"]
    assert [(j.backend.name, j.config.seed, j.repeat["index"]) for j in train] == [
        ("numpy", 4, 0), ("torch", 4, 0), ("numpy", 5, 1), ("torch", 5, 1),
        ("numpy", 6, 2), ("torch", 6, 2)]
    assert {j.config.seed for j in jobs if j.role == "timing"} == {4}
    assert len({j.fields()["work_hash"] for j in jobs}) == 1  # the seed is not the work


def test_target_accuracy_takes_the_models_target_recipe_over_its_training_table():
    spec = load_spec("cntk_103d")
    target = (("epochs", 4), ("schedule", "cosine"))
    spec = spec._replace(training=spec.training + (("target", target),))
    plain = config_from_args(_args(), spec)
    assert (plain.epochs, plain.schedule, plain.target_accuracy, plain.lr) == (1, "constant", 0.0, 0.03)
    config = config_from_args(_args("--target-accuracy", "0.99"), spec)
    assert (config.epochs, config.schedule, config.target_accuracy, config.lr) == (4, "cosine", 0.99, 0.03)
    # a cosine with no length lasts the whole run: epochs x full batches
    assert config.decay_steps == 4 * (60000 // 64)
    assert config_from_args(_args("--target-accuracy", "0.99", "--epochs", "2"), spec).decay_steps == 2 * 937
    assert "target_accuracy" in config.to_dict() and "target_accuracy" not in plain.to_dict()
    # constant-schedule records keep their config (and work hash) as before the schedules existed
    assert not {"schedule", "decay", "gamma", "decay_steps"} & set(plain.to_dict())


@pytest.mark.parametrize("flags,message", [
    (("--schedule", "time"), "schedule 'time' needs decay > 0"),
    (("--schedule", "step", "--gamma", "0.5"), "schedule 'step' needs .* decay_steps >= 1"),
])
def test_a_schedule_with_bad_parameters_is_a_usage_error_naming_the_fix(flags, message):
    with pytest.raises(UsageError, match=message + ".*--decay"):
        config_from_args(_args(*flags), load_spec("seed_convnet"))
    with pytest.raises(SystemExit):  # argparse: an unknown schedule or optimizer
        _args("--schedule", "linear")
