"""TensorFlow pieces the `tf` and `keras` adapters and benchmarks/ share: thread pools, the device
check, allocator peak, environment fields and the spec's activations in tf ops.

Imports only the standard library at import time: every function takes the `tf` module.
"""
import os

from backends.base import Unavailable


def set_tf_threads(tf, threads):
    """intra- and inter-op pools of TF; must run before TF executes its first op."""
    if not threads:
        return None
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as exc:  # the runtime already started in this process
        return "could not set TF threads (%s)" % exc
    return None


def tf_environment(tf):
    info = {"intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)")}
    try:
        build = tf.sysconfig.get_build_info()
        info["tf_build"] = {k: build[k] for k in ("is_cuda_build", "is_rocm_build") if k in build}
    except Exception:  # pragma: no cover - informational only
        pass
    return info


def check_tf_device(tf, device):
    if device == "cuda":
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            raise Unavailable("no CUDA device: tf.config.list_physical_devices('GPU') is empty "
                              "(TensorFlow %s; the tf env installs the CPU-only tensorflow-cpu "
                              "wheel); run on a GPU machine with tensorflow[and-cuda], or with "
                              "--device cpu" % tf.__version__)
        return "/GPU:0"
    return "/CPU:0"


def tf_device_peak_bytes(tf, tf_device):
    """Peak bytes of TF's allocator on the GPU (None on the CPU)."""
    if not tf_device.startswith("/GPU"):
        return None
    return int(tf.config.experimental.get_memory_info(tf_device.lstrip("/"))["peak"])


def tf_gpu_details(tf, tf_device):
    """GPU name and compute capability as TF reports them ({} on the CPU)."""
    if not tf_device.startswith("/GPU"):
        return {}
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return {"gpu_name": details.get("device_name", ""),
            "compute_capability": details.get("compute_capability")}


def tf_activations(tf):
    """The spec's activations as tf ops (the tf adapter's ACTIVATIONS table)."""
    return {"relu": tf.nn.relu, "tanh": tf.tanh}


def tf_activate(tf, x, function):
    """`function` applied to x; "linear" (or None) is the identity."""
    found = tf_activations(tf).get(function)
    return x if found is None else found(x)
