"""The QONNX executor's arithmetic, reusable on chosen values (qonnx_import's numerics).

qonnx's `execute_onnx` runs a model node by node: its custom ops (Quant,
BipolarQuant, Trunc, MultiThreshold) in numpy (float32 tensors, `np.round`
half to even), every standard op (MatMul, Gemm, Conv, Add, Mul, Div, Sub,
BatchNormalization, Relu, MaxPool, AveragePool, ...) through onnxruntime, one
single-node float32 session per node per call, on batch-1 tensors as the
model declares them. This module drives the same kernels:

- `NodeRunner` evaluates one node on any batch of chosen values (the importer's
  probes): custom ops through qonnx's own classes, standard ops through an
  onnxruntime session of that node alone, built once and kept.
- `FrameExecutor` is the oracle at batch speed: the executor's own sequence
  (same single-node models with the model's batch-1 shapes, same sanitizing),
  each session built once and run frame by frame, because onnxruntime's MatMul
  picks another kernel (and summation order) for one row than for many.
  tests/test_qonnx_import.py checks it bit for bit against `execute_onnx`.
- `round32_exact` is the model of a MatMul/Conv/Gemm output from its integer
  accumulator: the exact value rounded once to float32 (docs/importers.md).
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import QuantError

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "onnx.brevitas", "finn")
QUANTIZER_OPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc", "MultiThreshold")
# Brevitas names round-toward-zero ROUND_TO_ZERO; qonnx 1.0.0's executor only knows it as DOWN (np.fix)
ROUNDING_ALIASES = {"ROUND_TO_ZERO": "DOWN"}


def onnx_modules():
    """(onnx, onnxruntime, ModelWrapper), or one error saying how to install them."""
    try:
        import onnx
        import onnxruntime
        from qonnx.core.modelwrapper import ModelWrapper
    except ImportError as e:
        raise QuantError(f"importing QONNX needs onnx, onnxruntime and qonnx ({e.name} is missing): "
                         f"pip install 'qloom[onnx]'") from None
    return onnx, onnxruntime, ModelWrapper


def is_qonnx_op(node) -> bool:
    return node.domain in QONNX_DOMAINS or (node.domain.startswith(QONNX_DOMAINS) and node.domain != "")


def runnable_node(node):
    """The node as the executor can run it: qonnx domain, Brevitas rounding names mapped."""
    if not is_qonnx_op(node):
        return node
    n = copy.deepcopy(node)
    n.domain = "qonnx.custom_op.general"
    for a in n.attribute:
        if a.name == "rounding_mode":
            mode = a.s.decode().upper()
            a.s = ROUNDING_ALIASES.get(mode, mode).encode()
    return n


def custom_opset(model, node) -> int | None:
    """The opset version the executor picks for a custom node (Trunc v1 vs v2, ...)."""
    from qonnx.util.basic import get_preferred_qonnx_opset
    for imp in model.opset_import:
        if imp.domain == node.domain:
            return imp.version
    return get_preferred_qonnx_opset()


def std_opset(model) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 13


class NodeRunner:
    """Evaluates single nodes of `model` (an onnx.ModelProto) with the executor's kernels on any batch."""

    def __init__(self, model):
        self.model = model
        self.sessions = {}
        self.custom = {}

    def run(self, node, inputs: list) -> np.ndarray:
        """The first output of `node` for input arrays `inputs` (in the node's input order)."""
        if is_qonnx_op(node):
            return self._custom(node, inputs)
        return self._standard(node, inputs)

    def _custom(self, node, inputs):
        from qonnx.custom_op.registry import getCustomOp
        key = node.SerializeToString()
        if key not in self.custom:
            n = runnable_node(node)
            self.custom[key] = (n, getCustomOp(n, onnx_opset_version=custom_opset(self.model, node)))
        n, op = self.custom[key]
        ctx = {name: np.asarray(v) for name, v in zip(n.input, inputs) if name}
        ctx[n.output[0]] = None
        op.execute_node(ctx, None)
        return np.asarray(ctx[n.output[0]])

    def _standard(self, node, inputs):
        onnx, ort, _ = onnx_modules()
        from onnx import helper
        key = (node.SerializeToString(), tuple(np.asarray(v).dtype.str for v in inputs))
        if key not in self.sessions:
            ins = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), None)
                   for name, v in zip(node.input, inputs) if name]
            outs = [helper.make_empty_tensor_value_info(node.output[0])]
            g = helper.make_graph([node], "probe", ins, outs)
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", std_opset(self.model))])
            m.ir_version = min(m.ir_version, 10)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self.sessions[key] = ort.InferenceSession(m.SerializeToString(), opts,
                                                      providers=["CPUExecutionProvider"])
        feed = {name: np.asarray(v) for name, v in zip(node.input, inputs) if name}
        return self.sessions[key].run(None, feed)[0]


