# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The thresholding kernel: MultiThreshold, PE channels per beat."""
from __future__ import annotations

import numpy as np

from qloom.compiler import ir

from ..threshold import ThresholdUnit
from . import costs
from .base import ElementwiseKernel, Resources, register


@register(ir.MultiThreshold, kind="threshold")
class ThresholdKernel(ElementwiseKernel):
    def build(self):
        n = self.node
        return ThresholdUnit(n.thresholds, self.in_type.dtype, self.out_type.dtype, n.base, self.in_n)

    def resources(self, mem):
        """A comparator per lane and threshold, the count; a LUT-ROM of C/PE words of K thresholds per
        lane whose thresholds change between beats (ThresholdUnit: Yosys' choice, LUTs at these depths).
        A ROM of up to 16 words merges with its comparators (ABC maps x >= T[addr] as one function):
        per threshold bit, a cost that grows with log2(depth), fitted per family to bench/synth.py
        --per-stage (iCE40 1.16 LUT4 at 8 words, 1.93 at 16; ECP5 1.0-1.06 at 2 words, 1.43-1.6 at 16; a
        compare with a constant: 1 LUT4 per bit + 1 on iCE40, 0.73 on ECP5). On iCE40 a compare's carry cells take
        logic cells of their own (no sum LUT to share): `pack_luts`."""
        u = self.unit
        k = self.node.thresholds.shape[1]
        pe = self.in_n
        bits = u._tshape.width
        r = Resources(luts=pe * max(1, k - 1) + 8, ffs=pe * self.out_type.dtype.bits + 8, depth=u.latency)
        for p, rom in enumerate(u._rom):
            depth = len(u._lanes[p])
            if rom and depth <= 16:
                a, b, floor = costs.c(mem, "thr_rom_bit")
                r.luts += max(floor, a + b * np.log2(max(2, depth))) * k * bits
                r.ffs += costs.c(mem, "thr_rom_ff")[max(1, (depth - 1).bit_length()) - 1] * k * bits
            elif rom:
                # a bit column that is the same in every word is a constant, not a LUT (Yosys folds it)
                tab = np.asarray(u._lanes[p], dtype=np.int64) & ((1 << bits) - 1)
                cols = (tab[:, :, None] >> np.arange(bits)) & 1
                varying = int((cols != cols[:1]).any(axis=0).sum())
                r.luts += k * (bits + 1)
                r.add(costs.rom(mem, varying, depth, None))
            else:
                r.luts += k * (bits + 1) * costs.c(mem, "thr_const_bit")
        if any(u._rom):
            r.ffs += pe * self.in_type.dtype.bits + 1          # the accumulator waits for the ROM read
        r.pack_luts += pe * k * bits * costs.c(mem, "carry_pack")    # a compare is a carry chain
        r.pack_luts += pe * k * (bits - 1) * costs.c(mem, "carry_lc")  # iCE40: its carries are logic cells
        return r
