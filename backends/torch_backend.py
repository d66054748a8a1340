"""PyTorch: the spec as an `nn.Sequential`, trained with an eager loop, as PyTorch users write it.

Canonical layout is PyTorch's own (NCHW, OIHW, flatten C,H,W), except dense kernels: nn.Linear
stores (out, in), the canonical layout is (in, out), so they are transposed at the boundary.
"""
from collections import OrderedDict

import numpy as np

from backends.base import Adapter, Unavailable, Unsupported


class TorchAdapter(Adapter):
    name = "torch"
    framework = "torch"

    def build(self):
        import torch
        from torch import nn

        self.torch = torch
        cfg = self.config
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise Unavailable("no CUDA device: torch.cuda.is_available() is False (torch %s, CUDA "
                              "build: %s); run on a GPU machine with a CUDA build of torch, or with "
                              "--device cpu" % (torch.__version__, torch.version.cuda or "no"))
        self.device = torch.device(cfg.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dtype = getattr(torch, cfg.dtype)
        torch.manual_seed(cfg.seed)  # dropout masks (not shared with other backends)

        modules = []
        self.param_map = OrderedDict()  # canonical name -> (module attribute path, transpose?)
        in_shape = self.spec.input_shape
        for layer, shape in zip(self.spec.layers, self.spec.shapes):
            idx = str(len(modules))
            if layer.kind == "conv2d":
                (pt, pb), (pl, pr) = layer.padding
                if pt != pb or pl != pr:
                    modules.append(nn.ZeroPad2d((pl, pr, pt, pb)))  # asymmetric 'same'
                    idx, pad = str(len(modules)), 0
                else:
                    pad = (pt, pl)
                modules.append(nn.Conv2d(in_shape[0], layer.filters, layer.kernel, layer.stride,
                                         padding=pad, bias=layer.use_bias))
                self._map(layer, idx, transpose=False)
                modules.extend(_activation(nn, layer.activation))
            elif layer.kind == "maxpool2d":
                modules.append(nn.MaxPool2d(layer.size, layer.stride))
            elif layer.kind == "flatten":
                modules.append(nn.Flatten())
            elif layer.kind == "dense":
                modules.append(nn.Linear(in_shape[0], layer.units, bias=layer.use_bias))
                self._map(layer, idx, transpose=True)
                modules.extend(_activation(nn, layer.activation))
            elif layer.kind == "dropout":
                modules.append(nn.Dropout(layer.rate if cfg.dropout else 0.0))
            elif layer.kind == "batchnorm":
                bn = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
                modules.append(bn(in_shape[0], eps=layer.eps, momentum=layer.momentum))
                for field, attr in (("gamma", "weight"), ("beta", "bias"),
                                    ("running_mean", "running_mean"), ("running_var", "running_var")):
                    self.param_map[layer.name + "." + field] = (idx + "." + attr, False)
            elif layer.kind == "activation":
                modules.extend(_activation(nn, layer.function))
            else:
                raise Unsupported("layer kind %r" % layer.kind)
            in_shape = shape
        self.model = nn.Sequential(*modules).to(device=self.device, dtype=self.dtype)
        self.loss_fn = nn.CrossEntropyLoss()
        self.optimizer = self._make_optimizer()

    def _map(self, layer, idx, transpose):
        self.param_map[layer.name + ".weight"] = (idx + ".weight", transpose)
        if layer.use_bias:
            self.param_map[layer.name + ".bias"] = (idx + ".bias", False)

    def _make_optimizer(self):
        optim, c, params = self.torch.optim, self.config, self.model.parameters()
        if c.optimizer == "sgd":
            return optim.SGD(params, lr=c.lr)
        if c.optimizer == "momentum":
            return optim.SGD(params, lr=c.lr, momentum=c.momentum)
        if c.optimizer == "adam":
            return optim.Adam(params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps)
        if c.optimizer == "rmsprop":
            return optim.RMSprop(params, lr=c.lr, alpha=c.rho, eps=c.eps)
        raise Unsupported("optimizer %r" % c.optimizer)

    def _tensors(self):
        return dict(list(self.model.named_parameters()) + list(self.model.named_buffers()))

    def set_weights(self, params):
        tensors = self._tensors()
        with self.torch.no_grad():
            for name, (attr, transpose) in self.param_map.items():
                value = np.asarray(params[name])
                tensors[attr].copy_(self.torch.from_numpy(np.ascontiguousarray(value.T if transpose else value)))
        self.optimizer = self._make_optimizer()  # fresh optimizer state for fresh weights

    def get_weights(self):
        tensors = self._tensors()
        out = OrderedDict()
        for name, (attr, transpose) in self.param_map.items():
            value = tensors[attr].detach().cpu().numpy()  # shares memory with the tensor: copy
            out[name] = np.array(value.T if transpose else value, order="C", copy=True)
        return out

    def _input(self, x, y=None):
        tx = self.torch.from_numpy(np.ascontiguousarray(x, dtype=self.config.dtype)).to(self.device)
        if y is None:
            return tx
        return tx, self.torch.from_numpy(np.asarray(y, dtype=np.int64)).to(self.device)

    def train_step(self, x, y):
        tx, ty = self._input(x, y)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(tx), ty)
        loss.backward()
        self.optimizer.step()
        if self.cuda:  # the timer stops when this returns: the update's kernels must be done
            self.torch.cuda.synchronize(self.device)
        return loss.item()  # .item() waits for the device: the timing sync point

    def predict(self, x):
        self.model.eval()
        with self.torch.no_grad():
            return self.model(self._input(x)).cpu().numpy()

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
                "blas": _torch_blas(torch)}
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
            info["cuda"] = torch.version.cuda
            info["cudnn"] = torch.backends.cudnn.version()
        return info


def _activation(nn, function):
    if function == "relu":
        return [nn.ReLU()]
    if function == "tanh":
        return [nn.Tanh()]
    return []


def _torch_blas(torch):
    for line in torch.__config__.show().splitlines():
        line = line.strip()
        if line.startswith("- BLAS_INFO") or line.startswith("BLAS_INFO"):
            return line.split("=", 1)[-1].strip()
    return "unknown"