class FrameExecutor:
    """qonnx's execute_onnx, frame by frame, with each node's onnxruntime session built once.

    `run(x)` gives the model's outputs (or every tensor, `full=True`) for a batch
    `x` whose frames are fed one at a time as the model declares them (batch 1).
    """

    def __init__(self, wrapper):
        _, ort, ModelWrapper = onnx_modules()
        from qonnx.transformation.infer_shapes import InferShapes
        w = ModelWrapper(copy.deepcopy(wrapper.model))
        if not w.check_all_tensor_shapes_specified():
            w = w.transform(InferShapes())          # the executor demands every shape
        self.wrapper = w
        self.graph = w.graph
        self.input = w.graph.input[0].name
        self.in_shape = tuple(w.get_tensor_shape(self.input))
        self.sessions = {}
        self.ort = ort
        self._memo = None
        self._batched = set()
        # sanitize_quant_values only touches tensors annotated with an integer type: find them once
        from qonnx.util.basic import get_sanitize_quant_tensors
        names = {t for n in w.graph.node for t in list(n.input) + list(n.output) if t}
        self._sanitize = set() if get_sanitize_quant_tensors() == 0 else \
            {t for t in names if w.get_tensor_datatype(t).is_integer()}

    def _session(self, k, node):
        from onnx import helper
        from qonnx.util.basic import qonnx_make_model
        if k not in self.sessions:
            g = self.graph
            # the single-node model exactly as qonnx.core.onnx_exec.execute_node builds it
            ins = [x for x in g.input if x.name in node.input] + [x for x in g.output if x.name in node.input]
            ins += [x for x in g.value_info if x.name in node.input]
            outs = [x for x in g.output if x.name in node.output] + [x for x in g.value_info if x.name in node.output]
            m = qonnx_make_model(helper.make_graph(nodes=[node], name="single-node-exec", inputs=ins, outputs=outs))
            m.opset_import[0].version = self._opset(node)
            sess = self.ort.InferenceSession(m.SerializeToString())
            self.sessions[k] = (sess, [o.name for o in outs])
        return self.sessions[k]

    def _opset(self, node):
        from qonnx.util.basic import get_preferred_qonnx_opset
        imports = self.wrapper.get_opset_imports()
        return imports.get(node.domain, get_preferred_qonnx_opset())

    def run(self, x, full: bool = False) -> dict:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.in_shape[1:]:
            raise QuantError(f"input of shape {x.shape} does not fit the model's input {self.in_shape}")
        key = (x.shape, hash(x.tobytes()))
        if self._memo is None or self._memo[0] != key:
            fb = self.in_shape[0]
            if fb == 1:
                ctx = self._run_batch(x)
            else:       # a model declared with batch fb > 1: blocks of fb frames, the last one padded
                blocks = [x[i:i + fb] for i in range(0, x.shape[0], fb)]
                blocks[-1] = np.concatenate([blocks[-1], np.repeat(blocks[-1][-1:], fb - len(blocks[-1]), 0)])
                ctxs = [self._run_batch(b) for b in blocks]
                ctx = {k: (np.concatenate([c[k] for c in ctxs])[:x.shape[0]] if k in self._batched else v)
                       for k, v in ctxs[0].items()}
            self._memo = (key, ctx)
        ctx = self._memo[1]
        return dict(ctx) if full else {o.name: ctx[o.name] for o in self.graph.output}

    def _run_batch(self, x):
        """The executor's node sequence on a batch: numpy custom ops on the whole batch (they are
        elementwise), onnxruntime nodes frame by frame through their kept sessions."""
        from qonnx.custom_op.registry import getCustomOp, is_custom_op
        from qonnx.util.basic import sanitize_quant_values
        w = self.wrapper
        ctx = w.make_empty_exec_context()
        ctx[self.input] = x
        batched = {self.input}
        for k, node in enumerate(self.graph.node):
            if self._sanitize:
                ctx = sanitize_quant_values(w, [i for i in node.input if i in self._sanitize], ctx)
            if is_custom_op(node.domain, node.op_type) or is_qonnx_op(node):
                n = runnable_node(node)
                getCustomOp(n, onnx_opset_version=self._opset(node)).execute_node(ctx, self.graph)
            else:
                sess, out_names = self._session(k, node)
                if any(i in batched for i in node.input):
                    n_frames = x.shape[0] // self.in_shape[0]
                    fb = self.in_shape[0]
                    res = [sess.run(None, {i: ctx[i][f * fb:(f + 1) * fb] if i in batched else ctx[i]
                                           for i in node.input if i}) for f in range(n_frames)]
                    res = [np.concatenate([r[j] for r in res]) for j in range(len(out_names))]
                else:
                    res = sess.run(None, {i: ctx[i] for i in node.input if i})
                for o in node.output:
                    ctx[o] = res[out_names.index(o)]
            if any(i in batched for i in node.input):
                batched.update(node.output)
            if self._sanitize:
                ctx = sanitize_quant_values(w, [o for o in node.output if o in self._sanitize], ctx)
        self._batched = batched
        return ctx


