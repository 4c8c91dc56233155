"""MatrixVectorUnit: a folded Dense layer, acc = W @ x, between two streams.

Folding: K inputs arrive as SF = K/SIMD beats of SIMD elements; N outputs leave
as NF = N/PE beats of PE accumulators. Each cycle the unit multiplies one
SIMD-wide slice of x by the matching slice of PE weight rows, so a vector takes
exactly NF*SF cycles (the II). The first neuron fold (nf = 0) takes x from the
stream and stores it; the other NF-1 folds replay it from the input buffer.

Pipeline (one global stall, released whenever the output register is free):
  S0  fold counters; ROM and buffer read addresses; the input beat is taken
  S1  ROM word and x slice -> SIMD lane terms -> adder tree -> partial sum register
  S2  accumulate; the accumulator is the output register (o.valid on the last slice)
Latency: the first output beat is valid SF+2 cycles after the first input beat
is accepted (attribute `latency`).

The lane arithmetic follows the element types (all exact):
  Bipolar x Bipolar  XNOR-popcount: sum = 2*popcount(xnor) - SIMD
  Bipolar w x Int x  add/subtract
  ternary w x Int x  add/subtract/skip (Int weights that are all in {-1, 0, 1})
  Int w x Bipolar x  +-w
  Int w x Int x      multiply
Int weights that are all +-1 are stored as Bipolar. Weights are stored in the
narrowest Int that holds the actual values, and every adder-tree node is only
as wide as the range its lanes can actually reach.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams

ROM_STYLES = ("block", "distributed", "logic")



def _shape(lo, hi):
    """The narrowest Amaranth shape that holds every integer in [lo, hi]."""
    return streams.elem_shape(ir.int_type_for(lo, hi))


class MatrixVectorUnit(wiring.Component):
    """acc[n] = sum_k W[n, k] * x[k] for every input vector x, folded by PE and SIMD.

    weight: (N, K) integers (+-1 for Bipolar); wtype, in_type: ir.Int or ir.Bipolar;
    acc_type: the ir.Int of the output (ir.Dense.infer gives the narrowest).
    Ports: i carries SIMD input elements per beat, o carries PE accumulators per
    beat; beat j of a vector holds acc[j*PE .. j*PE+PE-1].
    rom_style goes into the weight ROMs' attrs (Yosys: "block", "distributed", "logic").
    """

    def __init__(self, weight, wtype, in_type, acc_type, pe, simd, rom_style=None):
        self.weight = self._check(weight, wtype, in_type, acc_type, pe, simd, rom_style)
        n, k = self.weight.shape
        self.wtype, self.in_type, self.acc_type = wtype, in_type, acc_type
        self.pe, self.simd = int(pe), int(simd)
        self.nf, self.sf = n // self.pe, k // self.simd
        self.rom_style = rom_style
        self.ii = self.nf * self.sf     # cycles per vector
        self.latency = self.sf + 2      # first input beat accepted -> first output beat valid
        super().__init__({"i": In(streams.beat_signature(in_type, self.simd)),
                          "o": Out(streams.beat_signature(acc_type, self.pe))})

    @staticmethod
    def _check(weight, wtype, in_type, acc_type, pe, simd, rom_style):
        """Refuse bad arguments with a ValueError that names them; return the weights as int64."""
        w = np.asarray(weight)
        if w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"weight must be a non-empty (N, K) matrix, got shape {w.shape}")
        n, k = w.shape
        for name, f, dim, dname in (("SIMD", simd, k, "K"), ("PE", pe, n, "N")):
            if not isinstance(f, (int, np.integer)) or f < 1 or dim % f:
                raise ValueError(f"{name}={f!r} does not divide {dname}={dim}; "
                                 f"valid {name} values: {streams.divisors(dim)}")
        for name, t in (("wtype", wtype), ("in_type", in_type)):
            if not isinstance(t, (ir.Int, ir.BipolarType)):
                raise ValueError(f"{name} must be ir.Int or ir.Bipolar, got {t!r}")
        if not isinstance(acc_type, ir.Int):
            raise ValueError(f"acc_type must be an ir.Int, got {acc_type!r}")
        if rom_style not in (None, *ROM_STYLES):
            raise ValueError(f"rom_style must be None or one of {ROM_STYLES}, got {rom_style!r}")
        # Dense.infer checks the weights against wtype and gives the accumulator range.
        node = ir.Dense("mvu", ["x"], "acc", weight=w, wtype=wtype)
        need = node.infer([ir.TensorType((k,), in_type)])
        lo, hi = node.acc_bounds(in_type)
        if lo.min() < acc_type.min or hi.max() > acc_type.max:
            raise ValueError(f"acc_type {acc_type} cannot hold the accumulator range "
                             f"{lo.min()}..{hi.max()} (needs at least {need.dtype})")
        return node.weight

    def elaborate(self, platform):
        m = Module()
        PE, SIMD, NF, SF = self.pe, self.simd, self.nf, self.sf
        xbip = isinstance(self.in_type, ir.BipolarType)
        wvals = set(np.unique(self.weight).tolist())
        wbip = wvals <= {-1, 1}
        ternary = not wbip and wvals <= {-1, 0, 1}
        wshape = _shape(0, 1) if wbip else _shape(min(wvals), max(wvals))

        # Per PE, the weight words in ROM order (address nf*SF + sf) and, per word and
        # lane, the range of w*x over all inputs (to size the adder trees).
        words = self.weight.reshape(NF, PE, SF, SIMD).transpose(1, 0, 2, 3).reshape(PE, NF * SF, SIMD)
        x_lo, x_hi = self.in_type.min, self.in_type.max
        t_lo = np.minimum(words * x_lo, words * x_hi)
        t_hi = np.maximum(words * x_lo, words * x_hi)

        adv = Signal()   # global stall: every stage moves unless the output beat waits
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)

        # ---- S0: fold counters. A step is a (nf, sf) pair; nf = 0 steps need an input beat.
        sf = Signal(range(SF))
        addr = Signal(range(NF * SF))          # nf*SF + sf, the ROM address
        from_stream = Signal()
        step = Signal()
        take = Signal()
        m.d.comb += [
            from_stream.eq(addr < SF),
            self.i.ready.eq(adv & from_stream),
            take.eq(self.i.valid & self.i.ready),
            step.eq(adv & (~from_stream | self.i.valid)),
        ]
        with m.If(step):
            m.d.sync += [addr.eq(Mux(addr == NF * SF - 1, 0, addr + 1)),
                         sf.eq(Mux(sf == SF - 1, 0, sf + 1))]

        # The input beat of this step, aligned with the ROM's synchronous read.
        in_layout = streams.beat_layout(self.in_type, SIMD)
        xreg = Signal(in_layout)
        with m.If(take):
            m.d.sync += xreg.eq(self.i.payload)
        x = Signal(in_layout)
        if NF > 1 and SF > 1:
            # The vector is replayed NF-1 times: keep its SF beats in a RAM.
            m.submodules.xbuf = xbuf = memory.Memory(shape=in_layout, depth=SF, init=[])
            wr, rd = xbuf.write_port(), xbuf.read_port()
            m.d.comb += [wr.addr.eq(sf), wr.data.eq(self.i.payload), wr.en.eq(take),
                         rd.addr.eq(sf), rd.en.eq(adv)]
        v1, first1, last1, stream1 = (Signal(name=n) for n in ("v1", "first1", "last1", "stream1"))
        with m.If(adv):
            m.d.sync += [v1.eq(step), first1.eq(sf == 0), last1.eq(sf == SF - 1), stream1.eq(from_stream)]
        if NF > 1 and SF > 1:
            m.d.comb += x.eq(Mux(stream1, xreg.as_value(), rd.data.as_value()))
        else:
            m.d.comb += x.eq(xreg)    # one beat per vector (SF = 1), or no replay (NF = 1)

        # ---- S1: per PE, one ROM word (SIMD weights) times x -> partial sum register.
        attrs = {"rom_style": self.rom_style} if self.rom_style else None
        parts = []
        for p in range(PE):
            init = words[p] if not wbip else (words[p] > 0).astype(int)
            rom = memory.Memory(shape=data.ArrayLayout(wshape, SIMD), depth=NF * SF,
                                init=[[int(v) for v in row] for row in init], attrs=attrs)
            m.submodules[f"rom{p}"] = rom
            port = rom.read_port()
            m.d.comb += [port.addr.eq(addr), port.en.eq(adv)]
            wl, xl = [port.data[k] for k in range(SIMD)], [x[k] for k in range(SIMD)]
            if wbip and xbip:
                pop = self._tree(m, [~(a ^ b) for a, b in zip(wl, xl)],
                                 np.zeros((1, SIMD), dtype=int), np.ones((1, SIMD), dtype=int), f"pe{p}_pop")
                total = pop * 2 - SIMD
            else:
                if xbip:
                    terms = [Mux(b, a, -a) for a, b in zip(wl, xl)]
                elif wbip:
                    terms = [Mux(a, b, -b) for a, b in zip(wl, xl)]
                elif ternary:
                    terms = [Mux(a == 0, 0, Mux(a < 0, -b, b)) for a, b in zip(wl, xl)]
                else:
                    terms = [a * b for a, b in zip(wl, xl)]
                total = self._tree(m, terms, t_lo[p], t_hi[p], f"pe{p}_sum")
            part = Signal(_shape(t_lo[p].sum(1).min(), t_hi[p].sum(1).max()), name=f"part{p}")
            with m.If(adv):
                m.d.sync += part.eq(total)
            parts.append(part)
        v2, first2, last2 = (Signal(name=n) for n in ("v2", "first2", "last2"))
        with m.If(adv):
            m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1)]

        # ---- S2: accumulate in the output register; the sum is exact modulo
        # 2**acc bits, and the final value fits acc_type, so no wider register is needed.
        with m.If(adv):
            m.d.sync += self.o.valid.eq(v2 & last2)
            with m.If(v2):
                for p, part in enumerate(parts):
                    acc = self.o.payload[p]
                    m.d.sync += acc.eq(Mux(first2, part, acc + part))
        return m

    @staticmethod
    def _tree(m, terms, lo, hi, name):
        """A balanced adder tree over `terms`. lo, hi: (words, lanes) bounds of each
        term per weight word; each node is a signal just wide enough for its range."""
        def node(a, b):
            if b - a == 1:
                return terms[a]
            mid = (a + b) // 2
            s = Signal(_shape(lo[:, a:b].sum(1).min(), hi[:, a:b].sum(1).max()), name=f"{name}_{a}_{b}")
            m.d.comb += s.eq(node(a, mid) + node(mid, b))
            return s
        return node(0, len(terms))
