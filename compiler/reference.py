"""The golden model: executes a Graph bit-exactly on a batch of integer frames.

Integer products go through BLAS only where the bound analysis proves that
every partial sum is exact in that float type (float32 below 2**24, float64
below 2**53); otherwise numpy's int64 matmul is used.
"""
from __future__ import annotations

import numpy as np

from . import ir

_EXACT_F32 = 1 << 24
_EXACT_F64 = 1 << 53


def matmul_exact(x: np.ndarray, w: np.ndarray, bound: int) -> np.ndarray:
    """x (B, K) @ w.T (K, N) -> int64, exact given |every partial sum| <= bound."""
    if bound < _EXACT_F32:
        return (x.astype(np.float32) @ w.T.astype(np.float32)).astype(np.int64)
    if bound < _EXACT_F64:
        return (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.int64)
    return x.astype(np.int64) @ w.T.astype(np.int64)


def dense_bound(node: ir.Dense, in_dtype: ir.ElemType) -> int:
    """Upper bound of |any partial sum| of the node's dot products."""
    xmax = max(abs(in_dtype.min), abs(in_dtype.max))
    return int(np.abs(node.weight).sum(axis=1).max(initial=0)) * xmax


def _dense(node, x, in_type):
    return matmul_exact(x, node.weight, dense_bound(node, in_type.dtype))


def windows(x, kernel, stride):
    """(B, H, W, C) -> (B, OH, OW, KH, KW, C) view of every window."""
    b, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (b, oh, ow, kh, kw, c), (s[0], s[1] * sh, s[2] * sw, s[1], s[2], s[3]), writeable=False)


def _conv2d(node, x, in_type):
    ph, pw = node.padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=node.pad_value)
    x = np.ascontiguousarray(x)
    oc, kh, kw, cg = node.weight.shape
    g = node.groups
    win = windows(x, (kh, kw), node.stride)                     # B, OH, OW, KH, KW, C
    b, oh, ow = win.shape[:3]
    xmax = max(abs(in_type.dtype.min), abs(in_type.dtype.max))
    outs = []
    for gi in range(g):
        wg = node.weight[gi * (oc // g):(gi + 1) * (oc // g)].reshape(oc // g, -1)
        cols = win[..., gi * cg:(gi + 1) * cg].reshape(b * oh * ow, -1)
        bound = int(np.abs(wg).sum(axis=1).max(initial=0)) * xmax
        outs.append(matmul_exact(cols, wg, bound))
    return np.concatenate(outs, axis=1).reshape(b, oh, ow, oc)


def _maxpool(node, x, in_type):
    return windows(np.ascontiguousarray(x), node.kernel, node.stride).max(axis=(3, 4))


def _sumpool(node, x, in_type):
    return windows(np.ascontiguousarray(x), node.kernel, node.stride).sum(axis=(3, 4))


def _multithreshold(node, x, in_type):
    t = node.thresholds
    out = np.empty(x.shape, dtype=np.int64)
    c = x.shape[-1]
    flat = x.reshape(-1, c)
    res = out.reshape(-1, c)
    for ch in range(c):
        row = t[ch if t.shape[0] > 1 else 0]
        res[:, ch] = np.searchsorted(row, flat[:, ch], side="right")
    if isinstance(node.out_type, ir.BipolarType):
        return 2 * out - 1
    return out + node.base


def requantize(acc, mult, offset, shift, rounding):
    """round((acc * mult + offset) / 2**shift) in exact integers (Python ints past int64)."""
    v = acc * mult + offset
    if shift == 0:
        return v
    if rounding == "floor":
        return v >> shift
    half = 1 << (shift - 1)
    if rounding == "half_up":
        return (v + half) >> shift
    q = v >> shift                       # half_even
    r = v - (q << shift)
    return q + ((r > half) | ((r == half) & ((q & 1) == 1)))


def _requantize(node, x, in_type):
    lo, hi = in_type.dtype.min, in_type.dtype.max
    extreme = max(abs(lo), abs(hi)) * int(np.abs(node.mult).max()) + int(np.abs(node.offset).max())
    if extreme < (1 << 62):
        v = requantize(x, node.mult, node.offset, node.shift, node.rounding)
    else:  # exact in Python integers
        v = requantize(x.astype(object), node.mult.astype(object), node.offset.astype(object),
                       node.shift, node.rounding)
    return np.clip(v, node.out_type.min, node.out_type.max).astype(np.int64)


def _flatten(node, x, in_type):
    return x.reshape(x.shape[0], -1)


def _argmax(node, x, in_type):
    return np.argmax(x, axis=1).reshape(-1, 1)  # numpy returns the first maximum


def _add(node, a, b, ta, tb):
    # int64 is exact: the IR bounds every sum by the input types (at most 64-bit outputs)
    return node.coeffs[0] * a + node.coeffs[1] * b


def _concat(node, *args):
    xs = args[:len(args) // 2]            # the inputs, then their types
    return np.concatenate(xs, axis=-1)


OPS = {
    ir.Dense: _dense,
    ir.Conv2d: _conv2d,
    ir.MaxPool2d: _maxpool,
    ir.SumPool: _sumpool,
    ir.MultiThreshold: _multithreshold,
    ir.Requantize: _requantize,
    ir.Flatten: _flatten,
    ir.ArgMax: _argmax,
    ir.Add: _add,
    ir.Concat: _concat,
}


def check_input(graph: ir.Graph, x) -> np.ndarray:
    """The batch as int64 (B, *input shape), or an error naming the offending value."""
    x = np.asarray(x)
    t = graph.input_type
    if x.shape == t.shape:
        x = x[None]
    if x.shape[1:] != t.shape:
        raise ValueError(f"input of graph '{graph.name}' must have shape (batch, {', '.join(map(str, t.shape))}), "
                         f"got {x.shape}")
    if x.dtype.kind == "f":
        if not np.all(x == np.round(x)):
            raise ValueError(f"input of graph '{graph.name}' must hold integers, got non-integer floats "
                             f"(quantize float data with Accelerator.quantize_input first)")
    bad = ~ir.values_in(t.dtype, x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"input of graph '{graph.name}': element {idx} = {x[idx]} is out of range for "
                         f"{t.dtype} ({t.dtype.min}..{t.dtype.max})")
    return x.astype(np.int64)


def run(graph: ir.Graph, x, return_all: bool = False):
    """Execute `graph` on the batch `x` (B, *input shape) of integers.

    Returns the output as int64 (B, *output shape), or with `return_all` a dict
    of every tensor by name.
    """
    types = graph.validate()
    env = {graph.input: check_input(graph, x)}
    for node in graph.nodes:
        ins = [env[t] for t in node.inputs]
        op = OPS.get(type(node))
        if op is None:
            raise NotImplementedError(f"reference model has no op for {node.kind} '{node.name}'")
        out = op(node, *ins, *(types[t] for t in node.inputs))
        env[node.output] = out.reshape((out.shape[0],) + types[node.output].shape)
    return env if return_all else env[graph.output]
