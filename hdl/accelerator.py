"""The whole accelerator: a chain of stages built from a folded Graph."""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import folding as folding_mod
from qloom.compiler import ir

from . import streams
from .argmax import ArgMax
from .fifo import StreamFIFO
from .maxpool import MaxPool
from .mvu import MatrixVectorUnit
from .requantizer import Requantizer
from .sumpool import SumPool
from .swg import SlidingWindowGenerator
from .threshold import ThresholdUnit
from .width_converter import WidthConverter


def build_stage(stage: dict, nodes: dict):
    kind, ti, to = stage["kind"], stage["in_type"].dtype, stage["out_type"].dtype
    if kind == "fifo":
        return StreamFIFO(streams.beat_layout(ti, stage["in_n"]), stage["depth"])
    if kind == "width":
        return WidthConverter(ti, stage["in_n"], stage["out_n"], stage["frame"])
    if kind == "swg":
        conv = nodes[stage["node"].rsplit(":", 1)[0]]
        return SlidingWindowGenerator(ti, stage["in_type"].shape, conv.kernel, conv.stride, conv.padding,
                                      conv.pad_value, stage["in_n"])
    node = nodes[stage["node"]]
    if kind == "mvu":
        w = node.weight if isinstance(node, ir.Dense) else \
            folding_mod.conv_matrix(node, stage["in_type"].shape[-1] // (node.kernel[0] * node.kernel[1]))
        wtype = node.wtype
        if getattr(node, "groups", 1) > 1 and isinstance(wtype, ir.BipolarType):
            wtype = ir.Int(2, True)      # the expanded grouped matrix has zeros: add/sub/skip lanes
        return MatrixVectorUnit(w, wtype, ti, to, stage["pe"], stage["simd"])
    if kind == "maxpool":
        return MaxPool(ti, stage["in_type"].shape, node.kernel, node.stride, stage["simd"])
    if kind == "sumpool":
        return SumPool(ti, to, stage["in_type"].shape, node.kernel, node.stride, stage["simd"])
    if kind == "threshold":
        return ThresholdUnit(node.thresholds, ti, to, node.base, stage["pe"])
    if kind == "requantize":
        return Requantizer(node.mult, node.shift, node.offset, node.rounding, ti, to, stage["pe"])
    if kind == "argmax":
        return ArgMax(ti, stage["in_type"].size, stage["simd"])
    raise ValueError(f"no hardware for stage kind {kind!r}")


class DataflowAccelerator(wiring.Component):
    """Input beats of the graph's input type, output beats of its output type.

    `stages` is `folding.plan(graph, folding)`; stream widths (elements per beat)
    are `in_n` of the first stage and `out_n` of the last.
    """

    def __init__(self, graph: ir.Graph, folding: dict):
        self.graph = graph
        self.stages = folding_mod.plan(graph, folding)
        types = graph.validate()
        self.in_n = self.stages[0]["in_n"]
        self.out_n = self.stages[-1]["out_n"]
        self.in_type = graph.input_type.dtype
        self.out_type = types[graph.output].dtype
        super().__init__({
            "i": In(streams.beat_signature(self.in_type, self.in_n)),
            "o": Out(streams.beat_signature(self.out_type, self.out_n)),
        })

    def elaborate(self, platform):
        m = Module()
        nodes = {n.name: n for n in self.graph.nodes}
        prev = self.i
        for idx, stage in enumerate(self.stages):
            unit = build_stage(stage, nodes)
            name = f"s{idx}_{stage['kind']}_" + "".join(c if c.isalnum() else "_" for c in stage["node"])
            m.submodules[name] = unit
            if prev is self.i:
                wiring.connect(m, wiring.flipped(self.i), unit.i)
            else:
                wiring.connect(m, prev, unit.i)
            prev = unit.o
        wiring.connect(m, prev, wiring.flipped(self.o))
        return m
