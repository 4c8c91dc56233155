"""QONNX front end: Brevitas exports (raw or cleaned by qonnx) and FINN-style QONNX to the integer IR.

Modules: qonnx_import (this: the Frontend, `lower`, `export_brevitas`), qonnx_graph
(the walk and the quantizers), qonnx_layers (MatMul/Gemm, Conv, elementwise, pools,
Flatten), qonnx_values (what each tensor is), qonnx_quant (quantizer nodes),
qonnx_ops (the executor's kernels on chosen values, FrameExecutor, round32_exact).

The model is walked once in topological order (qonnx_graph); every tensor is a constant, the float
input, integer codes in the IR, or an accumulator with the float ops after it (qonnx_values).

A quantizer after a Tail becomes a MultiThreshold whose thresholds are found
by *evaluating* the tail and the quantizer with the executor's own kernels on
integer accumulators (base.threshold_node), never by inverting a formula. The
accumulator's float value is modelled as the exact value rounded once to
float32 (qonnx_ops.round32_exact): exact for power-of-two scales, the closest
model otherwise (docs/importers.md measures the difference).
"""
from __future__ import annotations

import copy
import pathlib

import numpy as np

from .. import ir
from ..errors import QuantError
from . import qonnx_ops as ops
from .base import Frontend, Lowered, SourceOutput
from .qonnx_graph import Lowering
from .qonnx_values import QAct, from_ir_layout, to_ir_layout


