"""CNTK 2.7 learners for the suite's optimizers: the OPTIMIZERS table of backends/cntk_backend.py.

Each entry is fn(adapter, parameters) -> (learner, description for environment()["learner"]).
CPython 3.6-compatible (the CNTK worker imports it).

Learning rate. The suite's meaning: lr applies to the batch MEAN of the loss. CNTK's criterion is the
per-sample cross-entropy summed over the minibatch. Every built-in learner here gets
`minibatch_size=C.learners.IGNORE` and `C.learning_parameter_schedule(lr)` (no reference minibatch
size): CNTK's "compatible mode", in which the learner divides the summed gradient by the actual
minibatch size and applies lr and momentum unscaled: the per-minibatch meaning for every batch
size, a partial last batch included. (A reference size N would make lr per N samples, applied to the
sum, i.e. lr*n/N times the mean on a batch of n, and momentum mu**(n/N).)

Optimizers, against the formulas of backends/numpy_ref.py (PyTorch's):
- sgd: `C.sgd`. Exact.
- momentum: `C.momentum_sgd(unit_gain=False)`. CNTK keeps u = mu*u + lr*g, p -= u; PyTorch keeps
  v = mu*v + g, p -= lr*v; with a constant lr, u = lr*v: the same iterates (rounding order aside).
  CNTK's default unit_gain=True would be u = mu*u + (1-mu)*lr*g: a 10x smaller step at mu=0.9.
- adam: CNTK's `C.adam(unit_gain=True)` computes p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps):
  eps is added to the UNcorrected sqrt(v), so in PyTorch's terms its eps is eps/sqrt(1-b2^t) (31.6x
  at step 1 with b2=0.999, 3.2x at step 100). That is not small on MNIST, where many weights see
  tiny gradients: 30 float64 steps of seed_convnet differ from the reference by 1e-3 in the loss and
  9e-3 in the weights. So by default Adam is PyTorch's formula written with `C.universal` (CNTK's
  own custom-learner API; the summed gradient is scaled by a 1/n constant, bias corrections are
  constants set per step): exact, and no slower here. CONVBENCH_CNTK_ADAM=native selects `C.adam`
  (recorded in environment()["learner"]).
- nesterov: `C.nesterov(unit_gain=False)`: u = mu*u + lr*g, p -= mu*u + lr*g, i.e. PyTorch's
  p -= lr*(g + mu*v) at a constant lr. adadelta: `C.adadelta` (eps inside both roots).
- schedules: the lr of every minibatch as a `C.learning_parameter_schedule` list (sgd, adadelta),
  a constant set per step for the C.universal learners; momentum and nesterov keep lr inside
  their buffer, which is not the suite's update once lr changes: Unsupported with a schedule.
- rmsprop: CNTK's built-in `C.rmsprop` is another algorithm: its mean square starts at g_1^2, not
  0, a fixed 1e-6 floor sits inside the sqrt (eps outside in PyTorch), and per-weight step sizes
  adapt by the gradient's sign (inc/dec/max/min). PyTorch's RMSProp (v = rho*v + (1-rho)*g^2,
  p -= lr*g/(sqrt(v)+eps)) is therefore written with `C.universal`, as Adam is. Exact.
"""
import os

import numpy as np

from backends.base import Unsupported
from backends.common import schedule

#: "universal": PyTorch's Adam exactly (C.universal); "native": C.adam (eps on the uncorrected
#: second moment, see above). The environment variable CONVBENCH_CNTK_ADAM overrides it.
CNTK_ADAM = os.environ.get("CONVBENCH_CNTK_ADAM", "universal")


#: the training examples a run of `epochs` sees per epoch when limit_train is 0 (MNIST's)
TRAIN_EXAMPLES = 60000


