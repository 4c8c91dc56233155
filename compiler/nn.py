"""Quantization-aware layers (published as `qloom.nn`).

Training mode: fake quantization with straight-through estimators.
Eval mode (integer-exact): every quantized layer computes its accumulator from
the integer codes exactly, then applies scales, bias, batch norm and the next
activation quantizer in float. Every step of that tail is monotone in the
accumulator, so the front end can turn it into thresholds that reproduce it
bit for bit (see docs/numerics.md).

Quantized activations travel between layers as `QTensor`s: the float value
(which carries the gradient), the integer codes, the scale and the code type.
QTensor and its arithmetic live in qtensor.py, the weight quantizer and the shared
quantizer helpers in quantizers.py; this module holds the layers and re-exports those names.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ir
from .errors import QuantError  # noqa: F401 (re-exported: qloom.nn.QuantError)
# re-exported: the front end, PTQ, the analysis and qloom.nn import these from here
from .qtensor import (PoolTail, QTensor, add_units, as_value, pool_geometry, quant_add,  # noqa: F401
                      quant_cat)
from .quantizers import WEIGHT_KINDS, _QuantWeightMixin, _ste, round_pow2, weight_qtype  # noqa: F401


class QuantAdd(nn.Module):
    """A residual add of two quantized tensors: `QuantAdd()(a, b)` is `a + b` (see quant_add).

    The scales of a and b must differ by a power of two (equal included): quantize both
    branches with scale='pow2' quantizers, or with the same quantizer module. The output is
    a float, like a layer's: batch norm / ReLU may follow, then a QuantAct or BinaryAct,
    whose thresholds the front end finds by evaluating that float tail on the exact sum."""

    def forward(self, a, b):
        return quant_add(a, b, what="QuantAdd")


# ---------------------------------------------------------------- module roles (shared by the front end,
# PTQ and the analysis)

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)   # identities in eval mode
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
FLOAT_LAYERS = (nn.Linear, nn.Conv2d)
QUANT_LAYERS: tuple = ()        # (QuantLinear, QuantConv2d): set below their definitions


def capture(model, x, types):
    """Run `model` once in eval mode: ({path: (input, output)} of its modules of `types`, model output).

    Outputs are copied where they are plain tensors (an in-place ReLU after a module would change them)."""
    seen, hooks = {}, []
    for p, m in model.named_modules():
        if isinstance(m, types):
            hooks.append(m.register_forward_hook(
                lambda mod, args, out, p=p: seen.__setitem__(p, (args[0] if args else None,
                                                                 out.clone() if torch.is_tensor(out) else out))))
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


# ---------------------------------------------------------------- input

class QuantInput(nn.Module):
    """Fixes how float inputs become integer codes.

    Int codes: code = clamp(round(x / scale) + zero_point) into `bits`
    (`signed` or not); value = (code - zero_point) * scale.
    `bipolar=True`: code = +1 where x >= 0 else -1 (scale 1).
    """

    def __init__(self, bits: int = 8, signed: bool = False, scale: float = 1 / 255,
                 zero_point: int = 0, bipolar: bool = False):
        super().__init__()
        if bipolar:
            self.qtype = ir.Bipolar
            scale, zero_point = 1.0, 0
        else:
            if not (isinstance(bits, int) and 1 <= bits <= 16):
                raise QuantError(f"QuantInput: bits must be an integer in 1..16, got {bits!r}")
            self.qtype = ir.Int(bits, signed)
            if not (self.qtype.min <= zero_point <= self.qtype.max):
                raise QuantError(f"QuantInput: zero_point {zero_point} is outside the code range "
                                 f"{self.qtype.min}..{self.qtype.max} of {self.qtype}")
        if not (scale > 0 and math.isfinite(scale)):
            raise QuantError(f"QuantInput: scale must be a positive finite float, got {scale!r}")
        self.zero_point = int(zero_point)
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.qtype is ir.Bipolar:
            return torch.where(x >= 0, 1, -1).to(torch.int64)
        q = torch.round(x / self.scale) + self.zero_point
        return q.clamp(self.qtype.min, self.qtype.max).to(torch.int64)

    def forward(self, x):
        code = self.codes(x)
        value = (code - self.zero_point).to(torch.float32) * self.scale
        return QTensor(value, code, self.scale, self.zero_point, self.qtype)

    def extra_repr(self):
        return f"{self.qtype}, scale={float(self.scale):.6g}, zero_point={self.zero_point}"


# ---------------------------------------------------------------- layers with quantized weights

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class QuantConv2d(_QuantWeightMixin, nn.Conv2d):
    """A Conv2d with quantized weights (same weight options as QuantLinear).

    Padding adds input *codes* equal to the input's zero point (value 0), or
    `pad_value` (a code) when given; a bipolar input has no zero, so padding it
    needs an explicit pad_value of +1 or -1. Dilation 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True,
                 weight_bits=4, per_channel=False, scale="float", narrow_range=True, pad_value=None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups,
                         bias=bias)
        self._init_wq(weight_bits, per_channel, scale, narrow_range)
        self.pad = _pair(padding)
        self.pad_value = pad_value

    def pad_code(self, x: QTensor) -> int:
        """The input code that padding adds."""
        if self.pad_value is not None:
            return int(self.pad_value)
        if x.qtype is ir.Bipolar and max(self.pad) > 0:
            raise QuantError(f"QuantConv2d({self.in_channels}, {self.out_channels}) pads a bipolar input, "
                             f"which has no zero; give pad_value=+1 or pad_value=-1")
        return x.zero_point

    def _padded(self, t, fill):
        ph, pw = self.pad
        return F.pad(t, (pw, pw, ph, ph), value=fill) if ph or pw else t

    def forward(self, x):
        self._check_input(x)
        pc = self.pad_code(x)
        if self.training:
            v = self._padded(x.value, float((pc - x.zero_point) * x.scale))
            return F.conv2d(v, self.fake_quant_weight(), self.bias, self.stride, 0, 1, self.groups)
        return self.acc_to_float(self.exact_acc(x), x.scale, self.acc_is_wide(x.qtype, x.zero_point))

    def exact_acc(self, x: QTensor) -> torch.Tensor:
        """The exact integer accumulator (float64) of the eval-mode layer for input x."""
        xq = QTensor(x.value, self._padded(x.code, self.pad_code(x)), x.scale, x.zero_point, x.qtype)
        return self._exact_acc(xq, lambda a, w: F.conv2d(a, w, None, self.stride, 0, 1, self.groups))


