# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The residual-add kernel: ir.Add, a join of two streams with the same beat width."""
from __future__ import annotations

from qloom.compiler import ir

from ..add import AddUnit
from .base import NodeKernel, Resources, register


@register(ir.Add, kind="add")
class AddKernel(NodeKernel):
    @classmethod
    def stages(cls, node, types, folding, in_n):
        """in_n: the beat widths arriving on the two inputs (None where unknown): the wider one, so the
        add is never slower than the faster producer; the planner converts the other."""
        ns = [n for n in (in_n or ()) if n is not None]
        n = max(ns) if ns else 1
        ta, tb = types[node.inputs[0]], types[node.inputs[1]]
        return [cls(node.name, node, ta, types[node.output], n, n,
                    {"pe": n, "in_types": (ta, tb), "in_ns": (n, n)})]

    @property
    def in_ports(self):
        return ("i0", "i1")

    @property
    def order_preserving(self):
        return True

    @property
    def cycles(self):
        return self.out_type.size // self.out_n

    latency = AddUnit.LATENCY         # fixed by the unit: no need to build one to read it

    def build(self):
        a, b = self.in_types
        return AddUnit(a.dtype, b.dtype, self.out_type.dtype, self.node.coeffs, self.out_n)

    def resources(self, mem):
        bits = self.out_type.dtype.bits
        return Resources(luts=self.out_n * bits * 1.5 + 4, ffs=self.out_n * bits + 1, depth=1)
