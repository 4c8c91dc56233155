"""The float tail of an accumulator in a qloom.nn model (`Tail`), and the IR node that ends it at an
activation quantizer (thresholds, or an exact Requantize). Shared by the lowering walk and the TorchNN
front end, which evaluates the output layer's tail."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .. import ir
from .base import channel_bounds, fit_requantize, threshold_node


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
