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

from .. import ir
from ..nn import (BATCH_NORMS, DROPOUTS, QUANT_LAYERS, BinaryAct, PoolTail, QTensor, QuantAct, QuantConv2d,
                  QuantInput, QuantLinear, capture, pool_geometry)
from .base import Frontend, Lowered, QuantError, SourceOutput, channel_bounds, fit_requantize, threshold_node

TAIL_MODULES = BATCH_NORMS + DROPOUTS + (nn.ReLU,)
PASS_MODULES = DROPOUTS
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
    offset: np.ndarray | None = None    # torch acc = IR acc + offset (the input zero point's share)
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
            y = self.layer.acc_to_float(self.torch_acc(a), self.in_scale, self.wide)
            for m in self.modules:
                y = m(y)
        return y.reshape(shape)

    def torch_acc(self, a):
        return a + torch.as_tensor(self.offset).reshape(1, -1, *(1,) * (a.dim() - 2))


def _lower_quantizer(name, acc_tensor, layer_node, tail: Tail, act, options, report: list):
    """The node for the tail ending in quantizer `act`: thresholds found by evaluating the tail (may
    negate weight rows); with options["requantize"], an equivalent fixed-point Requantize where one
    exists (5+ bit outputs, where thresholds get expensive). Both are exact by construction."""
    node, _ = threshold_node(name, acc_tensor, layer_node, tail.in_type,
                             lambda acc: act.codes(tail.float_out(acc)).numpy(), act.qtype,
                             what=f"'{name}' (after '{tail.layer_name}')")
    if not (options.get("requantize") and act.qtype is not ir.Bipolar and act.qtype.bits >= 5):
        return node
    lo, hi = channel_bounds(layer_node, tail.in_type)
    fit = fit_requantize(node.thresholds, lo, hi, act.qtype)
    info = {"layer": name, "out_type": str(act.qtype), "thresholds_per_channel": int(node.thresholds.shape[1])}
    if fit is None:
        # the tail's steps are not those of any floor((acc*m + p) / 2**s): keep the exact thresholds
        report.append({**info, "method": "thresholds", "why": "no exact fixed-point form"})
        return node
    mult, offset, shift = fit
    report.append({**info, "method": "requantize", "shift": int(shift),
                   "mult_bits": int(max(int(np.abs(mult).max()), 1).bit_length())})
    return ir.Requantize(name, [acc_tensor], name + ":out", mult=mult, shift=shift, offset=offset,
                         rounding="floor", out_type=act.qtype)


def _module_desc(path, m):
    return f"'{path}' ({type(m).__module__}.{type(m).__qualname__})"


