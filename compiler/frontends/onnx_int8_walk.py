"""The walk of the ONNX Runtime int8 front end (onnx_int8): follows the activation of a QDQ or
QOperator graph from its input QuantizeLinear to its output, building the IR chain; each layer's
requantization is found by running that piece of the graph in ONNX Runtime (int8_common's probes)."""
from __future__ import annotations

import numpy as np

from . import int8_common as common
from .base import CHAIN_ONLY, QuantError
from .onnx_int8_graph import OnnxGraph, copy_node, ort_session

ELEM = {2: "uint8", 3: "int8"}                        # onnx TensorProto element types of codes
QOP_MATMUL = ("QLinearConv", "QLinearMatMul", "QGemm")
QOP_POOL = ("QLinearGlobalAveragePool", "QLinearAveragePool")
QOP_ELEMENTWISE = ("QLinearLeakyRelu", "QLinearSigmoid")
FLOAT_MATMUL = ("Conv", "Gemm", "MatMul")
FLOAT_POOL = ("GlobalAveragePool", "AveragePool")
FLOAT_ELEMENTWISE = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "Identity", "Dropout", "HardSigmoid")
SHAPE_OPS = ("Flatten", "Reshape")
TAIL_OK = ("DequantizeLinear", "Softmax", "LogSoftmax", "Flatten", "Reshape", "Identity")
DYNAMIC = ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul")
BRANCHES = ("QLinearAdd", "QLinearMul", "QLinearConcat", "Add", "Mul", "Concat", "Sum", "Sub")
SUPPORTED = ("QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, QGemm, QLinearGlobalAveragePool, "
             "QLinearAveragePool, QLinearLeakyRelu, QLinearSigmoid, Conv, Gemm, MatMul (constant weights through "
             "DequantizeLinear), MaxPool, AveragePool, GlobalAveragePool, Relu, Clip, LeakyRelu, Sigmoid, Tanh, "
             "Flatten, Reshape to (batch, -1), Identity, Dropout; Softmax after the last DequantizeLinear")


def pads2(attrs, label):
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID"):
        raise QuantError(f"{label}: auto_pad={auto} is not supported (give explicit pads)")
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise QuantError(f"{label}: asymmetric pads {pads} are not supported")
    return pads[0], pads[1]


