"""StreamFork: one stream to several consumers (a tensor that feeds a residual branch and the main path).

Every output carries every beat. The outputs take a beat independently: one flag per
output remembers that it has taken the current beat, and the input moves on once all
have. So a stalled consumer never keeps another from taking the current beat, but no
consumer can run more than one beat ahead of the slowest: the branches' FIFOs (sized
by hdl/reconvergence.py) absorb the difference where the branches join again.
No storage but the flags; `valid` and `payload` pass through (latency 0).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class StreamFork(wiring.Component):
    """Input `i`, outputs `o0` .. `o{n-1}`, all streams of `shape` (any shape-castable)."""

    LATENCY = 0

    def __init__(self, shape, n: int):
        if n < 2:
            raise ValueError(f"a fork needs at least 2 outputs, got {n}")
        self.n = n
        self.latency = self.LATENCY
        members = {"i": In(stream.Signature(shape))}
        members.update({f"o{k}": Out(stream.Signature(shape)) for k in range(n)})
        super().__init__(members)

    def outputs(self) -> list:
        return [getattr(self, f"o{k}") for k in range(self.n)]

    def elaborate(self, platform):
        m = Module()
        outs = self.outputs()
        done = [Signal(name=f"done{k}") for k in range(self.n)]
        for o, d in zip(outs, done):
            m.d.comb += [o.payload.eq(self.i.payload), o.valid.eq(self.i.valid & ~d)]
        # the input moves on when every output has taken the beat, now or earlier
        all_taken = Signal()
        m.d.comb += all_taken.eq(Cat(d | o.ready for o, d in zip(outs, done)).all())
        m.d.comb += self.i.ready.eq(all_taken)
        with m.If(self.i.valid & all_taken):
            m.d.sync += [d.eq(0) for d in done]
        with m.Else():
            m.d.sync += [d.eq(d | (o.valid & o.ready)) for o, d in zip(outs, done)]
        return m
