"""PT2E graphs (torch.export + torchao prepare_pt2e/convert_pt2e, e.g. with the XNNPACK quantizer).

A converted PT2E graph is a *reference* graph: quantize_per_tensor -> dequantize -> float aten op
-> quantize, run in float32 by PyTorch. Between two quantize ops the float linear/conv sums
dequantized products in float32, so its output is not a function of the integer accumulator
(the order of the float additions matters): no IR can equal it by construction. The importer
models that float chain on exact accumulators (acc * s_x * s_w rounded once to float32, then the
graph's own bias add, activation and quantize ops) and the fidelity is measured
(docs/importers.md). Average pools, max pools and code-to-code steps run the graph's own ops
on probe codes, as in the eager/FX importer.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.fx

from . import int8_common as common
from .base import CHAIN_ONLY, Lowered, QuantError
from .torch_int8 import FxEval, TorchInt8, node_label, record
from .torch_int8_fx import single_output

QUANT = ("quantize_per_tensor",)
DEQUANT = ("dequantize_per_tensor",)
WEIGHT_DEQUANT = ("dequantize_per_channel", "dequantize_per_tensor")
MATMUL = ("linear", "conv2d")
ELEMENTWISE = ("relu", "relu_", "hardtanh", "hardtanh_", "clamp", "clamp_min", "leaky_relu", "sigmoid", "tanh",
               "dropout", "clone", "contiguous", "alias")
SHAPE = ("flatten", "view", "reshape", "_unsafe_view")
AVGPOOL = ("avg_pool2d", "adaptive_avg_pool2d", "mean")
SUPPORTED = ("quantize_per_tensor/dequantize_per_tensor (activations), dequantize_per_channel/per_tensor (weights), "
             "aten linear, conv2d (stride, padding, groups), relu, hardtanh, clamp, max_pool2d, avg_pool2d, "
             "adaptive_avg_pool2d(1), mean over H and W, flatten/view/reshape to (batch, -1)")


def op_name(node) -> str:
    """'linear' for torch.ops.aten.linear.default, 'quantize_per_tensor' for quantized_decomposed's op."""
    t = node.target
    if isinstance(t, str):
        return t
    name = getattr(t, "__name__", str(t))
    return name.split(".")[0]


