"""Where a TensorFlow training step of seed_convnet spends its time, op by op, against the matmul peak.

Why the `tf`, `keras`, `tf-layers` and `tf-estimator` adapters and their hand-written loops all
stop near the same fraction of the machine's fp32 matmul peak: the step is TF's own kernels
(oneDNN on x86), and this shows which of them fall short. It builds the seed_convnet step in plain
tf.nn ops in a tf.compat.v1 graph (the same kernels every TF adapter ends in, in TF 2.15 and
2.21 alike), runs it untraced for the median step, then with FULL_TRACE for each kernel's time
(RunMetadata step stats), and prints one JSON object: the median step, the matmul peak measured
in this process's thread budget, and per layer and kernel kind (forward conv, conv input gradient,
conv weight gradient, max-pool, its gradient; the rest together) ms per step, and for the
convolutions their GFLOP/s and % of the peak.

    .tox/tf/bin/python benchmarks/tf_op_profile.py          # TF 2.21 (tf, tf-xla, keras)
    .tox/tf_legacy/bin/python benchmarks/tf_op_profile.py   # TF 2.15 (tf-layers, tf-estimator)

Traced kernel times are wall times of each kernel on its inter-op thread, so with two inter-op
threads they can add up to more than the step.
"""
import argparse
import collections
import json
import os
import time

#: kernel kind from the traced kernel's label (oneDNN rewrites Conv2D into _MklNative*Conv2D...)
KINDS = (("BackpropFilter", "conv weight gradient"), ("BackpropInput", "conv input gradient"),
         ("Conv2D", "conv forward"), ("MaxPoolGrad", "max-pool gradient"),
         ("MaxPool", "max-pool forward"))
#: graph op type -> the kind whose FLOPs it carries
CONV_OPS = {"Conv2D": "conv forward", "Conv2DBackpropInput": "conv input gradient",
            "Conv2DBackpropFilter": "conv weight gradient"}


def kind_of(label):
    for key, kind in KINDS:
        if key in label:
            return kind
    return "everything else"


def layer_of(node_name):
    """conv1/conv2/pool1/pool2 from a node name (forward ops and their gradients alike)."""
    for part in node_name.split("/"):
        if part[:4] in ("conv", "pool") and part[4:].isdigit():
            return part
    return ""


def conv_flops(op):
    """2 x multiply-adds of a Conv2D (or of either of its gradients: the same count)."""
    if op.type == "Conv2D":
        out, kernel = op.outputs[0].shape, op.inputs[1].shape
    elif op.type == "Conv2DBackpropInput":
        out, kernel = op.inputs[2].shape, op.inputs[1].shape     # grad of the output, filter
    else:  # Conv2DBackpropFilter: (input, filter sizes, grad of the output)
        out = op.inputs[2].shape
        kernel = op.outputs[0].shape
    n, h, w, c_out = [int(d) for d in out]
    kh, kw, c_in, _ = [int(d) for d in kernel]
    return 2 * n * h * w * c_out * kh * kw * c_in


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="untraced steps for the median")
    p.add_argument("--traced", type=int, default=30, help="traced steps for the kernel times")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))  # as the harness's worker does
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # run as a script, benchmarks/ is first on sys.path; hand_loops.common puts the repo there too
    from hand_loops.common import load_batches
    import numpy as np
    import tensorflow as tf
    from bench.peak import matmul_peak_gflops

    v1 = tf.compat.v1
    v1.disable_eager_execution()
    n = args.batch_size
    (x_batch, y_batch), = load_batches(1, n, "float32")
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [n, 28, 28, 1])
        y = v1.placeholder(tf.int64, [n])
        rng = np.random.RandomState(0)

        def var(*shape):
            return tf.Variable((rng.randn(*shape) * 0.05).astype("float32"))

        w1, b1, w2, b2, w3, b3 = var(3, 3, 1, 32), var(32), var(3, 3, 32, 64), var(64), \
            var(1600, 10), var(10)
        h = x
        for i, (w, b) in enumerate(((w1, b1), (w2, b2)), 1):
            with tf.name_scope("conv%d" % i):  # the layer name shows in every kernel's node name
                h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, w, 1, "VALID"), b))
            with tf.name_scope("pool%d" % i):
                h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        logits = tf.matmul(tf.reshape(h, [n, -1]), w3) + b3
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        train = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss)
        flops = collections.Counter()
        for op in graph.get_operations():
            if op.type in CONV_OPS:
                flops[(layer_of(op.name), CONV_OPS[op.type])] += conv_flops(op)
        config = v1.ConfigProto(intra_op_parallelism_threads=args.threads,
                                inter_op_parallelism_threads=args.threads)
        with v1.Session(config=config) as session:
            session.run(v1.global_variables_initializer())
            feed = {x: x_batch.reshape(n, 28, 28, 1), y: y_batch}
            for _ in range(20):
                session.run([train, loss], feed)
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                session.run([train, loss], feed)
                times.append(time.perf_counter() - t0)
            kernel_us = collections.Counter()
            options = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)
            for _ in range(args.traced):
                meta = v1.RunMetadata()
                session.run([train, loss], feed, options=options, run_metadata=meta)
                for device in meta.step_stats.dev_stats:
                    for node in device.node_stats:
                        label = node.timeline_label.split("=")[-1].split("(")[0]
                        kind = kind_of(label)
                        layer = layer_of(node.node_name) if kind != "everything else" else ""
                        kernel_us[(layer, kind)] += node.all_end_rel_micros / args.traced
    peak = matmul_peak_gflops()
    step_ms = float(np.median(times)) * 1e3
    total = sum(flops.values())
    kernels = []
    for (layer, kind), us in kernel_us.most_common():
        row = {"layer": layer, "kernel": kind, "ms_per_step": round(us / 1e3, 3)}
        if flops.get((layer, kind)):
            gflops = flops[(layer, kind)] / (us * 1e-6) / 1e9
            row.update(gflops=round(gflops, 1), pct_of_peak=round(100 * gflops / peak, 1))
        kernels.append(row)
    print(json.dumps({
        "tensorflow": tf.__version__, "threads": args.threads, "batch_size": n,
        "median_step_ms": round(step_ms, 3), "matmul_peak_gflops": round(peak, 1),
        "step_gflops": round(total / (step_ms * 1e-3) / 1e9, 1),
        "step_pct_of_peak": round(100 * total / (step_ms * 1e-3) / 1e9 / peak, 1),
        "kernels": kernels}, indent=1))


if __name__ == "__main__":
    main()
