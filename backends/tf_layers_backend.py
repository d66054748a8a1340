"""TensorFlow 1.x graph style: `tf.compat.v1.layers` in a `tf.compat.v1.Graph`, a `Session`, feed_dict.

The idiom of the 2018 posts (cnn_mnist.py and friends), run on tensorflow-cpu 2.15.1 (tox env
`tf_legacy`): placeholders for the batch, a `training` placeholder for dropout and batchnorm,
`tf.compat.v1.train.*Optimizer(...).minimize` under the UPDATE_OPS control dependency (rmsprop:
see below), and one `session.run([train_op, loss], feed_dict)` per step. Weights go in through
placeholders and assign ops built once with the graph.

The network is declared once, for this adapter and the Estimator's model_fn
(backends/tf_estimator_backend.py): `TfGraphAdapter.LAYERS` maps each layer kind to a function that
binds the layer's parameters (by TF variable name) and returns `f(x, training) -> x`, the
tf.compat.v1.layers call; `network()` composes them inside whichever graph owns the variables.
Max-norm kernels get Keras' MaxNorm formula as tf.compat.v1.layers' `kernel_constraint`: the
optimizers (tf.compat.v1.train.Optimizer and Keras' OptimizerV2) assign it after each update.

Layout at the boundary (models/spec.py is canonical; backends/common/layout.py: ChannelsLast):
  * data arrives NCHW and becomes NHWC inside the graph (`tf.reshape` when C == 1, as the tutorial
    does, else `tf.transpose`); conv kernels OIHW <-> HWIO; the rows of the first dense kernel
    after a flatten are permuted (TF flattens (H, W, C));
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
  * nesterov: MomentumOptimizer(use_nesterov=True), PyTorch's form; adadelta: AdadeltaOptimizer
    (eps inside both roots). Schedules: tf.compat.v1.train.inverse_time_decay / exponential_decay
    (staircase) / cosine_decay of the global step (tf_layers makes one; reset with the optimizer).
  * hyperparameters are passed as tensors of the model dtype: a Python float would become a float32
    tensor cast to float64 (lr 0.01 -> 0.009999999776), and Adam's beta powers would be float32.
  * batchnorm: float32 uses the fused kernel (tf.compat.v1.layers' default for 4-D inputs), whose
    running variance gets the unbiased batch variance, PyTorch's rule. The fused kernel has no
    float64 version; float64 and 2-D batchnorm use the unfused path, whose running variance is fed
    the BIASED batch variance (a relative difference of 1/(n-1), n = N*H*W per step, in the running
    variance only: training steps are unaffected, eval-mode predictions slightly).
"""
import math
import os
import warnings

from backends.base import Unavailable
from backends.common import schedule, tables
from backends.common.adapter import TableAdapter
from backends.common.layout import ChannelsLast, max_norm_axes
from backends.common.padding import conv_padding
from backends.common.walker import walk
from models.spec import MAX_NORM_EPS


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


# --- the spec, layer by layer: f(x, training) -> x, tf.compat.v1.layers calls -------------------
# Each function runs once per adapter (at build, binding the parameters); the f it returns runs in
# every graph that needs the network (the Estimator builds one per train/predict call).

def _conv2d(a, step):
    layer = step.layer
    padding, pads = _tf_padding(layer, step.in_shape)
    activation = tables.activation(a, layer.activation)
    constraint = _bind_kernel(a, layer, 4)

    def conv2d(x, training):
        if pads is not None:  # padding TF's 'same' does not give: explicit, then 'valid'
            x = a.tf.pad(x, pads)
        return a.tf.compat.v1.layers.conv2d(
            x, layer.filters, layer.kernel, strides=layer.stride, padding=padding,
            activation=activation, use_bias=layer.use_bias, kernel_constraint=constraint,
            name=layer.name)
    return conv2d