class QuantLinear(_QuantWeightMixin, nn.Linear):
    """A Linear layer with quantized weights.

    weight_bits: "bipolar" (or 1), "ternary", or 2..8; per_channel scales or
    one per tensor; scale "float" (free) or "pow2"; narrow_range keeps n-bit
    codes symmetric (-(2**(n-1)-1) .. 2**(n-1)-1).
    """

    def __init__(self, in_features, out_features, bias=True, weight_bits=4,
                 per_channel=False, scale="float", narrow_range=True):
        super().__init__(in_features, out_features, bias=bias)
        self._init_wq(weight_bits, per_channel, scale, narrow_range)

    def forward(self, x):
        self._check_input(x)
        if self.training:
            return F.linear(x.value, self.fake_quant_weight(), self.bias)
        return self.acc_to_float(self.exact_acc(x), x.scale, self.acc_is_wide(x.qtype, x.zero_point))

    def exact_acc(self, x: QTensor) -> torch.Tensor:
        """The exact integer accumulator (float64) of the eval-mode layer for input x."""
        return self._exact_acc(x, lambda a, w: a @ w.T)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
                f"weight={self.weight_bits}, per_channel={self.per_channel}, scale={self.scale_mode}")


QUANT_LAYERS = (QuantLinear, QuantConv2d)


# ---------------------------------------------------------------- activations

class QuantAct(nn.Module):
    """n-bit activation quantizer: code = clamp(round(y / s)), s = max_val / qmax.

    Unsigned codes are 0..2**bits-1; signed codes are -2**(bits-1)..2**(bits-1)-1.
    The range max_val is learned (LSQ-style, `learnable=True`) or calibrated
    from the running maximum of |y| during training (`learnable=False`).
    """

    def __init__(self, bits: int = 4, signed: bool = False, max_val: float = 4.0,
                 learnable: bool = True, momentum: float = 0.1, scale: str = "float"):
        super().__init__()
        if not (isinstance(bits, int) and 1 <= bits <= 16):
            raise QuantError(f"QuantAct: bits must be an integer in 1..16, got {bits!r}")
        if scale not in ("float", "pow2"):
            raise QuantError(f"QuantAct: scale must be 'float' or 'pow2', got {scale!r}")
        self.scale_mode = scale
        if signed and bits < 2:
            raise QuantError("QuantAct: a signed quantizer needs at least 2 bits (use BinaryAct for ±1)")
        self.qtype = ir.Int(bits, signed)
        self.qmax = self.qtype.max
        self.learnable, self.momentum = learnable, momentum
        init = torch.tensor(float(max_val))
        if learnable:
            self.max_val = nn.Parameter(init)
        else:
            self.register_buffer("max_val", init)

    def scale(self) -> torch.Tensor:
        s = (self.max_val.abs() + 1e-8) / self.qmax
        if getattr(self, "scale_mode", "float") == "pow2":      # a power of two (up: nothing clips more)
            s = _ste(round_pow2(s.detach(), up=True), s)
        return s

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        """Integer codes of the float tensor y (the exact eval-mode function)."""
        s = self.scale().detach().to(torch.float32)
        return torch.round(y / s).clamp(self.qtype.min, self.qtype.max).to(torch.int64)

    def forward(self, y):
        y = as_value(y)
        if self.training:
            if not self.learnable:
                with torch.no_grad():
                    m = y.detach().abs().max()
                    self.max_val.mul_(1 - self.momentum).add_(self.momentum * m)
            s = self.scale()
            q = torch.clamp(y / s, self.qtype.min, self.qtype.max)
            return QTensor(_ste(torch.round(q), q) * s, None, s.detach(), 0, self.qtype)
        code = self.codes(y)
        s = self.scale().detach().to(torch.float32)
        return QTensor(code.to(torch.float32) * s, code, s, 0, self.qtype)

    def extra_repr(self):
        pow2 = ", scale=pow2" if getattr(self, "scale_mode", "float") == "pow2" else ""
        return f"{self.qtype}, max_val={float(self.max_val.detach()):.4g}, learnable={self.learnable}{pow2}"


class BinaryAct(nn.Module):
    """Sign activation: code = +1 where y >= 0 else -1; straight-through (hardtanh) gradient."""
    qtype = ir.Bipolar

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(y >= 0, 1, -1).to(torch.int64)

    def forward(self, y):
        y = as_value(y)
        one = torch.ones((), dtype=torch.float32)
        if self.training:
            return QTensor(_ste(torch.where(y >= 0, 1.0, -1.0), y.clamp(-1, 1)), None, one, 0, ir.Bipolar)
        code = self.codes(y)
        return QTensor(code.to(torch.float32), code, one, 0, ir.Bipolar)
