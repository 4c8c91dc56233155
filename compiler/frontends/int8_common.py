"""What the int8 importers (torch_int8, torch_int8_pt2e, onnx_int8) share: probing a runtime's
kernels on chosen accumulators, turning what they answer into MultiThreshold or Requantize nodes,
and building the IR chain.

The rule (docs/importers.md): a layer's requantization is never derived from the runtime's
formula. `MatmulProbe` and `PoolProbe` make the runtime's own kernel (a torch quantized module,
an ONNX Runtime session) compute chosen accumulator values, by giving it synthetic weights and
inputs with the layer's own scales, zero points, bias and fused activation. The codes it answers
are a non-decreasing step function of the accumulator; binary search finds its steps
(thresholds). A fixed-point `Requantize` is used where one reproduces exactly those steps on the
whole accumulator range, else the thresholds are kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir, reference
from .base import QuantError, derive_thresholds, fit_requantize
from .int8_probes import (CODE_TYPES, METHODS, Geometry, MatmulProbe, PoolProbe,  # noqa: F401
                          flatten_perm, from_ir_layout, to_ir_layout)


# ---------------------------------------------------------------- a pending requantization stage

@dataclass
class Stage:
    """An accumulator (of a Dense, Conv2d or SumPool IR node) waiting for its requantization.

    codes_fn maps IR accumulators (M, C), each within [a, b] per channel, to the runtime's output
    codes; outside [a, b] (up to the proven bounds [lo, hi]) the codes equal those at a or b
    (checked with the real weights where the probe cannot reach).
    """
    name: str
    layer_node: ir.Node
    in_type: ir.TensorType
    out_type: ir.Int
    codes_fn: object
    lo: np.ndarray
    hi: np.ndarray
    a: np.ndarray
    b: np.ndarray
    how: str
    rt_name: str | None = None
    layout: object = "nchw"
    maps: list = field(default_factory=list)

    def codes(self, acc):
        c = self.codes_fn(acc)
        for table, cmin in self.maps:
            c = table[c - cmin]
        return c


def matmul_stage(name, layer_node, in_type, out_type, probe: MatmulProbe, offset, how, rt_name=None) -> Stage:
    """A Stage for a Dense/Conv2d node whose runtime accumulator is IR accumulator - offset[c]."""
    lo, hi = layer_node.acc_bounds(in_type.dtype)
    rlo, rhi, code_rlo, code_rhi = probe.extremes()
    if not (np.array_equal(rlo, lo - offset) and np.array_equal(rhi, hi - offset)):
        raise QuantError(f"'{name}': internal error: the runtime's accumulator bounds do not match the IR's")
    plo, phi = probe.reach
    a, b = np.maximum(lo, plo + offset), np.minimum(hi, phi + offset)

    def codes_fn(acc):
        return probe.codes(np.asarray(acc, dtype=np.int64) - offset[None, :])

    ends = codes_fn(np.stack([a, b]))
    for where, fixed, got in (("least", code_rlo, ends[0]), ("greatest", code_rhi, ends[1])):
        bad = fixed != got
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            raise QuantError(f"'{name}': channel {c}'s {where} accumulators lie beyond what the probe can reach "
                             f"(reach {probe.reach}, range [{rlo[c]}, {rhi[c]}]) and the runtime's codes still "
                             f"change there ({got[c]} -> {fixed[c]}); this layer cannot be imported exactly")
    return Stage(name, layer_node, in_type, out_type, codes_fn, lo, hi, a, b, how, rt_name)


def pool_stage(name, layer_node, in_type, out_type, probe: PoolProbe, how, rt_name=None) -> Stage:
    """A Stage for a SumPool node: the runtime's average pool evaluated on chosen window sums."""
    c = in_type.shape[-1]
    n = layer_node.kernel[0] * layer_node.kernel[1]
    lo = np.full(c, n * in_type.dtype.min)
    hi = np.full(c, n * in_type.dtype.max)
    st = Stage(name, layer_node, in_type, out_type, lambda s: probe.codes(np.asarray(s, dtype=np.int64)),
               lo, hi, lo.copy(), hi.copy(), how, rt_name)
    st.probe = probe
    return st