def _tf_padding(layer, in_shape):
    """(TF padding, explicit tf.pad amounts or None): TF's own 'valid'/'same' where it is the
    spec's padding."""
    pad = conv_padding(layer)
    if pad.mode in ("valid", "same"):
        return pad.mode, None
    if pad.zero:
        return "valid", None
    same = []
    for size, k, s in zip(in_shape[1:], layer.kernel, layer.stride):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        same.append((total // 2, total - total // 2))
    if tuple(same) == pad.pads:  # explicit amounts that are TF's 'same' (torch_bn's padding = 2)
        return "same", None
    return "valid", [[0, 0], list(pad.pads[0]), list(pad.pads[1]), [0, 0]]


def _dense(a, step):
    layer = step.layer
    activation = tables.activation(a, layer.activation)
    constraint = _bind_kernel(a, layer, 2)

    def dense(x, training):
        return a.tf.compat.v1.layers.dense(x, layer.units, activation=activation,
                                           use_bias=layer.use_bias, kernel_constraint=constraint,
                                           name=layer.name)
    return dense


def _bind_kernel(a, layer, ndim):
    """Binds kernel (and bias); returns the kernel's max-norm constraint, or None."""
    name = layer.name + ".weight"
    a.bindings.bind(name, layer.name + "/kernel", a.layout.layout(name))
    if layer.use_bias:
        a.bindings.bind(layer.name + ".bias", layer.name + "/bias")
    if layer.max_norm is None:
        return None
    return _max_norm(a.tf, layer.max_norm, list(max_norm_axes(ndim, channels_last=True)))


def _max_norm(tf, c, axes):
    """Keras' MaxNorm: w * clip(n, 0, c) / (eps + n), n the L2 norm over `axes` (HWIO conv kernels:
    0, 1, 2; dense (in, out): 0), i.e. per output unit."""
    def max_norm(w):
        norms = tf.sqrt(tf.reduce_sum(tf.square(w), axis=axes, keepdims=True))
        return w * (tf.clip_by_value(norms, 0.0, c) / (MAX_NORM_EPS + norms))
    return max_norm


def _batchnorm(a, step):
    layer = step.layer
    for field, var in (("gamma", "gamma"), ("beta", "beta"), ("running_mean", "moving_mean"),
                       ("running_var", "moving_variance")):
        name = layer.name + "." + field
        a.bindings.bind(name, layer.name + "/" + var, a.layout.layout(name))

    def batchnorm(x, training):
        momentum = 1.0 - layer.momentum
        if x.dtype == a.tf.float64:
            # the unfused (float64) path turns a Python momentum into a float32 decay tensor:
            # 1 - 0.9 -> 0.10000000149 in the running statistics. A float64 tensor keeps it.
            momentum = a.tf.constant(momentum, a.tf.float64)
        return a.tf.compat.v1.layers.batch_normalization(
            x, axis=-1, momentum=momentum, epsilon=layer.eps, training=training, name=layer.name)
    return batchnorm


def _pool(name):
    def pool(a, step):
        layer = step.layer
        return lambda x, training: getattr(a.tf.compat.v1.layers, name)(
            x, layer.size, layer.stride, padding="valid", name=layer.name)
    return pool


def _dropout(a, step):
    rate = step.layer.rate if a.config.dropout else 0.0
    return lambda x, training: a.tf.compat.v1.layers.dropout(x, rate=rate, training=training,
                                                             name=step.layer.name)


def _activation(a, step):
    function = tables.activation(a, step.layer.function)
    return None if function is None else (lambda x, training: function(x))


# --- optimizers: fn(adapter, const) -> optimizer; const(v) is a tensor of the model dtype --------

def _lr(a, const):
    """The learning rate: a constant, or tf.compat.v1.train's decay of the global step (k, the
    updates made before this one; the optimizer increments it after its update)."""
    c, train, step = a.config, a.tf.compat.v1.train, a.global_step
    lr = const(c.lr)
    if c.schedule == "time":  # rates as tensors: tf.cast would round a Python float via float32
        return train.inverse_time_decay(lr, step, 1, const(c.decay))
    if c.schedule == "step":
        return train.exponential_decay(lr, step, c.decay_steps, const(c.gamma), staircase=True)
    if c.schedule == "cosine" and lr.dtype == a.tf.float64:
        # TF 2.15's cosine_decay multiplies by a float32 pi and fails in float64: its formula
        k = a.tf.minimum(a.tf.cast(step, lr.dtype), float(c.decay_steps))
        return lr * (0.5 * (1.0 + a.tf.cos(math.pi * k / float(c.decay_steps))))
    if c.schedule == "cosine":
        return train.cosine_decay(lr, step, c.decay_steps, alpha=0.0)
    return lr


def _adam(a, const):
    c = a.config
    eps = const(c.eps)

    def epsilon():  # called by the optimizer after its beta accumulators exist
        beta2_power = opt._get_beta_accumulators()[1]
        return eps * a.tf.sqrt(1.0 - a.tf.cast(beta2_power, eps.dtype))

    opt = a.tf.compat.v1.train.AdamOptimizer(_lr(a, const), const(c.beta1), const(c.beta2),
                                             epsilon=epsilon)
    return opt


OPTIMIZER_NAMES = {"sgd": "tf.compat.v1.train.GradientDescentOptimizer",
                   "momentum": "tf.compat.v1.train.MomentumOptimizer",
                   "nesterov": "tf.compat.v1.train.MomentumOptimizer(use_nesterov=True)",
                   "adadelta": "tf.compat.v1.train.AdadeltaOptimizer",
                   "adam": "tf.compat.v1.train.AdamOptimizer (epsilon = eps*sqrt(1-beta2^t))",
                   "rmsprop": "tf.keras.optimizers.legacy.RMSprop (OptimizerV2, get_updates)"}


def mean_cross_entropy(tf, labels, logits):
    """Batch mean of softmax cross-entropy, in the logits' dtype.

    Not tf.compat.v1.losses.sparse_softmax_cross_entropy: its reduction casts to float32 (a float64
    run would report float32-rounded losses, and 1/N would be rounded for batch sizes that are not
    powers of two).
    """
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                          name="loss")


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


# --- the adapters ---------------------------------------------------------------------------------

class TfGraphAdapter(TableAdapter):
    """What tf-layers and tf-estimator share: the tables, the network and the train op.

    Parameters are bound by TF variable name ("conv1/kernel"): the variables live in graphs built
    later (one per Estimator call); the subclass reads and writes them by that name."""
    precision_note = ("runs a TF 1.x graph: its mixed-precision graph rewrite is float16 for "
                      "GPUs, with no bfloat16 CPU path")
    framework = "tensorflow"
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": _pool("max_pooling2d"),
        "avgpool2d": _pool("average_pooling2d"),
        "flatten": lambda a, step: lambda x, training: a.tf.compat.v1.layers.flatten(
            x, name=step.layer.name),
        "dense": _dense,
        "dropout": _dropout,
        "batchnorm": _batchnorm,
        "activation": _activation,
    }
    OPTIMIZERS = {
        "sgd": lambda a, const: a.tf.compat.v1.train.GradientDescentOptimizer(_lr(a, const)),
        "momentum": lambda a, const: a.tf.compat.v1.train.MomentumOptimizer(
            _lr(a, const), const(a.config.momentum)),
        # accum = mu*accum + g; p -= lr*g + lr*mu*accum: PyTorch's Nesterov
        "nesterov": lambda a, const: a.tf.compat.v1.train.MomentumOptimizer(
            _lr(a, const), const(a.config.momentum), use_nesterov=True),
        "adam": _adam,
        # v starts at zero, p -= lr*g/(sqrt(v)+eps): PyTorch's RMSprop (no momentum, uncentered)
        "rmsprop": lambda a, const: a.tf.keras.optimizers.legacy.RMSprop(
            learning_rate=_lr(a, const), rho=const(a.config.rho), momentum=0.0,
            epsilon=a.config.eps, centered=False),
        "adadelta": lambda a, const: a.tf.compat.v1.train.AdadeltaOptimizer(
            _lr(a, const), rho=const(a.config.rho), epsilon=const(a.config.eps)),
    }

    def prepare(self):
        """Import TF, walk the spec (binding every parameter); no graph yet."""
        schedule.check(self.config)
        tf = self.tf = import_tf()
        self.ACTIVATIONS = {"relu": tf.nn.relu, "tanh": tf.nn.tanh}
        self.device = check_device(tf, self.config.device)
        self.dtype = tf.as_dtype(self.config.dtype)
        self.config_proto = session_config(tf, self.config.threads)
        self.layout = ChannelsLast(self.spec)
        self.new_bindings()
        self.blocks = walk(self)
        self.bindings.check(self.spec.params())

    def network(self, x, training):
        """Logits of the NCHW batch `x`, built in the current graph (which gets the variables)."""
        tf = self.tf
        c, h, w = self.spec.input_shape
        net = tf.reshape(x, [-1, h, w, 1]) if c == 1 else tf.transpose(x, [0, 2, 3, 1])
        for block in self.blocks:
            net = block(net, training)
        return net

    def minimize(self, loss, global_step=None):
        """The train op: the optimizer's update under the UPDATE_OPS dependency (batchnorm
        statistics). The optimizer (and its hyperparameter tensors) is made outside that
        dependency: its variables' initial values must not depend on the batch."""
        tf = self.tf
        if global_step is None:  # tf_layers: the schedules count updates with one (reset with
            global_step = tf.compat.v1.train.get_or_create_global_step()  # the optimizer)
        self.global_step = global_step
        opt = tables.optimizer(self, lambda v: tf.constant(v, dtype=self.dtype))
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        with tf.control_dependencies(update_ops):
            if isinstance(opt, tf.compat.v1.train.Optimizer):
                return opt.minimize(loss, global_step=global_step)
            # Keras 2's OptimizerV2 (rmsprop) in a v1 graph: its update ops, then the step count
            updates = opt.get_updates(loss, tf.compat.v1.trainable_variables())
            with tf.control_dependencies(updates):
                return global_step.assign_add(1).op


