"""AddUnit: the elementwise residual add, out = coeffs[0] * a + coeffs[1] * b, between streams.

A join: a beat is taken from both inputs in the same cycle, so `i0.ready` waits for
`i1.valid` and the other way round (never for its own valid). Both inputs carry the
same n elements per beat, in the same order. One beat per cycle; the output register
holds the sum (latency 1); a stall on `o` stalls both inputs.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


def as_int(dtype, x):
    """An element as a signed/unsigned integer value (a bipolar bit as -1/+1)."""
    return Mux(x, 1, -1) if isinstance(dtype, ir.BipolarType) else x


class AddUnit(wiring.Component):
    """Inputs `i0` (a_type) and `i1` (b_type), output `o` (out_type, which must hold every sum), n per beat."""

    LATENCY = 1

    def __init__(self, a_type, b_type, out_type, coeffs, n: int):
        node = ir.Add("add", ["a", "b"], "y", coeffs=coeffs)
        lo, hi = node.bounds([a_type, b_type])
        if not isinstance(out_type, ir.Int) or lo < out_type.min or hi > out_type.max:
            raise ValueError(f"out_type {out_type} cannot hold the sums {lo}..{hi} "
                             f"(needs at least {ir.int_type_for(lo, hi)})")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.a_type, self.b_type, self.out_type = a_type, b_type, out_type
        self.coeffs, self.n = node.coeffs, int(n)
        self.latency = self.LATENCY
        super().__init__({"i0": In(streams.beat_signature(a_type, n)),
                          "i1": In(streams.beat_signature(b_type, n)),
                          "o": Out(streams.beat_signature(out_type, n))})

    def elaborate(self, platform):
        m = Module()
        a, b, o = self.i0, self.i1, self.o
        en = ~o.valid | o.ready
        m.d.comb += [a.ready.eq(en & b.valid), b.ready.eq(en & a.valid)]
        ca, cb = self.coeffs
        with m.If(en):
            m.d.sync += o.valid.eq(a.valid & b.valid)
            for k in range(self.n):
                m.d.sync += o.payload[k].eq(ca * as_int(self.a_type, a.payload[k]) +
                                            cb * as_int(self.b_type, b.payload[k]))
        return m
