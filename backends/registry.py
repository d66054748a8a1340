"""The explicit table of backends: name -> adapter class, what it requires, where it runs.

Adding a backend = one module in backends/ + one entry here. Nothing is imported here: the parent
checks availability with importlib.util.find_spec (its own interpreter) or by the presence of the
backend's environment (bench/envs.py); the worker imports the adapter lazily.

`env` names where the worker runs: "base" is the interpreter running convbench itself; any other
name is a tox environment in tox.ini, built on first use.

3.6-compatible: the CNTK worker imports this module.
"""
import importlib
from typing import NamedTuple, Tuple


class Backend(NamedTuple):
    name: str
    target: str                 # "module:Class"
    framework: str              # what the report calls it
    requires: Tuple[str, ...]   # top-level import names the worker needs
    env: str                    # "base" or a tox env name
    install_hint: str           # the fix to print when it is missing
    description: str = ""
    worker_env: Tuple[Tuple[str, str], ...] = ()  # extra environment variables for its worker
    # the conformance cases it runs, by label prefix (tests/conformance.py); () = all. For
    # backends that compile each case's model for tens of seconds (torch.compile on 2 cores)
    conformance: Tuple[str, ...] = ()
    # the tuned track: the idiomatic backend this one applies its framework's performance guide
    # to (the report sets them side by side); "" for an idiomatic backend
    tunes: str = ""


TF_HINT = "tox -e tf --notest (tensorflow-cpu==2.21.0, keras==3.15.1, jax, torch; see tox.ini)"
TF_LEGACY_HINT = "tox -e tf_legacy --notest (tensorflow-cpu==2.15.1 with numpy<2, see tox.ini)"

BACKENDS = {
    "numpy": Backend(
        name="numpy", target="backends.numpy_ref:NumpyReference", framework="NumPy (reference)",
        requires=("numpy",), env="base", install_hint="pip install numpy",
        description="from-scratch forward, backward and optimizers in NumPy: the oracle"),
    "torch": Backend(
        name="torch", target="backends.torch_backend:TorchAdapter", framework="PyTorch",
        requires=("torch",), env="base", install_hint="pip install 'convbench[torch]' (torch==2.13.0)",
        description="nn.Sequential built from the spec, eager training loop"),
    "torch-tuned": Backend(
        name="torch-tuned", target="backends.torch_tuned:TorchTunedAdapter",
        framework="PyTorch (tuned)", requires=("torch",), env="base",
        install_hint="pip install 'convbench[torch]' (torch==2.13.0) and a C++ compiler (g++)",
        description="the torch backend with the CPU tuning guide applied: channels_last memory "
                    "format + torch.compile (inductor)",
        conformance=("seed_convnet-", "mlp-float32", "torch_bn-float32", "bf16 seed_convnet"),
        tunes="torch"),
    "cntk": Backend(
        name="cntk", target="backends.cntk_backend:CntkAdapter", framework="CNTK",
        requires=("cntk",), env="cntk",
        install_hint="tox -e cntk --notest (CNTK 2.7.post2 on CPython 3.6, see tox.ini) and "
                     "apt-get install libopenmpi3 (OpenMPI 4; convbench links the 1.10 sonames "
                     "CNTK wants in .tox/cntk-mpi-shim)",
        description="C.layers.Sequential built from the spec, C.Trainer.train_minibatch per step",
        worker_env=(("LD_LIBRARY_PATH", "{repo}/.tox/cntk-mpi-shim"),)),
    "tf": Backend(
        name="tf", target="backends.tf_backend:TfAdapter", framework="TensorFlow",
        requires=("tensorflow",), env="tf",
        install_hint=TF_HINT,
        description="tf.Variables + tf.nn ops, tf.function training step with GradientTape",
        worker_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),)),
    "tf-xla": Backend(
        name="tf-xla", target="backends.tf_backend:TfXlaAdapter", framework="TensorFlow (XLA)",
        requires=("tensorflow",), env="tf",
        install_hint=TF_HINT,
        description="the tf backend's step in tf.function(jit_compile=True), compiled by XLA",
        worker_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),), tunes="tf"),
    "keras": Backend(
        name="keras", target="backends.keras_backend:KerasAdapter", framework="Keras 3 (TensorFlow)",
        requires=("keras", "tensorflow"), env="tf",
        install_hint=TF_HINT,
        description="keras.Sequential, compile + train_on_batch (step mode) or fit (epoch mode)",
        worker_env=(("KERAS_BACKEND", "tensorflow"), ("TF_CPP_MIN_LOG_LEVEL", "2"))),
    "keras-xla": Backend(
        name="keras-xla", target="backends.keras_backend:KerasXlaAdapter",
        framework="Keras 3 (TensorFlow, XLA)", requires=("keras", "tensorflow"), env="tf",
        install_hint=TF_HINT,
        description="the keras backend compiled with jit_compile=True (Keras' 'auto' is False on "
                    "a CPU-only machine)",
        worker_env=(("KERAS_BACKEND", "tensorflow"), ("TF_CPP_MIN_LOG_LEVEL", "2")),
        # what XLA's whole-step compilation could change: the default net in both dtypes and
        # every optimizer, batchnorm, the max-norm constraint inside the step, bf16. The layers
        # themselves are the keras backend's, which runs every case
        conformance=("seed_convnet-", "torch_bn-", "maxnorm_cnn-", "bf16 "),
        tunes="keras"),
    "keras-torch": Backend(
        name="keras-torch", target="backends.keras_backend:KerasTorchAdapter",
        framework="Keras 3 (PyTorch)", requires=("keras", "torch"), env="tf",
        install_hint=TF_HINT,
        description="the keras backend's model and loop on Keras' torch backend",
        worker_env=(("KERAS_BACKEND", "torch"),)),
    "keras-jax": Backend(
        name="keras-jax", target="backends.keras_backend:KerasJaxAdapter",
        framework="Keras 3 (JAX)", requires=("keras", "jax"), env="tf",
        install_hint=TF_HINT,
        description="the keras backend's model and loop on Keras' jax backend (XLA-jitted steps)",
        worker_env=(("KERAS_BACKEND", "jax"),)),
    "jax": Backend(
        name="jax", target="backends.jax_backend:JaxAdapter", framework="JAX (Flax NNX + optax)",
        requires=("jax", "flax", "optax"), env="jax",
        install_hint="tox -e jax --notest (jax==0.10.2, flax==0.12.8, optax==0.2.8; see tox.ini)",
        description="flax.nnx.Sequential built from the spec, optax, one jax.jit step over the "
                    "nnx.split state"),
    "tf-layers": Backend(
        name="tf-layers", target="backends.tf_layers_backend:TfLayersAdapter",
        framework="TensorFlow 1.x graph (tf.compat.v1.layers)", requires=("tensorflow",),
        env="tf_legacy",
        install_hint=TF_LEGACY_HINT,
        description="tf.compat.v1.layers in a Graph, Session.run([train_op, loss], feed_dict) per step",
        worker_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),)),
    "tf-estimator": Backend(
        name="tf-estimator", target="backends.tf_estimator_backend:TfEstimatorAdapter",
        framework="TensorFlow Estimator", requires=("tensorflow",), env="tf_legacy",
        install_hint=TF_LEGACY_HINT,
        description="tf.estimator.Estimator, model_fn of tf.compat.v1.layers, input_fn from the "
                    "harness's batches, step times from a SessionRunHook",
        worker_env=(("TF_CPP_MIN_LOG_LEVEL", "2"),)),
}