class TfLayersAdapter(TfGraphAdapter):
    name = "tf-layers"

    def build(self):
        self.prepare()
        tf, cfg = self.tf, self.config
        self.graph = tf.compat.v1.Graph()
        with self.graph.as_default(), tf.device(self.device):
            tf.compat.v1.set_random_seed(cfg.seed)  # dropout masks (not shared across backends)
            c, h, w = self.spec.input_shape
            self.x = tf.compat.v1.placeholder(self.dtype, [None, c, h, w], name="x")
            self.y = tf.compat.v1.placeholder(tf.int64, [None], name="y")
            self.training = tf.compat.v1.placeholder_with_default(False, shape=(), name="training")
            self.logits = self.network(self.x, self.training)
            self.loss = mean_cross_entropy(tf, self.y, self.logits)
            self.train_op = self.minimize(self.loss)

            variables = dict((v.op.name, v) for v in tf.compat.v1.global_variables())
            self.variables = {}  # TF variable name -> (variable, placeholder, assign op)
            for var_name, _ in self.bindings.table.values():
                var = variables[var_name]
                ph = tf.compat.v1.placeholder(var.dtype.base_dtype, var.shape,
                                              name="set_" + var_name.replace("/", "_"))
                self.variables[var_name] = (var, ph, var.assign(ph, read_value=False))
            model_vars = set(id(v) for v, _, _ in self.variables.values())
            other = [v for v in tf.compat.v1.global_variables() if id(v) not in model_vars]
            self.reset_optimizer_op = tf.compat.v1.variables_initializer(other)
            init = tf.compat.v1.global_variables_initializer()
        self.graph.finalize()  # no new ops after build: set/get_weights reuse the ops above
        self.session = tf.compat.v1.Session(graph=self.graph, config=self.config_proto)
        self.session.run(init)
        self.reset_optimizer()

    def read_param(self, handle):
        return self.session.run(self.variables[handle][0])

    def write_param(self, handle, value):
        _, ph, assign = self.variables[handle]
        self.session.run(assign, {ph: value})

    def reset_optimizer(self):
        self.session.run(self.reset_optimizer_op)

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
        info["optimizer"] = OPTIMIZER_NAMES[self.config.optimizer]
        return info

    def close(self):
        session = getattr(self, "session", None)
        if session is not None:
            session.close()
            self.session = None
