"""Torch front end: lowers a model of qloom.nn layers to the integer IR (torch.fx).

A quantized layer (QuantLinear) starts an accumulator; the modules after it up
to the next activation quantizer (batch norm, dropout, identity, ReLU) form its
float *tail*; the quantizer ends it. The tail is monotone in the accumulator,
so each output code's threshold is found by binary search, evaluating the
module's own eval-mode code on integer accumulators. The IR then equals the
torch eval model bit for bit, float ties included.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn

from . import ir
from .nn import BinaryAct, QTensor, QuantAct, QuantError, QuantInput, QuantLinear

TAIL_MODULES = (nn.BatchNorm1d, nn.Dropout, nn.Identity, nn.ReLU)
PASS_MODULES = (nn.Dropout, nn.Identity)
SUPPORTED = ("QuantInput", "QuantLinear", "QuantAct", "BinaryAct", "nn.BatchNorm1d",
             "nn.Flatten", "nn.Dropout", "nn.Identity", "nn.ReLU (between a quantized layer "
             "and its activation quantizer)")
_FLATTEN_METHODS = ("flatten", "view", "reshape")


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (QuantInput, QuantLinear, QuantAct, BinaryAct)) or super().is_leaf_module(m, qualname)


@dataclass
class Tail:
    """An accumulator's float tail: the layer that made it and the modules after it."""
    layer: nn.Module
    layer_name: str
    in_scale: torch.Tensor
    wide: bool
    modules: list = field(default_factory=list)
    sign: np.ndarray | None = None      # per channel: +1, or -1 where the IR negated the weights
    offset: np.ndarray | None = None    # torch acc = sign * IR acc + offset (input zero point)
    in_type: ir.TensorType | None = None  # the IR type of the layer's input

    def torch_acc(self, acc_ir: torch.Tensor) -> torch.Tensor:
        return acc_ir * torch.as_tensor(self.sign) + torch.as_tensor(self.offset)

    def float_out(self, acc_ir) -> torch.Tensor:
        """The tail's float output for IR accumulators (M, C)."""
        with torch.no_grad():
            y = self.layer.acc_to_float(self.torch_acc(torch.as_tensor(acc_ir)), self.in_scale, self.wide)
            for m in self.modules:
                y = m(y)
        return y


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


def _lower_quantizer(g_nodes, name, acc_tensor, dense: ir.Dense, in_type, tail: Tail, act, options):
    """Thresholds (or a Requantize) for the tail ending in quantizer `act`; fixes row signs."""
    w0 = dense.weight
    bipolar_out = act.qtype is ir.Bipolar
    base = -1 if bipolar_out else act.qtype.min
    n = 1 if bipolar_out else act.qtype.max - act.qtype.min

    def counts(acc_ir):
        code = act.codes(tail.float_out(acc_ir)).numpy()
        return (code + 1) // 2 if bipolar_out else code - base

    # direction of each channel: compare the codes at both ends of the range
    tail.sign = np.ones(w0.shape[0], dtype=np.int64)
    lo, hi = dense.acc_bounds(in_type.dtype)
    ends = counts(np.stack([lo, hi]))
    neg = ends[1] < ends[0]
    if neg.any():
        tail.sign = np.where(neg, -1, 1)
        dense.weight = w0 * tail.sign[:, None]
        if isinstance(dense.wtype, ir.Int) and not ir.values_in(dense.wtype, dense.weight).all():
            dense.wtype = ir.Int(dense.wtype.bits + 1, True)    # -(-2**(b-1)) needs one more bit
        lo, hi = dense.acc_bounds(in_type.dtype)
    requant = options.get("requantize") and not bipolar_out and act.qtype.bits >= 5
    if requant:
        return _requantize_node(name, acc_tensor, tail, act, lo, hi)
    t = _derive_thresholds(counts, lo, hi, n)
    return ir.MultiThreshold(name, [acc_tensor], name + ":out", thresholds=t,
                             out_type=act.qtype, base=base)


