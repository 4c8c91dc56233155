"""WidthConverter: re-packs a stream of elements from beats of n_in into beats of n_out."""
from math import gcd

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


class WidthConverter(wiring.Component):
    """A gearbox: element order is kept, only the beat size changes.

    A shift register of n_in + n_out - gcd(n_in, n_out) elements, oldest in
    the lowest slot; it emits its lowest n_out elements when it holds that
    many, and writes each input beat just above what it keeps. That size is
    the least that lets the slower side move every cycle, so a frame takes
    max(frame/n_in, frame/n_out) cycles when both sides are ready. It is n_in
    for a downsizer, n_out for an upsizer, and a plain register when
    n_in == n_out. `i.ready` depends on `o.ready` (a full buffer makes room in
    the cycle it emits). A beat goes out 1 cycle after the input beat that
    completes it (`self.latency`).
    """

    LATENCY = 1

    def __init__(self, dtype: ir.ElemType, n_in: int, n_out: int, frame: int, slack: int = 0):
        if n_in < 1 or n_out < 1:
            raise ValueError(f"beat sizes must be at least 1, got n_in={n_in}, n_out={n_out}")
        if frame < 1 or frame % n_in or frame % n_out:
            raise ValueError(f"frame of {frame} elements must be a multiple of n_in={n_in} and n_out={n_out}")
        if slack < 0:
            raise ValueError(f"slack must be >= 0, got {slack}")
        self.dtype, self.n_in, self.n_out, self.frame, self.slack = dtype, n_in, n_out, frame, int(slack)
        self.latency = self.LATENCY
        super().__init__({"i": In(streams.beat_signature(dtype, n_in)),
                          "o": Out(streams.beat_signature(dtype, n_out))})

    def elaborate(self, platform):
        m = Module()
        w = self.dtype.bits
        # Fill levels are always multiples of g: count in units of g elements.
        g = gcd(self.n_in, self.n_out)
        n_in, n_out = self.n_in // g, self.n_out // g
        cap = n_in + n_out - 1 + self.slack * n_in      # + slack whole input beats

        buf = Signal(cap * g * w)
        count = Signal(range(cap + 1))
        kept = Signal(range(cap + 1))          # what stays after this cycle's output beat
        nxt = Signal(range(cap + 1))
        # flags of the count, registered from its next value, so that valid and ready are a gate from
        # flip-flops, not the count's arithmetic (an adder and compare chain into the producer's stall
        # was tfc-w2a2's UP5K critical path): full = count >= n_out; room = an input beat fits;
        # room_out = it fits once an output beat leaves
        full, room, room_out = Signal(), Signal(init=1), Signal()
        m.d.comb += [
            self.o.payload.eq(buf[:n_out * g * w]),
            self.o.valid.eq(full),
            kept.eq(count - Mux(self.o.valid & self.o.ready, n_out, 0)),
            self.i.ready.eq(room | (self.o.ready & room_out)),
            nxt.eq(kept + Mux(self.i.valid & self.i.ready, n_in, 0)),
        ]
        m.d.sync += [count.eq(nxt), full.eq(nxt >= n_out), room.eq(nxt + n_in <= cap),
                     room_out.eq((nxt >= n_out) & (nxt + n_in <= cap + n_out))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += buf.eq(buf >> (n_out * g * w))
        with m.If(self.i.valid & self.i.ready):
            with m.Switch(kept):               # later assignments win over the shift above
                for u in range(cap - n_in + 1):
                    with m.Case(u):
                        m.d.sync += buf[u * g * w:(u + n_in) * g * w].eq(self.i.payload)
        return m
