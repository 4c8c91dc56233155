# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The matrix-vector kernel: a Dense layer, or a convolution's im2col rows (after a window generator)."""
from __future__ import annotations

import numpy as np

from qloom.compiler import ir

from ..mvu import MatrixVectorUnit
from .base import NodeKernel, Resources, register
from .plumbing import FIFOKernel
from .swg import SWGKernel


def conv_matrix(node: ir.Conv2d, in_channels: int) -> np.ndarray:
    """The conv's weights as an (OC, KH*KW*C) matrix in im2col order (kh, kw, c), groups expanded
    (zeros outside each group), which is what the window generator + MVU compute."""
    oc, kh, kw, cg = node.weight.shape
    g = node.groups
    full = np.zeros((oc, kh, kw, in_channels), dtype=np.int64)
    for o in range(oc):
        gi = o // (oc // g)
        full[o, :, :, gi * cg:(gi + 1) * cg] = node.weight[o]
    return full.reshape(oc, -1)


def _mac_luts(wtype, xtype, acc_bits) -> float:
    """LUTs for one SIMD lane of one PE: its product and its share of the adder tree."""
    if isinstance(wtype, ir.BipolarType) and isinstance(xtype, ir.BipolarType):
        return 1.0                                  # XNOR + popcount
    if isinstance(wtype, ir.BipolarType) or isinstance(xtype, ir.BipolarType):
        return xtype.bits + 1 if isinstance(wtype, ir.BipolarType) else wtype.bits + 1  # add/sub
    return wtype.bits * xtype.bits + acc_bits / 2   # multiplier in LUTs + tree


@register
class MVUKernel(NodeKernel):
    """acc = W @ x on a stream of vectors, PE output lanes x SIMD input lanes."""
    node_types = (ir.Dense, ir.Conv2d)
    kind = "mvu"
    foldable = True

    @classmethod
    def space(cls, node, types):
        if isinstance(node, ir.Dense):
            n, k = node.weight.shape
            return n, k, "inputs"
        return types[node.output].shape[-1], types[node.inputs[0]].shape[-1], "input channels"

    @classmethod
    def node_cycles(cls, node, types, pe, simd):
        n, k, _ = cls.space(node, types)
        if isinstance(node, ir.Dense):
            return (k // simd) * (n // pe)
        oh, ow, _ = types[node.output].shape
        kk = node.kernel[0] * node.kernel[1]
        return oh * ow * (kk * k // simd) * (n // pe)

    @classmethod
    def stages(cls, node, types, folding, in_n):
        f = (folding or {}).get(node.name)
        if f is None:
            from .base import FoldingError
            raise FoldingError(f"no folding for layer '{node.name}'")
        pe, simd = f["pe"], f["simd"]
        cls.check(node, types, pe, simd)
        t_in, t_out = types[node.inputs[0]], types[node.output]
        out = []
        if isinstance(node, ir.Conv2d):
            # the window generator consumes its input row by row: a FIFO of two rows decouples it
            h, w, c = t_in.shape
            out.append(FIFOKernel(node.name + ":fifo", None, t_in, t_in, simd, simd,
                                  {"depth": max(2, min(h, 2) * w * c // simd)}))
            swg = SWGKernel(node.name + ":swg", node, t_in, None, simd, simd)
            out.append(swg)
            t_in = swg.out_type
        else:
            out.append(FIFOKernel(node.name + ":fifo", None, t_in, t_in, simd, simd,
                                  {"depth": max(2, t_in.size // simd)}))
        out.append(cls(node.name, node, t_in, t_out, simd, pe, {"pe": pe, "simd": simd}))
        return out

    # ------------------------------------------------------------ one stage
    @property
    def pe(self):
        return self.extra["pe"]

    @property
    def simd(self):
        return self.extra["simd"]

    @property
    def weight(self) -> np.ndarray:
        if isinstance(self.node, ir.Dense):
            return self.node.weight
        kk = self.node.kernel[0] * self.node.kernel[1]
        return conv_matrix(self.node, self.in_type.shape[-1] // kk)

    @property
    def wtype(self):
        wtype = self.node.wtype
        if getattr(self.node, "groups", 1) > 1 and isinstance(wtype, ir.BipolarType):
            wtype = ir.Int(2, True)      # the expanded grouped matrix has zeros: add/sub/skip lanes
        return wtype

    def build(self):
        return MatrixVectorUnit(self.weight, self.wtype, self.in_type.dtype, self.out_type.dtype,
                                self.pe, self.simd)

    @property
    def cycles(self):
        pixels = self.in_type.size // self.in_type.shape[-1]     # 1 for a Dense, OH*OW for a conv
        return pixels * self.unit.ii

    def frame_times(self, first, last):
        u = self.unit
        depth = u.latency - u.sf                  # pipeline registers after the last slice
        if self.in_type.size == self.in_type.shape[-1]:          # Dense: the whole vector first
            first = last + depth
            return first, first + (u.nf - 1) * u.sf
        # conv: one vector per pixel
        return first + u.sf + depth - 1, max(last + depth + (u.nf - 1) * u.sf, first + self.cycles)

    def resources(self, mem):
        ti, to = self.in_type, self.out_type
        pe, simd, acc = self.pe, self.simd, to.dtype.bits
        r = Resources(depth=2)
        r.luts = pe * simd * _mac_luts(self.node.wtype, ti.dtype, acc) + pe * acc * 2 + 40
        r.ffs = pe * acc * 2 + simd * ti.dtype.bits * 2 + 32
        rom_depth = self.unit.nf * self.unit.sf
        blocks, luts = mem.place(simd * self.node.wtype.bits, rom_depth)
        r.brams += pe * blocks
        r.luts += pe * luts
        blocks, luts = mem.place(simd * ti.dtype.bits, ti.shape[-1] // simd)    # the input buffer
        r.brams += blocks
        r.luts += luts
        return r
