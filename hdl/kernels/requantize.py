# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The requantization kernel: fixed-point Requantize, PE channels per beat."""
from __future__ import annotations

from qloom.compiler import ir

from ..requantizer import Requantizer
from .base import ElementwiseKernel, Resources, register


@register(ir.Requantize, kind="requantize")
class RequantizeKernel(ElementwiseKernel):
    def build(self):
        n = self.node
        return Requantizer(n.mult, n.shift, n.offset, n.rounding, self.in_type.dtype, self.out_type.dtype,
                           self.in_n)

    def resources(self, mem):
        pe = self.in_n
        mbits = max(int(abs(self.node.mult).max()).bit_length(), 1) + 1
        ti, to = self.in_type.dtype.bits, self.out_type.dtype.bits
        return Resources(luts=pe * (mbits + ti + to), ffs=pe * (ti + mbits) * 2, dsps=pe, depth=3)
