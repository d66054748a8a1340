"""TensorFlow 1.x graph style: `tf.compat.v1.layers` in a `tf.compat.v1.Graph`, a `Session`, feed_dict.

The idiom of the 2018 posts (cnn_mnist.py and friends), run on tensorflow-cpu 2.15.1 (tox env
`tf_legacy`): placeholders for the batch, a `training` placeholder for dropout and batchnorm,
`tf.compat.v1.train.*Optimizer(...).minimize` under the UPDATE_OPS control dependency (rmsprop:
see below), and one `session.run([train_op, loss], feed_dict)` per step. Weights go in through
placeholders and assign ops built once with the graph.

Layout at the boundary (models/spec.py is canonical):
  * data arrives NCHW and becomes NHWC inside the graph (`tf.reshape` when C == 1, as the tutorial
    does, else `tf.transpose`);
  * conv kernels: canonical OIHW <-> TF HWIO;
  * TF flattens (H, W, C), the canonical flatten is (C, H, W): the rows of the FIRST dense kernel after
    a flatten of a spatial tensor are permuted at set/get_weights;
  * batchnorm: the spec's momentum has PyTorch's meaning (running = (1-m)*running + m*batch), TF's
    is the decay (running = m*running + (1-m)*batch): TF momentum = 1 - spec momentum (a float64
    tensor in float64 runs: the unfused path would make a float32 decay of a Python float).

Where TF 1.x's formulas differ from the suite's (PyTorch's, backends/numpy_ref.py) and how this
adapter closes the gap:
  * momentum: MomentumOptimizer is v = mu*v + g; p -= lr*v, exactly PyTorch's SGD(momentum).
  * adam: AdamOptimizer adds an "epsilon hat" to the bias-UNcorrected sqrt(v):
      p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps_hat).
    PyTorch adds eps to the bias-corrected sqrt(v_hat). The two are equal when
    eps_hat = eps*sqrt(1-b2^t): the optimizer gets that as its (callable) epsilon, computed from its
    own beta2_power accumulator, so the update is PyTorch's algebraically.
  * rmsprop: tf.compat.v1.train.RMSPropOptimizer initializes the mean square to ONES and divides
    by sqrt(v + eps), eps inside the root; no scalar epsilon or slot reset turns that into PyTorch's
    g/(sqrt(v) + eps) with v from zero (measured: zeroed slots and eps**2 still drift 5e-4 in loss
    within 10 float64 steps). So rmsprop uses Keras 2's tf.keras.optimizers.legacy.RMSprop
    (OptimizerV2, shipped with TF 2.15, the optimizer TF 2.x canned Estimators take) through
    `get_updates` in the same graph: without momentum it is exactly v = rho*v + (1-rho)*g^2,
    p -= lr*g/(sqrt(v)+eps), v from zero.
  * hyperparameters are passed as tensors of the model dtype: a Python float would become a float32
    tensor cast to float64 (lr 0.01 -> 0.009999999776), and Adam's beta powers would be float32.
  * batchnorm: float32 uses the fused kernel (tf.compat.v1.layers' default for 4-D inputs), whose
    running variance gets the unbiased batch variance, PyTorch's rule. The fused kernel has no
    float64 version; float64 and 2-D batchnorm use the unfused path, whose running variance is fed
    the BIASED batch variance (a relative difference of 1/(n-1), n = N*H*W per step, in the running
    variance only: training steps are unaffected, eval-mode predictions slightly).
"""
import os
import warnings
from collections import OrderedDict

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported


def import_tf():
    """Import TensorFlow quietly (C++ INFO logs, v1 deprecation warnings)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed.*")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def check_device(tf, device):
    """'/cpu:0' or '/gpu:0'; Unavailable when CUDA is asked and TF sees no GPU."""
    if device == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            raise Unavailable("--device cuda asked, but TensorFlow %s sees no GPU (the tf_legacy env "
                              "installs tensorflow-cpu); run with --device cpu" % tf.__version__)
        return "/gpu:0"
    return "/cpu:0"


def session_config(tf, threads):
    kw = {}
    if threads:
        kw = dict(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    return tf.compat.v1.ConfigProto(**kw)


# --- the network, shared with the Estimator adapter -----------------------------------------------

def build_network(tf, spec, x, training, dropout=True):
    """The spec as tf.compat.v1.layers calls on the NCHW input tensor `x`; returns (logits, params).

    `params` maps each canonical parameter name to (TF variable name, conversion kind):
    'conv' (OIHW <-> HWIO), ('flat_dense', (C, H, W)) (row permutation), or 'plain'.
    Must be called inside the graph (and variable scope) that owns the variables.
    """
    layers = tf.compat.v1.layers
    c, h, w = spec.input_shape
    if c == 1:
        net = tf.reshape(x, [-1, h, w, 1])
    else:
        net = tf.transpose(x, [0, 2, 3, 1])
    params = OrderedDict()
    in_shape = spec.input_shape
    flat_from = None  # (C, H, W) of a flattened spatial tensor, until the first dense takes it
    for layer, shape in zip(spec.layers, spec.shapes):
        if layer.kind == "conv2d":
            padding = _tf_padding(layer, in_shape)
            if padding is None:
                (pt, pb), (pl, pr) = layer.padding
                net = tf.pad(net, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
                padding = "valid"
            net = layers.conv2d(net, layer.filters, layer.kernel, strides=layer.stride,
                                padding=padding, activation=_activation(tf, layer.activation),
                                use_bias=layer.use_bias, name=layer.name)
            params[layer.name + ".weight"] = (layer.name + "/kernel", "conv")
            if layer.use_bias:
                params[layer.name + ".bias"] = (layer.name + "/bias", "plain")
        elif layer.kind == "maxpool2d":
            net = layers.max_pooling2d(net, layer.size, layer.stride, padding="valid",
                                       name=layer.name)
        elif layer.kind == "flatten":
            net = layers.flatten(net, name=layer.name)
            if len(in_shape) == 3 and in_shape[0] > 1 and in_shape[1] * in_shape[2] > 1:
                flat_from = tuple(in_shape)
        elif layer.kind == "dense":
            net = layers.dense(net, layer.units, activation=_activation(tf, layer.activation),
                               use_bias=layer.use_bias, name=layer.name)
            kind = ("flat_dense", flat_from) if flat_from else "plain"
            flat_from = None
            params[layer.name + ".weight"] = (layer.name + "/kernel", kind)
            if layer.use_bias:
                params[layer.name + ".bias"] = (layer.name + "/bias", "plain")
        elif layer.kind == "dropout":
            net = layers.dropout(net, rate=layer.rate if dropout else 0.0, training=training,
                                 name=layer.name)
        elif layer.kind == "batchnorm":
            momentum = 1.0 - layer.momentum
            if x.dtype == tf.float64:
                # the unfused (float64) path turns a Python momentum into a float32 decay tensor:
                # 1 - 0.9 -> 0.10000000149 in the running statistics. A float64 tensor keeps it.
                momentum = tf.constant(momentum, tf.float64)
            net = layers.batch_normalization(net, axis=-1, momentum=momentum, epsilon=layer.eps,
                                             training=training, name=layer.name)
            for field, var in (("gamma", "gamma"), ("beta", "beta"),
                               ("running_mean", "moving_mean"),
                               ("running_var", "moving_variance")):
                params[layer.name + "." + field] = (layer.name + "/" + var, "plain")
        elif layer.kind == "activation":
            net = _activation(tf, layer.function)(net)
        else:
            raise Unsupported("layer kind %r" % layer.kind)
        in_shape = shape
    return net, params


def _tf_padding(layer, in_shape):
    """'valid' / 'same' when TF's own padding is the spec's, else None (explicit tf.pad)."""
    if layer.padding_mode in ("valid", "same"):
        return layer.padding_mode
    if layer.padding == ((0, 0), (0, 0)):
        return "valid"
    same = []
    for size, k, s in zip(in_shape[1:], layer.kernel, layer.stride):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        same.append((total // 2, total - total // 2))
    if tuple(same) == tuple(layer.padding):
        return "same"
    return None


def mean_cross_entropy(tf, labels, logits):
    """Batch mean of softmax cross-entropy, in the logits' dtype.

    Not tf.compat.v1.losses.sparse_softmax_cross_entropy: its reduction casts to float32 (a float64
    run would report float32-rounded losses, and 1/N would be rounded for batch sizes that are not
    powers of two).
    """
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                          name="loss")


def _activation(tf, function):
    return {"relu": tf.nn.relu, "tanh": tf.nn.tanh, "linear": None}[function]


OPTIMIZER_NAMES = {"sgd": "tf.compat.v1.train.GradientDescentOptimizer",
                   "momentum": "tf.compat.v1.train.MomentumOptimizer",
                   "adam": "tf.compat.v1.train.AdamOptimizer (epsilon = eps*sqrt(1-beta2^t))",
                   "rmsprop": "tf.keras.optimizers.legacy.RMSprop (OptimizerV2, get_updates)"}


def minimize(tf, config, loss, dtype, global_step=None):
    """The train op: the optimizer's update under the UPDATE_OPS dependency (batchnorm statistics).

    Optimizers with the suite's formulas (see the module docstring): tf.compat.v1.train's
    GradientDescent, Momentum and Adam (Adam with the epsilon conversion); RMSProp from Keras 2's
    OptimizerV2 (tf.keras.optimizers.legacy.RMSprop, the one TF 2.15's canned Estimators take),
    because tf.compat.v1.train.RMSPropOptimizer cannot be given PyTorch's formula. Hyperparameters
    are tensors of the model dtype. Returns (train_op, optimizer name).
    """
    train = tf.compat.v1.train
    c = config

    def const(v):
        return tf.constant(v, dtype=dtype)

    # the optimizer (and its hyperparameter tensors) outside the control dependency: its variables'
    # initial values must not depend on the batch
    if c.optimizer == "rmsprop":
        # v starts at zero, p -= lr*g/(sqrt(v)+eps): PyTorch's RMSprop (no momentum, uncentered)
        opt = tf.keras.optimizers.legacy.RMSprop(learning_rate=const(c.lr), rho=const(c.rho),
                                                 momentum=0.0, epsilon=c.eps, centered=False)
    elif c.optimizer == "sgd":
        opt = train.GradientDescentOptimizer(const(c.lr))
    elif c.optimizer == "momentum":
        opt = train.MomentumOptimizer(const(c.lr), const(c.momentum))
    elif c.optimizer == "adam":
        eps = const(c.eps)
        holder = []

        def epsilon():  # called by the optimizer after its beta accumulators exist
            beta2_power = holder[0]._get_beta_accumulators()[1]
            return eps * tf.sqrt(1.0 - tf.cast(beta2_power, dtype))

        opt = train.AdamOptimizer(const(c.lr), const(c.beta1), const(c.beta2), epsilon=epsilon)
        holder.append(opt)
    else:
        raise Unsupported("optimizer %r" % c.optimizer)

    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    with tf.control_dependencies(update_ops):
        if c.optimizer == "rmsprop":
            updates = opt.get_updates(loss, tf.compat.v1.trainable_variables())
            if global_step is not None:
                updates.append(global_step.assign_add(1))
            return tf.group(*updates), OPTIMIZER_NAMES[c.optimizer]
        return opt.minimize(loss, global_step=global_step), OPTIMIZER_NAMES[c.optimizer]


def to_tf(value, kind):
    """Canonical array -> the TF variable's layout."""
    value = np.asarray(value)
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if isinstance(kind, tuple):  # ('flat_dense', (C, H, W)): rows (c, h, w) -> (h, w, c)
        c, h, w = kind[1]
        return value.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return value


def from_tf(value, kind):
    """TF variable value -> canonical layout."""
    if kind == "conv":
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # HWIO -> OIHW
    if isinstance(kind, tuple):
        c, h, w = kind[1]
        return np.ascontiguousarray(
            value.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1))
    return np.ascontiguousarray(value)


