"""Keras 3: the spec as a `keras.Sequential` (channels_last), trained the Keras way, on any of
Keras' backends: `keras` (TensorFlow), `keras-torch` and `keras-jax`.

The Keras backend is a process-wide choice made when keras is first imported: the registry sets
KERAS_BACKEND in the worker's environment, and build() refuses to run when keras was already
imported with another backend.

Training modes (TrainConfig.mode):
- "step": `model.train_on_batch` per harness step (timed by the harness, the default
  Adapter.train_epoch). train_on_batch resets the metrics first, so its loss is this batch's loss
  (the loss tracker's sum/count of one batch: exact for power-of-two batch sizes, within one
  rounding otherwise).
- "epoch": `model.fit` over the harness's batches, in the harness's order: they are concatenated
  into NHWC arrays and fit(x, y, batch_size=len(first batch), shuffle=False, epochs=1, verbose=0)
  slices them back into exactly those batches (the idiom, and as fast as a hand-written fit; batches
  of unequal sizes go through a generator instead). Per-step times come from a Callback
  (on_train_batch_begin/end with the suite's clock). fit's `logs["loss"]` is a running mean over
  the epoch, NOT the batch loss, so the model is compiled with one extra metric, `batch_loss`,
  which stores (assigns, not averages) the compiled loss function's value on this step's logits:
  that value is what on_step receives. It costs one more softmax cross-entropy over (batch, 10)
  logits per step. The concatenation happens before fit, outside the per-step times (inside the
  epoch's wall time).

Sameness with the suite (PyTorch's definitions):
- layout: data NHWC, conv kernels HWIO (Keras' own); the first dense kernel after a flatten gets
  its rows permuted at the boundary (TF flattens (H, W, C), the canonical order is (C, H, W)):
  backends/common/layout.py's ChannelsLast;
- padding: spec 'same' is Keras' 'same'; explicit padding is a ZeroPadding2D before a 'valid' conv;
- optimizers: sgd and momentum are keras.optimizers.SGD (Keras keeps m = mu*m - lr*g, p += m:
  the same iterates as v = mu*v + g, p -= lr*v for a constant lr, up to rounding; checked: float64
  losses agree with the NumPy reference to 1e-15 over 100 steps). For float64 on the TensorFlow
  backend the momentum is handed over as np.float64: Keras casts it with ops.cast, which there
  rounds a Python float to float32 first (mu would be 0.8999999762, ~1e-8 relative drift per step).
  Keras' Adam adds eps to sqrt(v) of the UNcorrected v (in PyTorch terms eps*sqrt(1-beta2^t)),
  Keras' RMSprop puts eps INSIDE the square root; so both are implemented here exactly in
  PyTorch's form as small keras.optimizers.Optimizer subclasses (PyTorchAdam, PyTorchRMSprop in
  backends/keras_parts.py);
- max-norm: Keras' own keras.constraints.MaxNorm as the kernel_constraint (axis=[0, 1, 2] for HWIO
  conv kernels, 0 for dense), applied by the optimizer after every update;
- batchnorm: keras momentum = 1 - spec momentum, epsilon = spec eps. DIFFERENCE, kept as Keras
  does it: Keras updates moving_variance with the BIASED batch variance, the canonical state (and
  PyTorch, the NumPy reference, the `tf` adapter) the unbiased one (x n/(n-1), n = values per
  channel in the batch). Normalization in training is identical; running_var after training
  differs by a relative ~1/n of the batch part (torch_bn, batch 128: n = 100352 and 25088), and so
  do eval-mode logits, slightly;
- loss: SparseCategoricalCrossentropy(from_logits=True), mean over the batch;
- dtype: keras.config.set_floatx(config.dtype) before anything is built, and the dtype passed to
  every layer, the loss and the metric (the optimizer's learning rate follows floatx). keras-jax
  turns on jax_enable_x64 for float64. PATCH, float64 on keras-torch and keras-jax only: Keras 3.15's
  type promotion (keras.src.backend.common.dtypes.result_type, which ops.matmul, add, ... use)
  maps float64 -> float32 on every backend but TensorFlow "to align with JAX's default", so a
  float64 model computes its matmuls in float32 (measured: 1e-7 logits error, 1e-4 on a 1600-term
  dot product). For float64 runs the adapter sets that table's float64 entry back to float64
  (BIT64_TO_BIT32_DTYPE["float64"] = "float64"), recorded in environment() as
  float64_promotion_patch; float32 runs use Keras untouched.

Threads: TensorFlow intra/inter-op pools (set before TF runs an op), torch.set_num_threads /
set_num_interop_threads, and for JAX (XLA has no thread-count flag) the process' CPU affinity is
narrowed to `threads` cores before jax starts (backends/common/setup.py: pin_cpus), which sizes
XLA's CPU thread pool.

Layout of the code: backends/keras_common.py holds what every Keras backend shares (the LAYERS and
OPTIMIZERS tables, build, the training loops); this module the three adapters, one per Keras
backend, each with its own framework set-up, peak memory and environment fields.
"""
import os
import sys

import numpy as np

from backends.base import Unavailable
from backends.common.setup import pin_cpus
from backends.keras_common import KerasBase
from backends.tf_common import (check_tf_device, set_tf_threads, tf_device_peak_bytes,
                                tf_environment, tf_gpu_details)


