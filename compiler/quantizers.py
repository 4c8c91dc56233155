"""The quantizer arithmetic behind qloom.nn's layers: the straight-through estimator, power-of-two
scales, and the weight quantizer shared by QuantLinear and QuantConv2d (`_QuantWeightMixin`)."""
from __future__ import annotations

import math

import torch

from . import ir
from .errors import QuantError
from .qtensor import QTensor

_EXACT_F32 = 1 << 24
_EXACT_F64 = 1 << 53


def _ste(exact: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """`exact` in the forward pass, the gradient of `surrogate` in the backward pass."""
    return surrogate + (exact - surrogate).detach()


def round_pow2(s, up: bool):
    """s rounded to a power of two in the log domain (up: the next one); floats or tensors."""
    if torch.is_tensor(s):
        e = torch.log2(s)
        return torch.exp2(torch.ceil(e) if up else torch.round(e))
    e = math.log2(s)
    return 2.0 ** (math.ceil(e) if up else round(e))


WEIGHT_KINDS = ("bipolar", "ternary", 2, 3, 4, 5, 6, 7, 8)


def weight_qtype(weight_bits, narrow_range=True) -> ir.ElemType:
    if weight_bits in ("bipolar", 1):
        return ir.Bipolar
    if weight_bits == "ternary":
        return ir.Int(2, True)
    return ir.Int(int(weight_bits), True)


class _QuantWeightMixin:
    """Weight quantizer shared by QuantLinear and (later) QuantConv2d."""

    def _init_wq(self, weight_bits, per_channel, scale, narrow_range):
        if weight_bits == 1:
            weight_bits = "bipolar"
        if weight_bits not in WEIGHT_KINDS:
            raise QuantError(f"{type(self).__name__}: weight_bits must be one of {WEIGHT_KINDS}, "
                             f"got {weight_bits!r}")
        if scale not in ("float", "pow2"):
            raise QuantError(f"{type(self).__name__}: scale must be 'float' or 'pow2', got {scale!r}")
        self.weight_bits, self.per_channel, self.scale_mode = weight_bits, per_channel, scale
        self.narrow_range = narrow_range
        self.wtype = weight_qtype(weight_bits)

    def _reduce(self, t: torch.Tensor, fn):
        if self.per_channel:
            return fn(t.flatten(1), dim=1).reshape((-1,) + (1,) * (t.dim() - 1))
        return fn(t.flatten().unsqueeze(0), dim=1).reshape(())

    def quant_weight(self):
        """(codes, scale): integer codes as float tensors, scale per channel or per tensor.

        The codes are exact integers; the scale is float32 and always > 0.
        """
        w = self.weight.detach()
        absmean = lambda t, dim: t.abs().mean(dim=dim)  # noqa: E731
        if self.weight_bits == "bipolar":
            codes = torch.where(w >= 0, 1.0, -1.0)
            s = self._reduce(w, absmean)
        elif self.weight_bits == "ternary":
            delta = 0.7 * self._reduce(w, absmean)              # TWN's threshold
            codes = torch.where(w.abs() > delta, torch.sign(w), torch.zeros_like(w))
            nz = (codes != 0).float()
            s = self._reduce(w.abs() * nz, lambda t, dim: t.sum(dim)) / \
                self._reduce(nz, lambda t, dim: t.sum(dim)).clamp(min=1)
        else:
            qmax = (1 << (self.weight_bits - 1)) - 1
            qmin = -qmax if self.narrow_range else -qmax - 1
            s = self._reduce(w, lambda t, dim: t.abs().amax(dim=dim)) / qmax
            if self.scale_mode == "pow2":
                s = round_pow2(s.clamp(min=1e-30), up=True)
            codes = torch.round(w / s.clamp(min=1e-30)).clamp(qmin, qmax)
        if self.scale_mode == "pow2" and self.weight_bits in ("bipolar", "ternary"):
            s = round_pow2(s.clamp(min=1e-30), up=False)
        s = torch.where(s > 0, s, torch.ones_like(s)).to(torch.float32)
        return codes, s

    def int_weight(self) -> torch.Tensor:
        """The weight codes as int64."""
        return self.quant_weight()[0].to(torch.int64)

    def fake_quant_weight(self):
        codes, s = self.quant_weight()
        return _ste(codes * s, self.weight)

    def acc_is_wide(self, in_qtype, zero_point=0) -> bool:
        """True when |acc| can reach 2**24, so the float tail must run in float64."""
        w = self.int_weight().abs().flatten(1).sum(dim=1).max().item()
        xmax = max(abs(in_qtype.min - zero_point), abs(in_qtype.max - zero_point))
        return w * xmax >= _EXACT_F32

    def _check_input(self, x):
        if not isinstance(x, QTensor):
            raise QuantError(f"{type(self).__name__} received an unquantized float tensor; "
                             f"put a QuantInput, QuantAct or BinaryAct before it")

    def _exact_acc(self, x: QTensor, op) -> torch.Tensor:
        """The integer accumulator in float64 (exact while |acc| < 2**53), from the codes."""
        if x.code is None:
            raise QuantError(f"{type(self).__name__}: input codes missing in eval mode "
                             f"(was the producer in training mode? call model.eval())")
        xc = (x.code - x.zero_point).to(torch.float64)
        return op(xc, self.int_weight().to(torch.float64))

    def acc_to_float(self, acc: torch.Tensor, in_scale, wide: bool) -> torch.Tensor:
        """The layer's float output from its integer accumulator (channels on dim 1)."""
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        mult = (self.quant_weight()[1].reshape(-1) * in_scale).to(torch.float32).reshape(shape)
        if wide:
            y = acc.to(torch.float64) * mult.to(torch.float64)
            if self.bias is not None:
                y = y + self.bias.detach().to(torch.float64).reshape(shape)
            return y.to(torch.float32)
        y = acc.to(torch.float32) * mult
        if self.bias is not None:
            y = y + self.bias.detach().reshape(shape)
        return y