# ---------------------------------------------------------------- thresholds, and Requantize where exact

def stage_thresholds(stage: Stage) -> np.ndarray:
    """T (C, n): the least IR accumulator giving code >= out.min + k + 1, by binary search over [a, b]."""
    omin, n = stage.out_type.min, stage.out_type.max - stage.out_type.min
    ends = stage.codes(np.stack([stage.a, stage.b]))
    if (ends[0] > ends[1]).any() and not getattr(getattr(stage, "probe", None), "varies", 0):
        c = int(np.flatnonzero(ends[0] > ends[1])[0])
        raise QuantError(f"'{stage.name}': the runtime's codes decrease with the accumulator in channel {c} "
                         f"(a negative scale?); not supported")
    t = derive_thresholds(lambda acc: stage.codes(acc) - omin, stage.a, stage.b, n)
    # outside [a, b] the codes are those at a and b: a threshold at a holds from lo, one past b never
    t = np.where(t <= stage.a[:, None], stage.lo[:, None], t)
    return np.where(t > stage.b[:, None], stage.hi[:, None] + 1, t)


def requant_node(stage: Stage, acc_tensor: str, method: str):
    """The stage's MultiThreshold or (where exact) Requantize node, and a report of the choice."""
    t = stage_thresholds(stage)
    fit = None if method == "thresholds" else fit_requantize(t, stage.lo, stage.hi, stage.out_type)
    name, out = stage.name, stage.name + ":out"
    info = {"layer": stage.layer_node.name, "layer_kind": stage.layer_node.kind, "output": out,
            "in_type": str(stage.in_type.dtype), "out_type": str(stage.out_type), "how": stage.how}
    if fit is not None:
        mult, offset, shift = fit
        node = ir.Requantize(name, [acc_tensor], out, mult=mult, shift=shift, offset=offset, rounding="floor",
                             out_type=stage.out_type)
        info.update(method="requantize", mult_bits=int(max(int(mult.max()), 1).bit_length()), shift=shift)
    elif method == "requantize":
        raise QuantError(f"'{name}': no fixed-point Requantize reproduces the runtime's codes exactly on every "
                         f"accumulator (use method='auto' or 'thresholds')")
    else:
        node = ir.MultiThreshold(name, [acc_tensor], out, thresholds=t, out_type=stage.out_type,
                                 base=stage.out_type.min)
        info.update(method="thresholds", thresholds_per_channel=int(t.shape[1]),
                    requantize_exact=False if method == "auto" else None)
    info["checked"] = check_stage(stage, node, t)
    varies = getattr(stage.probe, "varies", 0) if hasattr(stage, "probe") else 0
    if varies:
        info["not_a_function_of_the_sum"] = varies
    return node, info


def check_stage(stage: Stage, node, t, n_random: int = 64, seed: int = 0) -> int:
    """Evaluate the runtime again at every step and next to it, and at random accumulators, against
    the node; returns how many accumulators were compared (raises on any difference)."""
    rng = np.random.default_rng(seed)
    inside = lambda a: np.clip(a, stage.a[None, :], stage.b[None, :])  # noqa: E731
    picks = [inside(t.T), inside(t.T - 1),
             rng.integers(stage.a[None, :], stage.b[None, :] + 1, size=(n_random, len(stage.a)))]
    acc = np.concatenate(picks).astype(np.int64)
    want = stage.codes(acc)
    got = _apply(node, acc)
    if not np.array_equal(want, got):
        i, c = np.argwhere(want != got)[0]
        raise QuantError(f"'{stage.name}': internal error: {node.kind} gives {got[i, c]} where the runtime gives "
                         f"{want[i, c]} (channel {c}, accumulator {acc[i, c]})")
    return int(acc.size)


