# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The thresholding kernel: MultiThreshold, PE channels per beat."""
from __future__ import annotations

from qloom.compiler import ir

from ..threshold import ThresholdUnit
from .base import ElementwiseKernel, Resources, register


@register
class ThresholdKernel(ElementwiseKernel):
    node_types = (ir.MultiThreshold,)
    kind = "threshold"

    def build(self):
        n = self.node
        return ThresholdUnit(n.thresholds, self.in_type.dtype, self.out_type.dtype, n.base, self.in_n)

    def resources(self, mem):
        k = self.node.thresholds.shape[1]
        pe = self.in_n
        return Resources(luts=pe * k * (self.in_type.dtype.bits + 1) + pe * 8,
                         ffs=pe * self.out_type.dtype.bits + 8, depth=2)
