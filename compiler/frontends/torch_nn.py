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

This module holds the TorchNN front end and lower(); the graph walk is in
torch_nn_lowering.py, the float tail and its quantizer's node in torch_nn_tail.py.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.fx
from torch import nn

from .. import ir
from ..nn import QUANT_LAYERS, BinaryAct, PoolTail, QTensor, QuantAct, QuantAdd, QuantInput
from .base import Frontend, Lowered, QuantError, SourceOutput, channel_bounds
from .torch_nn_lowering import SUPPORTED, _Lowering
from .torch_nn_tail import Tail


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (QuantInput, QuantAct, BinaryAct, QuantAdd) + QUANT_LAYERS) or \
            super().is_leaf_module(m, qualname)


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
