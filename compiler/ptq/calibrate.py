"""Calibration of quantizer ranges: min-max, percentile, MSE; MSE clipping of weights."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..nn import QuantError, round_pow2

CALIBRATIONS = ("minmax", "percentile", "mse")


def calibrate_range(y: torch.Tensor, bits: int, signed: bool, method: str = "minmax", pow2: bool = False,
                    percentile: float = 99.99, max_samples: int = 200_000) -> float:
    """The range max_val (the largest representable |value|) for n-bit codes of the tensor y.

    Unsigned codes cover 0..max_val (negative values are the ReLU the quantizer implements);
    signed codes cover -max_val..max_val. minmax: the largest value; percentile: that
    percentile of the (clamped, absolute) values; mse: the range minimising the mean squared
    quantization error over a grid of candidate ranges. pow2: max_val / qmax is a power of two
    (rounded up for minmax and percentile, searched for mse).
    """
    if method not in CALIBRATIONS:
        raise QuantError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    v = torch.as_tensor(y).detach().flatten().to(torch.float64)
    if v.numel() > max_samples:
        v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(0))[:max_samples]]
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    qmin = -(1 << (bits - 1)) if signed else 0
    target = v if signed else v.clamp(min=0)
    a = target.abs()
    top = float(a.max()) if a.numel() else 0.0
    if top <= 0:
        return 1.0
    if method == "minmax":
        m = top
    elif method == "percentile":
        m = float(np.percentile(a.numpy(), percentile))
        m = m if m > 0 else top
    else:
        def err(s):
            q = torch.clamp(torch.round(target / s), qmin, qmax) * s
            return float(((q - target) ** 2).mean())
        if pow2:
            e_hi = math.ceil(math.log2(top / qmax))
            cands = [2.0 ** e for e in range(e_hi - 10, e_hi + 1)]
            return min(cands, key=err) * qmax
        cands = [top * f / qmax for f in np.linspace(0.05, 1.0, 96)]
        m = min(cands, key=err) * qmax
    if pow2:
        m = round_pow2(m / qmax, up=True) * qmax
    return float(m)


def _mse_clip_weights(layer: nn.Module):
    """Clip an n-bit layer's float weights (per channel or tensor) where that lowers the MSE of its codes.

    The weight quantizer's scale is max|w| / qmax, so clipping w at c sets the scale to c / qmax.
    """
    if layer.weight_bits in ("bipolar", "ternary"):
        return
    qmax = (1 << (layer.weight_bits - 1)) - 1
    with torch.no_grad():
        w = layer.weight.detach().to(torch.float64)
        rows = w.flatten(1) if layer.per_channel else w.flatten()[None]
        amax = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
        best_err = torch.full_like(amax, float("inf"))
        best_c = amax.clone()
        for f in np.linspace(0.2, 1.0, 81):
            c = amax * f
            wc = torch.maximum(torch.minimum(rows, c), -c)
            s = c / qmax
            if layer.scale_mode == "pow2":
                s = round_pow2(s, up=True)
            e = ((torch.clamp(torch.round(wc / s), -qmax, qmax) * s - rows) ** 2).mean(dim=1, keepdim=True)
            better = e < best_err
            best_err = torch.where(better, e, best_err)
            best_c = torch.where(better, c, best_c)
        clipped = torch.maximum(torch.minimum(rows, best_c), -best_c).to(layer.weight.dtype)
        layer.weight.copy_(clipped.reshape(layer.weight.shape))


def _as_tensor(data):
    if isinstance(data, (tuple, list)):
        data = data[0]
    if isinstance(data, torch.utils.data.DataLoader):
        data = torch.cat([b[0] if isinstance(b, (tuple, list)) else b for b in data])
    return torch.as_tensor(data, dtype=torch.float32)
