"""The torch.fx walk that lowers a qloom.nn model to IR nodes (`_Lowering`, used by torch_nn.lower).

The walk runs the traced model once on the example input, then visits its graph in topological order:
each module or operation becomes IR nodes, and the modules between a quantized layer and its activation
quantizer are collected into that layer's float Tail (torch_nn_tail).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .. import ir
from ..nn import (BATCH_NORMS, DROPOUTS, BinaryAct, PoolTail, QTensor, QuantAct, QuantAdd, QuantConv2d, QuantInput,
                  QuantLinear, add_units, pool_geometry)
from .base import QuantError
from .torch_nn_tail import Tail, _lower_quantizer

TAIL_MODULES = BATCH_NORMS + DROPOUTS + (nn.ReLU,)
PASS_MODULES = DROPOUTS
SUPPORTED = ("QuantInput", "QuantLinear", "QuantConv2d", "QuantAct", "BinaryAct", "nn.BatchNorm1d",
             "nn.BatchNorm2d", "nn.MaxPool2d", "nn.AvgPool2d", "nn.AdaptiveAvgPool2d(1)", "nn.Flatten",
             "nn.Dropout", "nn.Identity", "nn.ReLU / F.relu (between a quantized layer and its activation quantizer)",
             "QuantAdd or + (a residual add of two quantized tensors)", "torch.cat (quantized maps, dim=1)")
_FLATTEN_METHODS = ("flatten", "view", "reshape")


def _module_desc(path, m):
    return f"'{path}' ({type(m).__module__}.{type(m).__qualname__})"


def _run_traced(module: torch.fx.GraphModule, example_input) -> dict:
    """Run the traced model once (eval mode, no grad) on the example input: every fx node's value by name.
    Whatever fails on the way (qloom.nn's own checks, or a module or operation that cannot take the
    quantized tensors qloom.nn passes between layers) is one QuantError naming that module or operation."""
    values = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            where = (f"module {_module_desc(n.target, module.get_submodule(n.target))}" if n.op == "call_module"
                     else f"operation '{n.name}'")
            try:
                out = super().run_node(n)
            except QuantError as e:
                raise QuantError(f"running the model on the example input failed in {where}: {e}") from None
            except Exception as e:  # noqa: BLE001 - a user's model: one line naming where it broke
                msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise QuantError(f"running the model on the example input failed in {where}: {type(e).__name__}: "
                                 f"{msg}. qloom lowers models built from: {', '.join(SUPPORTED)}") from None
            values[n.name] = out
            return out

    rec = Recorder(module)
    rec.extra_traceback = False          # keep the error one line (fx would append the node and a traceback)
    with torch.no_grad():
        rec.run(example_input)
    return values


@dataclass
class _Value:
    """What an fx node holds for the lowering: its IR tensor and the torch side's state there."""
    state: str | None              # None (the float input) | "quant" (codes) | "acc" (accumulator + tail) | "meta"
    cur: str | None = None
    cur_type: ir.TensorType | None = None
    tail: Tail | None = None
    layer_node: object = None
    last_quant: object = None      # the QuantAct / BinaryAct that made the codes
    perm: np.ndarray | None = None
    users: int = 0                 # consumers that took an "acc" value (its tail can only go one way)


class _AddRange:
    """Stands in for an ir.Add where the threshold search asks for its layer: the sum's range per
    channel. An add has no weight rows to negate, so a float tail after it that decreases in some
    channel (a negative batch-norm gamma) is refused."""

    def __init__(self, node: ir.Add, lo: int, hi: int, channels: int):
        self.node, self.name, self.lo, self.hi, self.c = node, node.name, lo, hi, channels

    def acc_bounds(self, in_dtype):
        return np.full(self.c, self.lo, dtype=np.int64), np.full(self.c, self.hi, dtype=np.int64)

    @property
    def weight(self):
        raise QuantError(f"the float chain after the residual add '{self.name}' decreases in some channels "
                         f"(a negative batch-norm gamma?); an add has no weights to negate, so this is not "
                         f"supported: put the batch norm before the add, or keep its gamma positive")


