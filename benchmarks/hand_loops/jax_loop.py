"""The hand-written JAX training loop for seed_convnet: plain `jax.jit`, no Flax, as JAX users write it.

A dict of parameters, the forward pass in `jax.lax` ops (NHWC data, HWIO kernels), the loss from
optax, optax's SGD with momentum, and one `@jax.jit` step with the parameters and optimizer state
donated; `for x, y in batches` over NumPy arrays already in NHWC. A step is timed from fetching its
batch to `float(loss)` (the sync point). It is the yardstick of the `jax` adapter
(backends/jax_backend.py), which builds the same network from the spec with Flax NNX.

    .tox/jax/bin/python benchmarks/hand_loops/jax_loop.py                  # the hand loop alone
    PYTHONPATH=. .tox/jax/bin/python benchmarks/hand_loops/jax_loop.py --vs-adapter

prints one JSON object with the median step in ms (and GFLOP/s from models.spec flops when the repo
is importable). --vs-adapter alternates blocks of steps of the hand loop and of the adapter (timed
as the harness times train_step) in this one process, so both see the same machine state.
"""
import argparse
import json
import os
import time

# run as a script: this directory is first on sys.path; common.py puts the repo there too
from common import adapter_step_runner, add_loop_arguments, add_step_summary, interleave, load_batches


class HandLoop(object):
    """conv32 3x3 - pool 2 - conv64 3x3 - pool 2 - dense 10; `steps(n)` returns n step times in ns."""

    def __init__(self, jax, optax, batches_nhwc, lr, momentum, params=None, seed=0):
        jnp, lax = jax.numpy, jax.lax
        if params is None:  # its own Glorot init; --vs-adapter passes the adapter's initial weights
            k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
            glorot = jax.nn.initializers.glorot_uniform()
            params = {"conv1": {"w": glorot(k1, (3, 3, 1, 32)), "b": jnp.zeros(32)},
                      "conv2": {"w": glorot(k2, (3, 3, 32, 64)), "b": jnp.zeros(64)},
                      "dense": {"w": glorot(k3, (5 * 5 * 64, 10)), "b": jnp.zeros(10)}}
        params = jax.tree.map(jnp.asarray, params)
        tx = optax.sgd(lr, momentum=momentum)

        def conv(x, p):
            y = lax.conv_general_dilated(x, p["w"], (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jax.nn.relu(y + p["b"])

        def pool(x):
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

        def forward(params, x):
            x = pool(conv(x, params["conv1"]))
            x = pool(conv(x, params["conv2"]))
            x = x.reshape(x.shape[0], -1)
            return x @ params["dense"]["w"] + params["dense"]["b"]

        def loss_fn(params, x, y):
            logits = forward(params, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        def train_step(params, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.params, self.opt_state = params, tx.init(params)
        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        self.batches = batches_nhwc
        self.i = 0

    def steps(self, n):
        times = []
        for _ in range(n):
            t = time.perf_counter_ns()
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            self.params, self.opt_state, loss = self.train_step(self.params, self.opt_state, x, y)
            self.last_loss = float(loss)
            times.append(time.perf_counter_ns() - t)
        return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # short blocks (10 steps, 20 rounds): on a shared machine the load changes within seconds
    add_loop_arguments(p, rounds=20, steps=10)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    from backends.common.setup import pin_cpus  # the repo is on sys.path: common.py put it there

    pin_cpus(args.threads)  # as the adapter does: XLA sizes its pool from the CPU affinity
    import jax
    import numpy as np
    import optax

    batches = load_batches(args.steps, args.batch_size, "float32")
    hand_batches = [(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), y.astype(np.int32))
                    for x, y in batches]  # its own data format, prepared once

    initial = None
    if args.vs_adapter:  # both sides start from the spec's canonical weights, in NHWC-world layout
        from backends.common.layout import ChannelsLast
        from models.spec import init_weights, load_spec

        spec = load_spec("seed_convnet")
        w, layout = init_weights(spec, 0, "float32"), ChannelsLast(spec)
        native = dict((name, layout.to_native(name, value)) for name, value in w.items())
        initial = dict((layer, {"w": native[layer + ".weight"], "b": native[layer + ".bias"]})
                       for layer in ("conv1", "conv2", "dense1"))
        initial["dense"] = initial.pop("dense1")

    runners, first, build = {}, {}, {}
    t0 = time.perf_counter()
    hand = HandLoop(jax, optax, hand_batches, args.lr, 0.9, params=initial)
    build["hand"] = time.perf_counter() - t0
    first["hand"] = hand.steps(1)[0] / 1e9
    first_loss = {"hand": hand.last_loss}
    runners["hand"] = hand.steps
    flops = None
    if args.vs_adapter:
        from backends.base import TrainConfig, clock_ns
        from backends.jax_backend import JaxAdapter

        flops = spec.flops()["train"]
        config = TrainConfig(threads=args.threads, batch_size=args.batch_size, lr=args.lr)
        t0 = time.perf_counter()
        adapter = JaxAdapter(spec, config)
        adapter.build()
        adapter.set_weights(init_weights(spec, 0, "float32"))
        build["adapter"] = time.perf_counter() - t0
        t0 = clock_ns()
        first_loss["adapter"] = adapter.train_step(*batches[0])
        first["adapter"] = (clock_ns() - t0) / 1e9

        runners["adapter"] = adapter_step_runner(adapter, batches)

    times = interleave(runners, args.warmup, args.rounds, args.steps)
    import flax
    out = {"loop": "jax_jit", "model": "seed_convnet", "batch_size": args.batch_size,
           "threads": args.threads, "jax": jax.__version__, "optax": optax.__version__,
           "flax": flax.__version__, "steps_each": args.rounds * args.steps,
           "first_loss": first_loss}  # same weights and batch with --vs-adapter: the same number
    add_step_summary(out, list(runners), times, first, build, flops, args.batch_size, args.vs_adapter)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