class _Walk:
    """One pass over a PT2E graph: q -> dq -> float ops -> q segments become chain steps."""

    def __init__(self, gm, values, name, method):
        self.gm, self.values = gm, values
        self.chain = common.Chain(name, method)
        self.eval = FxEval(gm)
        self.state, self.cur = "float", None
        self.segment, self.deq_node = [], None
        self.input_node = self.codes_node = None
        self.tail, self.output_node = [], None

    def label(self, node):
        return node_label(node, self.gm)

    def kind(self, node):
        return op_name(node)

    def data_inputs(self, node):
        return [a for a in node.all_input_nodes if a.op not in ("get_attr",)
                and isinstance(self.values.get(a), torch.Tensor) and not self.is_const(a)]

    def is_const(self, node) -> bool:
        """A node computed from attributes only (weights and their dequantize)."""
        memo = self.__dict__.setdefault("_const", {})
        if node not in memo:
            memo[node] = node.op == "get_attr" or (node.op != "placeholder" and node.op != "output" and
                                                   all(self.is_const(a) for a in node.all_input_nodes))
        return memo[node]

    def step(self, node):
        if node.op in ("placeholder", "get_attr") or self.is_const(node):
            return
        if node.op == "call_module":                      # torch.export's guard function, no data
            return
        if node.op == "output":
            return self.finish(node)
        k = op_name(node)
        if k in ("sym_size", "size", "getitem"):
            return
        ins = self.data_inputs(node)
        if self.state == "float":
            return self.prelude(node, k)
        if len(ins) != 1 or ins[0] is not self.cur:
            raise QuantError(f"{self.label(node)} takes {len(ins)} activations or one other than the tensor before it: "
                             f"the model is not a chain: {CHAIN_ONLY}")
        if k.startswith("add") or k in ("cat", "mul", "sub"):
            raise QuantError(f"{self.label(node)}: {k} (a residual or branch) is not supported: {CHAIN_ONLY}")
        if self.state == "codes":
            if k not in DEQUANT:
                raise QuantError(f"{self.label(node)} acts on int8 codes directly; PT2E graphs dequantize first")
            self.state, self.segment, self.codes_node, self.deq_node = "deq", [], self.cur, node
            self.cur = node
            return
        if k in QUANT:
            self.close_segment(node)
            self.state, self.cur = "codes", node
            return
        if k not in MATMUL + ELEMENTWISE + SHAPE + AVGPOOL + ("max_pool2d", "softmax", "_softmax", "log_softmax",
                                                          "_log_softmax"):
            raise QuantError(f"unsupported operation {self.label(node)} in the PT2E graph; supported: {SUPPORTED}")
        self.segment.append(node)
        self.cur = node

    def prelude(self, node, k):
        if k in QUANT:
            v = self.values[node]
            self.qmin, self.qmax = int(node.args[3]), int(node.args[4])
            dtype = common.CODE_TYPES["int8" if v.dtype == torch.int8 else "uint8"]
            self.chain.start(tuple(v.shape[1:]), dtype, node.name)
            self.state, self.cur, self.input_node = "codes", node, node
        elif k in MATMUL:
            raise QuantError(f"float layer {self.label(node)} comes before the model quantizes its input; only the "
                             f"quantized part of a model can be imported")

    def out_info(self, q):
        t = common.CODE_TYPES["int8" if self.values[q].dtype == torch.int8 else "uint8"]
        return t.min, t

    def close_segment(self, q):
        accs = [i for i, n in enumerate(self.segment) if op_name(n) in MATMUL + AVGPOOL]
        for n in self.segment:
            if "softmax" in op_name(n):
                raise QuantError(f"{self.label(n)}: softmax between quantized layers is not supported")
        if len(accs) > 1:
            raise QuantError(f"{self.label(self.segment[accs[1]])} follows {self.label(self.segment[accs[0]])} with no "
                             f"quantize between them: a float layer in the middle is not supported")
        if not accs:
            self.structural(self.segment, self.codes_node)
            table = self.code_table([self.deq_node] + self.segment + [q], self.codes_node)
            self.chain.code_map(q.name, table, *self.out_info(q), rt_name=q.name)
            return
        i = accs[0]
        before, acc, after = self.segment[:i], self.segment[i], self.segment[i + 1:]
        for n in before:
            if op_name(n) not in SHAPE:
                raise QuantError(f"{self.label(n)} between a dequantize and {self.label(acc)}: only flatten may")
        for n in after:
            if op_name(n) not in ELEMENTWISE:
                raise QuantError(f"{self.label(n)} between {self.label(acc)} and its quantize: only elementwise "
                                 f"activations (relu, hardtanh, clamp) may")
        self.structural(before, self.codes_node)
        if op_name(acc) in MATMUL:
            self.matmul(acc, after, q)
        else:
            self.avgpool(acc, q, before)

    def structural(self, nodes, src):
        prev = src
        for n in nodes:
            k = op_name(n)
            if k == "max_pool2d":
                args = list(n.args) + [None] * 6
                ks = common_pair(args[1])
                st = common_pair(args[2]) or ks
                if common_pair(args[3], (0, 0)) != (0, 0) or common_pair(args[4], (1, 1)) != (1, 1) or args[5]:
                    raise QuantError(f"{self.label(n)}: max pooling with padding, dilation or ceil_mode is not "
                                     f"supported")
                self.chain.maxpool(n.name, ks, st)
            elif k in SHAPE:
                a, b = self.values[prev].shape, self.values[n].shape
                if tuple(a) != tuple(b):
                    if len(b) != 2 or b[0] != a[0]:
                        raise QuantError(f"{self.label(n)} reshapes {tuple(a)} to {tuple(b)}; only flattening to "
                                         f"(batch, -1) is supported")
                    self.chain.flatten(n.name)
            prev = n

    def weight(self, node):
        """(raw int weights, zero points per output channel, scales per output channel, (qmin, qmax))."""
        wdq = node.args[1]
        if not isinstance(wdq, torch.fx.Node) or op_name(wdq) not in WEIGHT_DEQUANT:
            raise QuantError(f"{self.label(node)}: its weight is not a dequantized int8 constant (a float layer); "
                             f"quantize its weights too")
        w = self.values[wdq.args[0]].numpy().astype(np.int64)
        scales = np.asarray(self.values.get(wdq.args[1], wdq.args[1]), dtype=np.float64).reshape(-1)
        zps = np.asarray(self.values.get(wdq.args[2], wdq.args[2]), dtype=np.int64).reshape(-1)
        if op_name(wdq) == "dequantize_per_channel" and int(wdq.args[3]) != 0:
            raise QuantError(f"{self.label(node)}: per-channel weights along axis {wdq.args[3]}; only 0 is supported")
        n = w.shape[0]
        wrange = (int(wdq.args[-3]), int(wdq.args[-2])) if op_name(wdq) == "dequantize_per_channel" else \
            (int(wdq.args[3]), int(wdq.args[4]))
        return w, np.broadcast_to(zps, (n,)), np.broadcast_to(scales, (n,)), wrange

    def matmul(self, node, after, q):
        k = op_name(node)
        x = self.values[self.deq_node]
        w, wzp, ws, _ = self.weight(node)
        dq = self.deq_node
        sx, xzp = float(dq.args[1]), int(dq.args[2])
        args = list(node.args) + [None] * 7
        bias = self.values.get(args[2]) if isinstance(args[2], torch.fx.Node) else None
        if k == "conv2d":
            stride, pad = common_pair(args[3], (1, 1)), common_pair(args[4], (0, 0))
            if common_pair(args[5], (1, 1)) != (1, 1):
                raise QuantError(f"{self.label(node)}: dilation is not supported")
            groups = int(args[6] or 1)
            geom = common.Geometry(x.shape[1], w.shape[0], tuple(w.shape[2:]), stride, pad, groups, spatial=True)
        else:
            geom = common.Geometry(w.shape[1], w.shape[0])
        wdev = w - wzp.reshape((-1,) + (1,) * (w.ndim - 1))
        scale = (np.float64(np.float32(sx)) * ws.astype(np.float32).astype(np.float64))

        def model(acc):
            y = torch.from_numpy((acc * scale[None, :]).astype(np.float32))
            if bias is not None:
                y = y + bias.to(torch.float32)
            if geom.spatial:
                y = y[:, :, None, None]
            with torch.no_grad():
                out = self.eval.run(after + [q], {node: y})[q]
            return out.reshape(acc.shape).numpy().astype(np.int64)

        how = ("float32 model of the PT2E reference chain dequantize -> " + "/".join([k] + [op_name(n) for n in after])
               + " -> quantize on exact accumulators (the graph sums float products; not exact by construction)")
        self.chain.matmul(node.name, wdev, geom, xzp, model, self.out_info(q)[1], how, rt_name=q.name, x_zp=xzp)
        self.exact = False

    def avgpool(self, node, q, before):
        k = op_name(node)
        src = before[-1] if before else self.deq_node
        x, y = self.values[src], self.values[node]
        h, w = x.shape[-2:]
        args = list(node.args) + [None] * 6
        if k in ("adaptive_avg_pool2d", "mean"):
            if y.numel() != x.shape[0] * x.shape[1]:
                raise QuantError(f"{self.label(node)}: only global average pooling (output 1x1) is supported")
            ks = st = (h, w)
        else:
            ks = common_pair(args[1])
            st = common_pair(args[2]) or ks
            if common_pair(args[3], (0, 0)) != (0, 0) or args[4] or (args[6] is not None):
                raise QuantError(f"{self.label(node)}: average pooling with padding, ceil_mode or divisor_override "
                                 f"is not supported")
        nodes = [self.deq_node] + before + [node, q]
        start = self.codes_node

        def run(codes):
            t = torch.from_numpy(np.ascontiguousarray(codes)).to(self.values[start].dtype)
            with torch.no_grad():
                out = self.eval.run(nodes, {start: t})[q]
            return out.reshape(codes.shape[0], codes.shape[1], -1)[:, :, 0].numpy()

        probe = common.PoolProbe(run, ks, x.shape[1], (self.qmin, self.qmax), in_hw=(h, w))
        self.chain.avgpool(node.name, ks, st, probe, self.out_info(q)[1],
                           how="the graph's dequantize -> avg pool -> quantize on chosen window sums (float sums: "
                               "measured, not exact by construction)", rt_name=q.name)
        if self.values[q].dim() == 2:
            self.chain.flatten(node.name + ":flat", rt_name=q.name)

    def code_table(self, nodes, start):
        x = self.values[start]
        cmin, cmax = self.out_info(start)[1].min, self.out_info(start)[1].max
        codes = np.arange(cmin, cmax + 1)
        probe = np.broadcast_to(codes.reshape((-1,) + (1,) * (x.dim() - 1)), (len(codes),) + tuple(x.shape[1:]))
        with torch.no_grad():
            out = self.eval.run(nodes, {start: torch.from_numpy(np.ascontiguousarray(probe)).to(x.dtype)})[nodes[-1]]
        out = out.reshape(len(codes), -1).numpy().astype(np.int64)
        if not (out == out[:, :1]).all():
            raise QuantError(f"{self.label(nodes[-1])}: not the same function of the code at every position")
        table = out[:, 0]
        rand = np.random.default_rng(0).integers(cmin, cmax + 1, size=(4,) + tuple(x.shape[1:]))
        with torch.no_grad():
            got = self.eval.run(nodes, {start: torch.from_numpy(rand).to(x.dtype)})[nodes[-1]]
        want = rand
        for n in nodes:
            if op_name(n) == "max_pool2d":
                ks = common_pair(n.args[1])
                want = common.maxpool_nchw(want, ks, common_pair(n.args[2] if len(n.args) > 2 else None) or ks)
        if not np.array_equal(got.reshape(4, -1).numpy(), table[want.reshape(4, -1) - cmin]):
            raise QuantError(f"{self.label(nodes[-1])} does not act element by element; not supported")
        return table

    def finish(self, node):
        if self.state == "float":
            raise QuantError("the PT2E graph never quantizes its input")
        if self.state == "codes":
            self.codes_node, self.tail = self.cur, []
        else:
            for n in self.segment:
                if op_name(n) not in SHAPE + ("softmax", "_softmax", "log_softmax", "_log_softmax"):
                    raise QuantError(f"float operation {self.label(n)} after the last quantize is not supported (a "
                                     f"float layer at the end); quantize it too")
            self.tail = [self.deq_node] + self.segment
        self.output_node = single_output(node)


