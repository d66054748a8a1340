"""The conformance suite's bf16 tolerances, derived from bfloat16's precision (not fitted).

bfloat16 keeps 8 significant bits: rounding a value to it multiplies it by (1 + d), |d| <= u =
2^-8. The standard model of rounding error treats each d as independent, uniform on [-u, u]
(variance u^2/3). Under torch.autocast or Keras' "mixed_bfloat16" policy a conv/dense layer rounds
its input (the first layer only: later inputs are already bf16), its weights, its output, and where
the bias add is a separate bf16 op, the biased output once more; it accumulates its K-term
reduction in float32 (error ~ K * 2^-24, negligible next to u). ReLU, max-pool and flatten are exact
in bf16 and pass an input error through where they pass the value; tanh scales it by its slope
1 - t^2 and rounds its output. So, per output value y of a layer
with weights W on input h (the float64 forward of the same batch and weights), with V the error
variance of each value:

    V_out = W^2 * V_in + (u^2 / 3) * (W^2 * h^2 + 2 y^2)       (* : the layer's own conv / matmul)

propagated to the logits (V_L), then to the mean cross-entropy through its gradient in the logits,
g = (softmax - onehot) / batch: V_loss = sum(g^2 V_L). The tolerance is K_SIGMA standard deviations
of the largest value's error: a Gaussian tail beyond 6 sigma is ~1e-9 per value.

The one-step weights are checked norm-wise against the largest update, with the same model applied
to the gradient: each weight's gradient is a product along the forward path (L layers) and the
backward path (up to L more), three roundings per layer: relative sd u * sqrt(2L * 3 / 3). That is
an estimate, not a bound: entries whose batch sum cancels can exceed it relative to their size
(hence the comparison against the largest update). No trajectory: training amplifies rounding
differences from step to step, so no step-k tolerance follows from u; the one-epoch accuracy run
(>= 98%) is the check there.
"""
import numpy as np

U = 2.0 ** -8
K_SIGMA = 6.0
MODELS = ("seed_convnet", "mlp")  # valid stride-1 conv, dense, ReLU/tanh, max-pool, flatten


def _conv(x, w):
    """Valid, stride-1 cross-correlation: x (N, C, H, W), w (O, C, kh, kw) -> (N, O, H', W')."""
    kh, kw = w.shape[2:]
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))  # N C H' W' kh kw
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)


def _pool(x, size):
    n, c, h, w = x.shape
    h, w = h // size * size, w // size * size
    return x[:, :, :h, :w].reshape(n, c, h // size, size, w // size, size)


def bounds(spec, weights, x, y):
    """{"logits": tol, "loss1": tol, "update_rtol": r} for the batch (x, y) and weights (float64)."""
    h = np.asarray(x, np.float64)
    var = U * U / 3 * h * h  # the input's rounding
    layers = 0
    for layer in spec.layers:
        kind = layer.kind
        if kind == "conv2d" or kind == "dense":
            if kind == "conv2d" and (tuple(layer.stride) != (1, 1) or layer.padding_mode != "valid"):
                raise ValueError("bf16 tolerance: conv2d with stride/padding not modelled")
            w = np.asarray(weights[layer.name + ".weight"], np.float64)
            op = _conv if kind == "conv2d" else np.matmul
            out = op(h, w)
            if layer.use_bias:
                b = np.asarray(weights[layer.name + ".bias"], np.float64)
                out = out + (b[:, None, None] if kind == "conv2d" else b)
            w2 = w * w
            var = op(var, w2) + U * U / 3 * (op(h * h, w2) + 2 * out * out)
            h, layers = out, layers + 1
            if layer.activation == "relu":
                var, h = var * (h > 0), np.maximum(h, 0)
            elif layer.activation == "tanh":  # tanh' = 1 - t^2, and its output rounded to bf16
                h = np.tanh(h)
                var = var * (1 - h * h) ** 2 + U * U / 3 * h * h
            elif layer.activation not in (None, "linear"):
                raise ValueError("bf16 tolerance: activation %r not modelled" % layer.activation)
        elif kind == "maxpool2d":
            if tuple(layer.size) != tuple(layer.stride) or layer.size[0] != layer.size[1]:
                raise ValueError("bf16 tolerance: overlapping max-pool not modelled")
            win = _pool(h, layer.size[0]).transpose(0, 1, 2, 4, 3, 5)
            n, c, ph, pw = win.shape[:4]
            pick = win.reshape(n, c, ph, pw, -1).argmax(-1)[..., None]
            vwin = _pool(var, layer.size[0]).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ph, pw, -1)
            h = np.take_along_axis(win.reshape(n, c, ph, pw, -1), pick, -1)[..., 0]
            var = np.take_along_axis(vwin, pick, -1)[..., 0]
        elif kind == "flatten":
            h, var = h.reshape(len(h), -1), var.reshape(len(var), -1)
        elif kind == "dropout":
            continue  # off in conformance
        else:
            raise ValueError("bf16 tolerance: layer kind %r not modelled" % kind)
    z = h - h.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    g = (p - np.eye(p.shape[1])[np.asarray(y)]) / len(p)
    return {"logits": K_SIGMA * float(np.sqrt(var.max())),
            "loss1": K_SIGMA * float(np.sqrt((g * g * var).sum())),
            "update_rtol": K_SIGMA * U * float(np.sqrt(2 * layers))}
