"""Keras classes the Keras adapters (backends/keras_backend.py) need, defined once per process
after keras is imported: PyTorch-formula Adam and RMSprop, the `batch_loss` metric of epoch mode
and the per-step clock callback.

Imports no framework at import time: every function takes the `keras` module.
"""
from backends.base import clock_ns

_CACHE = {}


def batch_loss_metric(keras, loss_fn, dtype):
    """A metric whose result is the LAST batch's loss (fit's "loss" is a running mean)."""
    cls = _CACHE.get("BatchLoss")
    if cls is None:
        class BatchLoss(keras.metrics.Metric):
            def __init__(self, loss_fn, name="batch_loss", **kwargs):
                super().__init__(name=name, **kwargs)
                self.loss_fn = loss_fn
                self.value = self.add_variable(shape=(), initializer="zeros", name="value")

            def update_state(self, y_true, y_pred, sample_weight=None):
                self.value.assign(keras.ops.cast(self.loss_fn(y_true, y_pred), self.dtype))

            def result(self):
                return keras.ops.convert_to_tensor(self.value)

            def reset_state(self):
                self.value.assign(keras.ops.zeros((), dtype=self.dtype))

        cls = _CACHE["BatchLoss"] = BatchLoss
    return cls(loss_fn, dtype=dtype)


def step_clock(keras, on_step):
    """Callback: step time from on_train_batch_begin to _end, and the batch loss from the logs."""

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t0 = clock_ns()

        def on_train_batch_end(self, batch, logs=None):
            # a callback with batch hooks turns off Keras' async dispatch: logs arrive as Python
            # numbers, i.e. the step has finished (float() would wait for it anyway)
            loss = float(logs["batch_loss"])
            on_step(clock_ns() - self.t0, loss)

    return StepClock()


def pytorch_optimizers(keras):
    """Adam and RMSprop in PyTorch's formulas (eps outside the square root of the corrected v)."""
    if "opt" in _CACHE:
        return _CACHE["opt"]
    ops = keras.ops

    class PyTorchAdam(keras.optimizers.Optimizer):
        """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
        p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)."""

        def __init__(self, learning_rate, beta_1, beta_2, epsilon, name="pytorch_adam", **kwargs):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
            self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])

        def update_step(self, gradient, variable, learning_rate):
            dt = variable.dtype
            lr = ops.cast(learning_rate, dt)
            g = ops.cast(gradient, dt)
            t = ops.cast(self.iterations + 1, dt)
            i = self._get_variable_index(variable)
            m = ops.add(ops.multiply(self.beta_1, self._m[i]), ops.multiply(1 - self.beta_1, g))
            v = ops.add(ops.multiply(self.beta_2, self._v[i]),
                        ops.multiply(ops.multiply(1 - self.beta_2, g), g))
            self.assign(self._m[i], m)
            self.assign(self._v[i], v)
            # convert_to_tensor(python float, dtype), not ops.cast: on the TensorFlow backend
            # ops.cast rounds a Python float to float32 first (see keras_backend's momentum)
            bc1 = ops.subtract(1, ops.power(ops.convert_to_tensor(self.beta_1, dtype=dt), t))
            bc2 = ops.subtract(1, ops.power(ops.convert_to_tensor(self.beta_2, dtype=dt), t))
            step = ops.divide(ops.multiply(lr, ops.divide(m, bc1)),
                              ops.add(ops.sqrt(ops.divide(v, bc2)), self.epsilon))
            self.assign_sub(variable, step)

        def get_config(self):
            config = super().get_config()
            config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
            return config

    class PyTorchRMSprop(keras.optimizers.Optimizer):
        """v = rho*v + (1-rho)*g^2; p -= lr * g / (sqrt(v) + eps)  (no momentum, not centered)."""

        def __init__(self, learning_rate, rho, epsilon, name="pytorch_rmsprop", **kwargs):
            super().__init__(learning_rate=learning_rate, name=name, **kwargs)
            self.rho, self.epsilon = rho, epsilon

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._v = self.add_optimizer_variables(var_list, "v")

        def update_step(self, gradient, variable, learning_rate):
            dt = variable.dtype
            lr = ops.cast(learning_rate, dt)
            g = ops.cast(gradient, dt)
            i = self._get_variable_index(variable)
            v = ops.add(ops.multiply(self.rho, self._v[i]),
                        ops.multiply(ops.multiply(1 - self.rho, g), g))
            self.assign(self._v[i], v)
            self.assign_sub(variable, ops.divide(ops.multiply(lr, g),
                                                 ops.add(ops.sqrt(v), self.epsilon)))

        def get_config(self):
            config = super().get_config()
            config.update(rho=self.rho, epsilon=self.epsilon)
            return config

    _CACHE["opt"] = (PyTorchAdam, PyTorchRMSprop)
    return _CACHE["opt"]
