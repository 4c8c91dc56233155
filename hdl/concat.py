"""ConcatUnit: channel concatenation of feature maps, one stream per input, between streams.

For every pixel the output carries input 0's C0 channels, then input 1's C1, ...: the
unit takes C0/n beats from `i0`, then C1/n beats from `i1`, and so on (n elements per
beat on every port, n dividing every Ck), converting elements to the output type.
Only the input whose turn it is sees `ready`. One beat per cycle; the output register
holds the beat (latency 1).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams
from .add import as_int


class ConcatUnit(wiring.Component):
    """Inputs `i0` .. `i{k-1}` of element types `in_types` with `channels` channels each, output `o`."""

    LATENCY = 1

    def __init__(self, in_types, out_type, channels, n: int):
        if len(in_types) != len(channels) or len(channels) < 2:
            raise ValueError(f"need 2 or more inputs, one type and channel count each; got {in_types}, {channels}")
        for k, c in enumerate(channels):
            if n < 1 or c % n:
                raise ValueError(f"n={n} does not divide input {k}'s {c} channels; valid n: "
                                 f"{streams.divisors(c)}")
        lo, hi = min(t.min for t in in_types), max(t.max for t in in_types)
        bipolar_out = isinstance(out_type, ir.BipolarType)
        if bipolar_out and not all(isinstance(t, ir.BipolarType) for t in in_types):
            raise ValueError("a bipolar output needs bipolar inputs")
        if not bipolar_out and (lo < out_type.min or hi > out_type.max):
            raise ValueError(f"out_type {out_type} cannot hold the inputs' values {lo}..{hi}")
        self.in_types, self.out_type = list(in_types), out_type
        self.channels, self.n = [int(c) for c in channels], int(n)
        self.latency = self.LATENCY
        members = {f"i{k}": In(streams.beat_signature(t, n)) for k, t in enumerate(in_types)}
        members["o"] = Out(streams.beat_signature(out_type, n))
        super().__init__(members)

    def inputs(self) -> list:
        return [getattr(self, f"i{k}") for k in range(len(self.in_types))]

    def elaborate(self, platform):
        m = Module()
        ins, o = self.inputs(), self.o
        beats = [c // self.n for c in self.channels]          # beats of each input per pixel
        seg = Signal(range(len(ins)))                          # whose turn it is
        pos = Signal(range(max(beats)))                        # beat within the turn
        en = ~o.valid | o.ready
        take = Signal()
        with m.If(en):
            m.d.sync += o.valid.eq(0)
        for k, (i, t) in enumerate(zip(ins, self.in_types)):
            mine = seg == k
            m.d.comb += i.ready.eq(en & mine)
            with m.If(mine & i.valid & en):
                m.d.comb += take.eq(1)
                m.d.sync += o.valid.eq(1)
                for e in range(self.n):
                    v = i.payload[e] if isinstance(self.out_type, ir.BipolarType) else as_int(t, i.payload[e])
                    m.d.sync += o.payload[e].eq(v)
        last_pos = Signal()
        m.d.comb += last_pos.eq(0)
        for k, b in enumerate(beats):
            with m.If(seg == k):
                m.d.comb += last_pos.eq(pos == b - 1)
        with m.If(take):
            m.d.sync += pos.eq(Mux(last_pos, 0, pos + 1))
            with m.If(last_pos):
                m.d.sync += seg.eq(Mux(seg == len(ins) - 1, 0, seg + 1))
        return m
