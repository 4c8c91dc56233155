"""Write the integer IR as QONNX: a model qonnx's executor runs to the same outputs as reference.run.

Layout: the model's input and output are the IR's own (batch first, feature maps
channels-last, integer codes carried in float32 as QONNX does). Maps are
transposed to NCHW once after the input, stay NCHW through Conv/MaxPool, and go
back to channels-last before a Flatten (so the flattened order is the IR's
H, W, C) and at a map output.

| IR node        | QONNX                                                                     |
|----------------|---------------------------------------------------------------------------|
| Dense          | MatMul with a Quant (scale 1) or BipolarQuant on the integer weights      |
| Conv2d         | Conv (Pad first when the pad value is not 0); weights as for Dense        |
| MultiThreshold | FINN MultiThreshold (out_bias = base; BIPOLAR: out_scale 2, out_bias -1)  |
| Requantize     | MultiThreshold whose thresholds are computed exactly from the requantizer |
| MaxPool2d      | MaxPool                                                                   |
| SumPool        | depthwise Conv of ones (an exact sum; AveragePool would round)            |
| Flatten        | Transpose to channels-last, Flatten                                       |
| ArgMax         | ArgMax (axis 1, keepdims, first index on ties)                            |
| Add            | Mul by each integer coefficient (where not 1), Add                        |
| Concat         | Concat along channels (axis 1 of NCHW maps, of vectors)                    |

Every MatMul/Conv whose accumulator bound reaches 2**24 runs in float64
(Cast nodes around it), so every sum stays exact. Tensors holding codes carry
QONNX datatype annotations (INT4, UINT2, BIPOLAR, ...), which Netron shows.
"""
from __future__ import annotations

import numpy as np

from . import ir, reference
from .errors import QuantError

DOMAIN = "qonnx.custom_op.general"
_EXACT_F32 = 1 << 24
MAX_REQUANT_BITS = 12


def qonnx_type(t: ir.ElemType) -> str:
    if t is ir.Bipolar:
        return "BIPOLAR"
    return f"{'INT' if t.signed else 'UINT'}{t.bits}"