def _apply(node, acc):
    if isinstance(node, ir.Requantize):
        v = reference.requantize(acc, node.mult[None, :], node.offset[None, :], node.shift, node.rounding)
        return np.clip(v, node.out_type.min, node.out_type.max)
    t = node.thresholds
    return node.base + (acc[:, :, None] >= t[None, :, :]).sum(axis=2)


def code_map_node(name, in_tensor, table, cmin, out_type):
    """A MultiThreshold applying the non-decreasing code table (on codes, not accumulators)."""
    codes = np.arange(cmin, cmin + len(table))
    n = out_type.max - out_type.min
    t = np.array([codes[np.argmax(table >= out_type.min + k)] if (table >= out_type.min + k).any()
                  else codes[-1] + 1 for k in range(1, n + 1)])
    return ir.MultiThreshold(name, [in_tensor], name + ":out", thresholds=t[None, :], out_type=out_type,
                             base=out_type.min)


def maxpool_nchw(x: np.ndarray, kernel, stride) -> np.ndarray:
    """Max over windows of an NCHW batch (to predict what a pool inside a code map does)."""
    win = reference.windows(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), tuple(kernel), tuple(stride))
    return win.max(axis=(3, 4)).transpose(0, 3, 1, 2)


def check_code_table(name, table):
    """A code-to-code map from the runtime must be non-decreasing (it commutes with max pooling)."""
    d = np.diff(table)
    if (d < 0).any():
        k = int(np.flatnonzero(d < 0)[0])
        raise QuantError(f"'{name}': the code map is not non-decreasing (code {k} -> {table[k]}, "
                         f"{k + 1} -> {table[k + 1]}); not supported")


# ---------------------------------------------------------------- the chain under construction

