"""fx helpers of the PyTorch int8 front end: running a converted model's graph node by node, tracing,
recording every runtime value, and making quantized tensors and weights for the probes."""
from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.ao.nn.quantized as nnq
import torch.fx
from torch import nn

from . import int8_common as common
from .base import QuantError

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


def single_output(node):
    """The value an FX graph's output node returns; a model with several outputs is refused."""
    out = node.args[0]
    if isinstance(out, (tuple, list)):
        if len(out) != 1:
            raise QuantError(f"the model returns {len(out)} outputs; qloom imports models with one output")
        out = out[0]
    return out


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


def bind(params: dict, args, kwargs) -> dict:
    """The values of a torch function's parameters as a node calls it with args/kwargs: `params` maps
    the names after the input tensor, in positional order, to their defaults. (inspect.signature cannot
    tell them: F.max_pool2d is a boolean-dispatch wrapper `(*args, **kwargs)`, F.avg_pool2d a builtin.)"""
    values = dict(params)
    values.update(zip(params, args[1:]))
    values.update(kwargs)
    return values


def pair(v, default=None):
    if v is None:
        return default
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


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
