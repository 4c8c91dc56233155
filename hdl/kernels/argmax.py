# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The argmax kernel (class label), and Flatten, which needs no hardware."""
from __future__ import annotations

from qloom.compiler import ir

from ..argmax import ArgMax
from .base import NodeKernel, Resources, register


@register(ir.ArgMax, kind="argmax")
class ArgMaxKernel(NodeKernel):
    @classmethod
    def stages(cls, node, types, folding, in_n):
        n = in_n if in_n is not None else 1
        return [cls(node.name, node, types[node.inputs[0]], types[node.output], n, 1, {"simd": n})]

    def build(self):
        return ArgMax(self.in_type.dtype, self.in_type.size, self.in_n)

    @property
    def cycles(self):
        return self.in_type.size // self.in_n

    @property
    def latency(self):
        return ArgMax.latency_for(self.in_n)         # fixed by the unit: no need to build one to read it

    def frame_times(self, first, last):
        return last + self.latency, last + self.latency       # one beat, after the whole vector

    def resources(self, mem):
        bits = self.in_type.dtype.bits
        # the tree's level registers: ceil(k/2) (value, lane) pairs after a level of k candidates
        tree_ffs, k = 0, self.in_n
        while k > 1:
            k = -(-k // 2)
            tree_ffs += k * (bits + max(1, (self.in_n - 1).bit_length())) + 1
        return Resources(luts=self.in_n * bits * 2 + 16, ffs=bits + 16 + tree_ffs, depth=self.latency)


@register(ir.Flatten)
class FlattenKernel(NodeKernel):
    """(H, W, C) -> vector: the stream order (C fastest) does not change, so no stage."""

    @classmethod
    def stages(cls, node, types, folding, in_n):
        return []