class Chain:
    """Builds the IR chain; requantization is emitted lazily so later code maps fold into it.

    Max pools and flattens after a pending stage are deferred past its requantization (they
    commute with a non-decreasing code map), so `relu`, `dequantize -> flatten -> quantize` and
    similar steps between a layer and the next accumulator cost nothing in hardware.
    """

    def __init__(self, name: str, method: str = "auto"):
        if method not in METHODS:
            raise QuantError(f"method must be one of {METHODS}, got {method!r}")
        self.name, self.method = name, method
        self.nodes, self.types = [], {}
        self.cur = self.cur_type = None
        self.pending: Stage | None = None
        self.deferred: list = []
        self.perm = None
        self.layout = "nchw"
        self.report: list[dict] = []
        self.aliases: dict[str, tuple] = {}     # runtime tensor -> (IR tensor, layout)
        self.input_type = None

    def start(self, shape_rt: tuple, dtype: ir.Int, rt_name: str):
        """The graph input: codes of shape shape_rt (no batch; NCHW maps or vectors)."""
        shape = (shape_rt[1], shape_rt[2], shape_rt[0]) if len(shape_rt) == 3 else tuple(shape_rt)
        if len(shape) not in (1, 3):
            raise QuantError(f"the quantized input must be (batch, features) or (batch, C, H, W), got "
                             f"(batch, {', '.join(map(str, shape_rt))})")
        self.input_type = ir.TensorType(shape, dtype)
        self.cur, self.cur_type = "input", self.input_type
        self.types["input"] = self.input_type
        self.layout = "nchw" if len(shape) == 3 else "vec"
        self.aliases[rt_name] = ("input", self.layout)

    def _add(self, node):
        self.cur_type = node.infer([self.types[t] for t in node.inputs])
        self.types[node.output] = self.cur_type
        self.nodes.append(node)
        self.cur = node.output

    def flush(self):
        """Emit the pending stage's requantization and the nodes deferred after it."""
        st = self.pending
        if st is None:
            return
        node, info = requant_node(st, self.cur, self.method)
        self._add(node)
        self.report.append(info)
        self.pending = None
        if st.rt_name:
            self.aliases[st.rt_name] = (node.output, st.layout)
        for op, rt_name, layout in self.deferred:
            op.inputs = [self.cur]
            self._add(op)
            if rt_name:
                self.aliases[rt_name] = (op.output, layout)
        self.deferred = []

    def matmul(self, name, weight_dev, geom: Geometry, pad_value: int, probe, out_type, how: str, rt_name=None,
               x_zp: int | None = None):
        """A Dense (weight (N, K)) or Conv2d (OIHW) on the current codes: acc = W_dev @ codes.

        probe: a MatmulProbe (the runtime on chosen accumulators), or a function of runtime
        accumulators (M, C) -> codes that models the runtime (then give x_zp)."""
        self.flush()
        in_type = self.cur_type
        zp = probe.x_zp if isinstance(probe, MatmulProbe) else int(x_zp)
        w = np.asarray(weight_dev, dtype=np.int64)
        wtype = ir.Int(8, True) if w.min() >= -128 and w.max() <= 127 else ir.int_type_for(min(w.min(), -1), w.max())
        if geom.spatial:
            if len(in_type.shape) != 3:
                raise QuantError(f"'{name}': a convolution needs a (C, H, W) map, got a vector")
            wt = w.transpose(0, 2, 3, 1)                                       # (OC, KH, KW, C/g)
            node = ir.Conv2d(name, [self.cur], name + ":acc", weight=wt, wtype=wtype, stride=geom.stride,
                             padding=geom.padding, pad_value=pad_value, groups=geom.groups)
        else:
            if len(in_type.shape) != 1:
                raise QuantError(f"'{name}': a dense layer needs a vector per frame, got shape "
                                 f"{in_type.shape} (flatten first)")
            w = w.reshape(geom.cout, -1)
            if self.perm is not None:
                w = w[:, self.perm]                                             # columns in the IR's order
                self.perm = None
            node = ir.Dense(name, [self.cur], name + ":acc", weight=w, wtype=wtype)
        offset = zp * w.reshape(w.shape[0], -1).sum(axis=1)                    # IR acc - runtime acc
        self._add(node)
        if isinstance(probe, MatmulProbe):
            self.pending = matmul_stage(name + ":rq", node, in_type, out_type, probe, offset, how, rt_name)
        else:                          # a model of the runtime's codes on runtime accumulators, valid anywhere
            lo, hi = node.acc_bounds(in_type.dtype)
            self.pending = Stage(name + ":rq", node, in_type, out_type,
                                 lambda acc: probe(np.asarray(acc, dtype=np.int64) - offset[None, :]),
                                 lo, hi, lo.copy(), hi.copy(), how, rt_name)
        self.layout = self.pending.layout = "nchw" if geom.spatial else "vec"

    def avgpool(self, name, kernel, stride, probe: PoolProbe, out_type, how: str, rt_name=None):
        self.flush()
        if len(self.cur_type.shape) != 3:
            raise QuantError(f"'{name}': average pooling needs a (C, H, W) map")
        in_type = self.cur_type
        node = ir.SumPool(name, [self.cur], name + ":acc", kernel=kernel, stride=stride)
        self._add(node)
        self.pending = pool_stage(name + ":rq", node, in_type, out_type, probe, how, rt_name)
        self.layout = self.pending.layout = "nchw"

    def code_map(self, name, table, cmin, out_type, rt_name=None):
        """A non-decreasing code->code map from the runtime (relu on codes, dequantize->quantize, ...)."""
        table = np.asarray(table, dtype=np.int64)
        check_code_table(name, table)
        now = self.pending.out_type if self.pending is not None else self.cur_type.dtype
        if np.array_equal(table, np.arange(cmin, cmin + len(table))) and out_type == now:
            self._alias_current(rt_name)
            return
        if self.pending is not None:
            self.pending.maps.append((table, cmin))
            self.pending.out_type = out_type
            if self.deferred:                     # only the last deferred op's output is a runtime tensor now
                self.pending.rt_name = None
                self.deferred = [(op, None, lay) for op, _, lay in self.deferred]
            self._alias_current(rt_name)
            return
        self._add(code_map_node(name, self.cur, table, cmin, out_type))
        self.report.append({"layer": name, "output": self.cur, "method": "thresholds", "how": "code map",
                            "out_type": str(out_type)})
        self._alias_current(rt_name)

    def _alias_current(self, rt_name):
        """Record that runtime tensor rt_name equals the chain's current value."""
        if not rt_name:
            return
        if self.pending is None:
            self.aliases[rt_name] = (self.cur, self.layout)
        elif self.deferred:
            op, _, layout = self.deferred[-1]
            self.deferred[-1] = (op, rt_name, layout)
        else:
            self.pending.rt_name = rt_name

    def maxpool(self, name, kernel, stride, rt_name=None):
        self._structural(ir.MaxPool2d(name, [], name + ":out", kernel=kernel, stride=stride), rt_name, self.layout)

    def flatten(self, name, rt_name=None):
        """Flatten a (C, H, W) map; the next Dense's columns are permuted to the IR's (H, W, C) order."""
        shape = self._shape_now()
        if len(shape) != 3:
            self._alias_current(rt_name)
            return
        h, w, c = shape
        self.perm = flatten_perm(h, w, c)
        self.layout = self.perm
        self._structural(ir.Flatten(name, [], name + ":out"), rt_name, self.perm)

    def _shape_now(self):
        t = self.cur_type if self.pending is None else ir.TensorType(self.cur_type.shape, self.pending.out_type)
        for op, _, _ in self.deferred:
            t = op.infer([t])
        return t.shape

    def _structural(self, node, rt_name, layout):
        """A max pool or flatten: added now, or after the pending stage's requantization."""
        if self.pending is None:
            node.inputs = [self.cur]
            self._add(node)
            if rt_name:
                self.aliases[rt_name] = (node.output, layout)
        else:
            self.deferred.append((node, rt_name, layout))

    def finish(self) -> ir.Graph:
        self.flush()
        g = ir.Graph("input", self.input_type, self.nodes, self.cur, name=self.name)
        g.validate()
        return g