class KerasAdapter(KerasBase):
    """Keras on TensorFlow."""
    name = "keras"
    keras_backend = "tensorflow"

    def prepare_framework(self):
        import tensorflow as tf

        cfg = self.config
        notes = {}
        note = set_tf_threads(tf, cfg.threads)
        if note:
            notes["threads_note"] = note
        self.tf_device = check_tf_device(tf, cfg.device)
        if cfg.device == "cpu" and tf.config.list_physical_devices("GPU"):
            # Keras places on the GPU by default: hide it (before TF's runtime starts)
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError as exc:
                notes["device_note"] = "could not hide the GPU: %s" % exc
        return notes

    def momentum(self):
        if self.config.dtype == "float64":
            # np.float64, a float subclass: Keras' SGD casts it with ops.cast(momentum,
            # var.dtype), which on the TensorFlow backend is tf.cast(python float) = a float32
            # constant first: float64 training would use momentum float32(0.9) = 0.8999999762
            return np.float64(self.config.momentum)
        return float(self.config.momentum)

    def backend_peak_bytes(self):
        import tensorflow as tf
        return tf_device_peak_bytes(tf, self.tf_device)

    def backend_environment(self):
        import tensorflow as tf
        info = {"backend_version": tf.__version__, "device_name": self.tf_device}
        info.update(tf_environment(tf))
        info.update(tf_gpu_details(tf, self.tf_device))
        return info


class KerasXlaAdapter(KerasAdapter):
    """Keras on TensorFlow, tuned as Keras' performance advice says: Model.compile(jit_compile=
    True), the train step compiled by XLA. The idiomatic `keras` adapter passes Keras' default
    jit_compile="auto", which Keras 3 resolves to False on a CPU-only TensorFlow machine (it turns
    XLA on only when TF sees a GPU), so `keras` runs tf.function graphs without XLA."""
    name = "keras-xla"
    jit_compile = True


class KerasTorchAdapter(KerasBase):
    """Keras on PyTorch."""
    name = "keras-torch"
    keras_backend = "torch"

    def prepare_framework(self):
        import torch

        cfg = self.config
        notes = {}
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise Unavailable("no CUDA device: torch.cuda.is_available() is False (the tf env "
                              "installs the CPU build of torch); run on a GPU machine with a "
                              "CUDA build of torch, or with --device cpu")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
            try:
                torch.set_num_interop_threads(cfg.threads)
            except RuntimeError as exc:  # only settable before torch's first parallel work
                notes["threads_note"] = "interop threads: %s" % exc
        if "keras" not in sys.modules:  # Keras' torch backend reads it at import
            os.environ["KERAS_TORCH_DEVICE"] = cfg.device
        return notes

    def configure_keras(self, keras):
        return _allow_float64_promotion(self.config.dtype)

    def backend_peak_bytes(self):
        import torch
        return int(torch.cuda.max_memory_allocated())

    def backend_environment(self):
        import torch
        from keras.src.backend.torch.core import get_device
        return {"backend_version": torch.__version__, "device_name": str(get_device()),
                "intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads()}


class KerasJaxAdapter(KerasBase):
    """Keras on JAX (its train steps jitted by XLA)."""
    name = "keras-jax"
    keras_backend = "jax"

    def prepare_framework(self):
        cfg = self.config
        notes = {}
        pinned = pin_cpus(cfg.threads)  # before jax starts: sizes XLA's CPU thread pool
        if pinned:
            notes["cpu_affinity"] = pinned
        if cfg.device == "cpu" and "jax" not in sys.modules:
            os.environ["JAX_PLATFORMS"] = "cpu"  # Keras' jax backend uses the default device
        import jax
        if cfg.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        if cfg.device == "cuda":
            try:
                jax.devices("gpu")
            except RuntimeError as exc:
                raise Unavailable("no CUDA device: jax.devices('gpu') failed (%s; the tf env "
                                  "installs the CPU-only jaxlib); run on a GPU machine with "
                                  "jax[cuda12], or with --device cpu" % str(exc).splitlines()[0])
        return notes

    def configure_keras(self, keras):
        return _allow_float64_promotion(self.config.dtype)

    def backend_peak_bytes(self):
        import jax
        stats = jax.devices("gpu")[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return None if peak is None else int(peak)

    def backend_environment(self):
        import jax
        import jaxlib
        info = {"backend_version": "jax %s, jaxlib %s" % (jax.__version__, jaxlib.__version__),
                "device_name": str(jax.devices()[0]), "x64": bool(jax.config.jax_enable_x64)}
        if hasattr(os, "sched_getaffinity"):
            info["cpu_threads"] = len(os.sched_getaffinity(0))
        info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
        return info


def _allow_float64_promotion(dtype):
    """Keras' float64 -> float32 promotion undone for float64 runs (see the module docstring);
    float32 runs use Keras untouched."""
    if dtype != "float64":
        return {}
    from keras.src.backend.common import dtypes
    table = dtypes.BIT64_TO_BIT32_DTYPE
    before = table.get("float64")
    table["float64"] = "float64"
    return {"float64_promotion_patch":
            "keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE['float64']: %s -> float64"
            % before}
