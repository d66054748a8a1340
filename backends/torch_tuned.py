"""PyTorch, tuned: the torch adapter with what PyTorch's CPU performance guide recommends for
training that the idiomatic row does not do (pytorch.org/tutorials/recipes/recipes/tuning_guide):

- `channels_last` memory format for the model and every input batch (oneDNN's convolutions are
  NHWC-native; the guide's "channels last" section);
- `torch.compile` of the model with inductor, its default backend, whose CPU path generates C++
  / OpenMP kernels and so needs a C++ compiler ($CXX or g++/c++/clang++ on PATH): without one the
  record is `unavailable`, naming it.

Kept as in the idiomatic adapter, so the speed-up is the tuning's alone: the optimizer step is
eager (a compiled optimizer step is a CUDA recipe in the guide), as is max-norm's rescaling.

Compilation: the first train step traces and compiles forward + backward (the record's
first_step_ms / compile_steps); evaluations compile an eval-mode graph, outside the clock. Every
training batch has one shape (the harness drops the last partial batch), so training compiles
once; a differently sized eval batch recompiles once more, untimed. environment() counts the
compiled graphs. build() resets dynamo so each adapter compiles its own model: in a conformance
worker many adapters share one process, and dynamo's per-function recompile limit (8) would
otherwise silently fall back to eager after eight models. Inductor's on-disk graph cache makes a
repeated model's compile cheap.
"""
import os
import shutil

from backends.base import Unavailable
from backends.torch_backend import TorchAdapter


def cxx_compiler():
    """The C++ compiler inductor would use, or None."""
    for name in filter(None, (os.environ.get("CXX"), "g++", "c++", "clang++")):
        path = shutil.which(name)
        if path:
            return path
    return None


class TorchTunedAdapter(TorchAdapter):
    name = "torch-tuned"
    compile_mode = None  # torch.compile's default mode: "max-autotune" adds minutes of benchmarking

    def build(self):
        compiler = cxx_compiler()
        if compiler is None:
            raise Unavailable("torch.compile (inductor, CPU) needs a C++ compiler: none of $CXX, "
                              "g++, c++, clang++ is on PATH; install one (apt-get install g++)")
        self.compiler = compiler
        super(TorchTunedAdapter, self).build()
        torch = self.torch
        torch._dynamo.reset()
        self.memory_format = torch.channels_last
        self.model = self.model.to(memory_format=torch.channels_last)
        self.eager_model = self.model
        self.compiled = torch.compile(self.model, mode=self.compile_mode)

    def forward(self, tx):
        return self.compiled(tx)

    def environment(self):
        info = super(TorchTunedAdapter, self).environment()
        from torch._dynamo.utils import counters
        info.update({"layout": "NCHW logical, channels_last in memory",
                     "compile": "torch.compile(backend='inductor', mode=%r)" % self.compile_mode,
                     "cxx_compiler": self.compiler,
                     "compiled_graphs": int(counters["stats"]["unique_graphs"])})
        return info
