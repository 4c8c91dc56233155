"""ONNX Runtime int8 front end: QDQ models (QuantizeLinear/DequantizeLinear around Conv, Gemm,
MatMul, pools) and QOperator models (QLinearConv, QLinearMatMul, com.microsoft QGemm,
QLinearGlobalAveragePool, QLinearAveragePool), as made by onnxruntime.quantization.quantize_static.

The oracle is an onnxruntime.InferenceSession with the session options users get by default
(graph optimizations on: ORT fuses each DequantizeLinear -> op -> QuantizeLinear group into a
QLinear kernel). Each layer's requantization is found by running that same piece of the graph
in ORT on chosen accumulators (int8_common's probes); `optimization='disabled'` probes and
checks against ORT's unfused float path instead.

This module holds the Frontend and lower(); the walk over the graph that builds the IR chain is
onnx_int8_walk.
"""
from __future__ import annotations

import numpy as np

from . import int8_common as common
from .base import Frontend, Lowered, QuantError, SourceOutput
from .onnx_int8_graph import OnnxGraph, optimized_graph, ort_session
from .onnx_int8_walk import TAIL_OK, _Walk


class OnnxInt8(Frontend):
    """The float side of an ONNX Runtime int8 model: ORT's own input QuantizeLinear, output
    DequantizeLinear (+ Softmax etc.), and the whole model as the oracle."""

    def __init__(self, g: OnnxGraph, walk: _Walk, optimization: str, source: str | None):
        self.g, self.walk, self.optimization, self.source = g, walk, optimization, source
        self.kind = "onnx-qop" if walk.formats == {"qoperator"} else "onnx-qdq" if walk.formats == {"qdq"} \
            else "onnx-int8"
        self.aliases, self.report = walk.chain.aliases, walk.chain.report
        # not exact by construction: a pool kernel that is not a function of the window sum, or int8
        # activations into a fused conv (ORT's kernel differs at rare near-ties; docs/importers.md)
        int8_conv = any(r.get("layer_kind") == "Conv2d" and r.get("in_type", "").startswith("int")
                        for r in self.report)
        self.exact = not any(r.get("not_a_function_of_the_sum") for r in self.report) and not int8_conv
        self.in_name = g.inputs[0]
        self.q_out = walk.input_q.output[0]
        self.in_like = walk.values[self.q_out]
        self.out_like = walk.values[walk.codes_name]
        self.in_shape = walk.values[self.in_name].shape
        self._sessions = {}

    def _session(self, key, build):
        if key not in self._sessions:
            self._sessions[key] = ort_session(build(), self.optimization)
        return self._sessions[key]

    def _run(self, x_float, names):
        sess = self._session(("model",) + tuple(names), lambda: self.g.with_outputs(names))
        return dict(zip(names, sess.run(list(names), {self.in_name: np.asarray(x_float, dtype=np.float32)})))

    def quantize_input(self, x_float) -> np.ndarray:
        q = self.walk.input_q
        sess = self._session("prelude", lambda: self.g.submodel(self.g.ancestors(self.q_out), [self.in_name],
                                                                [self.q_out]))
        codes = sess.run([self.q_out], {self.in_name: np.asarray(x_float, dtype=np.float32)})[0]
        del q
        return common.to_ir_layout(codes.astype(np.int64), self.aliases[self.q_out][1])

    def _out_layout(self):
        return self.aliases[self.walk.codes_name][1]

    def dequantize(self, y_int) -> np.ndarray:
        codes = common.from_ir_layout(y_int, self._out_layout(), self.out_like.shape[1:])
        if not self.walk.tail:
            return codes.astype(np.float32)
        name = self.walk.codes_name
        sess = self._session("tail", lambda: self.g.submodel(self.walk.tail, [name], [self.walk.output]))
        dt = self.g.onnx.helper.tensor_dtype_to_np_dtype(self.g.elem_of(name))
        return sess.run([self.walk.output], {name: codes.astype(dt)})[0]

    def source_outputs(self, x_float, argmax: bool) -> SourceOutput:
        if argmax:
            y = self._run(x_float, [self.g.outputs[0]])[self.g.outputs[0]]
            return SourceOutput("labels", y.reshape(len(y), -1).argmax(axis=1)[:, None])
        name = self.walk.codes_name
        codes = self._run(x_float, [self.g.outputs[0], name])[name]
        return SourceOutput("codes", common.to_ir_layout(codes.astype(np.int64), self._out_layout()))

    def layer_codes(self, x_float) -> dict:
        """ORT's codes of every tensor the IR also holds (IR layout), from one run of the model with
        those tensors added as outputs: {IR tensor: codes}."""
        names = list(self.aliases)
        vals = self._run(x_float, [self.g.outputs[0]] + names)
        return {self.aliases[n][0]: common.to_ir_layout(vals[n].astype(np.int64), self.aliases[n][1]) for n in names}

    def sample_inputs(self, n: int, seed: int = 0) -> np.ndarray:
        like = self.in_like
        codes = common.sample_codes(n, like.shape[1:], int(self.walk.code_range(self.q_out)[0]),
                                    int(self.walk.code_range(self.q_out)[1]), seed=seed)
        q = self.walk.input_q
        scale = float(self.g.array(q.input[1]).reshape(-1)[0])
        zp = int(self.g.array(q.input[2]).reshape(-1)[0]) if self.g.optional(q, 2) else 0
        x = ((codes - zp) * scale).astype(np.float32)
        x[1] *= 1.5                                  # past the largest code: clamps
        if x.size // n != int(np.prod(self.in_shape[1:])):
            raise QuantError("the model transforms its input before quantizing it; give example_input")
        return x.reshape((n,) + tuple(self.in_shape[1:]))

    def argmax_refusal(self) -> str | None:
        for n in self.walk.tail:
            if n.op_type not in TAIL_OK:
                return f"the model ends in {self.g.label(n)}; an argmax over the codes could pick another class"
        return None

    def describe(self) -> dict:
        return {"frontend": self.kind, "source": self.source, "ort_optimization": self.optimization,
                "requantization": common.describe_report(self.report), "layers": self.report}


def lower(source, example_input=None, name: str = "qloom", requantize: bool = False, method: str = "auto",
          optimization: str = "all", **options) -> Lowered:
    """Lower an ONNX Runtime QDQ/QOperator model to the IR.

    method: 'auto' (Requantize where exact, else thresholds), 'thresholds' or 'requantize'.
    optimization: ORT graph optimization level of the oracle and the probes ('all' = ORT's default).
    """
    from . import load_onnx
    if options:
        raise QuantError(f"unknown option(s) for the onnx-int8 front end: {', '.join(sorted(options))}")
    model = load_onnx(source)
    g = OnnxGraph(model)
    if len(g.inputs) != 1:
        raise QuantError(f"the model has {len(g.inputs)} inputs; qloom imports models with one input")
    if example_input is None:
        example_input = _default_input(g)
    names = [o for n in g.nodes for o in n.output if o]
    values = g.record(example_input, names + g.inputs)
    walk = _Walk(g, values, name, method, optimization)
    walk.optimized = optimized_graph(model, optimization)
    walk.run()
    graph = walk.chain.finish()
    src = source if isinstance(source, str) else getattr(source, "__fspath__", lambda: None)()
    return Lowered(graph, OnnxInt8(g, walk, optimization, src))


def _default_input(g: OnnxGraph) -> np.ndarray:
    """One zero input of the model's declared shape (symbolic dims as 1), to record shapes."""
    inp = next(i for i in g.model.graph.input if i.name == g.inputs[0])
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]
    return np.zeros(dims, dtype=np.float32)