def tf_environment(tf, threads, config_proto, api):
    build = {}
    try:
        build = dict(tf.sysconfig.get_build_info())
    except Exception:  # pragma: no cover - depends on the wheel
        pass
    return {"framework": "tensorflow", "framework_version": tf.__version__, "api": api,
            "layout": "NHWC inside (canonical NCHW/OIHW at the boundary)",
            "intra_op_threads": config_proto.intra_op_parallelism_threads,
            "inter_op_threads": config_proto.inter_op_parallelism_threads,
            "threads_requested": threads, "cpu_count": os.cpu_count(),
            "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on in TF 2.15 x86)"),
            "resource_variables": bool(tf.compat.v1.resource_variables_enabled()),
            "cuda_build": bool(build.get("is_cuda_build", False))}


# --- the adapter ----------------------------------------------------------------------------------

class TfLayersAdapter(Adapter):
    name = "tf_layers"
    framework = "tensorflow"

    def build(self):
        tf = self.tf = import_tf()
        cfg = self.config
        self.device = check_device(tf, cfg.device)
        self.dtype = tf.as_dtype(cfg.dtype)
        self.graph = tf.compat.v1.Graph()
        with self.graph.as_default(), tf.device(self.device):
            tf.compat.v1.set_random_seed(cfg.seed)  # dropout masks (not shared across backends)
            c, h, w = self.spec.input_shape
            self.x = tf.compat.v1.placeholder(self.dtype, [None, c, h, w], name="x")
            self.y = tf.compat.v1.placeholder(tf.int64, [None], name="y")
            self.training = tf.compat.v1.placeholder_with_default(False, shape=(), name="training")
            self.logits, self.param_map = build_network(tf, self.spec, self.x, self.training,
                                                        dropout=cfg.dropout)
            self.loss = mean_cross_entropy(tf, self.y, self.logits)
            self.train_op, self.optimizer_name = minimize(tf, cfg, self.loss, self.dtype)

            variables = dict((v.op.name, v) for v in tf.compat.v1.global_variables())
            self.variables = OrderedDict()
            self.assign_ph = OrderedDict()
            assigns = []
            for name, (var_name, kind) in self.param_map.items():
                var = variables[var_name]
                ph = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape,
                                              name="set_" + var_name.replace("/", "_"))
                self.variables[name] = var
                self.assign_ph[name] = ph
                assigns.append(var.assign(ph, read_value=False))
            self.assign_op = tf.group(*assigns)
            model_vars = set(id(v) for v in self.variables.values())
            other = [v for v in tf.compat.v1.global_variables() if id(v) not in model_vars]
            self.reset_optimizer_op = tf.compat.v1.variables_initializer(other)
            init = tf.compat.v1.global_variables_initializer()
        self.graph.finalize()  # no new ops after build: set/get_weights reuse the ops above
        self.config_proto = session_config(tf, cfg.threads)
        self.session = tf.compat.v1.Session(graph=self.graph, config=self.config_proto)
        self.session.run(init)
        self._reset_optimizer()

    def _reset_optimizer(self):
        self.session.run(self.reset_optimizer_op)

    def set_weights(self, params):
        feed = {}
        for name, (_, kind) in self.param_map.items():
            ph = self.assign_ph[name]
            feed[ph] = np.ascontiguousarray(to_tf(params[name], kind), dtype=ph.dtype.as_numpy_dtype)
        self.session.run(self.assign_op, feed)
        self._reset_optimizer()  # fresh optimizer state for fresh weights (as torch does)

    def get_weights(self):
        values = self.session.run(list(self.variables.values()))
        return OrderedDict((name, from_tf(v, self.param_map[name][1]))
                           for name, v in zip(self.variables, values))

    def train_step(self, x, y):
        _, loss = self.session.run([self.train_op, self.loss],
                                   {self.x: x, self.y: y, self.training: True})
        return float(loss)

    def predict(self, x):
        return self.session.run(self.logits, {self.x: x})

    def environment(self):
        info = tf_environment(self.tf, self.config.threads, self.config_proto,
                              "tf.compat.v1.layers in a Graph + Session.run(feed_dict)")
        info["device_name"] = self.device
        info["optimizer"] = self.optimizer_name
        return info

    def close(self):
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
            self.session = None
