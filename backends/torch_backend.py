"""PyTorch: the spec as an `nn.Sequential`, trained with an eager loop, as PyTorch users write it.

The LAYERS table builds each layer as its nn module(s); max-norm kernels are rescaled in place
after each optimizer step, as Keras' MaxNorm does. OPTIMIZERS are torch.optim's own classes (they
are the suite's formulas), SCHEDULES torch.optim.lr_scheduler's, stepped after each update.

Canonical layout is PyTorch's own (NCHW, OIHW, flatten C,H,W), except dense kernels: nn.Linear
stores (out, in), the canonical layout is (in, out), so they are transposed at the boundary.
"""
import contextlib

import numpy as np

from backends.base import Unavailable
from backends.common import schedule, tables
from backends.common.adapter import TableAdapter
from backends.common.padding import conv_padding
from backends.common.precision import precision_environment
from backends.common.walker import walk
from backends.common.weights import IDENTITY, TRANSPOSED
from models.spec import MAX_NORM_EPS


# --- the spec, layer by layer: nn modules ---------------------------------------------------------

def _conv2d(a, step):
    layer, nn = step.layer, a.nn
    pad = conv_padding(layer)
    blocks = []
    if not pad.symmetric:  # asymmetric 'same': nn.Conv2d pads both sides alike
        (pt, pb), (pl, pr) = pad.pads
        blocks.append(nn.ZeroPad2d((pl, pr, pt, pb)))
    padding = (pad.pads[0][0], pad.pads[1][0]) if pad.symmetric else 0
    conv = nn.Conv2d(step.in_shape[0], layer.filters, layer.kernel, layer.stride,
                     padding=padding, bias=layer.use_bias)
    _bind_kernel(a, layer, conv, IDENTITY)
    return blocks + [conv] + _activation(a, layer.activation)


def _dense(a, step):
    layer = step.layer
    linear = a.nn.Linear(step.in_shape[0], layer.units, bias=layer.use_bias)
    _bind_kernel(a, layer, linear, TRANSPOSED)  # nn.Linear stores (out, in)
    return [linear] + _activation(a, layer.activation)


def _bind_kernel(a, layer, module, layout):
    a.bindings.bind(layer.name + ".weight", (module, "weight"), layout)
    if layer.use_bias:
        a.bindings.bind(layer.name + ".bias", (module, "bias"))
    if layer.max_norm is not None:
        a.max_norms.append((module, layer.max_norm))


def _batchnorm(a, step):
    nn, shape = a.nn, step.in_shape
    bn = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(
        shape[0], eps=step.layer.eps, momentum=step.layer.momentum)
    for field, attr in (("gamma", "weight"), ("beta", "bias"), ("running_mean", "running_mean"),
                        ("running_var", "running_var")):
        a.bindings.bind(step.layer.name + "." + field, (bn, attr))
    return bn


def _activation(a, function):
    found = tables.activation(a, function)
    return [found()] if found else []


