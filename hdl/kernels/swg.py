# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The sliding-window kernel: a convolution's im2col stream (plumbing of the conv's MVU stage)."""
from __future__ import annotations

import numpy as np

from qloom.compiler import ir

from ..swg import SlidingWindowGenerator
from . import costs
from .base import Kernel, Resources
from .plumbing import spread


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
                                      n.pad_value, self.in_n, period=self.extra.get("period"))

    @property
    def cycles(self):
        return self.unit.cycles

    def frame_times(self, first, last):
        """The generator's own model of its handshakes with its consumer, the conv's MVU
        (SlidingWindowGenerator.window_times), the input beats evenly spaced from first to last.
        `last` is when the MVU has the last window's final beat to issue in its first pass: the
        cycle before it starts on that window, plus the window's beats (MVUKernel.frame_times)."""
        t, starts = self.unit.window_times(spread(first, last, self.in_type.size // self.in_n))
        per_pixel = self.out_type.shape[-1] // self.out_n
        return int(t[0]), int(max(t[-1] + per_pixel - 1, starts[-1] + per_pixel - 2))

    def need(self, j, port=0):
        """Input beats a frame's output beat j waits for: its pixel's `need` in the generator (beats)."""
        return self.unit._need[np.asarray(j) // (self.out_type.shape[-1] // self.out_n)]

    def resources(self, mem):
        """The ring (costs.ram, as Yosys maps it) and the counters: ring addresses (per address bit) and
        the output pixel's row/column and step tables (per bit of OH and OW); fitted to Yosys on 40
        generators per family, 1x1 to 5x5 kernels, 1-512-bit beats (docs/hardware.md)."""
        u = self.unit
        width = self.in_n * self.in_type.dtype.bits
        ring_bits = (u.depth - 1).bit_length()
        pixel_bits = (u.oh - 1).bit_length() + (u.ow - 1).bit_length()
        base, per_ring, per_pixel = costs.c(mem, "swg")
        counter_ffs = 9 * ring_bits + 6 * pixel_bits - 14
        r = Resources(luts=max(width, base + width + per_ring * ring_bits + per_pixel * pixel_bits),
                      ffs=max(width, width + counter_ffs), depth=2)
        ring = costs.ram(mem, width, u.depth, None)
        if costs.family(mem) == "ecp5" and not ring.brams:
            # a LUT-RAM ring: one beat-wide register (its read's) besides the counters, and beyond 16 words
            # half a LUT4 a bit before it (cnv-w1a1's three: 127-202 FF, 339-537 LUT4; the register had been
            # counted with the board top, named after the next stage's port)
            r.ffs, ring.ffs = width + max(0, counter_ffs), 0
            r.luts += 0.5 * width if u.depth > 16 else 0
        r.add(ring)
        return r