def _capture_inputs(model, example_input):
    """Run the model once in eval mode; record the input of every quantized layer and pool.
    Whatever fails on the way (qloom.nn's own checks, or a module or operation that cannot take the
    quantized tensors qloom.nn passes between layers) is one QuantError naming the module last entered."""
    current = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, p=p: current.append(p))
             for p, m in model.named_modules() if p]
    modules = dict(model.named_modules())
    try:
        seen, out = capture(model, example_input, QUANT_LAYERS + (nn.AvgPool2d, nn.AdaptiveAvgPool2d))
    except QuantError as e:
        where = f" in module {_module_desc(current[-1], modules[current[-1]])}" if current else ""
        raise QuantError(f"running the model on the example input failed{where}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a user's model: one line naming where it broke
        where = f" in or after module {_module_desc(current[-1], modules[current[-1]])}" if current else ""
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise QuantError(f"running the model on the example input failed{where}: {type(e).__name__}: {msg}. "
                         f"qloom lowers models built from: {', '.join(SUPPORTED)}") from None
    finally:
        for h in hooks:
            h.remove()
    return {p: v[0] for p, v in seen.items()}, out


class _Lowering:
    """Walks the fx graph once, keeping the current IR tensor and what the torch side holds."""

    def __init__(self, model, example_input, options):
        self.model, self.options = model, options
        self.requantize_report = []         # per quantizer: Requantize or thresholds (requantize=True)
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
        elif isinstance(m, BATCH_NORMS) and not m.track_running_stats:
            raise QuantError(f"{where} has track_running_stats=False: in eval mode it normalises with each batch's "
                             f"own statistics, so a frame's output depends on the rest of its batch and cannot be "
                             f"fixed in hardware; train it with track_running_stats=True")
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


class TorchNN(Frontend):
    """The float side of a qloom.nn model: its QuantInput, its float output tail (if any), its eval forward."""
    kind = "qloom.nn"

    def __init__(self, model, input_quant: QuantInput, output_tail: Tail | None, output_quant,
                 channels_last_input: bool):
        self.model, self.input_quant = model, input_quant
        self.output_tail, self.output_quant = output_tail, output_quant
        self.channels_last_input = channels_last_input

    def quantize_input(self, x_float) -> np.ndarray:
        with torch.no_grad():
            codes = self.input_quant.codes(torch.as_tensor(x_float))
        if self.channels_last_input:
            codes = codes.permute(0, 2, 3, 1)          # NCHW -> the IR's (H, W, C)
        return codes.numpy()

    def dequantize(self, y_int) -> np.ndarray:
        if self.output_tail is not None:
            return self.output_tail.float_out(torch.as_tensor(np.asarray(y_int))).numpy()
        if self.output_quant is not None:
            s = self.output_quant.scale() if isinstance(self.output_quant, QuantAct) else torch.ones(())
            return np.asarray(y_int, dtype=np.float32) * s.detach().to(torch.float32).numpy()
        return (np.asarray(y_int) - self.input_quant.zero_point) * float(self.input_quant.scale)

    def source_outputs(self, x_float, argmax: bool) -> SourceOutput:
        self.model.eval()
        x = torch.as_tensor(x_float, dtype=torch.float32)
        acc = {}
        hook = None
        if self.output_tail is not None and not argmax:
            # the last layer's exact accumulator, to count float differences in LSBs
            layer = self.output_tail.layer
            if isinstance(layer, nn.Module):
                hook = layer.register_forward_hook(lambda m, args, out: acc.__setitem__("x", args[0]))
        try:
            with torch.no_grad():
                out = self.model(x)
        finally:
            if hook is not None:
                hook.remove()
        nhwc = (lambda t: t.permute(0, 2, 3, 1) if t.dim() == 4 else t)  # noqa: E731
        if argmax:
            v = out.value if isinstance(out, QTensor) else out
            return SourceOutput("labels", v.flatten(1).argmax(dim=1).numpy()[:, None])
        if isinstance(out, QTensor):
            return SourceOutput("codes", nhwc(out.code).numpy())
        a = None
        if "x" in acc:
            layer = self.output_tail.layer
            a = layer.exact_acc(acc["x"]) - torch.as_tensor(self.output_tail.offset).reshape(
                1, -1, *(1,) * (out.dim() - 2))
            a = nhwc(a).to(torch.int64).numpy()
        return SourceOutput("floats", nhwc(out).numpy(), a)

    def describe(self) -> dict:
        return {"frontend": self.kind, "layers": list(getattr(self, "requantize_report", []))}

    def io_spec(self) -> dict:
        iq = self.input_quant
        layout = "nchw" if self.channels_last_input else "flat"
        if iq.qtype is ir.Bipolar:
            inp = {"quantizer": "bipolar", "layout": layout}
        else:
            inp = {"quantizer": "affine", "type": str(iq.qtype), "scale": float(iq.scale),
                   "zero_point": iq.zero_point, "rounding": "half_even", "layout": layout}
        return {"kind": self.kind, "input": inp, "output": self._output_spec()}

    def _output_spec(self) -> dict:
        if self.output_quant is not None:
            s = self.output_quant.scale() if isinstance(self.output_quant, QuantAct) else torch.ones(())
            return {"kind": "codes", "scale": float(s.detach().to(torch.float32)), "zero_point": 0}
        t = self.output_tail
        if t is None:
            return {"kind": "codes", "scale": float(self.input_quant.scale),
                    "zero_point": self.input_quant.zero_point}
        c = len(t.offset)
        if t.modules:    # batch norm / ReLU after the layer: a probed affine map, not the tail itself
            kept = [m for m in t.modules if not isinstance(m, nn.ReLU)]
            lin = Tail(t.layer, t.layer_name, t.in_scale, True, kept, np.zeros(c, np.int64), t.in_type, t.spatial)
            probe = np.repeat(np.array([0, 1 << 12])[:, None], c, axis=1)
            v = lin.float_out(probe).to(torch.float64).numpy()
            return {"kind": "affine", "mult": ((v[1] - v[0]) / (1 << 12)).tolist(), "offset": t.offset.tolist(),
                    "bias": v[0].tolist(), "precision": "float64",
                    "relu": any(isinstance(m, nn.ReLU) for m in t.modules), "exact": False}
        if isinstance(t.layer, PoolTail):
            mult = np.full(c, float(t.in_scale.to(torch.float64)) / t.layer.n)
            return {"kind": "affine", "mult": mult.tolist(), "offset": t.offset.tolist(), "bias": None,
                    "precision": "float64", "relu": False, "exact": True}
        layer = t.layer
        mult = (layer.quant_weight()[1].reshape(-1) * t.in_scale).to(torch.float32).detach()
        mult = np.broadcast_to(mult.numpy().astype(np.float64), (c,))
        bias = None if layer.bias is None else layer.bias.detach().to(torch.float32).numpy().astype(np.float64)
        return {"kind": "affine", "mult": mult.tolist(), "offset": t.offset.tolist(),
                "bias": None if bias is None else bias.tolist(),
                "precision": "float64" if t.wide else "float32", "relu": False, "exact": True}

    def argmax_refusal(self) -> str | None:
        """An argmax over the IR's accumulators picks torch's class only when every class's float output
        is the same strictly increasing function of its accumulator: one scale, no per-class offset,
        and float32 keeping distinct accumulators distinct (docs/numerics.md)."""
        t = self.output_tail
        if t is None:
            return None
        why = []
        if t.modules:
            why.append("modules after it (" + ", ".join(type(m).__name__ for m in t.modules) + ")")
        if getattr(t.layer, "bias", None) is not None:
            why.append("a bias")
        if (t.offset != 0).any():
            why.append("an input zero point (a per-class offset of the accumulator)")
        if isinstance(t.layer, PoolTail):
            mult = np.array([float(t.in_scale.to(torch.float64)) / t.layer.n])
        else:
            mult = (t.layer.quant_weight()[1].reshape(-1) * t.in_scale).to(torch.float32).detach().numpy()
        if not (mult == mult.reshape(-1)[0]).all():
            why.append("per-channel weight scales")
        m = float(mult.reshape(-1)[0])
        maxabs = max(abs(v) for v in self.acc_range)
        if not why and not float32_injective(m, maxabs):
            why.append(f"accumulators up to {maxabs} times its scale {m:.6g} that float32 cannot keep apart "
                       f"(its spacing there, {float(np.spacing(np.float32(maxabs * m))):.3g}, exceeds the scale)")
        if why:
            return (f"the model ends in '{t.layer_name}', whose float outputs are not one strictly increasing "
                    f"function of the accumulator for every class: it has {' and '.join(why)}; a hardware argmax "
                    f"over accumulators could pick another class than torch. End the model with a QuantAct, or "
                    f"drop those")
        return None


def float32_injective(m: float, maxabs: int) -> bool:
    """Whether a -> float32(a * m) keeps every integer |a| <= maxabs apart (m > 0): true when the float32
    spacing at maxabs * m is at most m, since then exact products m apart round to different floats."""
    return m > 0 and float(np.spacing(np.float32(maxabs * m))) <= m


def lower(model: nn.Module, example_input: torch.Tensor, name: str = "qloom", **options) -> Lowered:
    """Lower `model` (in eval mode) to the IR. Options: requantize (bool)."""
    model.eval()
    lw = _Lowering(model, example_input, options)
    try:
        traced = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - torch.fx's reasons are long; say what it could not do
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise QuantError(f"torch.fx cannot trace the model's forward() ({type(e).__name__}: {msg}); qloom needs "
                         f"a forward() without data-dependent control flow, built from: {', '.join(SUPPORTED)}") \
            from None
    lw.run(traced)
    graph = ir.Graph("input", lw.input_type, lw.nodes, lw.cur, name=name)
    graph.validate()
    fe = TorchNN(model, lw.in_quant, lw.tail if lw.state == "acc" else None,
                 lw.last_quant if lw.state == "quant" else None, len(lw.input_type.shape) == 3)
    fe.requantize_report = lw.requantize_report
    if fe.output_tail is not None:           # the proven accumulator range of the output layer
        lo, hi = channel_bounds(lw.layer_node, fe.output_tail.in_type)
        fe.acc_range = (int(lo.min(initial=0)), int(hi.max(initial=0)))
    return Lowered(graph, fe)
