"""PyTorch int8 front end: models converted by PyTorch's quantization API, eager and FX modes
(fbgemm, qnnpack, x86, onednn engines); PT2E graphs go to torch_int8_pt2e.

The converted model is walked as an fx graph (eager models are traced; quantized modules are
leaves). Each quantized Linear/Conv2d becomes a Dense/Conv2d on the input codes, whose
requantization (scales, bias, zero points, fused ReLU, and any relu / dequantize->quantize
steps after it) is found by probing the module's own kernel on chosen accumulators
(int8_common). Quantized max pools are exact on codes; average pools are probed the same way.
"""
from __future__ import annotations

import contextlib
import copy
import inspect

import numpy as np
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import int8_common as common
from .base import Frontend, Lowered, QuantError, SourceOutput

QDTYPES = {torch.quint8: "uint8", torch.qint8: "int8"}
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nnq.ReLU6, nn.Hardtanh, nn.LeakyReLU, nnq.LeakyReLU, nn.ELU, nnq.ELU,
                       nn.Sigmoid, nnq.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Identity, nn.Dropout, nnq.Dropout)
ELEMENTWISE_FUNCS = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "clamp", "clamp_", "leaky_relu", "elu",
                     "sigmoid", "tanh", "hardsigmoid", "dropout", "contiguous", "identity"}
SHAPE_FUNCS = {"flatten", "view", "reshape"}
SHAPE_QUERIES = {"size", "dim", "getattr", "getitem"}
SUPPORTED = ("QuantStub/Quantize, DeQuantStub/DeQuantize, quantized Linear (+ReLU), Conv2d (+ReLU; stride, "
             "padding, groups), ReLU, ReLU6, Hardtanh, LeakyReLU, Sigmoid, Tanh, clamp, MaxPool2d, AvgPool2d, "
             "AdaptiveAvgPool2d(1), mean over H and W, flatten/view/reshape to (batch, -1), Dropout, Identity")


@contextlib.contextmanager
def engine(name):
    """Run under torch.backends.quantized.engine = name (the engine the model was converted for)."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


def node_label(node, gm):
    """'name' (what it is) for messages."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return f"'{node.target}' ({type(m).__module__}.{type(m).__qualname__})"
    t = node.target
    return f"'{node.name}' ({getattr(t, '__name__', t) if not isinstance(t, str) else t})"


def target_name(node) -> str:
    t = node.target
    if isinstance(t, str):
        return t
    name = getattr(t, "__name__", str(t))
    return name.split(".")[0] if name.endswith(("default", "Tensor", "int", "using_ints")) else name


class FxEval:
    """Evaluates nodes of an fx graph on chosen values (the model's own ops, nothing re-implemented)."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm

    def value(self, node, env):
        if node in env:
            return env[node]
        if node.op == "placeholder":
            raise QuantError(f"internal error: evaluating '{node.name}' needs the model's input")
        args = torch.fx.node.map_arg(node.args, lambda n: self.value(n, env))
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self.value(n, env))
        if node.op == "get_attr":
            out = self.gm
            for part in node.target.split("."):
                out = getattr(out, part)
        elif node.op == "call_module":
            out = self.gm.get_submodule(node.target)(*args, **kwargs)
        elif node.op == "call_function":
            out = node.target(*args, **kwargs)
        elif node.op == "call_method":
            out = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            raise QuantError(f"internal error: cannot evaluate '{node.name}' ({node.op})")
        env[node] = out
        return out

    def run(self, nodes, env):
        """Evaluate every node of `nodes` with `env` preset; returns env."""
        with torch.no_grad():
            for n in nodes:
                self.value(n, env)
        return env


def trace(model) -> torch.fx.GraphModule:
    if isinstance(model, torch.fx.GraphModule):
        return model
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:
        raise QuantError(f"the model could not be traced with torch.fx ({type(e).__name__}: {e}); qloom imports "
                         f"eager models whose forward() is a plain chain of modules") from None


def record(gm, example_input) -> dict:
    """Every node's value on the example input."""
    env = {}
    ph = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(ph) != 1:
        raise QuantError(f"the model takes {len(ph)} inputs; qloom imports models with one input")
    env[ph[0]] = torch.as_tensor(example_input, dtype=torch.float32)
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    try:
        return FxEval(gm).run(nodes, env)
    except QuantError:
        raise
    except Exception as e:
        raise QuantError(f"running the quantized model on the example input failed: {type(e).__name__}: {e}") from None


