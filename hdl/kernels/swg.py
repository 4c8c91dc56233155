# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The sliding-window kernel: a convolution's im2col stream (plumbing of the conv's MVU stage)."""
from __future__ import annotations

from qloom.compiler import ir

from ..swg import SlidingWindowGenerator
from .base import Kernel, Resources


class SWGKernel(Kernel):
    """(H, W, C) map -> (OH, OW, KH*KW*C) windows; `node` is the Conv2d it feeds."""
    kind = "swg"

    def __post_init__(self):
        oh, ow = self.node.out_hw(*self.in_type.shape[:2])
        kh, kw = self.node.kernel
        self.out_type = ir.TensorType((oh, ow, kh * kw * self.in_type.shape[-1]), self.in_type.dtype)

    def build(self):
        n = self.node
        return SlidingWindowGenerator(self.in_type.dtype, self.in_type.shape, n.kernel, n.stride, n.padding,
                                      n.pad_value, self.in_n)

    @property
    def cycles(self):
        return self.unit.cycles

    def frame_times(self, first, last):
        h, w, _ = self.in_type.shape
        (kh, kw), (ph, pw) = self.node.kernel, self.node.padding
        fill = ((kh - 1 - ph) * w + kw - pw) / (h * w)      # share of the frame in before the first window
        first = first + int(fill * (last - first)) + self.latency
        return first, max(last + self.latency, first + self.cycles - 1)

    def resources(self, mem):
        width = self.in_n * self.in_type.dtype.bits
        r = Resources(luts=60 + 2 * width, ffs=60 + 2 * width, depth=2)
        blocks, luts = mem.place(width, self.unit.depth)
        r.brams, r.luts = blocks, r.luts + luts
        return r