def common_pair(v, default=None):
    if v is None:
        return default
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if v else default


class TorchPT2E(TorchInt8):
    """The float side of a PT2E graph: its own quantize/dequantize ops, and the graph as the oracle."""
    kind = "torch-int8"

    def __init__(self, gm, walk, example_shape):
        super().__init__(gm, walk, "pt2e", torch.backends.quantized.engine, example_shape)

    @staticmethod
    def tensor_of(codes, like):
        return torch.from_numpy(np.ascontiguousarray(codes)).to(like.dtype)

    def input_range(self):
        return self.walk.qmin, self.walk.qmax

    def dequantize_input(self, codes):
        n = self.walk.input_node
        return ((codes - int(n.args[2])) * float(n.args[1])).astype(np.float32)

    def describe(self) -> dict:
        d = super().describe()
        d["exact_by_construction"] = False
        d["oracle"] = "the converted PT2E graph run by PyTorch (float32 reference ops)"
        return d


def lower(gm, example_input, name: str = "qloom", method: str = "auto") -> Lowered:
    values = record(gm, example_input)
    walk = _Walk(gm, values, name, method)
    for node in gm.graph.nodes:
        walk.step(node)
    graph = walk.chain.finish()
    return Lowered(graph, TorchPT2E(gm, walk, torch.as_tensor(example_input).shape))
