"""Torch front end: lowers a model of qloom.nn layers to the integer IR (torch.fx).

A quantized layer (QuantLinear, QuantConv2d) or an average pool starts an
accumulator; the modules after it up to the next activation quantizer (batch
norm, dropout, identity, ReLU) form its float *tail*; the quantizer ends it.
The tail is monotone in the accumulator, so each output code's threshold is
found by binary search, evaluating the module's own eval-mode code on integer
accumulators. The IR then equals the torch eval model bit for bit, float ties
included. Feature maps are channels-last in the IR: conv weights are
transposed, and a Dense after a Flatten has its columns permuted so the IR
computes what the NCHW torch model computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from . import ir
from .nn import (BinaryAct, PoolTail, QuantAct, QuantConv2d, QuantError, QuantInput, QuantLinear,
                 pool_geometry)

QUANT_LAYERS = (QuantLinear, QuantConv2d)
TAIL_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.ReLU)
PASS_MODULES = (nn.Dropout, nn.Dropout2d, nn.Identity)
SUPPORTED = ("QuantInput", "QuantLinear", "QuantConv2d", "QuantAct", "BinaryAct", "nn.BatchNorm1d",
             "nn.BatchNorm2d", "nn.MaxPool2d", "nn.AvgPool2d", "nn.AdaptiveAvgPool2d(1)", "nn.Flatten",
             "nn.Dropout", "nn.Identity", "nn.ReLU (between a quantized layer and its activation quantizer)")
_FLATTEN_METHODS = ("flatten", "view", "reshape")


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (QuantInput, QuantAct, BinaryAct) + QUANT_LAYERS) or super().is_leaf_module(m, qualname)


@dataclass
class Tail:
    """An accumulator's float tail: the layer that made it and the modules after it."""
    layer: object                       # has acc_to_float(acc, in_scale, wide)
    layer_name: str
    in_scale: torch.Tensor
    wide: bool
    modules: list = field(default_factory=list)
    sign: np.ndarray | None = None      # per channel: +1, or -1 where the IR negated the weights
    offset: np.ndarray | None = None    # torch acc = sign * IR acc + offset (input zero point)
    in_type: ir.TensorType | None = None
    spatial: bool = False               # the torch tail runs on NCHW maps

    def float_out(self, acc_ir) -> torch.Tensor:
        """The tail's float output for IR accumulators (..., C), channels last."""
        a = torch.as_tensor(np.asarray(acc_ir))
        shape = a.shape
        a = a.reshape(-1, shape[-1])
        if self.spatial:
            a = a[:, :, None, None]
        with torch.no_grad():
            y = self.layer.acc_to_float(self.torch_acc_nd(a), self.in_scale, self.wide)
            for m in self.modules:
                y = m(y)
        return y.reshape(shape)

    def torch_acc_nd(self, a):
        ext = (1,) * (a.dim() - 2)
        return a * torch.as_tensor(self.sign).reshape(1, -1, *ext) + torch.as_tensor(self.offset).reshape(1, -1, *ext)


def _derive_thresholds(code_fn, lo, hi, n):
    """T[c, k] = least a in [lo_c, hi_c] with code_fn(a)[c] >= k + 1, else hi_c + 1.

    code_fn maps an int64 (M, C) matrix of accumulators to counts 0..n; it must be
    non-decreasing in each column. All (k, c) are searched at once.
    """
    c = lo.shape[0]
    target = np.arange(1, n + 1)[:, None]
    L = np.broadcast_to(lo, (n, c)).copy()
    H = np.broadcast_to(hi + 1, (n, c)).copy()
    while (L < H).any():
        mid = (L + H) // 2
        pred = code_fn(mid) >= target
        active = L < H
        H = np.where(active & pred, mid, H)
        L = np.where(active & ~pred, mid + 1, L)
    return L.T.copy()


def _channel_bounds(node, in_type):
    if isinstance(node, ir.SumPool):
        n = node.kernel[0] * node.kernel[1]
        c = in_type.shape[-1]
        return np.full(c, n * in_type.dtype.min), np.full(c, n * in_type.dtype.max)
    return node.acc_bounds(in_type.dtype)


