# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The concatenation kernel: ir.Concat, a join that interleaves its inputs' channels pixel by pixel."""
from __future__ import annotations

import math

import numpy as np

from qloom.compiler import ir

from ..concat import ConcatUnit
from .base import NodeKernel, Resources, register


@register(ir.Concat, kind="concat")
class ConcatKernel(NodeKernel):
    @classmethod
    def stages(cls, node, types, folding, in_n):
        """One beat width n on every port, dividing every input's channels: the largest such n up to the
        widest incoming beat (the planner converts the inputs to it)."""
        ins = [types[t] for t in node.inputs]
        g = math.gcd(*[t.shape[-1] for t in ins])
        widest = max([n for n in (in_n or ()) if n is not None], default=1)
        n = max(d for d in range(1, g + 1) if g % d == 0 and d <= max(widest, 1))
        return [cls(node.name, node, ins[0], types[node.output], n, n,
                    {"pe": n, "in_types": tuple(ins), "in_ns": (n,) * len(ins)})]

    @property
    def in_ports(self):
        return tuple(f"i{k}" for k in range(len(self.node.inputs)))

    @property
    def channels(self):
        return [t.shape[-1] for t in self.in_types]

    @property
    def cycles(self):
        return self.out_type.size // self.out_n

    latency = ConcatUnit.LATENCY         # fixed by the unit: no need to build one to read it

    def need(self, j, port=0):
        """Output beat j (pixel p, offset o within its pixel) needs from input k every beat of pixel p
        up to o when k's segment comes before or holds o, else the pixels before p only."""
        j = np.asarray(j, dtype=np.int64)
        beats = [c // self.out_n for c in self.channels]
        start, b = sum(beats[:port]), beats[port]
        pixel, o = j // sum(beats), j % sum(beats)
        return pixel * b + np.clip(o - start + 1, 0, b)

    def build(self):
        return ConcatUnit([t.dtype for t in self.in_types], self.out_type.dtype, self.channels, self.out_n)

    def resources(self, mem):
        bits = self.out_type.dtype.bits * self.out_n
        k = len(self.in_types)
        return Resources(luts=bits * (k - 1) + 12, ffs=bits + 8, depth=1)
