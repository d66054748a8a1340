"""Learning-rate schedules, defined once (docs/results-schema.md#schedules). The NumPy reference
uses `lr_at`; every adapter realizes the same numbers with its framework's own scheduler (torch
LambdaLR / StepLR, keras.optimizers.schedules, optax schedules, tf.compat.v1.train.*_decay, CNTK
learning_parameter_schedule) or, where it writes its update in ops, with the formula below.

k is the number of updates made before this one (0 for the first step), as Keras' `iterations`,
optax's `count`, TF's `global_step` and torch's scheduler `last_epoch` count:
- constant: lr
- time:     lr / (1 + decay * k)                     Keras 1/2's SGD(decay=...): InverseTimeDecay
- step:     lr * gamma ** floor(k / decay_steps)     torch StepLR, Keras ExponentialDecay(staircase)
- cosine:   lr * (1 + cos(pi * min(k, T) / T)) / 2   T = decay_steps; torch/Keras/optax cosine, alpha 0

NumPy only, CPython 3.6-compatible (the CNTK worker imports it).
"""
import math

from backends.base import SCHEDULES


class ScheduleError(ValueError):
    """A schedule with bad parameters: one line naming the fix."""


def check(config):
    """Raise ScheduleError when config's schedule cannot run."""
    s = config.schedule
    if s not in SCHEDULES:
        raise ScheduleError("unknown schedule %r (known: %s)" % (s, ", ".join(SCHEDULES)))
    if s == "time" and not config.decay > 0:
        raise ScheduleError("schedule 'time' needs decay > 0 (lr / (1 + decay * step)), got %r"
                            % config.decay)
    if s == "step" and not (0 < config.gamma < 1 and config.decay_steps >= 1):
        raise ScheduleError("schedule 'step' needs 0 < gamma < 1 and decay_steps >= 1 (lr * gamma "
                            "every decay_steps steps), got gamma %r, decay_steps %r"
                            % (config.gamma, config.decay_steps))
    if s == "cosine" and config.decay_steps < 1:
        raise ScheduleError("schedule 'cosine' needs decay_steps >= 1 (its length in steps; "
                            "convbench run sets it to the whole run), got %r" % config.decay_steps)


def varies(config):
    return config.schedule != "constant"


def factor(config, k):
    """The multiplier of config.lr at update k (0-based), a Python float."""
    s = config.schedule
    if s == "constant":
        return 1.0
    if s == "time":
        return 1.0 / (1.0 + config.decay * k)
    if s == "step":
        return config.gamma ** (k // config.decay_steps)
    if s == "cosine":
        t = config.decay_steps
        return 0.5 * (1.0 + math.cos(math.pi * min(k, t) / t))
    check(config)


def lr_at(config, k):
    return config.lr * factor(config, k)


def unsupported_with_momentum(config):
    """Why an optimizer that keeps lr inside its momentum buffer (u = mu*u + lr_k*g, as Keras'
    SGD and CNTK's momentum_sgd / nesterov do) cannot run config exactly, or None. With a constant
    lr that buffer is lr times PyTorch's v = mu*v + g; with a schedule the past steps keep their
    own lr and the update differs from PyTorch's p -= lr_k * v."""
    if config.optimizer in ("momentum", "nesterov") and varies(config):
        return ("%s with the %r schedule: this framework's optimizer keeps lr inside its momentum "
                "buffer (u = mu*u + lr_k*g), which differs from the suite's v = mu*v + g, "
                "p -= lr_k*v once lr changes" % (config.optimizer, config.schedule))
    return None
