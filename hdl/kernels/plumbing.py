# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""Plumbing kernels the planner inserts: FIFOs and width converters (no IR node of their own)."""
from __future__ import annotations

import numpy as np

from .. import streams
from ..fifo import StreamFIFO
from ..width_converter import WidthConverter
from .base import Kernel, Resources


def spread(first: int, last: int, n: int) -> np.ndarray:
    """n beat times evenly spaced from first to last (integers)."""
    if n == 1:
        return np.array([first], dtype=np.int64)
    return first + (np.arange(n, dtype=np.int64) * (last - first)) // (n - 1)


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
        return StreamFIFO.latency_for(self.depth)

    def build(self):
        return StreamFIFO(streams.beat_layout(self.in_type.dtype, self.in_n), self.depth)

    def resources(self, mem):
        """lib.fifo's memory as Yosys maps it (costs.ram), its output register and pointers (fitted
        to Yosys on FIFOs of 1-128 bits x 4-1100 beats: docs/hardware.md)."""
        from . import costs
        width = self.in_type.dtype.bits * self.in_n
        if self.depth <= 2:                     # lib.fifo.SyncFIFO: ECP5 LUT-RAM, iCE40 registers and a mux
            if costs.family(mem) == "ecp5":
                return Resources(luts=0.5 * width + 9, ffs=4)
            return Resources(luts=width + 12, ffs=2 * width + 4, lone_ffs=2 * width)
        abits = max(1, (self.depth - 1).bit_length())
        r = costs.ram(mem, width, self.depth, None)
        if costs.family(mem) == "ecp5" and not r.brams:
            # ECP5 LUT-RAM: the output register, the pointers and levels, and beyond 16 words a LUT4 per bit
            # before the register (cnv-w1a1's four: 51-144 FF and 167-306 LUT4 at 24-96 beats of 32-128 bits, the
            # register counted with the FIFO; it had been counted with the board top, named after the next stage's
            # port)
            r.ffs = width + 3 * abits + 1
            r.luts += width if self.depth > 16 else 0
        else:
            r.ffs += width + 4 * abits + 5
        r.luts += max(0.0, costs.c(mem, "fifo_abit") * abits - 8)
        if costs.family(mem) == "ecp5" and r.brams:
            r.luts += width                     # the output register's bypass (on iCE40: ram_collision)
        return r


class WidthKernel(Kernel):
    """Re-packs elements from beats of in_n into beats of out_n."""
    kind = "width"

    @property
    def cycles(self):
        return self.in_type.size // min(self.in_n, self.out_n)

    latency = WidthConverter.LATENCY         # fixed by the unit: no need to build one to read it

    def frame_times(self, first, last):
        """Exact for evenly spaced input beats (what an MVU, or the accelerator's input, sends): output
        beat j leaves one cycle after the input beat that completes it, and at most one a cycle."""
        t_in = spread(first, last, self.in_type.size // self.in_n)
        j = np.arange(self.in_type.size // self.out_n)
        ready = t_in[-(-(j + 1) * self.out_n // self.in_n) - 1] + self.latency
        t_out = np.maximum.accumulate(ready - j) + j          # out[j] = max(ready[j], out[j-1] + 1)
        return int(t_out[0]), int(t_out[-1])

    def build(self):
        return WidthConverter(self.in_type.dtype, self.in_n, self.out_n, self.in_type.size, slack=self.slack)

    @property
    def slack(self) -> int:
        """Extra whole input beats a downsizer holds: one, so that a producer that sends two beats
        back to back (a pooling unit at a row's end) is not stalled while the first goes out."""
        return 1 if self.in_n > self.out_n else 0

    def resources(self, mem):
        """The gearbox's register (cap units of g elements) and, per bit, a mux over the positions an
        input beat can be written to (WidthConverter.elaborate); fitted to Yosys on iCE40 and ECP5."""
        from math import gcd
        g = gcd(self.in_n, self.out_n)
        n_in, n_out = self.in_n // g, self.out_n // g
        cap = n_in + n_out - 1 + self.slack * n_in
        bits = cap * g * self.in_type.dtype.bits
        positions = cap - n_in + 1                  # where an input beat can be written
        sources = min(n_in, positions)              # input pieces a slot can take, besides the shift
        count = (cap + 1).bit_length()
        # a LUT4 per register bit (shift or load), 1.4 more per extra source, and the count's logic: fitted
        # per stage on the bench designs (30 converters, 2-128 bits: within 20% or 4 LUT4; the model
        # before, 0.9 per bit and source + cap, was up to 2x high on deep 1-bit ones)
        # + the registered full/room flags computed off the next count (8 LUT4, 3 FF: the converters of the UP5K
        # and ECP5 bench designs were 6-23 LUT4 and 2-3 FF over the model before)
        return Resources(luts=bits * (1.0 + 1.4 * (sources - 1)) + 2 * count + 6 * (sources - 1) + 8,
                         ffs=bits + count + 3)