class _Lowering:
    """Walks the fx graph once in topological order. The graph may branch and join (residual adds,
    concatenation): every fx node gets a _Value; before an operation the walk loads its input's
    value into `cur`, `state`, `tail`, ... (the chain-era fields the module rules use), and stores
    the result as that node's value afterwards."""

    def __init__(self, model, example_input, options):
        self.model, self.options = model, options
        self.requantize_report = []         # per quantizer: Requantize or thresholds (requantize=True)
        self.example_input = example_input
        self.modules = dict(model.named_modules())
        self.nodes, self.types = [], {}
        self.state = None        # None (before QuantInput) | "quant" | "acc"
        self.cur = self.cur_type = None
        self.in_quant = self.input_type = None
        self.tail = self.layer_node = self.last_quant = None
        self.perm = None         # for a flattened map: torch (C, H, W) index of each IR element
        self.x_in = None         # the runtime input of the operation being lowered (a QTensor)
        self.values: dict = {}   # fx node name -> _Value
        self.names: set = set()  # IR node names taken (a module called twice gets a suffix)

    def add(self, node):
        self.cur_type = node.infer([self.types[t] for t in node.inputs])
        self.types[node.output] = self.cur_type
        self.nodes.append(node)
        self.cur = node.output

    def start_tail(self, node, layer, name, x, wq_rowsum, spatial):
        in_type = self.cur_type
        self.layer_node = node
        self.add(node)
        self.tail = Tail(layer, name, x.scale, layer.acc_is_wide(x.qtype, x.zero_point)
                         if hasattr(layer, "acc_is_wide") else True,
                         offset=-x.zero_point * wq_rowsum, in_type=in_type,
                         spatial=spatial)
        self.state = "acc"

    def need_quant(self, where, kind):
        if self.state != "quant":
            raise QuantError(f"{kind} {where} receives an unquantized float tensor (from "
                             f"'{self.tail.layer_name}' and the modules after it); put a QuantAct or "
                             f"BinaryAct before it")

    def module(self, target, m):
        where = _module_desc(target, m)
        if isinstance(m, QuantInput):
            if self.state is not None:
                raise QuantError(f"QuantInput {where} must be the first layer of the model")
            shape = tuple(self.example_input.shape[1:])
            if len(shape) == 3:
                shape = (shape[1], shape[2], shape[0])       # NCHW -> channels-last
            elif len(shape) != 1:
                raise QuantError(f"QuantInput {where}: inputs must be (batch, features) or (batch, C, H, W), "
                                 f"got {tuple(self.example_input.shape)}")
            self.input_type = ir.TensorType(shape, m.qtype)
            self.in_quant, self.state, self.cur, self.cur_type = m, "quant", "input", self.input_type
            self.types["input"] = self.input_type
            return
        if self.state is None:
            raise QuantError(f"{where} comes before any QuantInput: the model must start by quantizing its "
                             f"input with qloom.nn.QuantInput")
        if isinstance(m, QuantLinear):
            self.need_quant(where, "QuantLinear")
            if len(self.cur_type.shape) != 1:
                raise QuantError(f"QuantLinear {where} needs a vector per frame, got shape "
                                 f"{self.cur_type.shape}; add nn.Flatten before it")
            x = self.x_in
            wq = m.int_weight().numpy()
            if self.perm is not None:
                wq = wq[:, self.perm]                           # columns in the IR's (H, W, C) order
                self.perm = None
            node = ir.Dense(target, [self.cur], target + ":acc", weight=wq, wtype=m.wtype)
            self.start_tail(node, m, target, x, wq.sum(axis=1), spatial=False)
        elif isinstance(m, QuantConv2d):
            self.need_quant(where, "QuantConv2d")
            if len(self.cur_type.shape) != 3:
                raise QuantError(f"QuantConv2d {where} needs a (C, H, W) map per frame, got a vector")
            if m.dilation != (1, 1):
                raise QuantError(f"QuantConv2d {where}: dilation {m.dilation} is not supported (only 1)")
            x = self.x_in
            wq = m.int_weight().numpy().transpose(0, 2, 3, 1)   # (OC, KH, KW, C/g)
            node = ir.Conv2d(target, [self.cur], target + ":acc", weight=wq, wtype=m.wtype, stride=m.stride,
                             padding=m.pad, pad_value=m.pad_code(x), groups=m.groups)
            self.start_tail(node, m, target, x, wq.reshape(wq.shape[0], -1).sum(axis=1), spatial=True)
        elif isinstance(m, (QuantAct, BinaryAct)):
            if self.state != "acc":
                raise QuantError(f"{type(m).__name__} {where} re-quantizes an already quantized tensor; "
                                 f"only the output of a quantized layer or an average pool (after optional "
                                 f"batch norm) can be quantized")
            self.add(_lower_quantizer(target, self.cur, self.layer_node, self.tail, m, self.options,
                                      self.requantize_report))
            self.state, self.last_quant = "quant", m
        elif isinstance(m, nn.MaxPool2d):
            if self.state != "quant":
                raise QuantError(f"MaxPool2d {where} acts on a float accumulator; put it after the "
                                 f"activation quantizer")
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise QuantError(f"MaxPool2d {where}: only padding 0, dilation 1 and ceil_mode False are "
                                 f"supported")
            self.add(ir.MaxPool2d(target, [self.cur], target + ":out", kernel=m.kernel_size,
                                  stride=m.stride or m.kernel_size))
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            self.need_quant(where, type(m).__name__)
            x = self.x_in
            if isinstance(m, nn.AdaptiveAvgPool2d):
                k, st = pool_geometry(F.adaptive_avg_pool2d, x.value, (m.output_size,), {})
            else:
                k, st = pool_geometry(F.avg_pool2d, x.value, (m.kernel_size, m.stride, m.padding),
                                      {"ceil_mode": m.ceil_mode, "divisor_override": m.divisor_override})
            node = ir.SumPool(target, [self.cur], target + ":acc", kernel=k, stride=st)
            c = self.cur_type.shape[-1]
            self.start_tail(node, PoolTail(k[0] * k[1]), target, x, np.full(c, k[0] * k[1]), spatial=True)
        elif isinstance(m, nn.Flatten):
            self.flatten(target)
        elif isinstance(m, PASS_MODULES):
            pass
        elif isinstance(m, BATCH_NORMS) and not m.track_running_stats:
            raise QuantError(f"{where} has track_running_stats=False: in eval mode it normalises with each batch's "
                             f"own statistics, so a frame's output depends on the rest of its batch and cannot be "
                             f"fixed in hardware; train it with track_running_stats=True")
        elif isinstance(m, TAIL_MODULES) and self.state == "acc":
            self.tail = dataclasses.replace(self.tail, modules=self.tail.modules + [m])
        elif isinstance(m, TAIL_MODULES):
            raise QuantError(f"{where} acts on an already quantized tensor; it must sit between a quantized "
                             f"layer and its activation quantizer")
        else:
            raise QuantError(f"unsupported module {where}; supported: {', '.join(SUPPORTED)}")

    def flatten(self, name):
        if self.state == "acc":
            raise QuantError(f"flatten at '{name}' acts on a float accumulator; flatten after the activation "
                             f"quantizer")
        if len(self.cur_type.shape) == 3:
            h, w, c = self.cur_type.shape
            # IR element (h, w, c) is torch element c*H*W + h*W + w
            self.perm = (np.arange(c)[None, None, :] * h * w + np.arange(h)[:, None, None] * w
                         + np.arange(w)[None, :, None]).reshape(-1)
            self.add(ir.Flatten(name, [self.cur], name + ":out"))

    # ------------------------------------------------------------ the walk over a DAG
    def load(self, v: _Value):
        self.state, self.cur, self.cur_type, self.tail = v.state, v.cur, v.cur_type, v.tail
        self.layer_node, self.last_quant, self.perm = v.layer_node, v.last_quant, v.perm

    def store(self) -> _Value:
        return _Value(self.state, self.cur, self.cur_type, self.tail, self.layer_node, self.last_quant, self.perm)

    def take(self, arg, what: str) -> _Value:
        """The value of an fx argument; an accumulator's float tail may have only one consumer."""
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.values:
            raise QuantError(f"{what}: an input is not a tensor of the model ({arg!r})")
        v = self.values[arg.name]
        if v.state == "acc":
            v.users += 1
            if v.users > 1:
                raise QuantError(f"{what}: the float output of '{v.tail.layer_name}' (and the modules after it) "
                                 f"feeds several operations; quantize it once (QuantAct or BinaryAct) and "
                                 f"branch after the quantizer")
        return v

    def unique(self, name: str) -> str:
        """An IR node name not taken yet: a module called twice (a shared quantizer) gets '@k'."""
        k, out = 1, name
        while out in self.names:
            out, k = f"{name}@{k}", k + 1
        self.names.add(out)
        return out

    def run(self, traced_graph):
        gm = torch.fx.GraphModule(self.model, traced_graph)
        runtime = _run_traced(gm, self.example_input)
        out = None
        for fx_node in traced_graph.nodes:
            op, target = fx_node.op, fx_node.target
            if op == "placeholder":
                if out is not None or self.values:
                    raise QuantError(f"the model takes several inputs ('{fx_node.name}'); qloom takes one")
                self.values[fx_node.name] = _Value(None)
                continue
            if op == "output":
                out = fx_node.args[0]
                continue
            args = [a for a in fx_node.args if isinstance(a, torch.fx.Node)]
            self.x_in = runtime.get(args[0].name) if args else None
            if op == "call_module":
                m = self.modules[target]
                if isinstance(m, QuantAdd):
                    v = self.residual_add(fx_node, args, runtime, _module_desc(target, m))
                else:
                    self.load(self.take(args[0], _module_desc(target, m)) if args else _Value(None))
                    self.module(self.unique(target), m)
                    v = self.store()
            elif op in ("call_method", "call_function"):
                v = self.function(fx_node, args, runtime)
            else:
                raise QuantError(f"unsupported graph node '{fx_node.name}' ({op})")
            self.values[fx_node.name] = v
        if not isinstance(out, torch.fx.Node):
            raise QuantError(f"the model must return one tensor, not {type(out).__name__}")
        self.load(self.values[out.name])
        if self.state is None:
            raise QuantError("the model has no QuantInput; start the model with qloom.nn.QuantInput")
        self.nodes = _live(self.nodes, self.cur)

    def function(self, fx_node, args, runtime) -> _Value:
        """A call_function / call_method node: shape queries, flatten, relu on a float tail, add, cat."""
        target = fx_node.target
        fname = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        what = f"operation '{fname}' at '{fx_node.name}'"
        if fname in ("size", "dim", "getattr"):
            return _Value("meta")
        if fname in ("add", "iadd", "__add__") and len(args) == 2 and not fx_node.kwargs:
            return self.residual_add(fx_node, args, runtime, what)
        if fname == "cat":
            return self.concat(fx_node, runtime, what)
        self.load(self.take(args[0], what))
        if fname in _FLATTEN_METHODS:
            self.flatten(self.unique(fx_node.name))
        elif fname == "relu" and self.state == "acc":
            self.tail = dataclasses.replace(self.tail, modules=self.tail.modules + [nn.ReLU()])
        else:
            raise QuantError(f"unsupported {what} in the model's forward(); supported: {', '.join(SUPPORTED)}")
        return self.store()

    def residual_add(self, fx_node, args, runtime, what) -> _Value:
        """a + b of two quantized tensors -> ir.Add (exact, in the unit of the smaller scale); the result is
        an accumulator whose float tail (ReLU, batch norm) ends at the next quantizer, as a layer's does."""
        if len(args) != 2:
            raise QuantError(f"{what}: a residual add takes two tensors, got {len(args)}")
        va, vb = (self.take(a, what) for a in args)
        xa, xb = (runtime[a.name] for a in args)
        for k, (v, x) in enumerate(((va, xa), (vb, xb))):
            if v.state != "quant" or not isinstance(x, QTensor):
                raise QuantError(f"{what}: input {k} ('{args[k].name}') is not a quantized tensor; a residual add "
                                 f"takes two quantized tensors (put a QuantAct or BinaryAct on that branch)")
            if v.perm is not None:
                raise QuantError(f"{what}: input {k} is a flattened feature map; add the maps before flattening")
        unit, ka, kb = add_units(xa.scale, xb.scale, what)
        name = self.unique(fx_node.target if fx_node.op == "call_module" else fx_node.name)
        node = ir.Add(name, [va.cur, vb.cur], name + ":acc", coeffs=(ka, kb))
        self.load(va)
        self.add(node)
        c = self.cur_type.shape[-1]
        lo, hi = node.bounds([va.cur_type.dtype, vb.cur_type.dtype])
        self.layer_node = _AddRange(node, lo, hi, c)
        offset = np.full(c, -(ka * xa.zero_point + kb * xb.zero_point), dtype=np.int64)
        self.tail = Tail(PoolTail(1), name, unit, True, offset=offset, in_type=self.cur_type,
                         spatial=len(self.cur_type.shape) == 3)
        self.state, self.perm = "acc", None
        return self.store()

    def concat(self, fx_node, runtime, what) -> _Value:
        """torch.cat of quantized maps (or unflattened vectors) along channels -> ir.Concat."""
        tensors = fx_node.args[0] if fx_node.args else fx_node.kwargs.get("tensors")
        if not isinstance(tensors, (list, tuple)):
            raise QuantError(f"{what}: expects a list of tensors")
        vals = [self.take(t, what) for t in tensors]
        for k, v in enumerate(vals):
            if v.state != "quant":
                raise QuantError(f"{what}: input {k} is not a quantized tensor; concatenate quantized tensors "
                                 f"(all quantized by the same quantizer module)")
            if v.perm is not None:
                raise QuantError(f"{what}: input {k} is a flattened feature map; concatenate the maps first")
        if not isinstance(runtime[fx_node.name], QTensor):
            raise QuantError(f"{what}: did not give a quantized tensor (concatenate QTensors along dim=1)")
        name = self.unique(fx_node.name)
        self.load(vals[0])
        self.add(ir.Concat(name, [v.cur for v in vals], name + ":out"))
        return self.store()


def _live(nodes: list, output: str) -> list:
    """The nodes the output depends on, in order (a branch whose result the model drops needs no hardware)."""
    need, keep = {output}, []
    for n in reversed(nodes):
        if n.output in need:
            keep.append(n)
            need.update(n.inputs)
    return keep[::-1]
