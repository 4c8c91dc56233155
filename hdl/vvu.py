"""VectorVectorUnit: a depthwise convolution on the window stream, PE channels per beat.

A depthwise conv has one K-element filter per channel (K = KH*KW), so it needs no
matrix: each output channel is the dot product of its own filter with its own
channel of the window. The window generator (hdl/swg.py) emits every output pixel's
window as K positions x C channels, channels fastest, in beats of PE channels; beat
(k, cf) holds channels cf*PE .. cf*PE+PE-1 at window position k. The unit keeps one
accumulator per channel (a RAM of CF = C/PE words of PE accumulators), adds
w[c, k] * x to it at every position and sends the word out at the last position, so
pixel after pixel the output is CF beats of PE accumulators in channel order.

Weights: one ROM of K*CF words of PE weights (address k*CF + cf, sequential), stored
at the narrowest width that holds the actual values; no zeros of other channels are
stored (the matrix unit would hold C times more, block-diagonal).

Pipeline (one global stall, released whenever the output register is free):
  S0  counters; ROM and accumulator RAM read addresses; the input beat is taken
  S1  PE products + the accumulator read back (0 at position 0): the new sums,
      written back, or loaded into the output register at the last position
One input beat per cycle, so a frame takes OH*OW*K*CF cycles; an output beat is
valid 2 cycles (`latency`) after the input beat of its last window position.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


def lane_product(w, x, wbip: bool, ternary: bool, xbip: bool):
    """w * x for one lane, by the kind of the operands (all exact): XNOR, add/subtract, skip, multiply."""
    if wbip and xbip:
        return Mux(w == x, 1, -1)
    if wbip:
        return Mux(w, x, -x)
    if xbip:
        return Mux(x, w, -w)
    if ternary:
        return Mux(w == 0, 0, Mux(w < 0, -x, x))
    return w * x


class VectorVectorUnit(wiring.Component):
    """acc[c] = sum_k W[c, k] * window[k, c] for every output pixel, PE channels per beat.

    weight: (C, K) integers of type wtype (+-1 for Bipolar); in_type: the window's element type;
    acc_type: an ir.Int holding every dot product. Ports: `i` (PE elements per beat, window
    order k then c), `o` (PE accumulators per beat, channel order).
    """

    def __init__(self, weight, wtype, in_type, acc_type, pe: int):
        w = np.asarray(weight, dtype=np.int64)
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weight must be a non-empty (C, K) matrix, got shape {w.shape}")
        c, k = w.shape
        if not isinstance(pe, (int, np.integer)) or pe < 1 or c % pe:
            raise ValueError(f"PE={pe!r} does not divide C={c}; valid PE values: {streams.divisors(c)}")
        if not ir.values_in(wtype, w).all():
            raise ValueError(f"weights out of range for {wtype}")
        lo = np.minimum(w * in_type.min, w * in_type.max).sum(axis=1).min()
        hi = np.maximum(w * in_type.min, w * in_type.max).sum(axis=1).max()
        if not isinstance(acc_type, ir.Int) or lo < acc_type.min or hi > acc_type.max:
            raise ValueError(f"acc_type {acc_type} cannot hold the dot products {lo}..{hi}")
        self.weight, self.wtype, self.in_type, self.acc_type = w, wtype, in_type, acc_type
        self.pe, self.k, self.cf = int(pe), k, c // int(pe)
        self.latency = 2          # the last position's input beat -> its output beat valid
        self.cycles_per_pixel = k * self.cf
        super().__init__({"i": In(streams.beat_signature(in_type, self.pe)),
                          "o": Out(streams.beat_signature(acc_type, self.pe))})

    def elaborate(self, platform):
        m = Module()
        PE, K, CF = self.pe, self.k, self.cf
        wvals = set(np.unique(self.weight).tolist())
        wbip = wvals <= {-1, 1}
        ternary = not wbip and wvals <= {-1, 0, 1}
        xbip = isinstance(self.in_type, ir.BipolarType)
        wshape = streams.elem_shape(ir.int_type_for(0, 1) if wbip else ir.int_type_for(min(wvals), max(wvals)))
        acc_shape = streams.elem_shape(self.acc_type)

        adv = Signal()        # global stall: every stage moves unless the output beat waits
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)

        # ---- S0: position k and channel fold cf of the beat to take
        k, cf = Signal(range(K)), Signal(range(CF))
        addr = Signal(range(K * CF))                           # k*CF + cf
        take = Signal()
        m.d.comb += [self.i.ready.eq(adv), take.eq(self.i.valid & adv)]
        with m.If(take):
            m.d.sync += [cf.eq(Mux(cf == CF - 1, 0, cf + 1)), addr.eq(Mux(addr == K * CF - 1, 0, addr + 1))]
            with m.If(cf == CF - 1):
                m.d.sync += k.eq(Mux(k == K - 1, 0, k + 1))

        words = self.weight.reshape(CF, PE, K).transpose(2, 0, 1).reshape(K * CF, PE)   # [k*CF + cf, p]
        init = (words > 0).astype(int) if wbip else words
        m.submodules.rom = rom = memory.Memory(shape=data.ArrayLayout(wshape, PE), depth=K * CF,
                                               init=[[int(v) for v in row] for row in init])
        rd_w = rom.read_port()
        m.d.comb += [rd_w.addr.eq(addr), rd_w.en.eq(adv)]

        m.submodules.accs = accs = memory.Memory(shape=data.ArrayLayout(acc_shape, PE), depth=max(CF, 2), init=[])
        wr_a = accs.write_port()
        rd_a = accs.read_port(transparent_for=(wr_a,))         # S1 writes the word S0 may read next
        m.d.comb += [rd_a.addr.eq(cf), rd_a.en.eq(adv)]

        x1 = Signal(streams.beat_layout(self.in_type, PE))
        v1, first1, last1, cf1 = Signal(), Signal(), Signal(), Signal(range(CF))
        with m.If(adv):
            m.d.sync += [v1.eq(take), x1.eq(self.i.payload), first1.eq(k == 0), last1.eq(k == K - 1),
                         cf1.eq(cf)]

        # ---- S1: the new sums; written back, or out at the last position
        sums = []
        for p in range(PE):
            prev = Mux(first1, 0, rd_a.data[p])
            s = Signal(acc_shape, name=f"sum{p}")
            m.d.comb += s.eq(prev + lane_product(rd_w.data[p], x1[p], wbip, ternary, xbip))
            sums.append(s)
        m.d.comb += [wr_a.addr.eq(cf1), wr_a.en.eq(adv & v1 & ~last1)]
        m.d.comb += [wr_a.data[p].eq(s) for p, s in enumerate(sums)]
        with m.If(adv):
            m.d.sync += self.o.valid.eq(v1 & last1)
            with m.If(v1 & last1):
                m.d.sync += [self.o.payload[p].eq(s) for p, s in enumerate(sums)]
        return m