class TorchAdapter(TableAdapter):
    name = "torch"
    framework = "torch"
    # bf16: torch.autocast(bfloat16) around forward and loss; the parameters, their gradients and
    # the optimizer stay float32 (autocast casts weights per op; cross_entropy runs in float32)
    precisions = ("full", "bf16")
    memory_format = None  # torch-tuned: channels_last
    LAYERS = {
        "conv2d": _conv2d,
        "maxpool2d": lambda a, step: a.nn.MaxPool2d(step.layer.size, step.layer.stride),
        "avgpool2d": lambda a, step: a.nn.AvgPool2d(step.layer.size, step.layer.stride),
        "flatten": lambda a, step: a.nn.Flatten(),
        "dense": _dense,
        "dropout": lambda a, step: a.nn.Dropout(step.layer.rate if a.config.dropout else 0.0),
        "batchnorm": _batchnorm,
        "activation": lambda a, step: _activation(a, step.layer.function),
    }
    OPTIMIZERS = {
        "sgd": lambda a, params: a.torch.optim.SGD(params, lr=a.config.lr),
        "momentum": lambda a, params: a.torch.optim.SGD(params, lr=a.config.lr,
                                                        momentum=a.config.momentum),
        "nesterov": lambda a, params: a.torch.optim.SGD(params, lr=a.config.lr,
                                                        momentum=a.config.momentum, nesterov=True),
        "adam": lambda a, params: a.torch.optim.Adam(
            params, lr=a.config.lr, betas=(a.config.beta1, a.config.beta2), eps=a.config.eps),
        "rmsprop": lambda a, params: a.torch.optim.RMSprop(params, lr=a.config.lr,
                                                           alpha=a.config.rho, eps=a.config.eps),
        "adadelta": lambda a, params: a.torch.optim.Adadelta(params, lr=a.config.lr,
                                                             rho=a.config.rho, eps=a.config.eps),
    }
    # the schedule's torch.optim.lr_scheduler, stepped after every optimizer step
    SCHEDULES = {
        "constant": lambda a, opt: None,
        "time": lambda a, opt: a.torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: schedule.factor(a.config, k)),
        "step": lambda a, opt: a.torch.optim.lr_scheduler.StepLR(
            opt, step_size=a.config.decay_steps, gamma=a.config.gamma),
        # LambdaLR, not CosineAnnealingLR: that one is periodic past T (the suite's stays at 0)
        "cosine": lambda a, opt: a.torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: schedule.factor(a.config, k)),
    }

    def build(self):
        import torch
        from torch import nn

        self.torch, self.nn = torch, nn
        self.ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
        cfg = self.config
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise Unavailable("no CUDA device: torch.cuda.is_available() is False (torch %s, CUDA "
                              "build: %s); run on a GPU machine with a CUDA build of torch, or with "
                              "--device cpu" % (torch.__version__, torch.version.cuda or "no"))
        schedule.check(cfg)
        self.device = torch.device(cfg.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dtype = getattr(torch, cfg.dtype)
        torch.manual_seed(cfg.seed)  # dropout masks (not shared with other backends)

        self.new_bindings()
        self.max_norms = []  # (module, c): its weight is constrained after every update
        self.model = nn.Sequential(*walk(self)).to(device=self.device, dtype=self.dtype)
        self.bindings.check(self.spec.params())
        self.loss_fn = nn.CrossEntropyLoss()
        self.reset_optimizer()

    def reset_optimizer(self):
        self.optimizer = tables.optimizer(self, self.model.parameters())
        self.scheduler = self.SCHEDULES[self.config.schedule](self, self.optimizer)

    def read_param(self, handle):
        module, attr = handle
        return getattr(module, attr).detach().cpu().numpy()

    def write_param(self, handle, value):
        module, attr = handle
        with self.torch.no_grad():
            getattr(module, attr).copy_(self.torch.from_numpy(value))

    def _input(self, x, y=None):
        tx = self.torch.from_numpy(np.ascontiguousarray(x, dtype=self.config.dtype)).to(self.device)
        if self.memory_format is not None:
            tx = tx.contiguous(memory_format=self.memory_format)
        if y is None:
            return tx
        return tx, self.torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)

    def train_step(self, x, y):
        tx, ty = self._input(x, y)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss_fn(self.forward(tx), ty)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.max_norms:
            self._apply_max_norms()
        if self.cuda:  # the timer stops when this returns: the update's kernels must be done
            self.torch.cuda.synchronize(self.device)
        return loss.item()  # .item() waits for the device: the timing sync point

    def forward(self, tx):
        return self.model(tx)

    def autocast(self):
        if self.config.precision == "bf16":
            return self.torch.autocast(device_type=self.device.type, dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _apply_max_norms(self):
        """Keras' MaxNorm after the update: each output unit (dim 0 of a Conv2d / Linear weight)
        rescaled by clip(n, 0, c) / (eps + n)."""
        with self.torch.no_grad():
            for module, c in self.max_norms:
                w = module.weight
                axes = tuple(range(1, w.dim()))
                norms = self.torch.linalg.vector_norm(w, dim=axes, keepdim=True)
                w.mul_(norms.clamp(max=c) / (MAX_NORM_EPS + norms))

    def predict(self, x):
        self.model.eval()
        with self.torch.no_grad(), self.autocast():
            out = self.forward(self._input(x))
            return (out.float() if out.dtype == self.torch.bfloat16 else out).cpu().numpy()

    def device_peak_bytes(self):
        if self.cuda:
            return int(self.torch.cuda.max_memory_allocated(self.device))
        return None

    def environment(self):
        torch = self.torch
        info = {"framework": "torch", "framework_version": torch.__version__,
                "layout": "NCHW", "device_name": "cpu",
                "intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads(),
                "mkldnn": bool(torch.backends.mkldnn.is_available()),
                "blas": _torch_blas(torch),
                # the instruction set ATen's CPU kernels dispatched to (AVX2, AVX512...)
                "cpu_capability": torch.backends.cpu.get_cpu_capability()}
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
            info["cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
        info.update(precision_environment(self.config.precision))
        return info


def _torch_blas(torch):
    """The BLAS torch was built with, from its build settings ("BLAS_INFO=mkl, ...")."""
    import re

    found = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return found.group(1) if found else "unknown"
