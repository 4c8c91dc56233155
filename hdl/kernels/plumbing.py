# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""Plumbing kernels the planner inserts: FIFOs and width converters (no IR node of their own)."""
from __future__ import annotations

from .. import streams
from ..fifo import StreamFIFO
from ..width_converter import WidthConverter
from .base import Kernel, Resources


class FIFOKernel(Kernel):
    """A FIFO of `extra["depth"]` beats in front of a unit that reads its input in bursts."""
    kind = "fifo"

    @property
    def depth(self):
        return self.extra["depth"]

    @property
    def cycles(self):
        return self.in_type.size // self.in_n

    @property
    def counts_for_ii(self):
        return False

    @property
    def latency(self):
        return StreamFIFO.LATENCY

    def build(self):
        return StreamFIFO(streams.beat_layout(self.in_type.dtype, self.in_n), self.depth)

    def resources(self, mem):
        width = self.in_type.dtype.bits * self.in_n
        r = Resources(ffs=width + 16)
        if self.depth >= mem.min_depth:
            r.brams = mem.blocks(width, self.depth)
        else:
            r.luts = width * self.depth / mem.lutram_bits + 16
        return r


class WidthKernel(Kernel):
    """Re-packs elements from beats of in_n into beats of out_n."""
    kind = "width"

    @property
    def cycles(self):
        return self.in_type.size // min(self.in_n, self.out_n)

    @property
    def latency(self):
        return WidthConverter.LATENCY

    def build(self):
        return WidthConverter(self.in_type.dtype, self.in_n, self.out_n, self.in_type.size)

    def resources(self, mem):
        bits = self.in_type.dtype.bits * max(self.in_n, self.out_n)
        return Resources(luts=bits, ffs=2 * bits)