def _lr(a):
    """C.learning_parameter_schedule: a constant, or the schedule's lr per minibatch (a list with
    epoch_size = batch_size samples) over the run's steps; past them CNTK keeps the last value."""
    c = a.config
    if not schedule.varies(c):
        return a.C.learning_parameter_schedule(c.lr)
    steps = c.epochs * ((c.limit_train or TRAIN_EXAMPLES) // c.batch_size + 1)
    return a.C.learning_parameter_schedule([schedule.lr_at(c, k) for k in range(steps)],
                                           epoch_size=c.batch_size)


def _sgd(a, params):
    return (a.C.sgd(params, lr=_lr(a), minibatch_size=a.C.learners.IGNORE),
            "C.sgd(minibatch_size=IGNORE)")


def _momentum(a, params, nesterov=False):
    C = a.C
    why = schedule.unsupported_with_momentum(a.config)  # CNTK keeps u = mu*u + lr_k*g
    if why:
        raise Unsupported(why)
    make = C.nesterov if nesterov else C.momentum_sgd
    return (make(params, lr=_lr(a), momentum=C.momentum_schedule(a.config.momentum),
                 unit_gain=False, minibatch_size=C.learners.IGNORE),
            "C.%s(unit_gain=False, minibatch_size=IGNORE)" % make.__name__)


def _adadelta(a, params):
    c = a.config
    return (a.C.adadelta(params, lr=_lr(a), rho=c.rho, epsilon=c.eps,
                         minibatch_size=a.C.learners.IGNORE),
            "C.adadelta(minibatch_size=IGNORE)")


def _adam(a, params):
    if CNTK_ADAM not in ("universal", "native"):
        raise Unsupported("CONVBENCH_CNTK_ADAM=%r (universal or native)" % CNTK_ADAM)
    if CNTK_ADAM == "universal":
        return _universal(a, params, "adam")
    C, c = a.C, a.config
    return (C.adam(params, lr=_lr(a), momentum=C.momentum_schedule(c.beta1), unit_gain=True,
                   variance_momentum=C.momentum_schedule(c.beta2), epsilon=c.eps,
                   minibatch_size=C.learners.IGNORE),
            "C.adam(unit_gain=True, minibatch_size=IGNORE)")


def _universal(a, params, kind):
    """PyTorch's Adam / RMSProp as a CNTK update function (C.universal).

    A universal learner receives the gradient of the summed loss, so it is scaled by 1/N with a
    constant set in train_step; Adam's bias corrections are constants set per step likewise.
    """
    C, c = a.C, a.config
    dt = a.np_dtype.type
    a.inv_batch = C.constant(1.0, dtype=dt, name="inv_batch")
    a.bias_c1 = C.constant(1.0, dtype=dt, name="adam_c1")  # 1/(1-b1^t)
    a.bias_c2 = C.constant(1.0, dtype=dt, name="adam_c2")  # 1/(1-b2^t)
    a.lr_now = C.constant(c.lr, dtype=dt, name="lr")  # the schedule's, set per step

    def update(parameters, gradients):
        updates = []
        for p, g in zip(parameters, gradients):
            g = g * a.inv_batch
            if kind == "rmsprop":
                v = C.constant(0.0, shape=p.shape, dtype=dt, name="rms_v")
                v_new = C.assign(v, c.rho * v + (1.0 - c.rho) * g * g)
                updates.append(C.assign(p, p - a.lr_now * g / (C.sqrt(v_new) + c.eps)))
            else:
                m = C.constant(0.0, shape=p.shape, dtype=dt, name="adam_m")
                v = C.constant(0.0, shape=p.shape, dtype=dt, name="adam_v")
                m_new = C.assign(m, c.beta1 * m + (1.0 - c.beta1) * g)
                v_new = C.assign(v, c.beta2 * v + (1.0 - c.beta2) * g * g)
                step = (m_new * a.bias_c1) / (C.sqrt(v_new * a.bias_c2) + c.eps)
                updates.append(C.assign(p, p - a.lr_now * step))
        return C.combine(updates)

    return C.universal(update, params), "C.universal(PyTorch %s)" % kind


def universal_constants(a, n):
    """Per step, before train_minibatch: the 1/n of a universal learner (n samples), the
    schedule's lr, Adam's bias corrections for step t."""
    c = a.config
    t = a.steps + 1
    a.inv_batch.value = np.asarray(1.0 / n, dtype=a.np_dtype)
    if schedule.varies(c):
        a.lr_now.value = np.asarray(schedule.lr_at(c, a.steps), dtype=a.np_dtype)
    if c.optimizer == "adam":
        a.bias_c1.value = np.asarray(1.0 / (1.0 - c.beta1 ** t), dtype=a.np_dtype)
        a.bias_c2.value = np.asarray(1.0 / (1.0 - c.beta2 ** t), dtype=a.np_dtype)


OPTIMIZERS = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": lambda a, params: _momentum(a, params, nesterov=True),
    "adadelta": _adadelta,
    "adam": _adam,
    "rmsprop": lambda a, params: _universal(a, params, "rmsprop"),
}
