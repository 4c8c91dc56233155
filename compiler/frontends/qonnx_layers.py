"""The QONNX importer's layers: MatMul/Gemm, Conv, elementwise float ops, pools and Flatten.

Each method reads the values of a node's inputs (qonnx_graph's Const, FloatIn,
QAct, Tail), adds IR nodes and records the node's output value. A MatMul or
Conv starts a Tail whose first float value is the exact accumulator value
rounded once to float32; pools drive the executor's own pooling kernel.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np

from .. import ir
from ..errors import QuantError
from . import qonnx_ops as ops
from .base import CHAIN_ONLY
from .qonnx_quant import attr, describe
from .qonnx_values import Const, FloatIn, QAct, Tail, unsupported


class LayerOps:
    """Mixed into qonnx_graph.Lowering (which provides values, types, add, runner, scales)."""

    def layer_input(self, node, x, rank):
        if not isinstance(x, QAct):
            what = "the float input (add an input quantizer, e.g. QuantIdentity)" if isinstance(x, FloatIn) \
                else "an unquantized float tensor (put a quantizer before it)"
            raise QuantError(f"{describe(node)} receives {what}")
        if x.rank != rank:
            raise QuantError(f"{describe(node)} needs a rank-{rank} input, got IR shape {x.type.shape}")
        s = x.quant.per_tensor_scale
        if s is None:
            raise QuantError(f"{describe(node)}: its input has a per-channel scale; the accumulator is then not a "
                             f"scaled integer sum (only per-tensor input scales are supported)")
        if s <= 0:
            raise QuantError(f"{describe(node)}: input scale {s} must be positive")
        return np.float64(np.float32(s)), x.quant.zp

    def weights(self, node, w, what="weight") -> Const:
        if not isinstance(w, Const):
            raise QuantError(f"{describe(node)}: the {what} '{node.input[1]}' is not a constant (non-constant "
                             f"weights are not supported)")
        if w.codes is None:
            v = w.value
            if not np.all(v == np.round(v)):
                raise QuantError(f"{describe(node)}: the {what} '{node.input[1]}' is a float constant; weights must "
                                 f"be quantized (a Quant/BipolarQuant on the initializer) or hold integers")
            codes = v.astype(np.int64)
            w = Const(v, codes, np.ones(v.shape, np.float32), ir.int_type_for(codes.min(), codes.max()))
        self.scales.append(w.scale)
        return w

    def dense(self, node, ins):
        x, w = ins[0], ins[1]
        if isinstance(x, Const):
            raise unsupported(node, "with the constant as its first input (weights must be the second input)")
        sx, zp = self.layer_input(node, x, 2)
        w = self.weights(node, w)
        codes, scale = w.codes, w.scale
        bias = None
        if node.op_type == "Gemm":
            if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
                raise unsupported(node, "with transA or alpha/beta other than 1")
            if attr(node, "transB", 0):
                codes, scale = codes.T, scale.T
            if len(node.input) > 2 and node.input[2]:
                bias = self.bias(node, ins[2])
        if codes.ndim != 2:
            raise unsupported(node, f"with a {codes.ndim}-d weight")
        sw = scale[0]
        if not (scale == sw).all():
            raise QuantError(f"{describe(node)}: the weight scale varies along the input axis; only per-tensor or "
                             f"per-output-channel weight scales are supported")
        wq = codes.T                                           # (N, K)
        if x.perm is not None:
            wq = wq[:, x.perm]
        k = x.type.shape[0]
        if wq.shape[1] != k:
            raise QuantError(f"{describe(node)}: weight {codes.shape} does not fit the {k} inputs")
        lnode = ir.Dense(node.name, [x.tensor], node.name + ":acc", weight=wq, wtype=w.wtype)
        self.accumulate(node, lnode, x, sx, zp, sw, bias, wq.sum(axis=1), 2)

    def bias(self, node, b):
        if not isinstance(b, Const):
            raise QuantError(f"{describe(node)}: the bias '{node.input[2]}' is not a constant")
        return np.asarray(b.value, dtype=np.float32).reshape(-1)

    def conv(self, node, ins):
        x, w = ins[0], ins[1]
        sx, zp = self.layer_input(node, x, 4)
        w = self.weights(node, w)
        if w.codes.ndim != 4:
            raise unsupported(node, "other than 2-d (NCHW)")
        if any(d != 1 for d in attr(node, "dilations", [1, 1])):
            raise QuantError(f"{describe(node)}: dilations {attr(node, 'dilations')} are not supported (only 1)")
        if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise unsupported(node, f"with auto_pad={attr(node, 'auto_pad')} (give explicit pads)")
        pads = list(attr(node, "pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise QuantError(f"{describe(node)}: asymmetric pads {pads} are not supported")
        if max(pads) and x.type.dtype is ir.Bipolar:
            raise QuantError(f"{describe(node)}: zero padding of a bipolar input has no bipolar code (0 is neither "
                             f"-1 nor +1); use unpadded convolutions after bipolar activations")
        sw = w.scale[:, :1, :1, :1]
        if not (w.scale == sw).all():
            raise QuantError(f"{describe(node)}: the weight scale varies inside a filter; only per-tensor or "
                             f"per-output-channel weight scales are supported")
        bias = self.bias(node, ins[2]) if len(node.input) > 2 and node.input[2] else None
        wq = w.codes.transpose(0, 2, 3, 1)
        lnode = ir.Conv2d(node.name, [x.tensor], node.name + ":acc", weight=wq, wtype=w.wtype,
                          stride=tuple(attr(node, "strides", [1, 1])), padding=(pads[0], pads[1]),
                          pad_value=int(zp), groups=int(attr(node, "group", 1)))
        self.accumulate(node, lnode, x, sx, zp, sw.reshape(-1), bias, wq.reshape(wq.shape[0], -1).sum(axis=1), 4)

    def accumulate(self, node, lnode, x, sx, zp, sw, bias, rowsum, rank):
        """Add the layer to the IR and start its Tail: value = round32(exact (acc + offset) * sx * sw + bias)."""
        in_type = x.type
        t = self.add(lnode)
        n = t.shape[-1]
        p = sx * np.broadcast_to(np.asarray(sw, dtype=np.float32).astype(np.float64).reshape(-1), (n,))
        if (p <= 0).any():
            raise QuantError(f"{describe(node)}: weight scales must be positive")
        offset = -int(zp) * np.asarray(rowsum, dtype=np.int64)
        b = None if bias is None else np.broadcast_to(bias, (n,)).astype(np.float32)
        # the executor's float32 partial sums are exact (power-of-two scales) only below 2**24 units
        xmax = max(abs(in_type.dtype.min - zp), abs(in_type.dtype.max - zp))
        w = np.abs(lnode.weight).reshape(lnode.weight.shape[0], -1)
        self.max_acc = max(self.max_acc, int(w.sum(axis=1).max(initial=0)) * int(xmax))

        def start(acc):
            return ops.round32_exact(acc + offset, p, b)

        self.values[node.output[0]] = Tail(lnode.output, lnode, in_type, start, rank, node.name,
                                           params={"p": p, "bias": b, "offset": offset})

    def elementwise(self, node, ins):
        x = ins[0]
        op = node.op_type
        data = [i for i, v in enumerate(ins) if v is not None and not isinstance(v, Const)]
        if len(data) != 1:
            raise QuantError(f"{describe(node)} combines {len(data)} computed tensors "
                             f"({', '.join(node.input[i] for i in data)}); only ops with constants are supported: "
                             f"{CHAIN_ONLY}")
        i = data[0]
        x = ins[i]
        if op == "Div" and i == 1:
            raise unsupported(node, "divides by a computed tensor")
        if op == "BatchNormalization" and (attr(node, "training_mode", 0) or i != 0):
            raise unsupported(node, "in training mode")
        consts = [None if j == i else (v.value if v is not None else None) for j, v in enumerate(ins)]
        if isinstance(x, FloatIn):
            x.nodes.append((node, consts))
            self.values[node.output[0]] = FloatIn(x.shape, list(x.nodes))
            return
        tail = self.as_tail(node, x)
        self.check_per_channel(node, tail, consts)
        self.values[node.output[0]] = dataclasses.replace(tail, nodes=tail.nodes + [(node, consts)])

    def check_per_channel(self, node, tail, consts):
        """Thresholds are per channel: every constant must be one value or one per channel (axis 1)."""
        c = self.types[tail.acc].shape[-1]
        for j, v in enumerate(consts):
            if v is None or node.op_type == "BatchNormalization":
                continue
            s = np.asarray(v).shape
            full = (1,) * (tail.rank - len(s)) + tuple(s)
            ok = len(full) == tail.rank and all(d == 1 for k, d in enumerate(full) if k != 1) and full[1] in (1, c)
            if tail.perm is not None and np.asarray(v).size > 1:
                ok = False
            if not ok:
                raise QuantError(f"{describe(node)}: constant '{node.input[j]}' of shape {s} is neither one value nor "
                                 f"one per channel; per-element float ops cannot fold into per-channel thresholds")

    def maxpool(self, node, x):
        if attr(node, "ceil_mode", 0) or any(attr(node, "pads", [0]) ) or \
                any(d != 1 for d in attr(node, "dilations", [1, 1])) or attr(node, "auto_pad", "NOTSET") != "NOTSET":
            raise unsupported(node, "with pads, dilation, auto_pad or ceil_mode (only plain windows are)")
        k = tuple(attr(node, "kernel_shape"))
        st = tuple(attr(node, "strides", k))
        if isinstance(x, QAct) and x.rank == 4:
            s = np.asarray(x.quant.scale)
            if (s <= 0).any():
                raise QuantError(f"{describe(node)}: a max over codes needs a positive scale")
            mp = ir.MaxPool2d(node.name, [x.tensor], node.name + ":out", kernel=k, stride=st)
            t = self.add(mp)
            self.values[node.output[0]] = QAct(mp.output, t, x.quant)
        elif isinstance(x, Tail) and x.rank == 4 and x.layer is not None:
            lo, hi = x.bounds()
            v = x.value(np.stack([lo, hi]), self.runner)
            if (v[1] < v[0]).any():
                raise QuantError(f"{describe(node)}: the float chain before this MaxPool decreases in channels "
                                 f"{np.flatnonzero(v[1] < v[0])[:8].tolist()}; a max then is not a max of "
                                 f"accumulators (put the MaxPool after the quantizer)")
            mp = ir.MaxPool2d(node.name, [x.acc], node.name + ":acc", kernel=k, stride=st)
            self.add(mp)
            self.values[node.output[0]] = dataclasses.replace(x, acc=mp.output, maxpooled=True)
        else:
            raise QuantError(f"{describe(node)} needs a quantized NCHW map (or an accumulator) as input")

    def avgpool(self, node, x):
        if not isinstance(x, QAct) or x.rank != 4:
            raise QuantError(f"{describe(node)} needs a quantized NCHW map as input (put a quantizer before it)")
        h, w_, c = x.type.shape
        if node.op_type == "GlobalAveragePool":
            k, st = (h, w_), (1, 1)
        else:
            if attr(node, "ceil_mode", 0) or any(attr(node, "pads", [0])) or \
                    attr(node, "auto_pad", "NOTSET") != "NOTSET":
                raise unsupported(node, "with pads, auto_pad or ceil_mode")
            k = tuple(attr(node, "kernel_shape"))
            st = tuple(attr(node, "strides", k))
        s = np.asarray(x.quant.scale, dtype=np.float32)
        if (s <= 0).any():
            raise QuantError(f"{describe(node)}: average pooling needs a positive input scale")
        sp = ir.SumPool(node.name, [x.tensor], node.name + ":acc", kernel=k, stride=st)
        in_type = x.type
        self.add(sp)
        n = k[0] * k[1]
        zp = x.quant.zp
        sc = np.broadcast_to(s.astype(np.float64).reshape(-1), (c,))
        probe_hw = (h, w_) if node.op_type == "GlobalAveragePool" else k

        def start(acc):
            # drive the executor's own pooling kernel: the whole window sum in one element, zeros elsewhere
            total = ops.round32_exact(acc - n * int(zp), sc)
            probe = np.zeros(total.shape + probe_hw, dtype=np.float32)
            probe[:, :, 0, 0] = total
            return self.runner.run(node, [probe]).reshape(total.shape)

        self.values[node.output[0]] = Tail(sp.output, sp, in_type, start, 4, node.name,
                                           params={"p": sc / n, "bias": None, "offset": np.full(c, -n * int(zp))})

    def flatten(self, node, ins):
        x = ins[0]
        if node.op_type == "Flatten" and attr(node, "axis", 1) != 1:
            raise unsupported(node, f"with axis {attr(node, 'axis')} (only 1)")
        if node.op_type == "Reshape":
            shape = self.const(node.input[1])
            if shape is None:
                raise QuantError(f"{describe(node)}: the target shape '{node.input[1]}' is not a constant")
            if len(shape) != 2 or shape[0] not in (1, -1, 0) and shape[1] not in (-1,):
                raise unsupported(node, f"to shape {shape.tolist()} (only flattening to (batch, features) is)")
        if isinstance(x, FloatIn):
            x.nodes.append((node, None))
            self.values[node.output[0]] = FloatIn(x.shape, list(x.nodes))
        elif isinstance(x, QAct):
            if x.rank == 2:
                self.values[node.output[0]] = x
                return
            h, w_, c = x.type.shape
            fl = ir.Flatten(node.name, [x.tensor], node.name + ":out")
            t = self.add(fl)
            perm = (np.arange(c)[None, None, :] * h * w_ + np.arange(h)[:, None, None] * w_
                    + np.arange(w_)[None, :, None]).reshape(-1)
            q = copy.copy(x.quant)
            self.values[node.output[0]] = QAct(fl.output, t, q, perm if (h * w_ > 1) else None)
        elif isinstance(x, Tail) and x.rank == 4 and self.types[x.acc].shape[:2] == (1, 1):
            fl = ir.Flatten(node.name, [x.acc], node.name + ":acc")
            self.add(fl)
            nodes = list(x.nodes) + [(node, [None] + ([self.const(node.input[1])] if len(node.input) > 1 else []))]
            self.values[node.output[0]] = Tail(fl.output, x.layer, x.in_type, x.start, 2, x.where, nodes,
                                               params=x.params, maxpooled=x.maxpooled, start_rank=4)
        else:
            raise QuantError(f"{describe(node)} flattens an unquantized float map; flatten after the quantizer")
