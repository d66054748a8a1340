"""The hand-written CNTK 2.7 Trainer loop for seed_convnet: the yardstick of backends/cntk_backend.py.

What a CNTK 2.x user writes (CNTK 103D style): `C.layers.Sequential` of Convolution2D / MaxPooling /
Dense, `cross_entropy_with_softmax`, `C.momentum_sgd` and one `trainer.train_minibatch` per step
with NumPy arrays (features NCHW, one-hot labels). The learner is configured with the suite's meaning
(lr on the batch-mean gradient: minibatch_size=IGNORE; PyTorch momentum: unit_gain=False), and the
net starts from the canonical weights of models.spec.init_weights(seed_convnet, 0), so hand loop
and adapter train the same network on the same batches.

    LD_LIBRARY_PATH=.tox/cntk-mpi-shim .tox/cntk/bin/python benchmarks/hand_loops/cntk_loop.py
    LD_LIBRARY_PATH=.tox/cntk-mpi-shim .tox/cntk/bin/python benchmarks/hand_loops/cntk_loop.py --vs-adapter

(.tox/cntk and the shim are made by `convbench` on first use of backend cntk, or by
`tox -e cntk --notest` plus bench.envs.ensure_cntk_mpi_shim().) Prints one JSON object with the
median step in ms. --vs-adapter alternates blocks of steps of the hand loop and of the adapter
(timed as the harness times train_step) in this one process, so both see the same machine state,
and reports the largest loss difference between the two (they train identical copies).

CPython 3.6: no tomllib, so the seed_convnet spec is written out below (models/seed_convnet.toml).
"""
import argparse
import json
import os
import time

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from common import load_batches


#: models/seed_convnet.toml as a dict (the adapter and init_weights take the spec as a dict here)
SEED_CONVNET = {
    "name": "seed_convnet", "input_shape": [1, 28, 28], "num_classes": 10,
    "layers": [
        {"kind": "conv2d", "filters": 32, "kernel": 3, "padding": "valid", "activation": "relu"},
        {"kind": "maxpool2d", "size": 2},
        {"kind": "conv2d", "filters": 64, "kernel": 3, "padding": "valid", "activation": "relu"},
        {"kind": "maxpool2d", "size": 2},
        {"kind": "flatten"},
        {"kind": "dense", "units": 10},
    ],
}


class HandLoop(object):
    def __init__(self, C, params, lr, momentum, dtype="float32"):
        import numpy as np

        dt = np.dtype(dtype).type
        self.x = C.input_variable((1, 28, 28), dtype=dt)
        self.y = C.input_variable(10, dtype=dt)
        with C.default_options(dtype=dt):
            conv1 = C.layers.Convolution2D((3, 3), 32, activation=C.relu, pad=False)
            conv2 = C.layers.Convolution2D((3, 3), 64, activation=C.relu, pad=False)
            dense = C.layers.Dense(10)
            self.z = C.layers.Sequential([
                conv1, C.layers.MaxPooling((2, 2), strides=(2, 2)),
                conv2, C.layers.MaxPooling((2, 2), strides=(2, 2)),
                dense])(self.x)
        # canonical -> CNTK: OIHW kernels as they are, conv bias (O, 1, 1), dense (C*H*W, 10) viewed
        # as CNTK's (C, H, W, 10)
        for var, name in ((conv1.W, "conv1.weight"), (conv1.b, "conv1.bias"),
                          (conv2.W, "conv2.weight"), (conv2.b, "conv2.bias"),
                          (dense.W, "dense1.weight"), (dense.b, "dense1.bias")):
            var.value = np.ascontiguousarray(params[name].astype(dtype).reshape(var.shape))
        self.loss = C.cross_entropy_with_softmax(self.z, self.y)
        learner = C.momentum_sgd(self.z.parameters, lr=C.learning_parameter_schedule(lr),
                                 momentum=C.momentum_schedule(momentum), unit_gain=False,
                                 minibatch_size=C.learners.IGNORE)
        self.trainer = C.Trainer(self.z, (self.loss, None), [learner])
        self.eye = np.eye(10, dtype=dtype)

    def onehot(self, y):
        return self.eye[y]

    def step(self, x, y_onehot):
        self.trainer.train_minibatch({self.x: x, self.y: y_onehot})
        return float(self.trainer.previous_minibatch_loss_average)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=20, help="steps per block")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--vs-adapter", action="store_true")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    import warnings
    import numpy as np
    from backends.base import TrainConfig
    from backends.cntk_backend import import_cntk
    from models.spec import init_weights, spec_from_dict

    C = import_cntk()  # quiet import; a clear message when OpenMPI is missing
    warnings.filterwarnings("ignore")
    C.device.try_set_default_device(C.device.cpu())
    C.cntk_py.set_max_num_cputhreads(args.threads)
    spec = spec_from_dict(SEED_CONVNET)
    # the suite's defaults (lr, momentum) for both loops
    config = TrainConfig(threads=args.threads, batch_size=args.batch_size, dtype=args.dtype)
    params = init_weights(spec, 0, args.dtype)
    batches = load_batches(args.steps, args.batch_size, args.dtype)
    hand_batches = [(x, np.eye(10, dtype=args.dtype)[y]) for x, y in batches]  # its own format

    runners = {}
    first = {}
    losses = {}
    t0 = time.perf_counter()
    hand = HandLoop(C, params, config.lr, config.momentum, dtype=args.dtype)
    losses["hand"] = [hand.step(*hand_batches[0])]
    first["hand"] = time.perf_counter() - t0
    runners["hand"] = lambda i: hand.step(*hand_batches[i])
    if args.vs_adapter:
        from backends.cntk_backend import CntkAdapter

        t0 = time.perf_counter()
        adapter = CntkAdapter(spec, config)
        adapter.build()
        adapter.set_weights(params)
        losses["adapter"] = [adapter.train_step(*batches[0])]
        first["adapter"] = time.perf_counter() - t0
        runners["adapter"] = lambda i: adapter.train_step(*batches[i])

    for name, run in runners.items():  # warm-up
        for i in range(1, args.warmup + 1):
            losses[name].append(run(i % len(batches)))
    times = dict((name, []) for name in runners)
    names = list(runners)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            run = runners[name]
            for i in range(args.steps):
                t = time.perf_counter()
                loss = run(i)
                times[name].append(time.perf_counter() - t)
                losses[name].append(loss)
    out = {"loop": "cntk", "model": "seed_convnet", "batch_size": args.batch_size,
           "threads": args.threads, "dtype": args.dtype, "lr": config.lr,
           "momentum": config.momentum, "cntk": C.__version__,
           "cntk_max_cpu_threads": int(C.cntk_py.get_max_num_cputhreads()),
           "steps_each": args.rounds * args.steps}
    for name in names:
        out[name + "_median_step_ms"] = float(np.median(times[name])) * 1e3
        out[name + "_first_step_s"] = first[name]
    out["median_step_ms"] = out["hand_median_step_ms"]
    if args.vs_adapter:
        out["adapter_over_hand"] = out["adapter_median_step_ms"] / out["hand_median_step_ms"]
        out["max_loss_diff_hand_vs_adapter"] = float(
            np.max(np.abs(np.array(losses["hand"]) - np.array(losses["adapter"]))))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