# ------------------------------------------------------------------ float32 rounding of exact values

def _split(a):
    """Veltkamp split of float64 a into hi + lo, each with at most 26 significant bits."""
    c = a * 134217729.0                      # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def round32_exact(acc, p, c=None) -> np.ndarray:
    """float32 nearest (ties to even) to acc * p + c, computed exactly.

    acc: integers (|acc| < 2**53); p: float64 (the product of two float32 scales is exact in
    float64); c: float32 or None. The value is carried as a double-double and rounded once,
    so it equals the executor's float32 MatMul/Conv whenever that one is exact (power-of-two
    scales) and is the best float32 model of it otherwise.
    """
    a = np.asarray(acc, dtype=np.float64)
    hi, lo = _two_prod(a, np.asarray(p, dtype=np.float64))
    if c is not None:
        hi, e = _two_sum(hi, np.asarray(c, dtype=np.float32).astype(np.float64))
        lo = lo + e
    s, t = _two_sum(hi, lo)
    f = s.astype(np.float32)
    # s is a float32 midpoint only when rounding it can go either way: t decides
    g = np.nextafter(f, np.where(s > f.astype(np.float64), np.float32(np.inf), np.float32(-np.inf)))
    mid = (f.astype(np.float64) + g.astype(np.float64)) / 2
    at_mid = (s == mid) & (t != 0) & np.isfinite(g)
    away = at_mid & (np.sign(t) == np.sign(g.astype(np.float64) - f.astype(np.float64)))
    return np.where(away, g, f).astype(np.float32)


def is_power_of_two(scale) -> bool:
    """True when every element of `scale` is a positive power of two (exact in float32 products)."""
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size == 0 or (s <= 0).any() or not np.isfinite(s).all():
        return False
    m, _ = np.frexp(s)
    return bool((m == 0.5).all())
