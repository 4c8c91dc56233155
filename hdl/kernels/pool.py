# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""Pooling kernels: MaxPool2d and SumPool (average pooling's exact integer sum)."""
from __future__ import annotations

import numpy as np

from qloom.compiler import ir

from ..maxpool import MaxPool
from ..sumpool import SumPool
from . import costs
from .base import ElementwiseKernel, Resources, register
from .plumbing import spread


class _PoolKernel(ElementwiseKernel):
    """One input beat per cycle (the unit's `cycles`); SIMD channels per beat."""
    lanes = "simd"
    order_preserving = False

    @property
    def cycles(self):
        return self.unit.cycles

    def need(self, j, port=0):
        """An output beat leaves once the last input beat of its window (same channels) is in."""
        j = np.asarray(j, dtype=np.int64)
        (_, w, c), (kh, kw), (sh, sw) = self.in_type.shape, self.node.kernel, self.node.stride
        cf = c // self.in_n
        ow = self.out_type.shape[1]
        pixel, fold = j // cf, j % cf
        r, col = (pixel // ow) * sh + kh - 1, (pixel % ow) * sw + kw - 1
        return (r * w + col) * cf + fold + 1

    def frame_times(self, first, last):
        """An output beat leaves `latency` cycles after the input beat that completes its window
        (need()), the input beats evenly spaced from first to last."""
        t_in = spread(first, last, self.in_type.size // self.in_n)
        j = np.array([0, self.out_type.size // self.out_n - 1])
        t = t_in[self.need(j) - 1] + self.latency
        return int(t[0]), int(t[1])

    def resources(self, mem):
        h, w, c = self.in_type.shape
        width = self.in_n * self.out_type.dtype.bits
        row_beats = max(1, w * c // (self.node.kernel[1] * self.in_n))     # one row of partial results
        rows = costs.ram(mem, width, row_beats, None)        # the row buffer, as Yosys maps it
        return Resources(luts=3 * width + 30, ffs=2 * width + 30, depth=2).add(rows)


@register(ir.MaxPool2d, kind="maxpool")
class MaxPoolKernel(_PoolKernel):
    def build(self):
        n = self.node
        return MaxPool(self.in_type.dtype, self.in_type.shape, n.kernel, n.stride, self.in_n)


@register(ir.SumPool, kind="sumpool")
class SumPoolKernel(_PoolKernel):
    def build(self):
        n = self.node
        return SumPool(self.in_type.dtype, self.out_type.dtype, self.in_type.shape, n.kernel, n.stride, self.in_n)