#: former names, still accepted on the command line and mapped in old records: backend names
#: use hyphens (tf-xla, keras-jax); the two graph-era TF adapters were once tf_layers/tf_estimator
ALIASES = {"tf_layers": "tf-layers", "tf_estimator": "tf-estimator"}


def names():
    return sorted(BACKENDS)


def canonical(name):
    """The current name of a backend given by any of its names (`NAME@ENV` keeps its env)."""
    base_name, at, env = (name or "").partition("@")
    return ALIASES.get(base_name, base_name) + at + env


class UnknownBackend(KeyError):
    def __str__(self):
        return self.args[0]


def get(name):
    """The entry for `name`; `name@env` is that adapter run in another of its framework's
    environments (a control: `tf@tf_legacy` is the tf adapter on TF 2.15, beside tf-layers and
    tf-estimator, so API and version can be told apart). The parent checks that the env exists
    (bench/plan.py); here only the form is checked."""
    base_name, at, env = canonical(name).partition("@")
    try:
        backend = BACKENDS[base_name]
    except KeyError:
        raise UnknownBackend("unknown backend %r (known: %s; NAME@ENV runs NAME in another "
                             "environment)" % (name, ", ".join(names())))
    if not at:
        return backend
    if not env.replace("_", "").replace("-", "").isalnum():
        raise UnknownBackend("backend %r: after '@' comes an environment name (base, or a tox env "
                             "of tox.ini, e.g. tf@tf_legacy)" % name)
    return backend._replace(name=name, env=env, framework="%s [%s env]" % (backend.framework, env))


def load_adapter_class(backend):
    """Import the adapter class (inside the worker only)."""
    module_name, class_name = backend.target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)
