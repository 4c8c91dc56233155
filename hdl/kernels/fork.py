# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The fork kernel: plumbing the planner puts where a tensor feeds several stages."""
from __future__ import annotations

from .. import streams
from ..fork import StreamFork
from .base import Kernel, Resources


class ForkKernel(Kernel):
    """Duplicates a stream to `extra["outputs"]` consumers (ports o0, o1, ...)."""
    kind = "fork"

    @property
    def out_ports(self):
        return tuple(f"o{k}" for k in range(self.extra["outputs"]))

    @property
    def cycles(self):
        return self.in_type.size // self.in_n

    @property
    def counts_for_ii(self):
        return False            # it moves a beat per cycle, like the stage that feeds it

    latency = StreamFork.LATENCY         # fixed by the unit: no need to build one to read it

    def build(self):
        return StreamFork(streams.beat_layout(self.in_type.dtype, self.in_n), self.extra["outputs"])

    def resources(self, mem):
        n = self.extra["outputs"]
        return Resources(luts=2 * n + 1, ffs=n, depth=0)
