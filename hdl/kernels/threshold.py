# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The thresholding kernel: MultiThreshold, PE channels per beat."""
from __future__ import annotations

from qloom.compiler import ir

from ..threshold import ThresholdUnit
from . import costs
from .base import ElementwiseKernel, Resources, register


@register
class ThresholdKernel(ElementwiseKernel):
    node_types = (ir.MultiThreshold,)
    kind = "threshold"

    def build(self):
        n = self.node
        return ThresholdUnit(n.thresholds, self.in_type.dtype, self.out_type.dtype, n.base, self.in_n)

    def resources(self, mem):
        """A comparator per lane and threshold, the count; a LUT-ROM of C/PE words of K thresholds per
        lane whose thresholds change between beats (ThresholdUnit: Yosys' choice, LUTs at these depths)."""
        u = self.unit
        k = self.node.thresholds.shape[1]
        pe = self.in_n
        bits = u._tshape.width
        r = Resources(luts=pe * k * (bits + 1) + pe * 8, ffs=pe * self.out_type.dtype.bits + 8, depth=u.latency)
        for p, rom in enumerate(u._rom):
            if rom:
                part = costs.rom(mem, k * bits, len(u._lanes[p]), None)
                r.luts, r.ffs, r.brams = r.luts + part.luts, r.ffs + part.ffs, r.brams + part.brams
        if any(u._rom):
            r.ffs += pe * self.in_type.dtype.bits + 1          # the accumulator waits for the ROM read
        return r