def _lower_quantizer(name, acc_tensor, layer_node, tail: Tail, act, options):
    """Thresholds (or a Requantize) for the tail ending in quantizer `act`; fixes row signs."""
    bipolar_out = act.qtype is ir.Bipolar
    base = -1 if bipolar_out else act.qtype.min
    n = 1 if bipolar_out else act.qtype.max - act.qtype.min

    def counts(acc_ir):
        code = act.codes(tail.float_out(acc_ir)).numpy()
        return (code + 1) // 2 if bipolar_out else code - base

    lo, hi = _channel_bounds(layer_node, tail.in_type)
    ends = counts(np.stack([lo, hi]))
    neg = ends[1] < ends[0]
    if neg.any():
        # decreasing channels: negate their weights so the IR accumulator runs the other way
        if isinstance(layer_node, ir.SumPool):
            raise QuantError(f"'{name}': the float tail after average pooling '{tail.layer_name}' decreases "
                             f"in channels {np.flatnonzero(neg)[:8].tolist()} (negative scale or batch-norm "
                             f"gamma); pooled sums cannot be negated, so this is not supported")
        tail.sign = np.where(neg, -1, 1)
        w = layer_node.weight
        layer_node.weight = w * tail.sign.reshape((-1,) + (1,) * (w.ndim - 1))
        if isinstance(layer_node.wtype, ir.Int) and not ir.values_in(layer_node.wtype, layer_node.weight).all():
            layer_node.wtype = ir.Int(layer_node.wtype.bits + 1, True)    # -(-2**(b-1)) needs one more bit
        lo, hi = _channel_bounds(layer_node, tail.in_type)
    if options.get("requantize") and not bipolar_out and act.qtype.bits >= 5:
        return _requantize_node(name, acc_tensor, tail, act, lo, hi)
    t = _derive_thresholds(counts, lo, hi, n)
    return ir.MultiThreshold(name, [acc_tensor], name + ":out", thresholds=t, out_type=act.qtype, base=base)


def _requantize_node(name, acc_tensor, tail: Tail, act: QuantAct, lo, hi, mult_bits=16):
    """Fixed-point approximation code ~ round(A*acc + B) of the tail (for 5+ bit outputs).

    Not exact by construction: Accelerator.fidelity() measures it.
    """
    if any(isinstance(m, nn.ReLU) for m in tail.modules) and act.qtype.signed:
        raise QuantError(f"'{name}': requantize cannot model a ReLU before a signed quantizer; "
                         f"use thresholds (requantize=False)")
    kept = [m for m in tail.modules if not isinstance(m, nn.ReLU)]
    probe = np.array([0, 1 << 12])
    lin = Tail(tail.layer, tail.layer_name, tail.in_scale, True, kept, tail.sign, tail.offset, tail.in_type,
               tail.spatial)
    v = lin.float_out(np.repeat(probe[:, None], len(lo), axis=1)).to(torch.float64).numpy() / float(act.scale())
    A = (v[1] - v[0]) / probe[1]
    B = v[0]
    amax = np.abs(A).max()
    shift = 0 if amax == 0 else int(np.clip(mult_bits - 1 - np.floor(np.log2(amax)), 0, 62))
    mult = np.round(A * 2.0 ** shift).astype(np.int64)
    offset = np.round(B * 2.0 ** shift).astype(np.int64)
    return ir.Requantize(name, [acc_tensor], name + ":out", mult=mult, shift=shift, offset=offset,
                         rounding="half_even", out_type=act.qtype)


def _module_desc(path, m):
    return f"'{path}' ({type(m).__module__}.{type(m).__qualname__})"


