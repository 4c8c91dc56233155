"""What every front end hands the compiler: an integer Graph plus the float glue around it.

A front end (qloom.nn via torch.fx, QONNX/Brevitas, PyTorch int8, ONNX Runtime
QDQ/QOperator) lowers its source model to an `ir.Graph` and returns a
`Frontend` object that knows, in the source's own arithmetic, how float
inputs become the graph's input codes, how the graph's outputs become the
source's float outputs, and what the source itself computes (the oracle that
`Accelerator.fidelity` compares against).

The shared rule (docs/numerics.md): the float arithmetic between an
accumulator and the next quantizer is *evaluated* on integer accumulators,
never inverted by formula; `threshold_node` turns that evaluation into a
MultiThreshold by binary search.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import QuantError


@dataclass
class SourceOutput:
    """The source model's outputs on some float inputs, in the IR's layout (batch first).

    compared: "codes" (integer output codes), "labels" (argmax classes) or "floats"
    (a float tail kept in software; `acc` then holds, where the source exposes it,
    the IR accumulator it started from, to count differences in LSBs).
    """
    compared: str
    values: np.ndarray
    acc: np.ndarray | None = None


class Frontend:
    """The float side of a lowered model. Subclasses implement the four methods."""
    kind = "frontend"          # "qloom.nn", "qonnx", "torch-int8", "onnx-qdq", "onnx-qop"
    model = None               # the source model, where there is one in memory
    exact = True               # the IR equals the source on every input by construction (set per model)
    source_layout = "nchw"     # how the source lays out feature maps (the IR's are channels-last)

    @property
    def exact_by_construction(self) -> bool:
        return bool(self.exact)

    def quantize_input(self, x_float) -> np.ndarray:
        """Float inputs (batch first, the source's layout) -> the graph's integer input codes."""
        raise NotImplementedError

    def dequantize(self, y_int) -> np.ndarray:
        """The graph's integer outputs -> the float outputs the source gives (float tail included)."""
        raise NotImplementedError

    def source_outputs(self, x_float, argmax: bool) -> SourceOutput:
        """Run the source model itself (the oracle) on float inputs."""
        raise NotImplementedError

    def sample_inputs(self, n: int, seed: int = 0) -> np.ndarray:
        """n float inputs (the source's layout) whose input codes cover the code range, extremes
        included: what `compile` checks on when no example input is given."""
        raise QuantError(f"the {self.kind} front end cannot make inputs by itself; give example_input")

    def argmax_refusal(self) -> str | None:
        """Why appending an ArgMax to the graph could pick another class than the source (None: it cannot)."""
        return None

    def io_spec(self) -> dict | None:
        """The float glue as plain JSON (stored in the manifest so Accelerator.load can quantize inputs
        and dequantize outputs without the source model): see stored.py for the format. None: the
        build dir then takes integer inputs only."""
        return None

    def describe(self) -> dict:
        """Plain facts for reports and manifests (kind, source file, ...)."""
        return {"frontend": self.kind}


@dataclass
class Lowered:
    graph: ir.Graph
    frontend: Frontend


# Why a branch is refused by an importer (the IR itself is a graph since 0.2: qloom.nn networks may branch).
CHAIN_ONLY = ("the importers take chains of layers only; residual adds, concats and branches compile when the "
              "network is written with qloom.nn (QuantAdd, torch.cat)")


def derive_thresholds(code_fn, lo, hi, n):
    """T[c, k] = least a in [lo_c, hi_c] with code_fn(a)[c] >= k + 1, else hi_c + 1.

    code_fn maps an int64 (M, C) matrix of accumulators to counts 0..n; it must be
    non-decreasing in each column. All (k, c) are searched at once.
    """
    c = lo.shape[0]
    target = np.arange(1, n + 1)[:, None]
    L = np.broadcast_to(lo, (n, c)).copy()
    H = np.broadcast_to(hi + 1, (n, c)).copy()
    while (L < H).any():
        mid = (L + H) // 2
        pred = code_fn(mid) >= target
        active = L < H
        H = np.where(active & pred, mid, H)
        L = np.where(active & ~pred, mid + 1, L)
    return L.T.copy()


def channel_bounds(node, in_type: ir.TensorType):
    """Per output channel, the least and greatest accumulator of a Dense, Conv2d or SumPool."""
    if isinstance(node, ir.SumPool):
        n = node.kernel[0] * node.kernel[1]
        c = in_type.shape[-1]
        return np.full(c, n * in_type.dtype.min), np.full(c, n * in_type.dtype.max)
    return node.acc_bounds(in_type.dtype)


def negate_channels(layer_node, neg: np.ndarray, what: str) -> np.ndarray:
    """Negate the weights of the channels in `neg` so their accumulator runs the other way.

    Returns the per-channel sign (+1 / -1). The weight type widens by one bit where
    -(-2**(b-1)) needs it. Pooled sums have no weights to negate: refused.
    """
    if isinstance(layer_node, ir.SumPool):
        raise QuantError(f"{what}: the float chain after the pooling '{layer_node.name}' decreases in channels "
                         f"{np.flatnonzero(neg)[:8].tolist()} (negative scale or batch-norm gamma); pooled sums "
                         f"cannot be negated, so this is not supported")
    sign = np.where(neg, -1, 1)
    w = layer_node.weight
    layer_node.weight = w * sign.reshape((-1,) + (1,) * (w.ndim - 1))
    if isinstance(layer_node.wtype, ir.Int) and not ir.values_in(layer_node.wtype, layer_node.weight).all():
        layer_node.wtype = ir.Int(layer_node.wtype.bits + 1, True)
    return sign


def threshold_node(name: str, acc_tensor: str, layer_node, in_type: ir.TensorType, codes_fn,
                   out_type: ir.ElemType, what: str | None = None) -> tuple[ir.MultiThreshold, np.ndarray]:
    """A MultiThreshold that reproduces `codes_fn` exactly, and the per-channel sign it needed.

    codes_fn: int64 (M, C) accumulators of `layer_node` as it is now -> output codes
    (M, C) (values of `out_type`; -1/+1 for Bipolar), evaluated with the source's own
    arithmetic. It must be monotone per channel over the accumulator's range;
    decreasing channels get their weights negated in `layer_node` (see negate_channels).
    """
    bipolar = out_type is ir.Bipolar
    base = -1 if bipolar else out_type.min
    n = 1 if bipolar else out_type.max - out_type.min
    lo, hi = channel_bounds(layer_node, in_type)
    sign = np.ones(lo.shape[0], dtype=np.int64)

    def counts(acc):
        code = np.asarray(codes_fn(acc * sign), dtype=np.int64)
        return (code + 1) // 2 if bipolar else code - base

    ends = counts(np.stack([lo, hi]))
    neg = ends[1] < ends[0]
    if neg.any():
        sign = negate_channels(layer_node, neg, what or f"'{name}'")
        lo, hi = channel_bounds(layer_node, in_type)
    t = derive_thresholds(counts, lo, hi, n)
    return ir.MultiThreshold(name, [acc_tensor], name + ":out", thresholds=t, out_type=out_type, base=base), sign


def fit_requantize(t, lo, hi, out_type: ir.Int, max_shift: int = 48):
    """(mult, offset, shift) with floor((acc * mult + offset) / 2**shift), clamped to out_type, equal
    to the step function `t` (see stage_thresholds) on every accumulator in [lo, hi]; None if no
    shift up to max_shift (or int64 headroom) has one. Exact by construction: the constraints are
    the steps themselves, so no accumulator is sampled."""
    def feasible(s):
        return [_fit_channel(t[c], lo[c], hi[c], out_type, s) for c in range(t.shape[0])]

    span = max(int(np.abs(lo).max()), int(np.abs(hi).max()), 1)
    cap = min(max_shift, 60 - span.bit_length() - 9)
    if cap < 0 or any(f is None for f in feasible(cap)):
        return None
    a, b = 0, cap                                         # feasibility only grows with the shift
    while a < b:
        mid = (a + b) // 2
        if all(f is not None for f in feasible(mid)):
            b = mid
        else:
            a = mid + 1
    fits = feasible(a)
    return (np.array([f[0] for f in fits], dtype=np.int64), np.array([f[1] for f in fits], dtype=np.int64), a)


def _fit_channel(t, lo, hi, out_type, s):
    """(m, p) with out >= v_k exactly where acc >= t_k, for out = clamp(floor((acc*m + p) / 2**s)), m >= 0.

    Each step gives linear constraints on (m, p): lower bounds p >= L - a*m and upper bounds
    p <= U - b*m. A pair (lower i, upper j) bounds m; the tightest m interval, then p, is taken.
    """
    omin = out_type.min
    v = (omin + 1 + np.arange(len(t))) << s
    inner = (t > lo) & (t <= hi)
    la, ll = [t[inner]], [v[inner]]                       # acc*m + p >= v*2^s at acc = t
    ub, uu = [t[inner] - 1], [v[inner] - 1]               # acc*m + p <= v*2^s - 1 at acc = t - 1
    on = np.flatnonzero(t <= lo)
    if on.size:
        la.append(np.array([lo]))
        ll.append(v[on[-1:]])
    off = np.flatnonzero(t > hi)
    if off.size:
        ub.append(np.array([hi]))
        uu.append(v[off[:1]] - 1)
    la, ll, ub, uu = map(np.concatenate, (la, ll, ub, uu))
    if la.size == 0 or ub.size == 0:                      # only one side constrained: a constant works
        p = int(ll.max()) if la.size else int(uu.min())
        return 0, p
    coef = ub[None, :] - la[:, None]                      # (b_j - a_i) * m <= U_j - L_i
    rhs = uu[None, :] - ll[:, None]
    if (rhs[coef == 0] < 0).any():
        return None
    pos, neg = coef > 0, coef < 0
    m_hi = (rhs[pos] // coef[pos]).min() if pos.any() else None
    m_lo = max(0, int((-(rhs[neg] // -coef[neg])).max())) if neg.any() else 0
    if m_hi is not None and m_lo > m_hi:
        return None
    m = m_lo
    p_lo, p_hi = int((ll - la * m).max()), int((uu - ub * m).min())
    return (m, p_lo) if p_lo <= p_hi else None
