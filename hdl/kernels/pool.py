# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""Pooling kernels: MaxPool2d and SumPool (average pooling's exact integer sum)."""
from __future__ import annotations

from qloom.compiler import ir

from ..maxpool import MaxPool
from ..sumpool import SumPool
from .base import ElementwiseKernel, Resources, register


class _PoolKernel(ElementwiseKernel):
    """One input beat per cycle (the unit's `cycles`); SIMD channels per beat."""
    lanes = "simd"

    @property
    def cycles(self):
        return self.unit.cycles

    def resources(self, mem):
        h, w, c = self.in_type.shape
        width = self.in_n * self.out_type.dtype.bits
        row_beats = max(1, w * c // (self.node.kernel[1] * self.in_n))     # one row of partial results
        blocks, luts = mem.place(width, row_beats)
        return Resources(luts=3 * width + 30 + luts, ffs=2 * width + 30, brams=blocks, depth=2)


@register
class MaxPoolKernel(_PoolKernel):
    node_types = (ir.MaxPool2d,)
    kind = "maxpool"

    def build(self):
        n = self.node
        return MaxPool(self.in_type.dtype, self.in_type.shape, n.kernel, n.stride, self.in_n)


@register
class SumPoolKernel(_PoolKernel):
    node_types = (ir.SumPool,)
    kind = "sumpool"

    def build(self):
        n = self.node
        return SumPool(self.in_type.dtype, self.out_type.dtype, self.in_type.shape, n.kernel, n.stride, self.in_n)
