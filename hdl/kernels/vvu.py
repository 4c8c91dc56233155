# amaranth: UnusedElaboratable=no
# (Kernel.unit makes the component once to read its parameters; the assembly builds its own)
"""The depthwise-conv kernel: a Conv2d with one filter per channel, on the vector-vector unit.

Only the C filters are stored (no block-diagonal zeros), and PE channels share each beat.
SIMD over the window is 1: the window generator emits one window position per beat
(at most C channels), which already bounds every conv at KH*KW cycles per output pixel.
"""
from __future__ import annotations

import numpy as np

from qloom.compiler import ir

from ..vvu import VectorVectorUnit
from .base import NodeKernel, Resources, register
from .mvu import _mac_luts
from .plumbing import FIFOKernel
from .swg import SWGKernel


def is_depthwise(node) -> bool:
    """A conv with one filter per channel: groups == input channels == output channels > 1."""
    w = getattr(node, "weight", None)
    g = getattr(node, "groups", 1)
    return isinstance(w, np.ndarray) and w.ndim == 4 and g > 1 and w.shape[0] == g and w.shape[3] == 1


@register(ir.Conv2d, kind="vvu")
class VVUKernel(NodeKernel):
    foldable = True

    @classmethod
    def accepts(cls, node) -> bool:
        return is_depthwise(node)

    @classmethod
    def space(cls, node, types):
        return node.weight.shape[0], 1, "window lanes (one window position per beat)"

    @classmethod
    def node_cycles(cls, node, types, pe, simd):
        oh, ow, c = types[node.output].shape
        return oh * ow * node.kernel[0] * node.kernel[1] * (c // pe)

    @classmethod
    def stages(cls, node, types, folding, in_n):
        f = (folding or {}).get(node.name)
        if f is None:
            from .base import FoldingError
            raise FoldingError(f"no folding for layer '{node.name}'")
        pe, simd = f["pe"], f.get("simd", 1)
        cls.check(node, types, pe, simd)
        t_in = types[node.inputs[0]]
        h, w, c = t_in.shape
        fifo = FIFOKernel(node.name + ":fifo", None, t_in, t_in, pe, pe, {"depth": max(2, min(h, 2) * w * c // pe)})
        swg = SWGKernel(node.name + ":swg", node, t_in, None, pe, pe)
        vvu = cls(node.name, node, swg.out_type, types[node.output], pe, pe, {"pe": pe, "simd": 1})
        return [fifo, swg, vvu]

    # ------------------------------------------------------------ one stage
    @property
    def pe(self):
        return self.extra["pe"]

    @property
    def window(self) -> int:
        return self.node.kernel[0] * self.node.kernel[1]

    def build(self):
        c = self.node.weight.shape[0]
        return VectorVectorUnit(self.node.weight.reshape(c, -1), self.node.wtype, self.in_type.dtype,
                                self.out_type.dtype, self.pe)

    @property
    def cycles(self):
        return self.in_type.size // self.in_n          # one input beat per cycle

    def frame_times(self, first, last):
        lat = self.unit.latency
        first_out = first + (self.window - 1) * self.unit.cf + lat
        return first_out, max(last + lat, first + self.cycles + lat - 1)

    def need(self, j, port=0):
        """Output beat j (pixel p, channel fold cf) leaves after the pixel's last window position for cf."""
        j = np.asarray(j, dtype=np.int64)
        cf = self.unit.cf
        return (j // cf) * self.window * cf + (self.window - 1) * cf + j % cf + 1

    def resources(self, mem):
        pe, acc = self.pe, self.out_type.dtype.bits
        u = self.unit
        r = Resources(depth=2)
        r.luts = pe * (_mac_luts(self.node.wtype, self.in_type.dtype, acc) + acc) + 30
        r.ffs = pe * (acc + self.in_type.dtype.bits) + 24
        for width, depth in ((pe * self.node.wtype.bits, self.window * u.cf), (pe * acc, max(u.cf, 2))):
            blocks, luts = mem.place(width, depth)
            r.brams += blocks
            r.luts += luts
        return r

    @property
    def weight_bits(self) -> int:
        """Bits of weight storage (the ROM): C filters of K weights."""
        return self.node.weight.size * self.node.wtype.bits


def zero_expanded(graph: ir.Graph) -> ir.Graph:
    """The same network with every depthwise conv as a dense conv of block-diagonal weights (zeros outside
    each channel's filter): what the matrix unit alone would run. For comparisons (bench/hw_estimates.py)."""
    nodes = []
    for n in graph.nodes:
        if isinstance(n, ir.Conv2d) and is_depthwise(n):
            c = n.weight.shape[0]
            w = np.zeros((c,) + n.weight.shape[1:3] + (c,), dtype=np.int64)
            w[np.arange(c), :, :, np.arange(c)] = n.weight[:, :, :, 0]
            wtype = ir.Int(2, True) if n.wtype is ir.Bipolar else n.wtype       # zeros: bipolar lanes become ternary
            n = ir.Conv2d(n.name, n.inputs, n.output, weight=w, wtype=wtype, stride=n.stride, padding=n.padding,
                          pad_value=n.pad_value)
        nodes.append(n)
    return ir.Graph(graph.input, graph.input_type, nodes, graph.output, name=graph.name + "-expanded")