# ---------------------------------------------------------------- fidelity numbers

def code_stats(want, got) -> dict:
    """Share of equal codes, max |difference| in LSBs and a histogram of the differences."""
    want, got = np.asarray(want, dtype=np.int64), np.asarray(got, dtype=np.int64)
    d = np.abs(want - got)
    vals, counts = np.unique(d[d > 0], return_counts=True)
    return {"elements": int(d.size), "exact_share": float((d == 0).mean()) if d.size else 1.0,
            "max_lsb": int(d.max(initial=0)), "histogram": {int(v): int(c) for v, c in zip(vals, counts)}}


def sample_codes(n: int, shape, cmin: int, cmax: int, seed: int = 0) -> np.ndarray:
    """n frames of codes of `shape`: all-min, all-max, alternating extremes, then uniform random."""
    rng = np.random.default_rng(seed)
    x = rng.integers(cmin, cmax + 1, size=(n,) + tuple(shape))
    flat = x.reshape(n, -1)
    if n > 0:
        flat[0] = cmin
    if n > 1:
        flat[1] = cmax
    if n > 2:
        flat[2] = np.where(np.arange(flat.shape[1]) % 2 == 0, cmin, cmax)
    if n > 3:
        flat[3] = np.where(np.arange(flat.shape[1]) % 2 == 0, cmax, cmin)
    return x


def describe_report(report: list[dict]) -> dict:
    """Counts of requantization methods, for Frontend.describe()."""
    counts = {}
    for r in report:
        counts[r["method"]] = counts.get(r["method"], 0) + 1
    return counts

