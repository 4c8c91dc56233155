"""ONNX graph helpers for onnx_int8: constants, consumers, element types, and ONNX Runtime
sessions over pieces of the model (the probes and the oracle run ORT itself, never a copy of
its arithmetic)."""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np

from .base import QuantError

OPT_LEVELS = ("all", "extended", "basic", "disabled")
ZERO_POINT_INPUT = {"QuantizeLinear": 2, "QLinearConv": 7, "QLinearMatMul": 7, "QGemm": 8,
                    "QLinearGlobalAveragePool": 4,
                    "QLinearAveragePool": 4, "QLinearLeakyRelu": 4, "QLinearSigmoid": 4, "QLinearAdd": 7}
SAME_TYPE = ("MaxPool", "Flatten", "Reshape", "Identity", "Dropout", "Relu", "Clip", "Transpose", "Squeeze",
             "Unsqueeze")


def ort_session(model, optimization: str = "all"):
    """An InferenceSession on the CPU provider, one thread; `optimization` maps to ORT's graph
    optimization level ('all' is ORT's default: QDQ groups run as fused QLinear kernels)."""
    import onnxruntime as ort
    if optimization not in OPT_LEVELS:
        raise QuantError(f"ort optimization must be one of {OPT_LEVELS}, got {optimization!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise QuantError(f"ONNX Runtime cannot run the model: {type(e).__name__}: {e}") from None


class OnnxGraph:
    """Indexes of one ONNX model: producers, consumers, constants and element types."""

    def __init__(self, model):
        import onnx
        self.onnx = onnx
        self.model = model
        g = model.graph
        self.nodes = list(g.node)
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.consumers = defaultdict(list)
        for n in self.nodes:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.inputs = [i.name for i in g.input if i.name not in self.inits]
        self.outputs = [o.name for o in g.output]
        self.const = set(self.inits)
        for n in self.nodes:                         # nodes are topologically sorted in a valid model
            if all(i in self.const for i in n.input if i) and n.op_type != "RandomNormal":
                self.const.update(o for o in n.output if o)
        self.elem = self._elem_types()

    def _elem_types(self):
        onnx = self.onnx
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:                              # shape inference is optional help
            inferred = self.model
        g = inferred.graph
        elem = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
        elem.update({i.name: i.data_type for i in self.model.graph.initializer})
        return elem

    def label(self, n) -> str:
        return f"'{n.name or n.output[0]}' ({(n.domain + '.') if n.domain else ''}{n.op_type})"

    def attrs(self, n) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in n.attribute}

    def array(self, name) -> np.ndarray:
        """The value of a constant tensor: an initializer or a Constant node's value."""
        if name in self.inits:
            return self.onnx.numpy_helper.to_array(self.inits[name])
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant":
            return self.onnx.numpy_helper.to_array(self.attrs(p)["value"])
        raise QuantError(f"tensor '{name}' is not a constant initializer")

    def optional(self, n, i):
        return n.input[i] if len(n.input) > i and n.input[i] else None

    def const_ancestors(self, nodes) -> list:
        """The constant-producing nodes the given nodes read (weight DequantizeLinear, Constant, ...)."""
        need, seen = [], set()
        stack = [i for n in nodes for i in n.input if i]
        while stack:
            t = stack.pop()
            p = self.producer.get(t)
            if p is None or id(p) in seen or t not in self.const:
                continue
            seen.add(id(p))
            need.append(p)
            stack.extend(i for i in p.input if i)
        return need

    def ancestors(self, name) -> list:
        """Every node that `name` depends on (constants included), in graph order."""
        out, seen, stack = [], set(), [name]
        while stack:
            p = self.producer.get(stack.pop())
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            out.append(p)
            stack.extend(i for i in p.input if i)
        return sorted(out, key=lambda n: self.index[id(n)])

    def submodel(self, nodes, inputs, outputs, overrides=None):
        """A model of `nodes` (plus the constants they read) from tensors `inputs` to `outputs`;
        `overrides` replaces initializers by name ({name: array}, cast to the initializer's type)."""
        onnx = self.onnx
        overrides = overrides or {}
        body = list(nodes) + [p for p in self.const_ancestors(nodes) if all(p is not n for n in nodes)]
        body = topo_sort(list({id(n): n for n in body}.values()), set(inputs) | set(self.inits))
        used = {i for n in body for i in n.input if i}
        inits = []
        for name in sorted(used & set(self.inits)):
            t = self.inits[name]
            if name in overrides:
                dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
                t = onnx.numpy_helper.from_array(np.asarray(overrides[name]).astype(dt), name)
            inits.append(t)
        ins = [onnx.helper.make_tensor_value_info(i, self.elem_of(i), None) for i in inputs]
        outs = [onnx.helper.make_tensor_value_info(o, self.elem_of(o), None) for o in outputs]
        graph = onnx.helper.make_graph(body, "probe", ins, outs, inits)
        m = onnx.helper.make_model(graph, opset_imports=list(self.model.opset_import))
        m.ir_version = self.model.ir_version
        return m

    def elem_of(self, name) -> int:
        """The element type of a tensor: from shape inference, else from what its producer makes
        (onnx's shape inference does not know the com.microsoft ops)."""
        if not self.elem.get(name):
            p = self.producer.get(name)
            if p is not None and p.op_type in ZERO_POINT_INPUT and self.optional(p, ZERO_POINT_INPUT[p.op_type]):
                self.elem[name] = self.elem_of(p.input[ZERO_POINT_INPUT[p.op_type]])
            elif p is not None and p.op_type in ("QuantizeLinear",):
                self.elem[name] = 2                      # uint8 when no zero point is given
            elif p is not None and p.op_type in SAME_TYPE:
                self.elem[name] = self.elem_of(p.input[0])
            elif p is not None and p.op_type == "DequantizeLinear":
                self.elem[name] = 1
        if not self.elem.get(name):
            raise QuantError(f"the element type of tensor '{name}' is unknown (run onnx shape inference on the model)")
        return self.elem[name]

    def _typed(self, name) -> bool:
        try:
            return bool(self.elem_of(name))
        except QuantError:
            return False

    def with_outputs(self, names):
        """A copy of the model that also outputs the tensors `names`."""
        m = copy.deepcopy(self.model)
        have = {o.name for o in m.graph.output}
        for n in names:
            if n not in have:
                m.graph.output.append(self.onnx.helper.make_tensor_value_info(n, self.elem_of(n), None))
        return m

    def record(self, x, names):
        """Values of tensors `names` on input x, run without graph optimizations (shapes only)."""
        names = [n for n in dict.fromkeys(names) if self._typed(n)]
        sess = ort_session(self.with_outputs(names), "disabled")
        try:
            vals = sess.run(names, {self.inputs[0]: np.asarray(x, dtype=np.float32)})
        except Exception as e:
            raise QuantError(f"running the ONNX model on the example input failed: {type(e).__name__}: {e}") from None
        return dict(zip(names, vals))


