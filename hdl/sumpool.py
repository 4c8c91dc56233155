"""SumPool: per-channel sums over KH x KW windows of a streamed (H, W, C) map.

Average and global-average pooling are a SumPool followed by thresholds or a
Requantize. The streaming engine is MaxPool's (hdl/maxpool.py) with + for max:
partial sums are kept in `out_dtype`, which holds every partial sum since it
holds the sum of a whole window. With global pooling (kernel = (H, W)) the
state is C/simd accumulator words, no row buffer. One input beat per cycle
(`cycles` = H*W*C/simd per frame); an output beat is valid 2 cycles (`latency`)
after the last input beat of its window is taken.
"""
from __future__ import annotations

from amaranth.hdl import Mux

from qloom.compiler import ir

from .maxpool import _pair, _Pool


class SumPool(_Pool):
    """(H, W, C) map of dtype in beats of simd channels -> (OH, OW, C) window sums of
    out_dtype in beats of simd, as reference._sumpool (no padding, floor mode).
    out_dtype: an ir.Int holding KH*KW times the input range (ir.SumPool.infer gives the
    narrowest). Bipolar inputs count as -1/+1."""

    def __init__(self, dtype: ir.ElemType, out_dtype: ir.Int, in_shape, kernel, stride, simd=1):
        self._check(dtype, in_shape, kernel, stride, simd)
        self._check_out(dtype, out_dtype, kernel)
        super().__init__(dtype, out_dtype, in_shape, kernel, stride, simd)

    @staticmethod
    def _check_out(dtype, out_dtype, kernel):
        if not isinstance(out_dtype, ir.Int):
            raise ValueError(f"out_dtype must be an ir.Int, got {out_dtype!r}")
        kh, kw = _pair(kernel, "kernel")
        lo, hi = kh * kw * dtype.min, kh * kw * dtype.max
        if lo < out_dtype.min or hi > out_dtype.max:
            raise ValueError(f"out_dtype {out_dtype} cannot hold the window sums {lo}..{hi} "
                             f"(needs at least {ir.int_type_for(lo, hi)})")

    def _lift(self, x):
        if isinstance(self.dtype, ir.BipolarType):
            return Mux(x, 1, -1)
        return x

    def _op(self, a, b):
        return a + b
