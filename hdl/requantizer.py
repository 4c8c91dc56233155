"""Requantizer: out = clamp(round((acc * mult[c] + offset[c]) / 2**shift)), PE channels per beat."""
import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams
from .threshold import fold_counter, lane_tables


class Requantizer(wiring.Component):
    """Fixed-point rescaling of an accumulator stream, bit-exact with `reference.requantize`.

    `mult` and `offset` have one entry per channel (C) or one shared entry.
    Lane p of input beat j (counted from reset) is channel (j*pe + p) mod C.
    A lane whose mult/offset change from beat to beat reads them from its own
    ROM (depth C/PE); other lanes use constants (so a shared mult becomes a
    constant multiplier). Pipeline: [ROM read] -> v = acc*mult + offset (a DSP
    multiply-add) -> round, shift, clamp. Latency `self.latency` (3 with ROMs,
    else 2), one beat per cycle; a stall on `o` stalls the whole pipeline.
    """

    def __init__(self, mult, shift: int, offset, rounding: str, in_type: ir.Int, out_type: ir.Int, pe: int):
        # Python ints (object arrays): products and offsets may pass int64.
        mult = np.atleast_1d(np.asarray(mult)).astype(np.int64).astype(object)
        offset = np.atleast_1d(np.asarray(0 if offset is None else offset)).astype(np.int64).astype(object)
        if mult.ndim != 1 or offset.ndim != 1:
            raise ValueError(f"mult and offset must be 1-d, got shapes {mult.shape} and {offset.shape}")
        c = max(len(mult), len(offset))
        if len(mult) not in (1, c) or len(offset) not in (1, c):
            raise ValueError(f"mult has {len(mult)} entries and offset {len(offset)}: "
                             f"each must have one per channel or a single shared one")
        if rounding not in ir.ROUNDINGS:
            raise ValueError(f"rounding must be one of {ir.ROUNDINGS}, got {rounding!r}")
        if not 0 <= shift <= 62:
            raise ValueError(f"shift must be in 0..62, got {shift}")
        if not isinstance(in_type, ir.Int) or not isinstance(out_type, ir.Int):
            raise ValueError(f"in_type and out_type must be Int, got {in_type!r} and {out_type!r}")
        if rounding == "half_up" and shift:
            offset = offset + (1 << (shift - 1))      # round half up = add half, then floor
        table = np.stack([np.broadcast_to(mult, c), np.broadcast_to(offset, c)], axis=1)
        self._lanes = lane_tables(table, pe, "Requantizer")
        self._rom = [not (tab == tab[0]).all() for tab in self._lanes]
        self._word = data.StructLayout({
            "mult": streams.elem_shape(ir.int_type_for(min(0, mult.min()), mult.max())),
            "offset": streams.elem_shape(ir.int_type_for(min(0, offset.min()), offset.max())),
        })
        self.shift, self.rounding, self.pe = int(shift), rounding, pe
        self.in_type, self.out_type = in_type, out_type
        self.latency = 3 if any(self._rom) else 2
        super().__init__({"i": In(streams.beat_signature(in_type, pe)),
                          "o": Out(streams.beat_signature(out_type, pe))})

    def elaborate(self, platform):
        m = Module()
        pe, s = self.pe, self.shift
        fold = len(self._lanes[0])

        # Global-stall pipeline: every stage moves when the output register is free.
        en = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(en)
        acc, valid = self.i.payload, self.i.valid
        par = [{"mult": int(tab[0, 0]), "offset": int(tab[0, 1])} for tab in self._lanes]

        if any(self._rom):
            ch = fold_counter(m, fold, self.i.valid & en)
            for p, tab in enumerate(self._lanes):
                if self._rom[p]:
                    rom = Memory(shape=self._word, depth=fold,
                                 init=[{"mult": int(a), "offset": int(b)} for a, b in tab])
                    m.submodules[f"rom{p}"] = rom
                    rd = rom.read_port()       # sync read: the data arrives with the registered acc
                    m.d.comb += [rd.addr.eq(ch), rd.en.eq(en)]
                    par[p] = rd.data
            acc = Signal.like(self.i.payload)
            valid = Signal()
            with m.If(en):
                m.d.sync += [acc.eq(self.i.payload), valid.eq(self.i.valid)]

        # Stage: v = acc * mult + offset, exact (Amaranth widens the arithmetic as needed).
        prods = [acc[p] * par[p]["mult"] + par[p]["offset"] for p in range(pe)]
        v = [Signal(e.shape(), name=f"v{p}") for p, e in enumerate(prods)]
        v_valid = Signal()
        with m.If(en):
            m.d.sync += [x.eq(e) for x, e in zip(v, prods)] + [v_valid.eq(valid)]

        # Stage: round, shift (arithmetic for signed v), clamp to out_type.
        lo, hi = self.out_type.min, self.out_type.max
        with m.If(en):
            m.d.sync += self.o.valid.eq(v_valid)
            for p in range(pe):
                r = v[p]
                if self.rounding == "half_even" and s:
                    # add half - 1, plus 1 where the truncated quotient is odd: ties go to even
                    odd = r[min(s, len(r) - 1)] if s < len(r) or r.shape().signed else 0
                    r = r + ((1 << (s - 1)) - 1) + odd
                q = r >> s
                m.d.sync += self.o.payload[p].eq(Mux(q < lo, lo, Mux(q > hi, hi, q)))
        return m
