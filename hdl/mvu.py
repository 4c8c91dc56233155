"""MatrixVectorUnit: a folded Dense layer, acc = W @ x, between two streams.

Folding: K inputs arrive as SF = K/SIMD beats of SIMD elements; N outputs leave
as NF = N/PE beats of PE accumulators (or PE bipolar bits with fused thresholds).
Each cycle the unit multiplies one SIMD-wide slice of x by the matching slice of
PE weight rows, so a vector takes exactly NF*SF cycles (the II).

The input vector goes into an InputBuffer (hdl/inbuf.py) that plays it back once
per neuron fold; its first pass follows the input beat by beat. The weights of all
PEs are one memory (word nf*SF + sf holds the PE*SIMD weights of that step), read
in step with the buffer, so a wide folding packs block RAMs by total width.

Pipeline (one global stall, a register, released whenever the output FIFO has room); every
stage is a register, so the longest path is one memory read, one lane of logic or
one adder:
  issue   buffer and weight memory addresses (the buffer decides when)
  read    buffer beat x and weight word w (synchronous reads) [+1 with mem_reg]
  lanes   per PE, the lane terms of w and x, summed in pairs
  tree    a 2-input adder per level, registered (ceil(log2(ceil(SIMD/2))) levels)
  [fix]   2*part - sum(x) for bipolar weights on integer inputs
  acc     acc = init + sum over the SF slices
  out     a 2-beat FIFO: the stall comes from its level, a register, not from the next stage's ready
Latency: the first output beat is valid `latency` = SF + `depth` cycles after the
first input beat is accepted (depth: cycles from a beat's issue to its output).

The lane arithmetic follows the element types (all exact):
  Bipolar w, Bipolar x   XNOR-popcount: acc = 2*popcount - K; lanes pair their XNORs
                         into 2-bit counts before the adder tree
  Bipolar w, Int x       acc = 2*sum_{w=+1} x - sum x: per PE, a pair of lanes selects
                         0, x0, x1 or x0+x1 (x0+x1 and sum x are computed once, for all PEs)
  Int w, Bipolar x       acc = 2*sum_{x=+1} w - rowsum(w): lanes select w or 0
  ternary w, Int x       add/subtract/skip (Int weights that are all in {-1, 0, 1})
  Int w, Int x           multiply
Int weights that are all +-1 are stored as Bipolar. Weights are stored in the
narrowest Int that holds the actual values, and every adder-tree node is only as
wide as the range its lanes can actually reach.

Fused thresholds (`thresholds`, one per output channel): the output is Bipolar,
+1 (bit 1) where acc >= T. The accumulator starts at -T and the output bit is its
sign, so no comparator or threshold ROM is needed after the unit.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams
from .inbuf import RAM_STYLES, InputBuffer
from .mvu_lanes import lane_kind, lane_terms, lanes, shape_for, sum_counts, tree

ROM_STYLES = ("block", "distributed", "logic")


def _select(values, sel):
    """values[sel] as a balanced tree of 2:1 muxes, one level per select bit from the lowest (an
    Array index became a chain of 6 LUTs for an 8:1 select on iCE40, tfc-w1a1's critical path; with
    the tree that read left it)."""
    for bit in range(len(sel)):
        values = [Mux(sel[bit], values[j + 1], values[j]) if j + 1 < len(values) else values[j]
                  for j in range(0, len(values), 2)]
    return values[0]


class MatrixVectorUnit(wiring.Component):
    """acc[n] = sum_k W[n, k] * x[k] for every input vector x, folded by PE and SIMD.

    weight: (N, K) integers (+-1 for Bipolar); wtype, in_type: ir.Int or ir.Bipolar;
    acc_type: the ir.Int of the accumulator (ir.Dense.infer gives the narrowest).
    Ports: i carries SIMD input elements per beat, o carries PE outputs per beat;
    beat j of a vector holds outputs j*PE .. j*PE+PE-1.
    thresholds: None, or one integer per output channel: the output is then Bipolar,
      +1 where acc >= T[n] (a MultiThreshold with one threshold and base -1).
    rom_style: the weight memory's Yosys attribute ("block", "distributed", "logic").
    banks, ram_style: the input buffer's banks (1 needs a writer that can send a vector
      in a burst to keep the II; 2 takes any writer) and memory attribute.
    skip_zero: store only the words that are not all zero (+ one zero word) when at least half are
      (a grouped conv's block-diagonal matrix; the conv kernel asks for it when groups > 1).
    mem_reg: one more register after the memory reads (the block RAM output register); a LUT-ROM
      (rom_style "logic") deeper than 32 words then reads in registered levels: 16-word pieces
      of one LUT4 per bit, then an 8:1 piece select, then a 16:1 select per 4 more address bits.
    rom_bank: with mem_reg and rom_style "block", a weight memory deeper than this many words (a
      power of two: the depth of one block RAM row) is built as banks of that depth, each read into
      a register of its own before the bank select (ECP5's DP16KD has a 5.6 ns clock-to-out; the
      select after it was cnv-w1a1's critical path): one cycle more.
    """

    def __init__(self, weight, wtype, in_type, acc_type, pe, simd, rom_style=None, *, thresholds=None,
                 banks=2, ram_style=None, mem_reg=False, skip_zero=False, rom_bank=None):
        self.weight = self._check(weight, wtype, in_type, acc_type, pe, simd, rom_style, ram_style)
        n, k = self.weight.shape
        self.wtype, self.in_type, self.acc_type = wtype, in_type, acc_type
        self.pe, self.simd = int(pe), int(simd)
        self.nf, self.sf = n // self.pe, k // self.simd
        self.rom_style, self.ram_style, self.mem_reg = rom_style, ram_style, bool(mem_reg)
        # skip_zero (a grouped conv's block-diagonal matrix): when at least half of the words of PE x SIMD
        # weights are all zero, and they save 4x the bits of the one-bit-per-word table that finds them,
        # only the others are stored, plus one zero word read in their place
        nonzero = (self._words() != 0).any(axis=(0, 2))
        zeros = int((~nonzero).sum())
        width = self.pe * self.simd * shape_for(int(self.weight.min()), int(self.weight.max())).width
        self.skip_zero = bool(skip_zero) and 2 * zeros >= nonzero.size and zeros >= 16 and \
            zeros * width >= 4 * nonzero.size
        self.nonzero = nonzero if self.skip_zero else None
        self.rom_depth = nonzero.size - zeros + 1 if self.skip_zero else nonzero.size
        # a LUT-ROM deeper than 32 words with the memory register reads in registered levels: 16-word
        # pieces (a LUT4 per bit), then an 8:1 select (a piece LUT and 3 mux levels: a 16:1 select there
        # was 6 LUT levels, the critical path on iCE40), then 16:1 selects (4 mux levels from registers)
        self.split_rom = self.mem_reg and rom_style == "logic" and self.rom_depth > 32
        self.rom_selects = self._rom_selects(self.rom_depth) if self.split_rom else []
        self.rom_levels = len(self.rom_selects)
        if rom_bank is not None and (int(rom_bank) < 2 or int(rom_bank) & (int(rom_bank) - 1)):
            raise ValueError(f"rom_bank must be a power of two of at least 2 words, got {rom_bank!r}")
        self.rom_banks = -(-self.rom_depth // int(rom_bank)) if (
            rom_bank and self.mem_reg and rom_style == "block" and self.rom_depth > int(rom_bank)) else 1
        self.rom_bank = int(rom_bank) if self.rom_banks > 1 else None
        self.kind = lane_kind(wtype, in_type, self.weight)
        # the stored weight element: a bit for bipolar weights, else the narrowest Int of the values
        self.wshape = unsigned(1) if self.kind in ("xnor", "select_x") else \
            shape_for(self.weight.min(), self.weight.max())
        self.thresholds = None
        if thresholds is not None:
            t = np.asarray(thresholds, dtype=np.int64).reshape(-1)
            if t.shape != (n,):
                raise ValueError(f"thresholds must have one value per output channel ({n}), got shape "
                                 f"{np.shape(thresholds)}")
            # outside the accumulator's range a threshold is always/never met: clamp (as ThresholdUnit)
            self.thresholds = np.clip(t, acc_type.min, acc_type.max + 1)
        self.out_type = ir.Bipolar if thresholds is not None else acc_type
        # the buffer plays the vector NF times; with NF = 1 it only decouples (2 slots)
        self.slots, self.passes = (self.sf, self.nf) if self.nf > 1 else (1, 1)
        self.banks = 2 if (self.slots == 1 or self.passes == 1) else int(banks)
        if banks not in (1, 2):
            raise ValueError(f"banks must be 1 or 2, got {banks}")
        self.ii = self.nf * self.sf     # cycles per vector
        n1 = -(-self.simd // 2) if self.simd > 1 else 1
        self.tree_levels = (n1 - 1).bit_length()
        # issue -> read (1) [-> mem_reg [+ split ROM levels]] -> lanes (1) -> tree levels [-> fix] -> acc (1)
        # -> output FIFO (1)
        self.mem_stages = self.mem_reg + max(0, self.rom_levels - 1) + (self.rom_banks > 1)
        self.depth = 1 + self.mem_stages + 1 + self.tree_levels + (self.kind == "select_x") + 1 + 1
        self.latency = self.sf + self.depth     # first input beat accepted -> first output beat valid
        super().__init__({"i": In(streams.beat_signature(in_type, self.simd)),
                          "o": Out(streams.beat_signature(self.out_type, self.pe))})

    ROM_FAN_IN = (8, 16)      # the split LUT-ROM's first select, then every later one

    @classmethod
    def _rom_fan_in(cls, level: int) -> int:
        """Inputs of one select in level `level` of a split LUT-ROM."""
        return cls.ROM_FAN_IN[min(level, 1)]

    @classmethod
    def _rom_selects(cls, depth: int) -> list[int]:
        """The split LUT-ROM's select levels: the number of selects in each (the last is 1)."""
        out, k = [], -(-depth // 16)
        while k > 1:
            k = -(-k // cls._rom_fan_in(len(out)))
            out.append(k)
        return out

    @staticmethod
    def _check(weight, wtype, in_type, acc_type, pe, simd, rom_style, ram_style):
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
        if ram_style not in (None, *RAM_STYLES):
            raise ValueError(f"ram_style must be None or one of {RAM_STYLES}, got {ram_style!r}")
        # Dense.infer checks the weights against wtype and gives the accumulator range.
        node = ir.Dense("mvu", ["x"], "acc", weight=w, wtype=wtype)
        need = node.infer([ir.TensorType((k,), in_type)])
        lo, hi = node.acc_bounds(in_type)
        if lo.min() < acc_type.min or hi.max() > acc_type.max:
            raise ValueError(f"acc_type {acc_type} cannot hold the accumulator range "
                             f"{lo.min()}..{hi.max()} (needs at least {need.dtype})")
        return node.weight

    # ------------------------------------------------------------------ what the lanes compute

    def _words(self):
        """Weights per (PE, word nf*SF + sf, lane), as stored (bipolar: 1 for +1)."""
        PE, SIMD, NF, SF = self.pe, self.simd, self.nf, self.sf
        return self.weight.reshape(NF, PE, SF, SIMD).transpose(1, 0, 2, 3).reshape(PE, NF * SF, SIMD)

    def _init(self) -> np.ndarray:
        """Per output channel, the accumulator's start value (constants of the lane arithmetic, -T)."""
        n, k = self.weight.shape
        c = np.zeros(n, dtype=np.int64)
        if self.kind == "xnor":
            c[:] = -k
        elif self.kind == "select_w":
            c = -self.weight.sum(axis=1)
        if self.thresholds is not None:
            c = c - self.thresholds
        return c

    def _stored_address(self, m, addr, issue):
        """The stored word of the beat issued this cycle (skip_zero): the count of non-zero words before
        `addr` in the vector, or the zero word (the last). Kept in registers a beat ahead, so the weight
        memory's address comes straight from a flip-flop; the non-zero flags are a constant bit table."""
        n, zero_at = self.nonzero.size, self.rom_depth - 1
        table = Const(sum(1 << a for a in np.flatnonzero(self.nonzero).tolist()), n)
        first_nz = bool(self.nonzero[0])
        raddr = Signal(range(self.rom_depth), init=0 if first_nz else zero_at)
        count = Signal(range(self.rom_depth))           # non-zero words before addr
        nz = Signal(init=int(first_nz))                 # addr's word is non-zero
        wrap = addr == n - 1
        nxt = Mux(wrap, 0, addr + 1)
        count_nxt = Mux(wrap, 0, count + nz)
        nz_nxt = table.bit_select(nxt, 1)
        with m.If(issue):
            m.d.sync += [count.eq(count_nxt), nz.eq(nz_nxt), raddr.eq(Mux(nz_nxt, count_nxt, zero_at))]
        return raddr

    def elaborate(self, platform):
        m = Module()
        PE, SIMD, NF, SF = self.pe, self.simd, self.nf, self.sf
        kind = self.kind
        words = self._words()
        x_lo, x_hi = self.in_type.min, self.in_type.max

        # global stall: every stage moves unless a finished result waits for the output FIFO. A register
        # (its next value computed below), so its fan-out to every stage starts at a flip-flop
        adv = Signal(init=1)

        def stage(value, name, shape=None):
            """A pipeline register of `value`, moving with the stall."""
            s = Signal(shape if shape is not None else value.shape(), name=name)
            with m.If(adv):
                m.d.sync += s.eq(value)
            return s

        # ---- issue: the input buffer plays each vector NF times; the weight address follows it
        in_layout = streams.beat_layout(self.in_type, SIMD)
        m.submodules.ibuf = buf = InputBuffer(in_layout, self.slots, self.passes, self.banks, self.ram_style)
        wiring.connect(m, wiring.flipped(self.i), buf.i)
        m.d.comb += buf.o.ready.eq(adv)
        addr = Signal(range(NF * SF))          # nf*SF + sf of the beat issued this cycle
        sf = Signal(range(SF))
        with m.If(buf.issue):
            m.d.sync += [addr.eq(Mux(addr == NF * SF - 1, 0, addr + 1)),
                         sf.eq(Mux(sf == SF - 1, 0, sf + 1))]
        raddr = self._stored_address(m, addr, buf.issue) if self.skip_zero else addr

        # ---- read: one weight memory, PE*SIMD weights a word; the buffer's beat arrives with it
        wlayout = data.ArrayLayout(data.ArrayLayout(self.wshape, SIMD), PE)
        rows = self._stored_rows().tolist()
        first = stage(sf == 0, "first_r")
        last = stage(sf == SF - 1, "last_r")
        valid, x = buf.o.valid, buf.o.payload
        if self.split_rom:
            # a LUT-ROM in registered levels: 16-word pieces (one LUT4 per bit), then 16:1 piece selects
            level = []
            for b in range(0, len(rows), 16):
                piece = memory.Memory(shape=wlayout, depth=16, init=rows[b:b + 16], attrs={"rom_style": "logic"})
                m.submodules[f"rom{b // 16}"] = piece
                port = piece.read_port()
                m.d.comb += [port.addr.eq(raddr[:4]), port.en.eq(adv)]
                level.append(port.data.as_value())
            hi = stage(raddr[4:], "rom_hi")
            for n in range(self.rom_levels):
                fan = self._rom_fan_in(n)
                sel = (fan - 1).bit_length()
                level = [stage(_select(level[g:g + fan], hi[:sel]), f"rom_l{n}_{g // fan}", unsigned(wlayout.size))
                         for g in range(0, len(level), fan)]
                hi = stage(hi[sel:], f"rom_hi{n}") if len(level) > 1 else hi
            w = data.View(wlayout, level[0])
        elif self.rom_banks > 1:
            # block RAM banks of one row each, every bank's read registered before the select
            sel = (self.rom_bank - 1).bit_length()
            bank_q = []
            for b in range(self.rom_banks):
                bank = memory.Memory(shape=wlayout, depth=min(self.rom_bank, len(rows) - b * self.rom_bank),
                                     init=rows[b * self.rom_bank:(b + 1) * self.rom_bank],
                                     attrs={"rom_style": "block"})
                m.submodules[f"rom{b}"] = bank
                port = bank.read_port()
                m.d.comb += [port.addr.eq(raddr[:sel]), port.en.eq(adv)]
                bank_q.append(stage(port.data.as_value(), f"w_bank{b}"))
            hi = stage(stage(raddr[sel:], "bank_hi"), "bank_q")
            w = stage(Array(bank_q)[hi], "w_q", wlayout)
        else:
            attrs = {"rom_style": self.rom_style} if self.rom_style else None
            m.submodules.rom = rom = memory.Memory(shape=wlayout, depth=len(rows), attrs=attrs, init=rows)
            rport = rom.read_port()
            m.d.comb += [rport.addr.eq(raddr), rport.en.eq(adv)]
            w = rport.data
            if self.mem_reg:
                w = stage(w, "w_q", wlayout)
        for n in range(self.mem_stages):
            x = stage(x, f"x_q{n}", in_layout)
            valid, first, last = stage(valid, "v_q"), stage(first, "first_q"), stage(last, "last_q")
        xl = [x[k] for k in range(SIMD)]

        # ---- lanes (+ the first level of pairs), then the registered adder trees
        fix = None
        parts = []
        if kind == "select_x":
            # shared by all PEs: pair sums x0+x1 and the tree of sum(x)
            pairs = [(xl[k], xl[k + 1]) for k in range(0, SIMD - 1, 2)]
            psum = [Signal(shape_for(2 * x_lo, 2 * x_hi), name=f"xpair{j}") for j in range(len(pairs))]
            m.d.comb += [s.eq(a + b) for s, (a, b) in zip(psum, pairs)]
            sterms = [stage(s, f"xs{j}") for j, s in enumerate(psum)]
            if SIMD % 2:
                sterms.append(stage(xl[-1], "xs_odd", shape_for(x_lo, x_hi)))
            slo = [2 * x_lo] * len(pairs) + [x_lo] * (SIMD % 2)
            shi = [2 * x_hi] * len(pairs) + [x_hi] * (SIMD % 2)
            fix = tree(stage, sterms, np.array([slo]), np.array([shi]), "xsum")
        for p in range(PE):
            wl = [w[p][k] for k in range(SIMD)]
            terms, lo, hi = lanes(stage, kind, wl, xl, words[p], x_lo, x_hi,
                                  psum if kind == "select_x" else None, f"pe{p}")
            parts.append(tree(stage, terms, lo, hi, f"pe{p}"))
        for _ in range(1 + self.tree_levels):
            valid, first, last = stage(valid, "v_t"), stage(first, "first_t"), stage(last, "last_t")
        if kind == "select_x":
            xsum, xs_lo, xs_hi = fix
            parts = [(stage((part << 1) - xsum, f"fix{p}", shape_for(2 * lo - xs_hi, 2 * hi - xs_lo)), lo, hi)
                     for p, (part, lo, hi) in enumerate(parts)]
            valid, first, last = stage(valid, "v_f"), stage(first, "first_f"), stage(last, "last_f")
        elif kind in ("xnor", "select_w"):
            parts = [(part << 1, lo, hi) for part, lo, hi in parts]

        # ---- acc, then a 2-beat output FIFO: the stall comes from the FIFO's level (a register), never
        # combinationally from the next stage's ready
        init = self._init()
        if self.thresholds is not None:
            lo_acc, hi_acc = self._acc_range()
            acc_shape = shape_for(min(lo_acc, -1), hi_acc)      # signed: the sign bit is the output
        else:
            acc_shape = streams.elem_shape(self.acc_type)
        accs = [Signal(acc_shape, name=f"acc{p}") for p in range(PE)]
        acc_valid = Signal()
        out_layout = streams.beat_layout(self.out_type, PE)
        m.submodules.out = q = fifo.SyncFIFO(width=out_layout.size, depth=2)
        starts = self._starts(m, init, acc_shape, valid & last & adv)
        acc_valid_nxt = Mux(adv, valid & last, acc_valid)
        # the FIFO is full next cycle: full and not read, or one short, written and not read (as logic,
        # not the level's adder: the next stage's ready comes through here)
        wr, rd = q.w_en & q.w_rdy, q.r_en & q.r_rdy
        full_nxt = ~rd & ((q.level == q.depth) | ((q.level == q.depth - 1) & wr))
        m.d.sync += [acc_valid.eq(acc_valid_nxt), adv.eq(~acc_valid_nxt | ~full_nxt)]
        with m.If(adv):
            with m.If(valid):
                for p, acc in enumerate(accs):
                    m.d.sync += acc.eq(Mux(first, starts[p], acc) + parts[p][0])
        beat = Signal(out_layout)
        if self.thresholds is not None:
            m.d.comb += [beat[p].eq(~acc[-1]) for p, acc in enumerate(accs)]
        else:
            m.d.comb += [beat[p].eq(acc) for p, acc in enumerate(accs)]
        m.d.comb += [q.w_data.eq(beat.as_value()), q.w_en.eq(acc_valid),
                     self.o.payload.eq(q.r_data), self.o.valid.eq(q.r_rdy), q.r_en.eq(self.o.ready)]
        return m

    def _stored_rows(self) -> np.ndarray:
        """The weight memory's contents, (stored word, PE, SIMD): bipolar weights as bits; with skip_zero
        only the words that are not all zero, then one zero word."""
        words = self._words()
        vals = (words > 0).astype(np.int64) if self.kind in ("xnor", "select_x") else words
        rows = vals.transpose(1, 0, 2)
        if self.skip_zero:
            rows = np.concatenate([rows[self.nonzero], np.zeros((1,) + rows.shape[1:], np.int64)])
        return rows

    def _weight_bits(self) -> np.ndarray:
        """The stored weight words as bits: (stored word, bit column), two's complement."""
        wbits = self.wshape.width
        rows = self._stored_rows()
        rows = (rows & ((1 << wbits) - 1)).reshape(len(rows), -1)          # stored word x (PE*SIMD)
        return np.concatenate([(rows >> b) & 1 for b in range(wbits)], axis=1)

    def _rom_counts(self) -> tuple[int, int]:
        """What the weight memory costs by its contents: (non-constant 16-word pieces over every bit
        column: a LUT-ROM's LUT4s, a constant piece costs none; bit columns that are not constant:
        Yosys drops the others before it maps a block-RAM ROM, e.g. digits-mlp-w2a2 on ECP5 keeps
        266 of 512 bits, 8 DP16KD, not 15)."""
        bits = self._weight_bits()
        live = int((bits.min(axis=0) != bits.max(axis=0)).sum())
        codes = self._piece_codes(bits)
        return int(((codes != 0) & (codes != 0xFFFF)).sum()), live

    @staticmethod
    def _rom_pieces(bits: np.ndarray) -> np.ndarray:
        """The stored bits (word, bit column) as 16-word pieces (piece, word, bit column), zero-padded."""
        bits = np.vstack([bits, np.zeros(((-len(bits)) % 16, bits.shape[1]), np.int64)])
        return bits.reshape(-1, 16, bits.shape[1])

    @classmethod
    def _piece_codes(cls, bits: np.ndarray) -> np.ndarray:
        """The stored bits (word, bit column) as 16-word pieces, each piece's 16 bits one integer: (piece,
        bit column); 0 and 0xFFFF are the constant pieces."""
        return (cls._rom_pieces(bits).transpose(0, 2, 1) << np.arange(16)).sum(axis=2)

    def _start_pieces(self, init) -> int:
        """The start ROM's distinct non-constant 16-word pieces over its bit columns (NF words of PE
        starts): ABC builds each distinct 4-input function of the fold counter once (cnv-w1a1's FC layers:
        512 words x 10 bits, 124 distinct pieces of 288 non-constant, about 140 LUT4 on ECP5)."""
        width = shape_for(init.min(), init.max()).width
        bits = ((init.astype(np.int64)[:, :, None] >> np.arange(width)) & 1).reshape(len(init), -1)
        codes = self._piece_codes(bits)
        return len(np.unique(codes[(codes != 0) & (codes != 0xFFFF)]))

    def _split_rom_counts(self) -> tuple[int, int, int]:
        """A split LUT-ROM by its contents (pieces and selects share their address, so Yosys merges equal
        ones with their registers; a constant is no LUT and no register): (registers before the last
        select's, that one is mem_reg's: one per distinct non-constant 16-word piece and per distinct
        non-constant select of every inner level; the distinct non-constant pieces; the selects' inputs
        beyond the first, over the distinct non-constant selects of every level, counting each distinct
        input once). Registers measured with Yosys on iCE40: 128, 512 and 1024 words, within 10%."""
        codes = self._piece_codes(self._weight_bits())
        cols = codes.shape[1]
        const = (codes == 0) | (codes == 0xFFFF)
        regs = n_pieces = len(np.unique(codes[~const]))
        inputs = 0
        for n in range(self.rom_levels):
            fan = self._rom_fan_in(n)
            codes = np.vstack([codes, np.zeros(((-len(codes)) % fan, cols), np.int64)])
            groups = codes.reshape(-1, fan, cols).transpose(0, 2, 1).reshape(-1, fan)     # (select, input)
            same = (groups == groups[:, :1]).all(axis=1) & ((groups[:, 0] == 0) | (groups[:, 0] == 0xFFFF))
            distinct, ids = np.unique(groups, axis=0, return_inverse=True)
            ids = ids.reshape(-1)
            live = distinct[np.unique(ids[~same])]             # the distinct non-constant selects
            ids = ids + 0x10000                                # a select's id: its inputs, past the constants
            ids[same] = groups[same, 0]
            inputs += sum(len(set(g.tolist())) - 1 for g in live)
            if n < self.rom_levels - 1:
                regs += len(live)
            codes = ids.reshape(-1, cols)
        return regs, n_pieces, inputs

    def structure(self) -> dict:
        """What elaborate() builds, counted (for the resource model): first-level values and their
        bits, adders and their result bits, registers, accumulator and memory sizes."""
        PE, SIMD, NF, SF = self.pe, self.simd, self.nf, self.sf
        words = self._words()
        x_lo, x_hi = self.in_type.min, self.in_type.max
        wbits = self.wshape.width
        xbits = streams.elem_shape(self.in_type).width
        counts = sum_counts(*lane_terms(self.kind, words, x_lo, x_hi))
        if self.kind == "select_x":        # the shared sum(x) tree: its pair sums are adds too
            xs = sum_counts(np.full((1, SIMD), x_lo), np.full((1, SIMD), x_hi))
            xs["adders"] += SIMD // 2
            xs["adder_bits"] += xs["first_add_bits"]
            xs["carry_bits"] += xs["first_carry_bits"]
            for k in ("first_bits", "adders", "adder_bits", "pass_bits", "carry_bits"):
                counts[k] += xs[k]
        # lanes whose weight changes between words pay for their arithmetic; a constant weight
        # folds into the sum (0 vanishes, 2**k is a shift), any other constant leaves one add (-x, x + 2x)
        fixed = words.min(axis=1) == words.max(axis=1)          # (PE, SIMD): one weight in every word
        varying = int((~fixed).sum())
        const = words[:, 0][fixed]
        const_adds = int(((const < 0) | ((const & (const - 1)) != 0)).sum())   # c < 0 or not 2**k: an add
        if self.kind in ("xnor", "select_x"):
            varying, const_adds = PE * SIMD, 0          # stored as bits: +1/-1 both cost the lane
        if self.thresholds is not None:
            lo_acc, hi_acc = self._acc_range()
            acc_w = shape_for(min(lo_acc, -1), hi_acc).width
        else:
            acc_w = streams.elem_shape(self.acc_type).width
        init = self._init().reshape(NF, PE)
        starts = None if (init == init[0]).all() else (PE * shape_for(init.min(), init.max()).width, NF)
        start_pieces = self._start_pieces(init) if starts else 0
        fix_bits = 0
        if self.kind == "select_x":
            fix_bits = PE * (acc_w + 1)
        tags = 3 * (2 + self.mem_stages + self.tree_levels + (self.kind == "select_x"))
        rom_pieces, rom_live_bits = self._rom_counts()
        return {
            "kind": self.kind, "pe": PE, "simd": SIMD, "lanes": PE * SIMD, "xbits": xbits, "wbits": wbits,
            "varying_lanes": varying, "const_add_lanes": const_adds,
            "first_values": PE * -(-SIMD // 2) + (-(-SIMD // 2) if self.kind == "select_x" else 0),
            **counts, "fix_bits": fix_bits,
            "acc_bits": PE * acc_w,
            "tree_levels": self.tree_levels,
            "weights": (PE * SIMD * wbits, self.rom_depth), "rom_pieces": rom_pieces,
            "rom_live_bits": rom_live_bits, "starts": starts, "start_pieces": start_pieces,
            "zero_table": NF * SF if self.skip_zero else 0,
            "buffer": (SIMD * xbits, self.slots * self.banks),
            # the weight register keeps the bit columns that vary (a constant 0 column is removed)
            "mem_reg_bits": rom_live_bits * (self.mem_reg + (self.rom_banks if self.rom_banks > 1 else 0))
            + SIMD * xbits * self.mem_stages,
            # the pieces' and the inner selects' registers (the last select's is mem_reg's)
            **dict(zip(("split_rom_bits", "split_rom_pieces", "split_rom_inputs"),
                       self._split_rom_counts() if self.split_rom else (0, 0, 0))),
            "tags": tags, "counter_bits": self._counter_bits(),
        }

    def _counter_bits(self) -> int:
        """The control's registers: the weight address and slice counters, the input buffer's
        (write, read and base addresses, slot and pass, its two level counters, three flags) and
        the stall and output-valid flags."""
        def bits(n):
            return max(1, (n - 1).bit_length())
        ring = self.slots * self.banks
        return (bits(self.nf * self.sf) + bits(self.sf) + 3 * bits(ring) + bits(self.slots) + bits(self.passes)
                + 2 * bits(ring + 1) + 5)

    def _acc_range(self):
        """The range of acc - T over all inputs (fused thresholds)."""
        node = ir.Dense("mvu", ["x"], "acc", weight=self.weight, wtype=self.wtype)
        lo, hi = node.acc_bounds(self.in_type)
        return int(min(lo.min(), 0) - self.thresholds.max()), int(max(hi.max(), 0) - self.thresholds.min())

    def _starts(self, m, init, shape, step):
        """Per PE, the accumulator's start value for the neuron fold in the accumulate stage:
        constants where they do not change, else a LUT ROM indexed by a fold counter."""
        PE, NF = self.pe, self.nf
        table = init.reshape(NF, PE)
        if (table == table[0]).all():
            return [Const(int(v), shape) for v in table[0]]
        nf = Signal(range(NF), name="acc_nf")
        with m.If(step):
            m.d.sync += nf.eq(Mux(nf == NF - 1, 0, nf + 1))
        lay = data.ArrayLayout(shape, PE)
        m.submodules.starts = rom = memory.Memory(shape=lay, depth=NF, init=[[int(v) for v in row] for row in table],
                                                  attrs={"rom_style": "logic"})
        rd = rom.read_port(domain="comb")
        m.d.comb += rd.addr.eq(nf)
        return [rd.data[p] for p in range(PE)]

