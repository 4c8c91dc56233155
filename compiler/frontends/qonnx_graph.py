"""The QONNX importer's walk: one pass over the model in topological order, giving every ONNX tensor
one of the four values of qonnx_values (Const, FloatIn, QAct, Tail; qonnx_import explains the idea).
The layers (MatMul, Conv, pools, Flatten, elementwise ops) live in qonnx_layers.
"""
from __future__ import annotations

import numpy as np

from .. import ir
from ..errors import QuantError
from . import qonnx_ops as ops
from .base import derive_thresholds, threshold_node
from .qonnx_layers import LayerOps
from .qonnx_values import ELEMENTWISE, LAYOUT_OPS, QUANTIZERS, Const, FloatIn, QAct, Tail, unsupported
from .qonnx_quant import Quantizer, attr, check_act_bits, describe, quantizer


class Lowering(LayerOps):
    """The walk: fills `values` and the IR node list."""

    def __init__(self, wrapper, options):
        self.w = wrapper
        self.model = wrapper.model
        self.runner = ops.NodeRunner(self.model)
        self.options = options
        self.values = {}
        self.nodes, self.types = [], {}
        self.input_quant = self.input_prefix = self.input_type = None
        self.scales = []                # every activation and weight scale (power-of-two check)
        self.activations = []           # (IR tensor, ONNX tensor, QAct) of every quantizer's codes
        self.thresholded = []           # (MultiThreshold, Tail, weight signs, codes_at(first floats))
        self.max_acc = 0                # the largest proven |partial sum| of any MatMul/Conv, in LSBs

    # ---------------------------------------------------------------- helpers
    def add(self, node):
        t = node.infer([self.types[i] for i in node.inputs])
        self.types[node.output] = t
        self.nodes.append(node)
        return t

    def const(self, name):
        v = self.values.get(name)
        return v.value if isinstance(v, Const) else None

    def get(self, node, i):
        name = node.input[i]
        if name not in self.values:
            raise QuantError(f"{describe(node)}: input '{name}' is not produced by any earlier node "
                             f"(the graph must be topologically sorted)")
        return self.values[name]

    def start(self):
        g = self.model.graph
        inits = {t.name: t for t in g.initializer}
        from onnx import numpy_helper
        for t in g.initializer:
            self.values[t.name] = Const(numpy_helper.to_array(t))
        real_inputs = [i for i in g.input if i.name not in inits]
        if len(real_inputs) != 1:
            raise QuantError(f"the model has {len(real_inputs)} inputs ({', '.join(i.name for i in real_inputs)}); "
                             f"qloom imports models with one input")
        i = real_inputs[0]
        shape = tuple(d.dim_value for d in i.type.tensor_type.shape.dim)
        if not shape or any(d < 1 for d in shape):
            raise QuantError(f"input '{i.name}' needs a static shape (batch first), got {shape}")
        self.values[i.name] = FloatIn(shape)
        self.graph_input = i.name
        dt = self.w.get_tensor_datatype(i.name)
        if dt.is_integer():            # FINN style: the input already holds integer codes (annotated)
            self.annotated_input(i.name, shape, dt)

    def annotated_input(self, name, shape, dt):
        if len(shape) not in (2, 4):
            raise QuantError(f"input '{name}' must be (batch, features) or (batch, C, H, W), got {shape}")
        out_type = ir.Bipolar if dt.name == "BIPOLAR" else ir.int_type_for(int(dt.min()), int(dt.max()))
        q = Quantizer(None, out_type, np.float32(1.0), 0.0, "input")
        self.input_quant, self.input_prefix, self.input_consts = q, self.values[name], []
        ir_shape = tuple(shape[1:]) if len(shape) == 2 else (shape[2], shape[3], shape[1])
        self.input_type = ir.TensorType(ir_shape, out_type)
        self.types["input"] = self.input_type
        self.values[name] = QAct("input", self.input_type, q)
        self.activations.append(("input", name, self.values[name]))

    # ---------------------------------------------------------------- the walk
    def run(self):
        self.start()
        for k, node in enumerate(self.model.graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{k}"
            self.visit(node)
        # Brevitas with return_quant_tensor=True on the last layer also outputs its scale, zero point and
        # bit width (and flags no node produces): not computed from the input, ignored here
        outs = [o.name for o in self.model.graph.output
                if isinstance(self.values.get(o.name), (QAct, Tail, FloatIn))]
        if len(outs) != 1:
            raise QuantError(f"the model has {len(outs)} computed outputs ({', '.join(outs) or 'none'}); qloom imports "
                             f"models with one output")
        self.output_name = outs[0]
        out = self.values.get(outs[0])
        if isinstance(out, FloatIn) or out is None:
            raise QuantError(f"the model output '{outs[0]}' does not depend on a quantized layer; nothing to lower")
        return out

    def visit(self, node):
        op = node.op_type
        ins = [self.get(node, i) if n else None for i, n in enumerate(node.input)]
        if op == "Constant":
            from onnx import numpy_helper
            self.values[node.output[0]] = Const(numpy_helper.to_array(attr_tensor(node)))
            return
        if op == "Shape" and not isinstance(ins[0], Const):
            shape = self.w.get_tensor_shape(node.input[0])
            if shape is None:
                raise QuantError(f"{describe(node)}: the shape of '{node.input[0]}' is unknown")
            self.values[node.output[0]] = Const(np.asarray(shape, dtype=np.int64))
            return
        if op in QUANTIZERS:
            return self.quantizer(node, ins)
        if all(isinstance(x, Const) or x is None for x in ins) and any(ins):
            return self.fold(node, ins)
        x = ins[0]
        if len(node.output) > 1 and op != "Dropout":
            raise unsupported(node, "has several outputs")
        if op in ("Identity", "Dropout"):
            self.values[node.output[0]] = x
        elif op in ("MatMul", "Gemm"):
            self.dense(node, ins)
        elif op == "Conv":
            self.conv(node, ins)
        elif op in ELEMENTWISE + ("BatchNormalization", "Relu"):
            self.elementwise(node, ins)
        elif op == "MaxPool":
            self.maxpool(node, x)
        elif op in ("AveragePool", "GlobalAveragePool"):
            self.avgpool(node, x)
        elif op in ("Flatten", "Reshape"):
            self.flatten(node, ins)
        elif op == "Transpose":
            raise unsupported(node, "transposes an activation (only constants may be transposed; qloom keeps "
                                    "NCHW models as they are and lays maps out channels-last itself)")
        else:
            raise unsupported(node)

    def fold(self, node, ins):
        """A node on constants only: the executor's own kernel computes it (weights keep their codes)."""
        vals = [x.value if x is not None else None for x in ins]
        out = self.runner.run(node, [v for v in vals])
        c = Const(np.asarray(out))
        src = ins[0]
        if src is not None and src.codes is not None and node.op_type in LAYOUT_OPS:
            perm = attr(node, "perm")
            shape = np.shape(out)
            f = (lambda a: np.transpose(a, perm)) if node.op_type == "Transpose" else (lambda a: a.reshape(shape))
            c.codes, c.scale, c.wtype = f(src.codes), f(src.scale), src.wtype
        self.values[node.output[0]] = c

    # ---------------------------------------------------------------- quantizers
    def quantizer(self, node, ins):
        x = ins[0]
        consts = [i.value if isinstance(i, Const) else None for i in ins]
        if isinstance(x, Const):
            return self.weight_quant(node, ins, consts)
        if node.op_type == "Trunc" and len(node.input) < 6:
            tail = self.as_tail(node, x)
            q = quantizer(node, consts, lambda: self.trunc_v1_range(node, tail, consts))
        else:
            q = quantizer(node, consts)
        if not isinstance(x, FloatIn):
            check_act_bits(q)
        self.scales.append(q.scale)
        if isinstance(x, FloatIn):
            return self.input_quantizer(node, x, q, consts)
        tail = self.as_tail(node, x)
        self.values[node.output[0]] = act = self.threshold(node, tail, q, consts)
        self.activations.append((act.tensor, node.output[0], act))

    def weight_quant(self, node, ins, consts):
        out = self.runner.run(node, consts)
        q = quantizer(node, consts)
        codes = q.codes(out)
        if q.out_type is not ir.Bipolar:
            codes = codes - int(q.zp)
        wtype = q.out_type if (q.out_type is ir.Bipolar or q.zp == 0) else ir.int_type_for(codes.min(), codes.max())
        self.values[node.output[0]] = Const(out, codes, np.broadcast_to(q.scale, out.shape).astype(np.float32),
                                            wtype)

    def input_quantizer(self, node, x: FloatIn, q: Quantizer, consts):
        if self.input_quant is not None:
            raise QuantError(f"{describe(node)}: the float input is quantized twice")
        shape = self.w.get_tensor_shape(node.input[0]) or self.prefix_shape(x)
        if len(shape) not in (2, 4):
            raise QuantError(f"{describe(node)}: the quantized input must be (batch, features) or (batch, C, H, W), "
                             f"got {tuple(shape)}")
        self.input_quant, self.input_prefix, self.input_consts = q, x, consts
        ir_shape = tuple(shape[1:]) if len(shape) == 2 else (shape[2], shape[3], shape[1])
        self.input_type = ir.TensorType(ir_shape, q.out_type)
        self.types["input"] = self.input_type
        self.values[node.output[0]] = QAct("input", self.input_type, q)
        self.activations.append(("input", node.output[0], self.values[node.output[0]]))

    def prefix_shape(self, x: FloatIn):
        shape = x.shape
        for n, _ in x.nodes:
            if n.op_type in ("Flatten", "Reshape"):
                shape = (shape[0], int(np.prod(shape[1:])))
        return shape

    def as_tail(self, node, x):
        if isinstance(x, Tail):
            return x
        if isinstance(x, QAct):
            if x.type.dtype is ir.Bipolar:
                raise QuantError(f"{describe(node)} re-quantizes a bipolar tensor; float ops and quantizers after "
                                 f"a bipolar quantizer need a MatMul/Conv in between")
            c = x.type.shape[-1]
            q = x.quant
            # a code tail: the first float value is the quantizer's own output for those codes
            probe = (lambda a: a.reshape(a.shape + (1, 1))) if x.rank == 4 else (lambda a: a)
            return Tail(x.tensor, None, None, lambda a: q.dequant(probe(a)).reshape(a.shape), x.rank,
                        node.name, code_type=ir.TensorType((c,), x.type.dtype), perm=x.perm)
        raise QuantError(f"{describe(node)}: its input '{node.input[0]}' is not a quantized tensor or accumulator")

    def threshold(self, node, tail: Tail, q: Quantizer, consts) -> QAct:
        """The MultiThreshold that reproduces tail + quantizer `node` exactly (evaluated, not inverted)."""

        def codes_at(v0):
            """Codes (M, C), IR order, for first float values v0 (M, C) in ONNX channel order."""
            v = tail.after_start(v0, self.runner)
            v = v.reshape(v.shape + (1, 1)) if tail.rank == 4 else v
            if tail.perm is not None:
                v = v[:, np.argsort(tail.perm)]
            out = self.runner.run(node, [v] + consts[1:])
            c = q.codes(out).reshape(out.shape[0], -1)
            return c[:, tail.perm] if tail.perm is not None else c

        def codes_fn(acc):
            acc = np.asarray(acc, dtype=np.int64)
            return codes_at(tail.start(acc[:, np.argsort(tail.perm)] if tail.perm is not None else acc))

        name = node.name
        if tail.layer is not None and not tail.maxpooled:
            mt, sign = threshold_node(name, tail.acc, tail.layer, tail.in_type, codes_fn, q.out_type,
                                      what=f"'{name}' (after '{tail.where}')")
        else:
            mt = self.thresholds_no_negation(name, tail, codes_fn, q.out_type)
            sign = np.ones(self.types[tail.acc].shape[-1], dtype=np.int64)
        t = self.add(mt)
        self.thresholded.append((mt, tail, sign, codes_at))
        return QAct(mt.output, t, q, tail.perm)

    def thresholds_no_negation(self, name, tail, codes_fn, out_type):
        bipolar = out_type is ir.Bipolar
        base = -1 if bipolar else out_type.min
        n = 1 if bipolar else out_type.max - out_type.min
        lo, hi = tail.bounds()

        def counts(a):
            c = np.asarray(codes_fn(a), dtype=np.int64)
            return (c + 1) // 2 if bipolar else c - base

        ends = counts(np.stack([lo, hi]))
        if (ends[1] < ends[0]).any():
            what = ("a MaxPool inside the float chain" if tail.maxpooled
                    else "no MatMul/Conv whose weights could be negated")
            raise QuantError(f"'{name}' (after '{tail.where}'): the float chain decreases in channels "
                             f"{np.flatnonzero(ends[1] < ends[0])[:8].tolist()} and there is {what}; not supported")
        t = derive_thresholds(counts, lo, hi, n)
        return ir.MultiThreshold(name, [tail.acc], name + ":out", thresholds=t, out_type=out_type, base=base)

    def trunc_v1_range(self, node, tail, consts):
        lo, hi = tail.bounds()
        ends = np.stack([lo, hi])
        v = tail.value(ends, self.runner)
        out = self.runner.run(node, [v.reshape(v.shape + (1, 1)) if tail.rank == 4 else v] + consts[1:])
        c = np.round(out.astype(np.float64) / np.float64(np.asarray(consts[1]).reshape(-1)[0]))
        return int(c.min()), int(c.max())


def attr_tensor(node):
    for a in node.attribute:
        if a.name == "value":
            return a.t
    raise QuantError(f"{describe(node)}: only Constant nodes with a tensor 'value' are supported")