def qrange(t) -> tuple[int, int]:
    info = torch.iinfo(t.int_repr().dtype)
    return info.min, info.max


def quantized(codes: np.ndarray, like) -> torch.Tensor:
    """A per-tensor quantized tensor holding `codes` with the qparams and memory format of `like`
    (a quantized conv answers channels-last tensors, and some kernels treat those differently)."""
    data = torch.from_numpy(np.ascontiguousarray(codes)).to(like.int_repr().dtype)
    q = torch._make_per_tensor_quantized_tensor(data, like.q_scale(), like.q_zero_point())
    if like.dim() == 4 and q.dim() == 4 and not like.is_contiguous() and \
            like.is_contiguous(memory_format=torch.channels_last):
        q = q.contiguous(memory_format=torch.channels_last)
    return q


def weight_like(w_raw: np.ndarray, like) -> torch.Tensor:
    """A quantized weight tensor with raw values w_raw and the qparams of the module's weight `like`."""
    data = torch.from_numpy(np.ascontiguousarray(w_raw)).to(like.int_repr().dtype)
    if like.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return torch._make_per_channel_quantized_tensor(data, like.q_per_channel_scales(),
                                                        like.q_per_channel_zero_points(), like.q_per_channel_axis())
    return torch._make_per_tensor_quantized_tensor(data, like.q_scale(), like.q_zero_point())


def weight_zero_points(w) -> np.ndarray:
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if w.q_per_channel_axis() != 0:
            raise QuantError(f"per-channel weights quantized along axis {w.q_per_channel_axis()}; only 0 "
                             f"(output channels) is supported")
        return w.q_per_channel_zero_points().numpy().astype(np.int64)
    return np.array([w.q_zero_point()], dtype=np.int64)


def bind(fn, args, kwargs, names):
    """Values of the named parameters of torch function `fn` as called with args/kwargs."""
    try:
        b = inspect.signature(fn).bind(*args, **kwargs)
        b.apply_defaults()
        return [b.arguments.get(n) for n in names]
    except (TypeError, ValueError):
        params = dict(zip(names, args[1:]))
        params.update(kwargs)
        return [params.get(n) for n in names]