def _capture_inputs(model, example_input):
    """Run the model once in eval mode; record the input of every quantized layer and pool."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, p=p: seen.__setitem__(p, args[0]))
             for p, m in model.named_modules()
             if isinstance(m, QUANT_LAYERS + (nn.AvgPool2d, nn.AdaptiveAvgPool2d))]
    for p, m in model.named_modules():
        m._qloom_name = p
    try:
        with torch.no_grad():
            out = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


@dataclass
class Lowered:
    graph: ir.Graph
    input_quant: QuantInput
    output_tail: Tail | None      # set when the model ends in a float tail, not a quantizer
    output_quant: nn.Module | None
    channels_last_input: bool     # the torch input is NCHW; the IR's is (H, W, C)


class _Lowering:
    """Walks the fx graph once, keeping the current IR tensor and what the torch side holds."""

    def __init__(self, model, example_input, options):
        self.model, self.options = model, options
        self.inputs, _ = _capture_inputs(model, example_input)
        self.example_input = example_input
        self.modules = dict(model.named_modules())
        self.nodes, self.types = [], {}
        self.state = None        # None (before QuantInput) | "quant" | "acc"
        self.cur = self.cur_type = None
        self.in_quant = self.input_type = None
        self.tail = self.layer_node = self.last_quant = None
        self.perm = None         # for a flattened map: torch (C, H, W) index of each IR element

    def add(self, node):
        self.cur_type = node.infer([self.types[t] for t in node.inputs])
        self.types[node.output] = self.cur_type
        self.nodes.append(node)
        self.cur = node.output

    def start_tail(self, node, layer, name, x, wq_rowsum, spatial):
        in_type = self.cur_type
        self.layer_node = node
        self.add(node)
        c = self.cur_type.shape[-1]
        self.tail = Tail(layer, name, x.scale, layer.acc_is_wide(x.qtype, x.zero_point)
                         if hasattr(layer, "acc_is_wide") else True,
                         sign=np.ones(c, np.int64), offset=-x.zero_point * wq_rowsum, in_type=in_type,
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
            x = self.inputs[target]
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
            x = self.inputs[target]
            wq = m.int_weight().numpy().transpose(0, 2, 3, 1)   # (OC, KH, KW, C/g)
            node = ir.Conv2d(target, [self.cur], target + ":acc", weight=wq, wtype=m.wtype, stride=m.stride,
                             padding=m.pad, pad_value=m.pad_code(x), groups=m.groups)
            self.start_tail(node, m, target, x, wq.reshape(wq.shape[0], -1).sum(axis=1), spatial=True)
        elif isinstance(m, (QuantAct, BinaryAct)):
            if self.state != "acc":
                raise QuantError(f"{type(m).__name__} {where} re-quantizes an already quantized tensor; "
                                 f"only the output of a quantized layer or an average pool (after optional "
                                 f"batch norm) can be quantized")
            self.add(_lower_quantizer(target, self.cur, self.layer_node, self.tail, m, self.options))
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
            x = self.inputs[target]
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
        elif isinstance(m, TAIL_MODULES) and self.state == "acc":
            self.tail.modules.append(m)
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

    def run(self, traced_graph):
        for fx_node in traced_graph.nodes:
            op, target = fx_node.op, fx_node.target
            if op in ("placeholder", "output"):
                continue
            if op == "call_module":
                self.module(target, self.modules[target])
            elif op in ("call_method", "call_function"):
                fname = target if isinstance(target, str) else getattr(target, "__name__", str(target))
                if fname in _FLATTEN_METHODS:
                    self.flatten(fx_node.name)
                elif fname in ("size", "dim", "getattr"):
                    pass
                else:
                    raise QuantError(f"unsupported operation '{fname}' at '{fx_node.name}' in the model's "
                                     f"forward(); supported modules: {', '.join(SUPPORTED)}")
            else:
                raise QuantError(f"unsupported graph node '{fx_node.name}' ({op})")
        if self.state is None:
            raise QuantError("the model has no QuantInput; start the model with qloom.nn.QuantInput")


def lower(model: nn.Module, example_input: torch.Tensor, name: str = "qloom", **options) -> Lowered:
    """Lower `model` (in eval mode) to the IR. Options: requantize (bool)."""
    model.eval()
    lw = _Lowering(model, example_input, options)
    lw.run(_Tracer().trace(model))
    graph = ir.Graph("input", lw.input_type, lw.nodes, lw.cur, name=name)
    graph.validate()
    return Lowered(graph, lw.in_quant, lw.tail if lw.state == "acc" else None,
                   lw.last_quant if lw.state == "quant" else None, len(lw.input_type.shape) == 3)