class _Writer:
    def __init__(self, graph: ir.Graph):
        from onnx import helper
        self.h = helper
        self.g = graph
        self.types = graph.validate()
        self.nodes, self.inits, self.annotations = [], [], {}
        self.nchw = {}                   # IR tensor -> ONNX tensor holding it (NCHW for maps)
        self.wide = set()                # ONNX tensors carried in float64 (accumulators past 2**24)
        self.count = 0

    def name(self, base):
        self.count += 1
        return f"{base}_{self.count}"

    def init(self, base, array):
        from onnx import numpy_helper
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), n))
        return n

    def node(self, op, inputs, base, domain="", **attrs):
        out = self.name(base)
        self.nodes.append(self.h.make_node(op, inputs, [out], name=out + "_node", domain=domain, **attrs))
        return out

    # ---------------------------------------------------------------- pieces
    def weights(self, w, wtype, base, wide):
        """Integer weights behind a Quant (scale 1) or BipolarQuant: executes to the same integers."""
        src = self.init(base + "_int", w.astype(np.float32))
        one = self.init(base + "_scale", np.float32(1.0))
        if wtype is ir.Bipolar:
            q = self.node("BipolarQuant", [src, one], base + "_q", domain=DOMAIN)
        else:
            zero = self.init(base + "_zp", np.float32(0.0))
            bits = self.init(base + "_bits", np.float32(wtype.bits))
            q = self.node("Quant", [src, one, zero, bits], base + "_q", domain=DOMAIN, signed=int(wtype.signed),
                          narrow=0, rounding_mode="ROUND")
        self.annotations[q] = qonnx_type(wtype)
        return self.node("Cast", [q], base + "_f64", to=11) if wide else q

    def maybe_cast(self, x, wide):
        return self.node("Cast", [x], "to_f64", to=11) if wide else x

    def to_channels_last(self, x):
        return self.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])

    # ---------------------------------------------------------------- nodes
    def dense(self, n: ir.Dense, x, in_t):
        wide = reference.dense_bound(n, in_t.dtype) >= _EXACT_F32
        w = self.weights(n.weight.T, n.wtype, n.name + "_W", wide)
        return self.mark(self.node("MatMul", [self.maybe_cast(x, wide), w], n.name), wide)

    def conv(self, n: ir.Conv2d, x, in_t):
        xmax = max(abs(in_t.dtype.min), abs(in_t.dtype.max))
        wide = int(np.abs(n.weight).reshape(n.weight.shape[0], -1).sum(axis=1).max(initial=0)) * xmax >= _EXACT_F32
        ph, pw = n.padding
        pads = [ph, pw, ph, pw]
        if (ph or pw) and n.pad_value != 0:
            p = self.init(n.name + "_pads", np.array([0, 0, ph, pw, 0, 0, ph, pw], np.int64))
            v = self.init(n.name + "_padval", np.float32(n.pad_value))
            x = self.node("Pad", [x, p, v], n.name + "_pad", mode="constant")
            pads = [0, 0, 0, 0]
        w = self.weights(n.weight.transpose(0, 3, 1, 2), n.wtype, n.name + "_W", wide)
        y = self.node("Conv", [self.maybe_cast(x, wide), w], n.name, kernel_shape=list(n.kernel),
                      strides=list(n.stride), pads=pads, group=n.groups, dilations=[1, 1])
        return self.mark(y, wide)

    def sumpool(self, n: ir.SumPool, x, in_t):
        c = in_t.shape[-1]
        ones = self.init(n.name + "_ones", np.ones((c, 1) + tuple(n.kernel), np.float32))
        return self.node("Conv", [x, ones], n.name, kernel_shape=list(n.kernel), strides=list(n.stride),
                         pads=[0, 0, 0, 0], group=c, dilations=[1, 1])

    def add(self, n: ir.Add, xs):
        """coeffs[0] * a + coeffs[1] * b: Mul by the integer constants, Add (exact: codes are small)."""
        if any(x in self.wide for x in xs):
            raise QuantError(f"write_qonnx: Add '{n.name}' adds accumulators past 2**24; only codes are supported")
        terms = [x if c == 1 else self.node("Mul", [x, self.init(n.name + "_coeff", np.float32(c))], n.name + "_mul")
                 for x, c in zip(xs, n.coeffs)]
        return self.node("Add", terms, n.name)

    def mark(self, tensor, wide):
        if wide:
            self.wide.add(tensor)
        return tensor

    def thresholds(self, name, x, t, out_type, base):
        wide = x in self.wide
        dt = np.float64 if wide else np.float32
        tt = self.init(name + "_T", t.astype(dt))
        if out_type is ir.Bipolar:
            attrs = {"out_dtype": "BIPOLAR", "out_scale": 2.0, "out_bias": -1.0}
        else:
            attrs = {"out_dtype": qonnx_type(out_type), "out_scale": 1.0, "out_bias": float(base)}
        y = self.node("MultiThreshold", [x, tt], name, domain=DOMAIN, **attrs)
        self.annotations[y] = attrs["out_dtype"]
        return self.node("Cast", [y], name + "_f32", to=1) if wide else y

    def requantize(self, n: ir.Requantize, x, in_t):
        """A MultiThreshold whose thresholds T[c, k] = least acc with requantize(acc) >= min + k + 1, found
        exactly; channels with a negative multiplier are negated first (a Mul by -1, exact)."""
        from .frontends.base import derive_thresholds
        out = n.out_type
        if out.bits > MAX_REQUANT_BITS:
            raise QuantError(f"Requantize '{n.name}': a {out.bits}-bit output needs 2**{out.bits} - 1 thresholds per "
                             f"channel in QONNX; write_qonnx supports up to {MAX_REQUANT_BITS} bits")
        c = in_t.shape[-1]
        mult = np.broadcast_to(n.mult, (c,)).astype(object)
        off = np.broadcast_to(n.offset, (c,)).astype(object)
        sign = np.where(np.broadcast_to(n.mult, (c,)) < 0, -1, 1)
        lo = np.where(sign > 0, in_t.dtype.min, -in_t.dtype.max).astype(np.int64)
        hi = np.where(sign > 0, in_t.dtype.max, -in_t.dtype.min).astype(np.int64)

        def counts(acc):
            v = reference.requantize((acc * sign).astype(object), mult, off, n.shift, n.rounding)
            return np.clip(v.astype(np.int64), out.min, out.max) - out.min

        t = derive_thresholds(counts, lo, hi, out.max - out.min)
        if (sign < 0).any():
            shape = (c,) if len(in_t.shape) == 1 else (1, c, 1, 1)
            dt = np.float64 if x in self.wide else np.float32
            x = self.mark(self.node("Mul", [x, self.init(n.name + "_sign", sign.reshape(shape).astype(dt))],
                                    n.name + "_neg"), x in self.wide)
        return self.thresholds(n.name, x, t, out, out.min)

    def run(self):
        from onnx import TensorProto
        g, h = self.g, self.h
        in_t = g.input_type
        inp = h.make_tensor_value_info("input", TensorProto.FLOAT, (1,) + in_t.shape)
        self.annotations["input"] = qonnx_type(in_t.dtype)
        x = "input"
        if len(in_t.shape) == 3:
            x = self.node("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
        self.nchw[g.input] = x
        for n in g.nodes:
            x = self.nchw[n.inputs[0]]
            t_in = self.types[n.inputs[0]]
            if isinstance(n, ir.Dense):
                y = self.dense(n, x, t_in)
            elif isinstance(n, ir.Conv2d):
                y = self.conv(n, x, t_in)
            elif isinstance(n, ir.SumPool):
                y = self.sumpool(n, x, t_in)
            elif isinstance(n, ir.MaxPool2d):
                y = self.mark(self.node("MaxPool", [x], n.name, kernel_shape=list(n.kernel),
                                        strides=list(n.stride)), x in self.wide)
            elif isinstance(n, ir.MultiThreshold):
                y = self.thresholds(n.name, x, n.thresholds, n.out_type, n.base)
            elif isinstance(n, ir.Requantize):
                y = self.requantize(n, x, t_in)
            elif isinstance(n, ir.Flatten):
                src = self.mark(self.to_channels_last(x), x in self.wide) if len(t_in.shape) == 3 else x
                y = self.mark(self.node("Flatten", [src], n.name, axis=1), x in self.wide)
            elif isinstance(n, ir.ArgMax):
                y = self.node("ArgMax", [x], n.name, axis=1, keepdims=1, select_last_index=0)
            elif isinstance(n, ir.Add):
                y = self.add(n, [self.nchw[t] for t in n.inputs])
            elif isinstance(n, ir.Concat):
                y = self.node("Concat", [self.nchw[t] for t in n.inputs], n.name, axis=1)   # channels, NCHW
            else:
                raise QuantError(f"write_qonnx: {n.kind} '{n.name}' has no QONNX form yet")
            self.nchw[n.output] = y
        out_t = self.types[g.output]
        y = self.nchw[g.output]
        if len(out_t.shape) == 3:
            y = self.to_channels_last(y)
        if len(out_t.shape) == 3 and self.nchw[g.output] in self.wide:
            self.wide.add(y)
        is_label = isinstance(g.producer(g.output), ir.ArgMax)
        elem = TensorProto.INT64 if is_label else TensorProto.DOUBLE if y in self.wide else TensorProto.FLOAT
        self.nodes.append(h.make_node("Identity", [y], ["output"], name="output_node"))
        out = h.make_tensor_value_info("output", elem, (1,) + out_t.shape)
        if not is_label:
            self.annotations["output"] = qonnx_type(out_t.dtype)
        model = h.make_model(h.make_graph(self.nodes, g.name, [inp], [out], self.inits),
                             opset_imports=[h.make_opsetid("", 13), h.make_opsetid(DOMAIN, 2)],
                             producer_name="qloom")
        model.ir_version = 8
        return model


def to_qonnx(graph: ir.Graph):
    """The IR graph as a qonnx ModelWrapper (shapes inferred, datatypes annotated)."""
    try:
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes
    except ImportError as e:
        raise QuantError(f"write_qonnx needs onnx and qonnx ({e.name} is missing): pip install 'qloom[onnx]'") from None
    w = _Writer(graph)
    model = ModelWrapper(w.run())
    model = model.transform(InferShapes())
    for tensor, dt in w.annotations.items():
        if dt:
            model.set_tensor_datatype(tensor, DataType[dt])
    return model


def write_qonnx(graph: ir.Graph, path) -> "object":
    """Write `graph` as a QONNX file at `path`; returns the onnx.ModelProto written.

    The model's input is the IR's integer input codes (float32 carrier, shape
    (1, *input shape), maps channels-last); its output equals reference.run's
    (codes, accumulators or labels), frame by frame, under qonnx's execute_onnx.
    """
    model = to_qonnx(graph)
    model.save(str(path))
    return model.model