class QonnxFrontend(Frontend):
    """The float side of a QONNX model: its input quantizer, its output (codes or a float tail), its executor."""
    kind = "qonnx"

    def __init__(self, wrapper, lw: Lowering, output, source: str | None):
        self.model = wrapper
        self.runner = lw.runner
        self.in_shape = lw.input_prefix.shape
        self.prefix = lw.input_prefix.nodes
        self.input_quant, self.input_consts = lw.input_quant, lw.input_consts
        self.input_type = lw.input_type
        self.output = output
        self.source = source
        self.activations = lw.activations
        self.thresholded = lw.thresholded        # for diagnostics (tests/brevitas_models.explain_differences)
        self.output_name = lw.output_name
        self.power_of_two = all(ops.is_power_of_two(s) for s in lw.scales)
        # equal to the executor by construction only with power-of-two scales and float32-exact sums
        # (docs/importers.md); otherwise the float32 MatMul/Conv is not a function of the integer
        # accumulator, and the differences are measured
        self.exact = self.power_of_two and lw.max_acc < (1 << 24)
        self.ops = {}
        for n in wrapper.graph.node:
            self.ops[n.op_type] = self.ops.get(n.op_type, 0) + 1
        self._executor = None

    @property
    def executor(self) -> ops.FrameExecutor:
        if self._executor is None:
            self._executor = ops.FrameExecutor(self.model)
        return self._executor

    def batch(self, x_float) -> np.ndarray:
        x = np.asarray(x_float, dtype=np.float32)
        if x.shape == tuple(self.in_shape[1:]):
            x = x[None]
        if x.shape[1:] != tuple(self.in_shape[1:]):
            raise QuantError(f"inputs must have shape (batch, {', '.join(map(str, self.in_shape[1:]))}) as the "
                             f"model's input, got {x.shape}")
        return x

    def quantize_input(self, x_float) -> np.ndarray:
        v = self.batch(x_float)
        for node, consts in self.prefix:
            if node.op_type in ("Flatten", "Reshape"):
                v = v.reshape(v.shape[0], -1)
            else:
                v = self.runner.run(node, [v if c is None else c for c in consts])
        q = self.input_quant
        codes = q.codes(v if q.kind == "input" else self.runner.run(q.node, [v] + self.input_consts[1:]))
        return codes.transpose(0, 2, 3, 1) if codes.ndim == 4 else codes

    def dequantize(self, y_int) -> np.ndarray:
        y = np.asarray(y_int)
        out = self.output
        if isinstance(out, QAct):
            return to_ir_layout(out.quant.dequant(from_ir_layout(y, out.rank, out.perm)), out.rank, out.perm)
        c = y.shape[-1]
        return out.value(y.reshape(-1, c), self.runner).reshape(y.shape)

    def source_outputs(self, x_float, argmax: bool) -> SourceOutput:
        x = self.batch(x_float)
        res = self.executor.run(x, full=True)[self.output_name]
        out = self.output
        if argmax:
            return SourceOutput("labels", res.reshape(res.shape[0], -1).argmax(axis=1)[:, None])
        if isinstance(out, QAct):
            return SourceOutput("codes", to_ir_layout(out.quant.codes(res), out.rank, out.perm))
        return SourceOutput("floats", to_ir_layout(res, out.rank, out.perm))

    def source_codes(self, x_float) -> dict:
        """Every quantizer's codes as the executor computes them (its full context), by IR tensor, IR layout."""
        ctx = self.executor.run(self.batch(x_float), full=True)
        return {t: to_ir_layout(a.quant.codes(ctx[name]), a.rank if a.perm is None else 2, a.perm)
                for t, name, a in self.activations}

    def sample_inputs(self, n: int, seed: int = 0) -> np.ndarray:
        """Inputs whose codes cover the input range: extremes, random codes, half-step ties, clamped values."""
        rng = np.random.default_rng(seed)
        q = self.input_quant
        shape = (n,) + tuple(self.quant_in_shape()[1:])
        if q.kind == "mt":
            t = np.asarray(self.input_consts[1], dtype=np.float32)
            pick = rng.integers(0, t.size, shape)
            v = t.reshape(-1)[pick] + rng.choice([0, 0, -1, 1], shape) * rng.random(shape) * (np.ptp(t) + 1)
        elif q.out_type is ir.Bipolar:
            s = np.abs(q.scale).astype(np.float32)
            v = rng.choice([-1.0, 1.0], shape) * rng.random(shape) * s
            v[rng.random(shape) < 0.1] = 0.0
        else:
            lo, hi = q.out_type.min, q.out_type.max
            codes = rng.integers(lo, hi + 1, shape).astype(np.float32)
            codes[0], codes[1 % n], codes[2 % n] = lo, hi, min(max(0, lo), hi)
            step = rng.choice([0.0, 0.0, 0.5, -0.5, 0.25], shape).astype(np.float32)
            step[rng.random(shape) < 0.05] = (hi - lo + 4) * rng.choice([-1, 1])
            if q.kind == "input":          # already codes: no ties or clamping to exercise
                step[:] = 0
            v = (codes - np.float32(q.zp) + step) * q.scale
        return self.invert_prefix(np.asarray(v, dtype=np.float32))

    def quant_in_shape(self):
        shape = tuple(self.in_shape)
        for node, _ in self.prefix:
            if node.op_type in ("Flatten", "Reshape"):
                shape = (shape[0], int(np.prod(shape[1:])))
        return shape

    def invert_prefix(self, v):
        """Float inputs whose prefix output is close to v (the prefix is elementwise; affine inverse)."""
        if not self.prefix:
            return v.reshape((v.shape[0],) + tuple(self.in_shape[1:]))
        one = np.ones((1,) + tuple(self.in_shape[1:]), np.float32)
        f = self.prefix_fn
        b, a = f(0 * one), f(one) - f(0 * one)
        a = np.where(a == 0, 1, a)
        x = (v - b) / a
        return x.reshape((v.shape[0],) + tuple(self.in_shape[1:])).astype(np.float32)

    def prefix_fn(self, x):
        for node, consts in self.prefix:
            if node.op_type in ("Flatten", "Reshape"):
                x = x.reshape(x.shape[0], -1)
            else:
                x = self.runner.run(node, [x if c is None else c for c in consts])
        return x

    def argmax_refusal(self) -> str | None:
        out = self.output
        if out.rank != 2 or out.perm is not None:
            return "the model's output is a feature map, not a vector of class scores"
        if isinstance(out, QAct):
            if out.quant.per_tensor_scale is None:
                return "the output quantizer has per-channel scales, so codes and values can order classes differently"
            return None
        p = out.params
        same = lambda a: a is None or bool((np.asarray(a) == np.asarray(a).reshape(-1)[0]).all())  # noqa: E731
        if out.nodes or out.layer is None or not isinstance(out.layer, ir.Dense) or p.get("bias") is not None \
                or not same(p.get("p")) or not same(p.get("offset")):
            return (f"the model ends in '{out.where}' whose float output is not the same increasing function of "
                    f"the accumulator for every class (it has a bias, float ops after it, per-channel scales or an "
                    f"input zero point), so a hardware argmax over accumulators could pick another class than the "
                    f"executor; end the model with a quantizer, or drop those")
        return None

    def describe(self) -> dict:
        return {"frontend": self.kind, "source": self.source, "ops": dict(sorted(self.ops.items())),
                "power_of_two_scales": self.power_of_two, "exact_by_construction": self.exact,
                "oracle": "qonnx.core.onnx_exec.execute_onnx (frame by frame, sessions kept)"}


