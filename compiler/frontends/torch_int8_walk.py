"""The walk of the PyTorch int8 front end: one pass over a converted model's fx graph, building the
IR chain (each quantized layer's requantization found by probing its own kernel, int8_common)."""
from __future__ import annotations


import numpy as np
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.fx
from torch import nn

from . import int8_common as common
from .base import CHAIN_ONLY, QuantError

from .torch_int8_fx import (ELEMENTWISE_FUNCS, ELEMENTWISE_MODULES, FxEval, QDTYPES, SHAPE_FUNCS, SHAPE_QUERIES,
                             SUPPORTED, bind, module_runner, node_label, pair, qrange, quantized, single_output,
                             target_name,
                             weight_zero_points)

# the parameters after the input of F.max_pool2d / torch.max_pool2d and of F.avg_pool2d (and the pool
# modules' attributes of those names), in positional order, with their defaults
MAX_POOL_PARAMS = {"kernel_size": None, "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                   "return_indices": False}
AVG_POOL_PARAMS = {"kernel_size": None, "stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                   "divisor_override": None}


def is_maxpool(k) -> bool:
    """A max pool module, or a functional one (F.max_pool2d, torch.max_pool2d, with indices)."""
    return isinstance(k, nn.MaxPool2d) or k in ("max_pool2d", "max_pool2d_with_indices")


class _Walk:
    """One pass over the fx graph, keeping the chain and what the runtime tensor holds."""

    def __init__(self, gm, values, name, method):
        self.gm, self.values = gm, values
        self.chain = common.Chain(name, method)
        self.eval = FxEval(gm)
        self.state = "float"            # float (before the input quantize) | codes | deq (after dequantize)
        self.cur = None                 # the fx node holding the chain's current tensor
        self.segment = []               # float nodes since the last dequantize
        self.input_node = self.codes_node = None
        self.tail = []                  # float nodes after the last dequantize (run in software)

    def label(self, node):
        return node_label(node, self.gm)

    def kind(self, node):
        if node.op == "call_module":
            return self.gm.get_submodule(node.target)
        return target_name(node)

    def tensor_args(self, node):
        """The node's data inputs (constants such as FX's scale and zero-point attributes excluded)."""
        return [a for a in node.all_input_nodes
                if a.op != "get_attr" and isinstance(self.values.get(a), torch.Tensor)]

    def step(self, node):
        if node.op in ("placeholder", "get_attr"):
            return
        if node.op == "output":
            return self.finish(node)
        ins = self.tensor_args(node)
        k = self.kind(node)
        if isinstance(k, str) and k in SHAPE_QUERIES:
            return
        if isinstance(k, nn.Module) and ".dynamic" in type(k).__module__:
            raise QuantError(f"{self.label(node)} is dynamically quantized (quantize_dynamic); qloom imports "
                             f"statically quantized models (prepare/convert, prepare_fx/convert_fx or PT2E)")
        if self.state == "float":
            return self.prelude(node, k)
        if len(ins) != 1 or ins[0] is not self.cur:
            raise QuantError(f"{self.label(node)} takes {len(ins)} tensor inputs or a tensor other than the one "
                             f"before it: the model is not a chain: {CHAIN_ONLY}")
        if self.state == "deq":
            return self.float_op(node, k)
        self.code_op(node, k)

    # ---- before the input quantize: anything without weights, run by the model itself
    def prelude(self, node, k):
        if self.is_quantize(node, k):
            v = self.values[node]
            if v.qscheme() != torch.per_tensor_affine:
                raise QuantError(f"{self.label(node)}: the input must be quantized per tensor, got {v.qscheme()}")
            shape = tuple(v.shape[1:])
            self.chain.start(shape, common.CODE_TYPES[QDTYPES[v.dtype]], node.name)
            self.state, self.cur, self.input_node = "codes", node, node
        elif isinstance(k, nn.Module) and any(True for _ in k.parameters()):
            raise QuantError(f"float layer {self.label(node)} comes before the model quantizes its input; "
                             f"only the quantized part of a model can be imported")
        elif isinstance(self.values.get(node), torch.Tensor) and self.values[node].is_quantized:
            raise QuantError(f"{self.label(node)} makes a quantized tensor qloom does not know; supported: "
                             f"{SUPPORTED}")

    def is_quantize(self, node, k):
        if k == "quantize_per_tensor_dynamic":
            raise QuantError(f"{self.label(node)} quantizes dynamically (dynamic quantization); qloom imports "
                             f"statically quantized models")
        if k == "quantize_per_channel":
            raise QuantError(f"{self.label(node)}: activations quantized per channel are not supported")
        return isinstance(k, nnq.Quantize) or k == "quantize_per_tensor"

    # ---- on quantized tensors
    def code_op(self, node, k):
        v = self.values[node]
        if isinstance(k, (nniq.ConvAdd2d, nniq.ConvAddReLU2d)) or k in ("add", "add_relu", "cat", "mul"):
            raise QuantError(f"{self.label(node)}: quantized add/cat/mul (a residual or branch) is not supported: "
                             f"{CHAIN_ONLY}")
        if isinstance(k, nnq.DeQuantize) or k == "dequantize":
            self.state, self.segment, self.codes_node, self.deq_node = "deq", [], self.cur, node
            self.cur = node
            return
        if isinstance(k, (nnq.Linear, nnq.Conv2d)) and type(k) in (nnq.Linear, nniq.LinearReLU, nnq.Conv2d,
                                                                    nniq.ConvReLU2d, nniq.LinearLeakyReLU,
                                                                    nniq.LinearTanh):
            self.layer(node, k)
        elif is_maxpool(k):
            self.chain.maxpool(node.name, *self.maxpool_geometry(node, k, self.cur), rt_name=node.name)
        elif isinstance(k, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) or k in ("avg_pool2d", "adaptive_avg_pool2d",
                                                                          "mean"):
            self.avgpool(node, k)
        elif isinstance(k, ELEMENTWISE_MODULES) or k in ELEMENTWISE_FUNCS:
            table = self.code_table([node])
            self.chain.code_map(node.name, table, *self.out_code_info(node), rt_name=node.name)
        elif isinstance(k, nn.Flatten) or k in SHAPE_FUNCS:
            self.shape_op(node, self.cur, rt_name=node.name)
        else:
            raise QuantError(f"unsupported operation {self.label(node)} on a quantized tensor; supported: "
                             f"{SUPPORTED}")
        if not (isinstance(v, torch.Tensor) and v.is_quantized):
            raise QuantError(f"{self.label(node)} does not give a quantized tensor")
        self.cur = node

    def out_code_info(self, node):
        v = self.values[node]
        return qrange(v)[0], common.CODE_TYPES[QDTYPES[v.dtype]]

    def shape_op(self, node, src_node, rt_name=None):
        src, out = self.values[src_node], self.values[node]
        if tuple(out.shape) == tuple(src.shape):            # a no-op view or contiguous
            return
        if out.dim() != 2 or out.shape[0] != src.shape[0]:
            raise QuantError(f"{self.label(node)} reshapes {tuple(src.shape)} to {tuple(out.shape)}; only flattening "
                             f"to (batch, -1) is supported")
        self.chain.flatten(node.name, rt_name=rt_name)

    def pool_args(self, node, k, params):
        """The pool's parameters (MAX_POOL_PARAMS or AVG_POOL_PARAMS): the module's attributes, or the
        function's arguments as the node calls it (fx nodes among them evaluated), kernel and stride as pairs
        (stride = kernel where not given)."""
        if isinstance(k, nn.Module):
            p = {n: getattr(k, n, d) for n, d in params.items()}
        else:
            p = bind(params, [self.values.get(a, a) if isinstance(a, torch.fx.Node) else a for a in node.args],
                     node.kwargs)
        p["kernel_size"] = pair(p["kernel_size"])
        p["stride"] = pair(p["stride"] or p["kernel_size"])       # None or [] (torch.max_pool2d): the kernel
        return p

    def pool_geometry(self, node, src_node, p, unsupported):
        """(kernel, stride) of a pool with parameters p; refuses, naming the node and the values, where a
        parameter of `unsupported` is true (padding, dilation, ...) or ceil_mode changes the output size."""
        bad = {n: p[n] for n, why in unsupported.items() if why}
        if bad:
            raise QuantError(f"{self.label(node)}: pooling with {', '.join(f'{n}={v}' for n, v in bad.items())} is "
                             f"not supported (plain windows: padding 0, dilation 1, no divisor_override, no indices)")
        (kh, kw), (sh, sw) = ks, st = p["kernel_size"], p["stride"]
        h, w = self.values[src_node].shape[-2:]
        out, floor = tuple(self.values[node].shape[-2:]), ((h - kh) // sh + 1, (w - kw) // sw + 1)
        if p["ceil_mode"] and out != floor:
            raise QuantError(f"{self.label(node)}: ceil_mode=True changes the output size ({h}x{w} -> "
                             f"{out[0]}x{out[1]}, not {floor[0]}x{floor[1]}); not supported")
        return ks, st

    def maxpool_geometry(self, node, k, src_node):
        p = self.pool_args(node, k, MAX_POOL_PARAMS)
        return self.pool_geometry(node, src_node, p, {
            "padding": pair(p["padding"]) != (0, 0), "dilation": pair(p["dilation"]) != (1, 1),
            "return_indices": p["return_indices"]})

    def avgpool(self, node, k):
        x, y = self.values[self.cur], self.values[node]
        h, w = x.shape[-2:]
        if isinstance(k, nn.AdaptiveAvgPool2d) or k in ("adaptive_avg_pool2d", "mean"):
            if tuple(y.shape[2:]) not in ((1, 1), ()) or (k == "mean" and y.numel() != x.shape[0] * x.shape[1]):
                raise QuantError(f"{self.label(node)}: only global average pooling (output 1x1) is supported")
            ks = st = (h, w)
        else:
            p = self.pool_args(node, k, AVG_POOL_PARAMS)
            ks, st = self.pool_geometry(node, self.cur, p, {"padding": pair(p["padding"]) != (0, 0),
                                                            "divisor_override": p["divisor_override"] is not None})
        like, src = x, self.cur

        def run(codes):
            with torch.no_grad():
                out = self.eval.run([node], {src: quantized(codes, like)})[node]
            return out.int_repr().reshape(codes.shape[0], codes.shape[1], -1)[:, :, 0].numpy()

        cmin, cmax = qrange(x)
        probe = common.PoolProbe(run, ks, x.shape[1], (cmin, cmax), in_hw=(h, w))
        self.chain.avgpool(node.name, ks, st, probe, self.out_code_info(node)[1],
                           how=f"probed {self.kind_name(node)} on chosen window sums", rt_name=node.name)
        if y.dim() == 2:
            self.chain.flatten(node.name + ":flat", rt_name=node.name)

    def kind_name(self, node):
        k = self.kind(node)
        return type(k).__name__ if isinstance(k, nn.Module) else str(k)

    def layer(self, node, mod):
        x = self.values[self.cur]
        w = mod.weight()
        w_raw = w.int_repr().numpy().astype(np.int64)
        wzp = weight_zero_points(w)
        winfo = torch.iinfo(w.int_repr().dtype)
        if isinstance(mod, nnq.Conv2d):
            if mod.padding_mode != "zeros" or pair(mod.dilation) != (1, 1):
                raise QuantError(f"{self.label(node)}: dilation {mod.dilation} / padding_mode {mod.padding_mode!r} "
                                 f"not supported (dilation 1, zeros)")
            geom = common.Geometry(mod.in_channels, mod.out_channels, pair(mod.kernel_size), pair(mod.stride),
                                   pair(mod.padding), mod.groups, spatial=True, in_hw=tuple(x.shape[2:]))
        else:
            geom = common.Geometry(mod.in_features, mod.out_features)
        wdev = w_raw - wzp.reshape((-1,) + (1,) * (w_raw.ndim - 1))
        run = module_runner(mod, x, geom)
        probe = common.MatmulProbe(geom, run, w_raw, wzp, (winfo.min, winfo.max), x.q_zero_point(), qrange(x))
        out_min, out_type = self.out_code_info(node)
        how = f"probed {type(mod).__name__} on the {torch.backends.quantized.engine} engine"
        self.chain.matmul(node.name, wdev, geom, x.q_zero_point(), probe, out_type, how, rt_name=node.name)

    # ---- after a dequantize: float ops until the next quantize (or the output)
    def float_op(self, node, k):
        if self.is_requantize(node, k):
            return self.close_segment(node)
        if is_maxpool(k):
            self.maxpool_geometry(node, k, self.cur)      # what the IR's max pool cannot do is refused here, by name
        elif not (isinstance(k, ELEMENTWISE_MODULES + (nn.Flatten, nn.Softmax, nn.LogSoftmax))
                  or k in ELEMENTWISE_FUNCS | SHAPE_FUNCS | {"softmax", "log_softmax"}):
            raise QuantError(f"float operation {self.label(node)} after a dequantize: a float layer in the middle "
                             f"(or at the end) of a quantized model is not supported; quantize it too "
                             f"(supported: {SUPPORTED})")
        self.segment.append(node)
        self.cur = node

    def is_requantize(self, node, k):
        return isinstance(k, nnq.Quantize) or k == "quantize_per_tensor"

    def close_segment(self, node):
        """dequantize -> elementwise/flatten/max pool -> quantize: structural ops, then one code map."""
        src, pools = self.codes_node, []
        for n in self.segment:
            k = self.kind(n)
            if k in ("softmax", "log_softmax") or isinstance(k, (nn.Softmax, nn.LogSoftmax)):
                raise QuantError(f"{self.label(n)}: softmax between quantized layers is not supported")
            if is_maxpool(k):
                pools.append(self.maxpool_geometry(n, k, src))
                self.chain.maxpool(n.name, *pools[-1])
                src = n
            elif isinstance(k, nn.Flatten) or k in SHAPE_FUNCS:
                self.shape_op(n, src)
                src = n
        table = self.code_table([self.deq_node] + self.segment + [node], start=self.codes_node, pools=pools)
        self.chain.code_map(node.name, table, *self.out_code_info(node), rt_name=node.name)
        self.state, self.cur, self.segment = "codes", node, []

    def code_table(self, nodes, start=None, pools=()):
        """The runtime's output code for each input code: `nodes` run on constant maps, then checked
        to act element by element on random codes (in the memory format the model really has), after
        the max pools `pools` ((kernel, stride) each) among the nodes."""
        start = start or self.cur
        x = self.values[start]
        cmin, cmax = qrange(x)
        codes = np.arange(cmin, cmax + 1)
        probe = np.broadcast_to(codes.reshape((-1,) + (1,) * (x.dim() - 1)), (len(codes),) + tuple(x.shape[1:]))
        out = self.eval.run(nodes, {start: quantized(probe, x)})[nodes[-1]]
        out = out.int_repr().reshape(len(codes), -1).numpy().astype(np.int64)
        if not (out == out[:, :1]).all():
            raise QuantError(f"{self.label(nodes[-1])}: the runtime's output is not the same function of the code "
                             f"at every position (not elementwise); not supported")
        table = out[:, 0]
        rand = np.random.default_rng(0).integers(cmin, cmax + 1, size=(4,) + tuple(x.shape[1:]))
        got = self.eval.run(nodes, {start: quantized(rand, x)})[nodes[-1]].int_repr().numpy().reshape(4, -1)
        for ks, st in pools:
            rand = common.maxpool_nchw(rand, ks, st)
        if not np.array_equal(got, table[rand.reshape(4, -1) - cmin]):
            raise QuantError(f"{self.label(nodes[-1])} does not act element by element on this model's "
                             f"{'channels-last ' if not x.is_contiguous() else ''}tensors with the "
                             f"{torch.backends.quantized.engine} engine (measured: its outputs are permuted; a "
                             f"known case is qnnpack's quantized hardtanh/ReLU6 after a conv); its results cannot be "
                             f"reproduced by any elementwise stage. Fuse the activation into the conv, use ReLU, or "
                             f"another engine")
        return table

    def finish(self, node):
        if self.state == "float":
            raise QuantError("the model never quantizes its input (no QuantStub/quantize_per_tensor); qloom imports "
                             "models converted by torch.ao.quantization (convert or convert_fx)")
        if self.state == "codes":
            self.codes_node, self.tail = self.cur, []
        else:
            self.tail = [self.deq_node] + self.segment
            for n in self.segment:
                k = self.kind(n)
                if is_maxpool(k):
                    raise QuantError(f"{self.label(n)}: a float max pool after the last quantized layer is not "
                                     f"supported")
        self.output_node = single_output(node)