def optimized_graph(model, optimization: str):
    """The graph ONNX Runtime really runs for `model` (its optimized form, saved by ORT), or None.

    Layout passes (NHWC) and QDQ fusions depend on a node's neighbours, so a probe of a lone node
    can meet another kernel than the whole model does; probing the optimized node avoids that."""
    import os
    import tempfile

    import onnx
    import onnxruntime as ort
    if optimization == "disabled":
        return None
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    try:
        so = ort.SessionOptions()
        so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[optimization]
        so.optimized_model_filepath = path
        so.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return OnnxGraph(onnx.load(path))
    except Exception:                  # no optimized form to read: probe the model's own nodes
        return None
    finally:
        os.unlink(path)


def copy_node(n, inputs=None):
    """A copy of NodeProto n, with its inputs replaced where given."""
    c = copy.deepcopy(n)
    if inputs is not None:
        del c.input[:]
        c.input.extend(inputs)
    return c


def topo_sort(nodes, available) -> list:
    """`nodes` ordered so each comes after the producers of its inputs (ONNX requires it)."""
    have, out, rest = set(available), [], list(nodes)
    while rest:
        ready = [n for n in rest if all(not i or i in have for i in n.input)]
        if not ready:
            raise QuantError(f"internal error: cannot order nodes {[n.op_type for n in rest]} (missing inputs)")
        for n in ready:
            out.append(n)
            have.update(o for o in n.output if o)
        rest = [n for n in rest if all(n is not r for r in ready)]
    return out
