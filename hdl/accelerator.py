"""The whole accelerator: the pipeline of kernels of a folded Graph, each stage's component in a chain."""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams
from .folding import plan


class DataflowAccelerator(wiring.Component):
    """Input beats of the graph's input type, output beats of its output type.

    `pipeline` is `folding.plan(graph, folding)`; stream widths (elements per beat)
    are its `in_n` and `out_n`.
    """

    def __init__(self, graph: ir.Graph, folding: dict):
        self.graph = graph
        self.pipeline = plan(graph, folding)
        types = graph.validate()
        self.in_n, self.out_n = self.pipeline.in_n, self.pipeline.out_n
        self.in_type = graph.input_type.dtype
        self.out_type = types[graph.output].dtype
        super().__init__({
            "i": In(streams.beat_signature(self.in_type, self.in_n)),
            "o": Out(streams.beat_signature(self.out_type, self.out_n)),
        })

    def elaborate(self, platform):
        m = Module()
        prev = wiring.flipped(self.i)
        for idx, stage in enumerate(self.pipeline):
            unit = stage.build()
            name = f"s{idx}_{stage.kind}_" + "".join(c if c.isalnum() else "_" for c in stage.name)
            m.submodules[name] = unit
            wiring.connect(m, prev, unit.i)
            prev = unit.o
        wiring.connect(m, prev, wiring.flipped(self.o))
        return m