def pair(v, default=None):
    if v is None:
        return default
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


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
                             f"before it: the model is not a chain. qloom's IR is a chain today; residual adds and "
                             f"branches (a DAG with an Add node) come in a later release")
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
            raise QuantError(f"{self.label(node)}: quantized add/cat/mul (a residual or branch) is not supported: the "
                             f"IR is a chain today; a DAG with an Add node comes in a later release")
        if isinstance(k, nnq.DeQuantize) or k == "dequantize":
            self.state, self.segment, self.codes_node, self.deq_node = "deq", [], self.cur, node
            self.cur = node
            return
        if isinstance(k, (nnq.Linear, nnq.Conv2d)) and type(k) in (nnq.Linear, nniq.LinearReLU, nnq.Conv2d,
                                                                    nniq.ConvReLU2d, nniq.LinearLeakyReLU,
                                                                    nniq.LinearTanh):
            self.layer(node, k)
        elif isinstance(k, (nn.MaxPool2d, nnq.MaxPool2d)) or k == "max_pool2d":
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

    def maxpool_geometry(self, node, k, src_node):
        if isinstance(k, nn.Module):
            ks, st, pad, dil, ceil = k.kernel_size, k.stride, k.padding, k.dilation, k.ceil_mode
        else:
            args = [self.values.get(a, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
            ks, st, pad, dil, ceil = bind(F.max_pool2d, args, node.kwargs,
                                          ["kernel_size", "stride", "padding", "dilation", "ceil_mode"])
        ks = pair(ks)
        if pair(pad, (0, 0)) != (0, 0) or pair(dil, (1, 1)) != (1, 1):
            raise QuantError(f"{self.label(node)}: max pooling with padding or dilation is not supported")
        st = pair(st) or ks
        if ceil and self.values[node].shape[-2:] != self._pool_out(src_node, ks, st):
            raise QuantError(f"{self.label(node)}: ceil_mode=True changes the output size; not supported")
        return ks, st

    def _pool_out(self, src_node, ks, st):
        h, w = self.values[src_node].shape[-2:]
        return torch.Size(((h - ks[0]) // st[0] + 1, (w - ks[1]) // st[1] + 1))

    def avgpool(self, node, k):
        x, y = self.values[self.cur], self.values[node]
        h, w = x.shape[-2:]
        if isinstance(k, nn.AdaptiveAvgPool2d) or k in ("adaptive_avg_pool2d", "mean"):
            if tuple(y.shape[2:]) not in ((1, 1), ()) or (k == "mean" and y.numel() != x.shape[0] * x.shape[1]):
                raise QuantError(f"{self.label(node)}: only global average pooling (output 1x1) is supported")
            ks = st = (h, w)
        else:
            if isinstance(k, nn.Module):
                ks, st, pad, ceil, div = k.kernel_size, k.stride, k.padding, k.ceil_mode, k.divisor_override
            else:
                args = [self.values.get(a, a) if isinstance(a, torch.fx.Node) else a for a in node.args]
                ks, st, pad, ceil, div = bind(F.avg_pool2d, args, node.kwargs,
                                              ["kernel_size", "stride", "padding", "ceil_mode", "divisor_override"])
            ks = pair(ks)
            st = pair(st) or ks
            if pair(pad, (0, 0)) != (0, 0) or div is not None:
                raise QuantError(f"{self.label(node)}: average pooling with padding or divisor_override is not "
                                 f"supported")
            if ceil and y.shape[-2:] != self._pool_out(self.cur, ks, st):
                raise QuantError(f"{self.label(node)}: ceil_mode=True changes the output size; not supported")
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
        ok = isinstance(k, ELEMENTWISE_MODULES + (nn.Flatten, nn.MaxPool2d)) or k in ELEMENTWISE_FUNCS | \
            SHAPE_FUNCS | {"max_pool2d", "softmax", "log_softmax"} or isinstance(k, (nn.Softmax, nn.LogSoftmax))
        if not ok:
            raise QuantError(f"float operation {self.label(node)} after a dequantize: a float layer in the middle "
                             f"(or at the end) of a quantized model is not supported; quantize it too "
                             f"(supported: {SUPPORTED})")
        self.segment.append(node)
        self.cur = node

    def is_requantize(self, node, k):
        return isinstance(k, nnq.Quantize) or k == "quantize_per_tensor"

    def close_segment(self, node):
        """dequantize -> elementwise/flatten/max pool -> quantize: structural ops, then one code map."""
        src = self.codes_node
        for n in self.segment:
            k = self.kind(n)
            if k in ("softmax", "log_softmax") or isinstance(k, (nn.Softmax, nn.LogSoftmax)):
                raise QuantError(f"{self.label(n)}: softmax between quantized layers is not supported")
            if isinstance(k, nn.MaxPool2d) or k == "max_pool2d":
                self.chain.maxpool(n.name, *self.maxpool_geometry(n, k, src))
                src = n
            elif isinstance(k, nn.Flatten) or k in SHAPE_FUNCS:
                self.shape_op(n, src)
                src = n
        table = self.code_table([self.deq_node] + self.segment + [node], start=self.codes_node)
        self.chain.code_map(node.name, table, *self.out_code_info(node), rt_name=node.name)
        self.state, self.cur, self.segment = "codes", node, []

    def code_table(self, nodes, start=None):
        """The runtime's output code for each input code: `nodes` run on constant maps, then checked
        to act element by element on random codes (in the memory format the model really has)."""
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
                if isinstance(k, nn.MaxPool2d) or k == "max_pool2d":
                    raise QuantError(f"{self.label(n)}: a float max pool after the last quantized layer is not "
                                     f"supported")
        out = node.args[0]
        if isinstance(out, (tuple, list)):
            if len(out) != 1:
                raise QuantError(f"the model returns {len(out)} outputs; qloom imports models with one output")
            out = out[0]
        self.output_node = out


def module_runner(mod, x_like, geom: common.Geometry):
    """run(w_raw, x_codes) -> codes at the probe site, for a copy of `mod` holding weights w_raw."""
    copies = {}
    _, _, _, _, oh0, ow0 = geom.site()
    bias = mod.bias()

    def run(w_raw, x):
        key = w_raw.tobytes()
        if key not in copies:
            m = copy.deepcopy(mod)
            m.set_weight_bias(weight_like(w_raw, mod.weight()), bias)
            copies[key] = m
        with torch.no_grad():
            y = copies[key](quantized(x, x_like)).int_repr()
        return (y[:, :, oh0, ow0] if geom.spatial else y).numpy()
    return run


class TorchInt8(Frontend):
    """The float side of a converted torch model: its own input quantizer, dequantize and forward."""
    kind = "torch-int8"

    def __init__(self, gm, walk: _Walk, api: str, engine_name: str, example_shape):
        self.model, self.gm, self.api, self.engine = gm, gm, api, engine_name
        self.walk = walk
        self.eval = FxEval(gm)
        self.placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
        self.example_shape = tuple(example_shape)
        self.in_like = walk.values[walk.input_node]
        self.out_like = walk.values[walk.codes_node]
        self.aliases = walk.chain.aliases
        self.report = walk.chain.report
        self.exact = not any(r.get("not_a_function_of_the_sum") for r in self.report)

    def _run(self, x_float, nodes):
        x = torch.as_tensor(np.asarray(x_float), dtype=torch.float32)
        with engine(self.engine), torch.no_grad():
            env = self.eval.run(nodes, {self.placeholder: x})
        return env

    @staticmethod
    def codes_of(t) -> np.ndarray:
        """A runtime tensor's integer codes."""
        return (t.int_repr() if t.is_quantized else t).numpy().astype(np.int64)

    @staticmethod
    def tensor_of(codes, like):
        """Codes as the runtime's tensor (like `like`)."""
        return quantized(codes, like)

    def quantize_input(self, x_float) -> np.ndarray:
        q = self._run(x_float, [self.walk.input_node])[self.walk.input_node]
        return common.to_ir_layout(self.codes_of(q), self.aliases[self.walk.input_node.name][1])

    def dequantize(self, y_int) -> np.ndarray:
        y = common.from_ir_layout(y_int, self._out_layout(), self.out_like.shape[1:])
        if not self.walk.tail:
            t = self.tensor_of(y, self.out_like)
            return (t.dequantize() if t.is_quantized else t).numpy()
        with engine(self.engine), torch.no_grad():
            env = self.eval.run(self.walk.tail, {self.walk.codes_node: self.tensor_of(y, self.out_like)})
        return env[self.walk.tail[-1]].numpy()

    def _out_layout(self):
        return self.aliases[self.walk.codes_node.name][1]

    def layer_codes(self, x_float) -> dict:
        """Runtime codes of every tensor the IR also holds, in the IR's layout: {IR tensor: codes}."""
        nodes = [n for n in self.gm.graph.nodes if n.name in self.aliases]
        env = self._run(x_float, nodes)
        return {self.aliases[n.name][0]: common.to_ir_layout(self.codes_of(env[n]), self.aliases[n.name][1])
                for n in nodes}

    def source_outputs(self, x_float, argmax: bool) -> SourceOutput:
        if argmax:
            out = self._run(x_float, [self.walk.output_node])[self.walk.output_node]
            out = out[0] if isinstance(out, (tuple, list)) else out
            out = out.dequantize() if out.is_quantized else out
            return SourceOutput("labels", out.flatten(1).argmax(dim=1).numpy()[:, None])
        q = self._run(x_float, [self.walk.codes_node])[self.walk.codes_node]
        return SourceOutput("codes", common.to_ir_layout(self.codes_of(q), self._out_layout()))

    def sample_inputs(self, n: int, seed: int = 0) -> np.ndarray:
        codes = common.sample_codes(n, self.in_like.shape[1:], *self.input_range(), seed=seed)
        x = self.dequantize_input(codes)
        if x.size // n != int(np.prod(self.example_shape[1:])):
            raise QuantError("the model transforms its input before quantizing it; give example_input")
        return x.reshape((n,) + self.example_shape[1:])

    def input_range(self):
        return qrange(self.in_like)

    def dequantize_input(self, codes):
        return quantized(codes, self.in_like).dequantize().numpy()

    def argmax_refusal(self) -> str | None:
        ok = ("softmax", "log_softmax", "_softmax", "_log_softmax", "flatten", "view", "reshape", "dequantize",
              "dequantize_per_tensor", "contiguous")
        for n in self.walk.tail:
            k = self.walk.kind(n)
            if not (isinstance(k, (nn.Softmax, nn.LogSoftmax, nn.Flatten, nnq.DeQuantize, nn.Identity)) or k in ok):
                return (f"the model ends in float operation {node_label(n, self.gm)} after its last quantized layer; "
                        f"an argmax over the codes could pick another class")
        return None

    def describe(self) -> dict:
        return {"frontend": self.kind, "api": self.api, "engine": self.engine,
                "requantization": common.describe_report(self.report), "layers": self.report}


def lower(model, example_input=None, name: str = "qloom", requantize: bool = False, method: str = "auto",
          **options) -> Lowered:
    """Lower a model converted by torch.ao.quantization (eager/FX) or torchao PT2E to the IR.

    method: 'auto' (a fixed-point Requantize where it is exact, else thresholds), 'thresholds' or
    'requantize' (an error where no exact Requantize exists). `requantize` is accepted for API
    symmetry: int8 requantization is always exact here.
    """
    if example_input is None:
        raise QuantError("from_torch_quantized needs example_input (a batch of float inputs)")
    if options:
        raise QuantError(f"unknown option(s) for the torch-int8 front end: {', '.join(sorted(options))}")
    gm = trace(model)
    is_pt2e = any(n.op == "call_function" and "quantized_decomposed" in str(n.target) or "torchao" in str(n.target)
                  for n in gm.graph.nodes)
    if is_pt2e:                          # exported graphs refuse .eval(); they are in eval form already
        from . import torch_int8_pt2e
        return torch_int8_pt2e.lower(gm, example_input, name=name, method=method)
    if not any(isinstance(gm.get_submodule(n.target), nnq.Quantize) if n.op == "call_module" else
               target_name(n) in ("quantize_per_tensor", "quantize_per_tensor_dynamic") for n in gm.graph.nodes
               if n.op in ("call_module", "call_function")):
        dynamic = any(".dynamic" in type(m).__module__ for m in gm.modules())
        raise QuantError("the model is dynamically quantized (quantize_dynamic); qloom imports statically quantized "
                         "models" if dynamic else "the model never quantizes its input (no QuantStub/quantize_per_"
                         "tensor): give a model converted by torch.ao.quantization (convert, convert_fx) or PT2E")
    model.eval()
    eng = torch.backends.quantized.engine
    with engine(eng):
        values = record(gm, example_input)
        walk = _Walk(gm, values, name, method)
        for node in gm.graph.nodes:
            walk.step(node)
        graph = walk.chain.finish()
    api = "fx" if isinstance(model, torch.fx.GraphModule) else "eager"
    return Lowered(graph, TorchInt8(gm, walk, api, eng, torch.as_tensor(example_input).shape))