def lower(source, example_input=None, name: str = "qloom", requantize: bool = False, **options) -> Lowered:
    """Lower a QONNX model (path, onnx.ModelProto or qonnx ModelWrapper) to the IR."""
    onnx, _, ModelWrapper = ops.onnx_modules()
    from qonnx.transformation.infer_shapes import InferShapes

    from . import load_onnx
    if requantize:
        raise QuantError("requantize=True is not available for QONNX imports: their thresholds reproduce the "
                         "executor exactly, use the default")
    if options:
        raise QuantError(f"unknown option(s) for the QONNX importer: {', '.join(sorted(options))}")
    src = str(source) if isinstance(source, (str, pathlib.PurePath)) else None
    model = copy.deepcopy(load_onnx(source))
    wrapper = ModelWrapper(model)
    if not wrapper.check_all_tensor_shapes_specified():
        try:
            wrapper = wrapper.transform(InferShapes())
        except Exception as e:  # onnx shape inference rejects the model: say so in one line
            raise QuantError(f"shape inference failed on the model: {type(e).__name__}: {e}") from None
    lw = Lowering(wrapper, options)
    out = lw.run()
    if lw.input_quant is None:
        raise QuantError("the model's float input never reaches a quantizer (Quant/BipolarQuant/MultiThreshold)")
    graph = ir.Graph("input", lw.input_type, lw.nodes, out.tensor if isinstance(out, QAct) else out.acc, name=name)
    graph.validate()
    return Lowered(graph, QonnxFrontend(ModelWrapper(copy.deepcopy(load_onnx(source))), lw, out, src))


def export_brevitas(module, example_input, export_path=None):
    """Export a Brevitas module with `brevitas.export.export_qonnx` (TorchScript exporter, batch 1).

    Settings (docs/importers.md): eval mode; one frame of `example_input` as the
    traced input, so the model's declared batch is 1 as qonnx's executor wants;
    `dynamo=False`, because torch's dynamo exporter writes a two-input Gemm that
    qonnx's cleanup cannot fold. Returns the exported onnx.ModelProto (also
    saved at export_path when given).
    """
    import tempfile

    import torch
    try:
        from brevitas.export import export_qonnx
    except ImportError:
        raise QuantError("from_brevitas needs brevitas: pip install 'qloom[onnx]'") from None
    onnx, _, _ = ops.onnx_modules()
    x = torch.as_tensor(np.asarray(example_input, dtype=np.float32))[:1]
    module.eval()
    with tempfile.TemporaryDirectory(prefix="qloom-brevitas-") as d:
        path = str(export_path or pathlib.Path(d) / "model.onnx")
        try:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_qonnx(module, x, path, dynamo=False)
        except Exception as e:
            raise QuantError(f"brevitas.export.export_qonnx failed on {type(module).__name__}: "
                             f"{type(e).__name__}: {e}") from None
        return onnx.load(path)