class _Walk:
    """Follows the activation from the input QuantizeLinear to the output, building the chain."""

    def __init__(self, g: OnnxGraph, values, name, method, optimization):
        self.g, self.values, self.opt = g, values, optimization
        self.chain = common.Chain(name, method)
        self.state = "codes"
        self.segment, self.deq = [], None
        self.tail, self.codes_name = [], None
        self.formats = set()

    def run(self):
        qin = self.input_quantize()
        self.input_q = qin
        shape = self.values[qin.output[0]].shape[1:]
        self.chain.start(tuple(shape), self.code_type(qin.output[0]), qin.output[0])
        cur = qin.output[0]
        while True:
            users = self.g.consumers.get(cur, [])
            if not users:
                if cur not in self.g.outputs:
                    raise QuantError(f"tensor '{cur}' is used by nothing and is no graph output")
                return self.finish(cur)
            if len(users) != 1:
                labels = ", ".join(self.g.label(u) for u in users)
                raise QuantError(f"tensor '{cur}' feeds {len(users)} nodes ({labels}): "
                                 f"the model branches: {CHAIN_ONLY}")
            node = users[0]
            others = [i for i in node.input if i and i != cur and i not in self.g.const]
            if others or node.op_type in BRANCHES:
                raise QuantError(f"{self.g.label(node)} combines two activations (a residual add or concat): not "
                                 f"supported: {CHAIN_ONLY}")
            if node.op_type in DYNAMIC:
                raise QuantError(f"{self.g.label(node)}: dynamic quantization is not supported; quantize the model "
                                 f"statically (onnxruntime.quantization.quantize_static)")
            cur = self.codes_op(node, cur) if self.state == "codes" else self.float_op(node, cur)

    def input_quantize(self):
        for n in self.g.nodes:
            if n.op_type in DYNAMIC:
                raise QuantError(f"{self.g.label(n)}: dynamic quantization is not supported; quantize the model "
                                 f"statically (onnxruntime.quantization.quantize_static)")
        for n in self.g.nodes:
            if n.op_type == "QuantizeLinear" and n.input[0] not in self.g.const:
                if len(self.g.inputs) != 1:
                    raise QuantError(f"the model has {len(self.g.inputs)} inputs; qloom imports models with one input")
                for p in self.g.ancestors(n.input[0]):
                    if p.op_type in FLOAT_MATMUL + QOP_MATMUL:
                        raise QuantError(f"float layer {self.g.label(p)} comes before the model quantizes its input; "
                                         f"only the quantized part of a model can be imported")
                return n
        raise QuantError("the ONNX model never quantizes its input (no QuantizeLinear on an activation)")

    def code_type(self, name):
        e = self.g.elem_of(name)
        if e not in ELEM:
            raise QuantError(f"tensor '{name}' holds codes of ONNX element type {e}; qloom imports uint8/int8")
        return common.CODE_TYPES[ELEM[e]]

    def code_range(self, name):
        t = self.code_type(name)
        return t.min, t.max

    # ---- QOperator ops on code tensors
    def codes_op(self, node, cur):
        op, label = node.op_type, self.g.label(node)
        out = node.output[0]
        if op == "DequantizeLinear":
            self.state, self.segment, self.deq, self.codes_name = "deq", [], node, cur
            return out
        self.formats.add("qoperator")
        if op in QOP_MATMUL:
            if op == "QGemm" and not self.g.optional(node, 7):
                raise QuantError(f"{label}: a QGemm with a float output is not supported (its output must be "
                                 f"quantized)")
            self.matmul(node, node, [node], cur, out, x_zp_name=node.input[2], w_name=node.input[3],
                        w_zp_name=self.g.optional(node, 5), axis=None)
        elif op in QOP_POOL:
            if self.g.attrs(node).get("channels_last", 0):
                raise QuantError(f"{label}: channels_last=1 is not supported")
            self.pool(node, [node], cur, out)
        elif op == "MaxPool":
            self.chain.maxpool(out, *self.maxpool_geometry(node), rt_name=out)
        elif op in SHAPE_OPS:
            self.flatten(node, cur, out, rt_name=out)
        elif op in QOP_ELEMENTWISE:
            self.chain.code_map(out, self.code_table([node], cur, out), *self.out_info(out), rt_name=out)
        else:
            raise QuantError(f"unsupported node {label} on a quantized tensor; supported: {SUPPORTED}")
        return out

    def out_info(self, name):
        t = self.code_type(name)
        return t.min, t

    # ---- QDQ: float ops between a DequantizeLinear and the next QuantizeLinear
    def float_op(self, node, cur):
        op = node.op_type
        if op == "QuantizeLinear":
            self.close_segment(node)
            self.state = "codes"
            return node.output[0]
        if op not in FLOAT_MATMUL + FLOAT_POOL + FLOAT_ELEMENTWISE + SHAPE_OPS + ("MaxPool", "Softmax", "LogSoftmax"):
            raise QuantError(f"float node {self.g.label(node)} after a DequantizeLinear: a float layer in the middle "
                             f"(or at the end) of a quantized model is not supported; supported: {SUPPORTED}")
        self.segment.append(node)
        return node.output[0]

    def close_segment(self, q):
        self.formats.add("qdq")
        accs = [i for i, n in enumerate(self.segment) if n.op_type in FLOAT_MATMUL + FLOAT_POOL]
        for n in self.segment:
            if n.op_type in ("Softmax", "LogSoftmax"):
                raise QuantError(f"{self.g.label(n)}: softmax between quantized layers is not supported")
        if len(accs) > 1:
            raise QuantError(f"{self.g.label(self.segment[accs[1]])} follows {self.g.label(self.segment[accs[0]])} "
                             f"without a QuantizeLinear between them: a float layer in the middle is not supported")
        src, out = self.codes_name, q.output[0]
        if not accs:
            self.structural(self.segment, src)
            table = self.code_table([self.deq] + self.segment + [q], src, out)
            self.chain.code_map(out, table, *self.out_info(out), rt_name=out)
            return
        k = accs[0]
        before, acc, after = self.segment[:k], self.segment[k], self.segment[k + 1:]
        for n in before:
            if n.op_type not in SHAPE_OPS:
                raise QuantError(f"{self.g.label(n)} comes between a DequantizeLinear and {self.g.label(acc)}: only "
                                 f"Flatten/Reshape may")
        for n in after:
            if n.op_type not in FLOAT_ELEMENTWISE:
                raise QuantError(f"{self.g.label(n)} comes between {self.g.label(acc)} and its QuantizeLinear: only "
                                 f"elementwise activations (Relu, Clip, ...) may")
        x_in = src
        if before:
            self.structural(before, src)
            x_in = self.values_name(before[-1])
        # the probe graph: DequantizeLinear -> op -> activations -> QuantizeLinear on the op's input codes
        deq = copy_node(self.deq, [x_in + ":codes", *self.deq.input[1:]])
        deq.output[0] = x_in + ":deq"
        accn = copy_node(acc, [deq.output[0], *acc.input[1:]])
        nodes = [deq, accn] + after + [q]
        self.g.elem[x_in + ":codes"] = self.g.elem_of(src)
        self.g.elem[x_in + ":deq"] = 1
        if acc.op_type in FLOAT_MATMUL:
            wdq = self.g.producer.get(acc.input[1])
            if wdq is None or wdq.op_type != "DequantizeLinear" or wdq.input[0] not in self.g.inits:
                raise QuantError(f"{self.g.label(acc)}: its weight must be a constant int8/uint8 tensor through "
                                 f"DequantizeLinear (QDQ); a float weight is not supported")
            self.matmul(acc, acc, nodes, x_in + ":codes", out, x_zp_name=self.g.optional(self.deq, 2),
                        w_name=wdq.input[0], w_zp_name=self.g.optional(wdq, 2),
                        axis=self.g.attrs(wdq).get("axis", 1), shape_src=x_in, codes_src=src)
        else:
            self.pool(acc, nodes, x_in + ":codes", out, shape_src=x_in, codes_src=src)

    def values_name(self, node):
        return node.output[0]

    def structural(self, nodes, src):
        """Max pools and flattens inside a dequantize -> ... -> quantize segment."""
        prev = src
        for n in nodes:
            if n.op_type == "MaxPool":
                self.chain.maxpool(n.output[0], *self.maxpool_geometry(n))
            elif n.op_type in SHAPE_OPS:
                self.flatten(n, prev, n.output[0])
            prev = n.output[0]

    def flatten(self, node, src, out, rt_name=None):
        a, b = self.values[src].shape, self.values[out].shape
        if tuple(a) == tuple(b):
            return
        if len(b) != 2 or b[0] != a[0]:
            raise QuantError(f"{self.g.label(node)} reshapes {tuple(a)} to {tuple(b)}; only flattening to (batch, -1) "
                             f"is supported")
        self.chain.flatten(out, rt_name=rt_name)

    def maxpool_geometry(self, node):
        a = self.g.attrs(node)
        label = self.g.label(node)
        if (len([o for o in node.output if o]) > 1 or a.get("ceil_mode", 0)
                or any(d != 1 for d in a.get("dilations", [1, 1]))):
            raise QuantError(f"{label}: MaxPool with indices, ceil_mode or dilation is not supported")
        if pads2(a, label) != (0, 0):
            raise QuantError(f"{label}: MaxPool with padding is not supported")
        k = tuple(a["kernel_shape"])
        return k, tuple(a.get("strides", [1, 1]))

    # ---- layers
    def matmul(self, node, acc, nodes, x_name, out, x_zp_name, w_name, w_zp_name, axis, shape_src=None,
               codes_src=None):
        label, a, op = self.g.label(node), self.g.attrs(node), node.op_type
        x_src = shape_src or x_name
        w = self.g.array(w_name).astype(np.int64)
        if w.dtype.kind not in "iu" and not np.issubdtype(w.dtype, np.integer):
            raise QuantError(f"{label}: weights must be integer codes")
        winfo = np.iinfo(self.g.onnx.helper.tensor_dtype_to_np_dtype(self.g.inits[w_name].data_type))
        zp = np.zeros(1, dtype=np.int64) if w_zp_name is None else self.g.array(w_zp_name).astype(np.int64).reshape(-1)
        x_zp = 0 if x_zp_name is None else int(self.g.array(x_zp_name).reshape(-1)[0])
        xcodes = codes_src or x_name
        if op in ("QLinearConv", "Conv"):
            if any(d != 1 for d in a.get("dilations", [1, 1])):
                raise QuantError(f"{label}: dilation {a['dilations']} is not supported")
            cin = self.values[x_src].shape[1]
            geom = common.Geometry(cin, w.shape[0], tuple(w.shape[2:]), tuple(a.get("strides", [1, 1])),
                                   pads2(a, label), a.get("group", 1), spatial=True,
                                   in_hw=tuple(self.values[x_src].shape[2:]))
            canon, to_onnx = w, (lambda v: v)
        else:
            if self.values[x_src].ndim != 2:
                raise QuantError(f"{label}: the activation must be (batch, features), got {self.values[x_src].shape}")
            trans_b = op in ("Gemm", "QGemm") and a.get("transB", 0)
            if a.get("transA", 0):
                raise QuantError(f"{label}: transA=1 is not supported")
            canon = w if trans_b else w.T
            to_onnx = (lambda v: v) if trans_b else (lambda v: v.T)
            geom = common.Geometry(canon.shape[1], canon.shape[0])
        if zp.size not in (1, geom.cout):
            raise QuantError(f"{label}: weight zero points along axis {axis} do not match the output channels")
        zp = np.broadcast_to(zp, (geom.cout,))
        wdev = canon - zp.reshape((-1,) + (1,) * (canon.ndim - 1))
        run = self.runner(nodes, x_name, out, w_name, to_onnx, geom)
        probe = common.MatmulProbe(geom, run, canon, zp, (winfo.min, winfo.max), x_zp, self.code_range(xcodes))
        how = f"probed {'+'.join(n.op_type for n in nodes)} in ONNX Runtime (optimization {self.opt})"
        self.chain.matmul(out, wdev, geom, x_zp, probe, self.code_type(out), how, rt_name=out)

    def runner(self, nodes, x_name, out, w_name, to_onnx, geom):
        sessions = {}
        _, _, _, _, oh0, ow0 = geom.site()

        def run(w_raw, x):
            key = w_raw.tobytes()
            if key not in sessions:
                m = self.g.submodel(nodes, [x_name], [out], {w_name: to_onnx(np.asarray(w_raw))})
                sessions[key] = ort_session(m, self.opt)
            dt = self.g.onnx.helper.tensor_dtype_to_np_dtype(self.g.elem_of(x_name))
            y = sessions[key].run([out], {x_name: x.astype(dt)})[0]
            return y[:, :, oh0, ow0] if geom.spatial else y
        return run

    def pool(self, node, nodes, x_name, out, shape_src=None, codes_src=None):
        label, a = self.g.label(node), self.g.attrs(node)
        x = self.values[shape_src or x_name]
        h, w = x.shape[2:]
        if "Global" in node.op_type:
            ks = st = (h, w)
        else:
            if pads2(a, label) != (0, 0) or a.get("ceil_mode", 0):
                raise QuantError(f"{label}: average pooling with padding or ceil_mode is not supported")
            ks = tuple(a["kernel_shape"])
            st = tuple(a.get("strides", [1, 1]))
        run, ran = self.optimized_pool(out, node.name, codes_src or x_name)
        if run is None:
            sess = ort_session(self.g.submodel(nodes, [x_name], [out]), self.opt)
            dt = self.g.onnx.helper.tensor_dtype_to_np_dtype(self.g.elem_of(x_name))
            ran = nodes

            def run(codes):
                y = sess.run([out], {x_name: codes.astype(dt)})[0]
                return y.reshape(y.shape[0], y.shape[1], -1)[:, :, 0]

        probe = common.PoolProbe(run, ks, x.shape[1], self.code_range(codes_src or x_name), in_hw=(h, w))
        how = f"probed {'+'.join(n.op_type for n in ran)} in ONNX Runtime (optimization {self.opt})"
        self.chain.avgpool(out, ks, st, probe, self.code_type(out), how, rt_name=out)

    def optimized_pool(self, out, name, src):
        """A runner for the average-pool node of ORT's optimized graph that computes `out` (or that
        ORT named after the pool `name` when it fused DequantizeLinear -> pool -> QuantizeLinear),
        with the layout ORT chose, run as it is; (None, None) where there is none."""
        og = self.optimized
        if og is None:
            return None, None
        node = og.producer.get(out)
        if node is None or node.op_type not in QOP_POOL:
            node = next((n for n in og.nodes if n.op_type in QOP_POOL and name and
                         (n.name == name or n.output[0] == name)), None)
        if node is None:
            return None, None
        # ORT may run int8 activations as uint8 with zero points moved by 128 (its S8->U8 pass)
        t_in, t_out = og.elem_of(node.input[2]), og.elem_of(node.input[4])
        og.elem[node.input[0]], og.elem[node.output[0]] = t_in, t_out
        shift_in = 128 if (t_in, self.g.elem_of(src)) == (2, 3) else 0
        shift_out = 128 if (t_out, self.g.elem_of(out)) == (2, 3) else 0
        out = node.output[0]
        nhwc = bool(og.attrs(node).get("channels_last", 0))
        sess = ort_session(og.submodel([node], [node.input[0]], [out]), "disabled")
        dt = og.onnx.helper.tensor_dtype_to_np_dtype(t_in)

        def run(codes):
            x = (codes + shift_in).transpose(0, 2, 3, 1) if nhwc else codes + shift_in
            y = sess.run([out], {node.input[0]: np.ascontiguousarray(x).astype(dt)})[0].astype(np.int64)
            y = y.transpose(0, 3, 1, 2) if nhwc and y.ndim == 4 else y
            return y.reshape(y.shape[0], y.shape[1], -1)[:, :, 0] - shift_out
        return run, [node]

    def code_table(self, nodes, src, out):
        """out code for each src code: constant maps through `nodes` (ORT), checked on random codes."""
        x = self.values[src]
        cmin, cmax = self.code_range(src)
        codes = np.arange(cmin, cmax + 1)
        dt = self.g.onnx.helper.tensor_dtype_to_np_dtype(self.g.elem_of(src))
        sess = ort_session(self.g.submodel(nodes, [src], [out]), self.opt)
        probe = np.broadcast_to(codes.reshape((-1,) + (1,) * (x.ndim - 1)), (len(codes),) + x.shape[1:])
        y = sess.run([out], {src: probe.astype(dt)})[0].reshape(len(codes), -1).astype(np.int64)
        if not (y == y[:, :1]).all():
            raise QuantError(f"{self.g.label(nodes[-1])}: the output is not the same function of the code at every "
                             f"position; not supported")
        table = y[:, 0]
        rand = np.random.default_rng(0).integers(cmin, cmax + 1, size=(4,) + x.shape[1:])
        got = sess.run([out], {src: rand.astype(dt)})[0].reshape(4, -1)
        want = rand
        for n in nodes:
            if n.op_type == "MaxPool":
                want = common.maxpool_nchw(want, *self.maxpool_geometry(n))
        if not np.array_equal(got, table[want.reshape(4, -1) - cmin]):
            raise QuantError(f"{self.g.label(nodes[-1])} does not act element by element; not supported")
        return table

    def finish(self, cur):
        if self.state == "codes":
            self.codes_name, self.tail = cur, []
        else:
            for n in self.segment:
                if n.op_type not in TAIL_OK[1:]:
                    raise QuantError(f"float node {self.g.label(n)} after the last quantized layer is not supported "
                                     f"(a float layer at the end); quantize it too, or end in Softmax")
            self.tail = [self.deq] + self.segment
        self.output = cur