def _requantize_node(name, acc_tensor, tail: Tail, act: QuantAct, lo, hi, mult_bits=16):
    """Fixed-point approximation code ~ round(A*acc + B) of the tail (for 5+ bit outputs).

    Not exact by construction: Accelerator.fidelity() measures it.
    """
    if any(isinstance(m, nn.ReLU) for m in tail.modules) and act.qtype.signed:
        raise QuantError(f"'{name}': requantize cannot model a ReLU before a signed quantizer; "
                         f"use thresholds (requantize=False)")
    linear = [m for m in tail.modules if not isinstance(m, nn.ReLU)]
    s = float(act.scale())
    probe = np.array([0, 1 << 12])

    def pre(a):
        with torch.no_grad():
            y = tail.layer.acc_to_float(tail.torch_acc(torch.as_tensor(a)), tail.in_scale, True)
            for m in linear:
                y = m(y)
        return y.to(torch.float64).numpy() / s

    v = pre(np.repeat(probe[:, None], len(lo), axis=1))
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
    """Run the model once in eval mode; record each QuantLinear's input QTensor."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, p=p: seen.__setitem__(p, args[0]))
             for p, m in model.named_modules() if isinstance(m, QuantLinear)]
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


def lower(model: nn.Module, example_input: torch.Tensor, name: str = "qloom", **options) -> Lowered:
    """Lower `model` (in eval mode) to the IR. Options: requantize (bool)."""
    model.eval()
    inputs, _ = _capture_inputs(model, example_input)
    traced = _Tracer().trace(model)
    modules = dict(model.named_modules())
    nodes: list[ir.Node] = []
    state = None          # None (before QuantInput) | "quant" | "acc"
    cur, cur_type = None, None
    in_quant = graph_input_type = None
    tail = dense = None
    last_quant = None
    types = {}

    def add(node):
        nonlocal cur, cur_type
        cur_type = node.infer([types[t] for t in node.inputs])
        types[node.output] = cur_type
        nodes.append(node)
        cur = node.output

    for fx_node in traced.nodes:
        op, target = fx_node.op, fx_node.target
        if op == "placeholder":
            continue
        if op == "output":
            break
        if op == "call_module":
            m = modules[target]
            where = _module_desc(target, m)
            if isinstance(m, QuantInput):
                if state is not None:
                    raise QuantError(f"QuantInput {where} must be the first layer of the model")
                shape = tuple(example_input.shape[1:])
                graph_input_type = ir.TensorType(shape, m.qtype)
                in_quant, state, cur, cur_type = m, "quant", "input", graph_input_type
                types["input"] = graph_input_type
            elif state is None:
                raise QuantError(f"{where} comes before any QuantInput: the model must start by "
                                 f"quantizing its input with qloom.nn.QuantInput")
            elif isinstance(m, QuantLinear):
                if state != "quant":
                    raise QuantError(f"QuantLinear {where} receives an unquantized float tensor "
                                     f"(from '{tail.layer_name}' and the modules after it); put a "
                                     f"QuantAct or BinaryAct before it")
                if len(cur_type.shape) != 1:
                    raise QuantError(f"QuantLinear {where} needs a vector per frame, got shape "
                                     f"{cur_type.shape}; add nn.Flatten before it")
                x = inputs[target]
                wq = m.int_weight().numpy()
                wtype = m.wtype
                # the IR takes the codes as they are; the zero point moves into the tail
                dense = ir.Dense(target, [cur], target + ":acc",
                                 weight=wq, wtype=wtype)
                in_type = cur_type
                add(dense)
                offset = -x.zero_point * wq.sum(axis=1)
                tail = Tail(m, target, x.scale, m.acc_is_wide(x.qtype, x.zero_point),
                            sign=np.ones(wq.shape[0], np.int64), offset=offset, in_type=in_type)
                state = "acc"
            elif isinstance(m, (QuantAct, BinaryAct)):
                if state != "acc":
                    raise QuantError(f"{type(m).__name__} {where} re-quantizes an already quantized "
                                     f"tensor; only a QuantLinear's output (after optional batch norm) "
                                     f"can be quantized")
                mt = _lower_quantizer(nodes, target, cur, dense, tail.in_type,
                                      tail, m, options)
                add(mt)
                state, last_quant = "quant", m
            elif isinstance(m, nn.Flatten):
                if len(cur_type.shape) > 1:
                    add(ir.Flatten(target, [cur], target + ":out"))
            elif isinstance(m, PASS_MODULES):
                pass
            elif isinstance(m, TAIL_MODULES) and state == "acc":
                tail.modules.append(m)
            elif isinstance(m, TAIL_MODULES):
                raise QuantError(f"{where} acts on an already quantized tensor; it must sit between a "
                                 f"QuantLinear and its activation quantizer")
            else:
                raise QuantError(f"unsupported module {where}; supported: {', '.join(SUPPORTED)}")
        elif op in ("call_method", "call_function"):
            fname = target if isinstance(target, str) else getattr(target, "__name__", str(target))
            if fname in _FLATTEN_METHODS or target is torch.flatten:
                if state == "acc":
                    raise QuantError(f"{fname} on an accumulator is not supported; flatten before "
                                     f"the quantized layer")
                if cur_type is not None and len(cur_type.shape) > 1:
                    add(ir.Flatten(fx_node.name, [cur], fx_node.name + ":out"))
            elif fname in ("size", "dim", "getattr"):
                pass
            else:
                raise QuantError(f"unsupported operation '{fname}' at '{fx_node.name}' in the "
                                 f"model's forward(); supported modules: {', '.join(SUPPORTED)}")
        else:
            raise QuantError(f"unsupported graph node '{fx_node.name}' ({op})")

    if state is None:
        raise QuantError("the model has no QuantInput; start the model with qloom.nn.QuantInput")
    graph = ir.Graph("input", graph_input_type, nodes, cur, name=name)
    graph.validate()
    return Lowered(graph, in_quant, tail if state == "acc" else None,
                   last_quant if state == "quant" else None)
