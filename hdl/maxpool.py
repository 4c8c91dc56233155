"""MaxPool: per-channel max over KH x KW windows of a streamed (H, W, C) map (no padding, floor mode).

The pooling engine here is shared with SumPool (hdl/sumpool.py); only the
combining operator and the element types differ.

The input goes by once, one beat per cycle; each beat is folded into partial
results kept in Memories, and an output beat leaves as soon as the last beat of
its window has been folded in:
  vertical:   a row buffer of OW * C/simd words, each holding P = the number of
              output rows that one input row can belong to (ceil(KH/SH), at most
              OH) partial results, one slot per output row in flight;
  horizontal: only where windows overlap along W (Q = ceil(KW/SW) > 1, at most
              OW): C/simd words of Q partial results along the current input row;
              each completed horizontal result then goes into the row buffer.
Which slots an input row or column feeds, and where a window starts and ends,
come from small tables indexed by the row and column counters. With global
pooling (kernel = (H, W)) the row buffer is C/simd accumulators and nothing else.

Pipeline (one global stall, released whenever the output register is free):
  S0  take the input beat; counters; read both Memories at its addresses
  S1  fold the beat into the partial results, write them back
  S2  output register
A write in S1 and the read for the next beat in S0 may hit the same word: the
read ports are transparent to the write ports. One input beat per cycle, so a
frame takes H*W*C/simd cycles; an output beat is valid 2 cycles (`latency`) after
the last input beat of its window is taken.
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


def _pair(v, name):
    a, b = (v, v) if np.isscalar(v) else tuple(v)
    if int(a) != a or int(b) != b or min(a, b) < 1:
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {v!r}")
    return int(a), int(b)



def _slots(n_in, n_out, k, s):
    """Per input index (row or column): for each of the `slots` output positions in flight
    (output o in slot o % slots) whether the index is in its window and whether it is its
    first index; whether some window ends here and in which slot; and `o`, the output
    whose window ends here, else the last one whose window holds the index."""
    slots = min(math.ceil(k / s), n_out)
    table = []
    for i in range(n_in):
        t = dict(act=[0] * slots, first=[0] * slots, end=0, slot=0, o=0)
        for o in range(n_out):
            if o * s <= i < o * s + k:
                assert not t["act"][o % slots]     # one window per slot at a time
                t["act"][o % slots], t["first"][o % slots] = 1, int(i == o * s)
                if not t["end"]:
                    t["o"] = o
                if i == o * s + k - 1:
                    t.update(end=1, slot=o % slots, o=o)
        table.append(t)
    return slots, table


class _Pool(wiring.Component):
    """Shared engine of MaxPool and SumPool; subclasses give `_lift` (an input element as a
    partial result) and `_op` (combine two partial results)."""

    def __init__(self, dtype, part_dtype, in_shape, kernel, stride, simd):
        self._check(dtype, in_shape, kernel, stride, simd)
        self.dtype, self.part_dtype, self.simd = dtype, part_dtype, int(simd)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.kernel, self.stride = _pair(kernel, "kernel"), _pair(stride, "stride")
        (H, W, C), (KH, KW), (SH, SW) = self.in_shape, self.kernel, self.stride
        self.cf = C // self.simd
        self.out_shape = ((H - KH) // SH + 1, (W - KW) // SW + 1, C)
        self.cycles = H * W * self.cf         # per frame: one input beat per cycle
        self.latency = 2
        super().__init__({"i": In(streams.beat_signature(dtype, self.simd)),
                          "o": Out(streams.beat_signature(part_dtype, self.simd))})

    @staticmethod
    def _check(dtype, in_shape, kernel, stride, simd):
        if not isinstance(dtype, (ir.Int, ir.BipolarType)):
            raise ValueError(f"dtype must be ir.Int or ir.Bipolar, got {dtype!r}")
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ValueError(f"in_shape must be a channels-last (H, W, C) shape, got {in_shape!r}")
        (H, W, C), (KH, KW) = in_shape, _pair(kernel, "kernel")
        _pair(stride, "stride")
        if KH > H or KW > W:
            raise ValueError(f"kernel {(KH, KW)} does not fit the {H}x{W} input")
        if not isinstance(simd, (int, np.integer)) or simd < 1 or C % simd:
            raise ValueError(f"SIMD={simd!r} does not divide C={C}; valid SIMD values: {streams.divisors(C)}")

    def elaborate(self, platform):
        m = Module()
        (H, W, _), (KH, KW), (SH, SW) = self.in_shape, self.kernel, self.stride
        OH, OW, _ = self.out_shape
        CF, SIMD = self.cf, self.simd
        P, rows = _slots(H, OH, KH, SH)
        Q, cols = _slots(W, OW, KW, SW)
        part = data.ArrayLayout(streams.elem_shape(self.part_dtype), SIMD)

        # Column flags. With Q == 1 each beat goes straight into the row buffer word of
        # its window; with Q > 1 only completed horizontal results do.
        col_layout = data.StructLayout({"h_act": Q, "h_first": Q, "h_slot": range(Q), "v_en": 1,
                                        "v_first": 1, "v_last": 1, "ow": range(OW)})
        if Q == 1:
            col_rows = [dict(h_act=0, h_first=0, h_slot=0, v_en=t["act"][0], v_first=t["first"][0],
                             v_last=t["end"], ow=t["o"]) for t in cols]
        else:
            col_rows = [dict(h_act=_bits(t["act"]), h_first=_bits(t["first"]), h_slot=t["slot"],
                             v_en=t["end"], v_first=1, v_last=1, ow=t["o"]) for t in cols]
        row_layout = data.StructLayout({"act": P, "first": P, "end": 1, "slot": range(P)})
        row_rows = [dict(act=_bits(t["act"]), first=_bits(t["first"]), end=t["end"], slot=t["slot"])
                    for t in rows]

        # ---- S0: counters of the beat offered, table look-ups, Memory reads.
        adv = Signal()
        take = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), self.i.ready.eq(adv),
                     take.eq(self.i.valid & adv)]
        cf, c, r = Signal(range(CF)), Signal(range(W)), Signal(range(H))
        with m.If(take):
            m.d.sync += cf.eq(Mux(cf == CF - 1, 0, cf + 1))
            with m.If(cf == CF - 1):
                m.d.sync += c.eq(Mux(c == W - 1, 0, c + 1))
                with m.If(c == W - 1):
                    m.d.sync += r.eq(Mux(r == H - 1, 0, r + 1))
        colf, rowf = _lookup(m, c, col_layout, col_rows), _lookup(m, r, row_layout, row_rows)

        m.submodules.rowbuf = rowbuf = memory.Memory(shape=data.ArrayLayout(part, P), depth=OW * CF, init=[])
        v_wr = rowbuf.write_port()
        v_rd = rowbuf.read_port(transparent_for=(v_wr,))
        m.d.comb += [v_rd.addr.eq(colf.ow * CF + cf), v_rd.en.eq(adv)]
        if Q > 1:
            m.submodules.colbuf = colbuf = memory.Memory(shape=data.ArrayLayout(part, Q), depth=CF, init=[])
            h_wr = colbuf.write_port()
            h_rd = colbuf.read_port(transparent_for=(h_wr,))
            m.d.comb += [h_rd.addr.eq(cf), h_rd.en.eq(adv)]

        # ---- S1: fold the beat in, write back, maybe emit.
        v1 = Signal()
        x1 = Signal(streams.beat_layout(self.dtype, SIMD))
        cf1, v_addr1 = Signal.like(cf), Signal.like(v_rd.addr)
        col1, row1 = Signal(col_layout), Signal(row_layout)
        with m.If(adv):
            m.d.sync += [v1.eq(take), x1.eq(self.i.payload), cf1.eq(cf), v_addr1.eq(v_rd.addr),
                         col1.eq(colf), row1.eq(rowf)]
        step = v1 & adv
        lanes = [self._lift(x1[k]) for k in range(SIMD)]

        def fold(new, old, act, first):
            """Each slot in a window takes the lanes in: the first time as they are."""
            for s in range(len(act)):
                for k in range(SIMD):
                    m.d.comb += new[s][k].eq(Mux(act[s], Mux(first[s], lanes[k],
                                                             self._op(old[s][k], lanes[k])), old[s][k]))

        if Q > 1:
            # horizontal partial results along the row; the slot that ends hands its result on
            h_new = Signal(data.ArrayLayout(part, Q))
            fold(h_new, h_rd.data, col1.h_act, col1.h_first)
            m.d.comb += [h_wr.addr.eq(cf1), h_wr.data.eq(h_new), h_wr.en.eq(step)]
            lanes = [h_new[col1.h_slot][k] for k in range(SIMD)]
        v_new = Signal(data.ArrayLayout(part, P))
        fold(v_new, v_rd.data, row1.act, [row1.first[p] & col1.v_first for p in range(P)])
        m.d.comb += [v_wr.addr.eq(v_addr1), v_wr.data.eq(v_new), v_wr.en.eq(step & col1.v_en)]

        # ---- S2: the output register.
        with m.If(adv):
            m.d.sync += self.o.valid.eq(v1 & col1.v_en & col1.v_last & row1.end)
            m.d.sync += self.o.payload.eq(v_new[row1.slot])
        return m

    def _lift(self, x):
        return x

    def _op(self, a, b):     # pragma: no cover - abstract
        raise NotImplementedError


def _bits(flags):
    return sum(f << i for i, f in enumerate(flags))


def _lookup(m, index, layout, rows):
    """A constant table indexed by a counter (LUTs): rows[index] as a view of `layout`."""
    out = Signal(layout)
    with m.Switch(index):
        for i, row in enumerate(rows):
            with m.Case(i):
                m.d.comb += out.eq(layout.const(row))
    return out


class MaxPool(_Pool):
    """(H, W, C) map in beats of simd channels -> (OH, OW, C) maxima in beats of simd,
    as reference._maxpool (kernel, stride: int or (h, w); no padding, floor mode).
    For Bipolar elements the max of +-1 is the OR of their bits."""

    def __init__(self, dtype: ir.ElemType, in_shape, kernel, stride, simd=1):
        super().__init__(dtype, dtype, in_shape, kernel, stride, simd)

    def _op(self, a, b):
        return Mux(a > b, a, b)
