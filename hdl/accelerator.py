"""The whole accelerator: the pipeline of kernels of a folded Graph, each stage's component wired by the
pipeline's links (a chain, or a DAG with forks and joins)."""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams
from .folding import plan


def stage_name(idx: int, stage) -> str:
    """The submodule name of stage idx (also what deadlock reports and Verilog hierarchies show)."""
    return f"s{idx}_{stage.kind}_" + "".join(c if c.isalnum() else "_" for c in stage.name)


class DataflowAccelerator(wiring.Component):
    """Input beats of the graph's input type, output beats of its output type.

    `pipeline` is `folding.plan(graph, folding)`; stream widths (elements per beat)
    are its `in_n` and `out_n`. After elaboration, `probes` lists every internal stream
    as (label, the consumer's port), for testbenches that watch for deadlocks.
    """

    def __init__(self, graph: ir.Graph, folding: dict):
        self.graph = graph
        self.pipeline = plan(graph, folding)
        types = graph.validate()
        self.in_n, self.out_n = self.pipeline.in_n, self.pipeline.out_n
        self.in_type = graph.input_type.dtype
        self.out_type = types[graph.output].dtype
        self.probes = []
        super().__init__({
            "i": In(streams.beat_signature(self.in_type, self.in_n)),
            "o": Out(streams.beat_signature(self.out_type, self.out_n)),
        })

    def elaborate(self, platform):
        m = Module()
        units = []
        for idx, stage in enumerate(self.pipeline):
            unit = stage.build()
            m.submodules[stage_name(idx, stage)] = unit
            units.append(unit)
        probes = []
        for lk in self.pipeline.links:
            src = wiring.flipped(self.i) if lk.src is None else getattr(units[lk.src], lk.src_port)
            dst = wiring.flipped(self.o) if lk.dst is None else getattr(units[lk.dst], lk.dst_port)
            wiring.connect(m, src, dst)
            if lk.src is not None and lk.dst is not None:
                probes.append((self.pipeline.label(lk), dst))
        self.probes = probes
        return m
