"""LUT/FF/block-RAM costs per device family, for the kernels' resource models.

Every number here is measured: Yosys 0.70 (`synth_ice40 -dsp`, `synth_ecp5`) on the
components alone and nextpnr 0.11 on whole designs (bench/calibrate.py prints the
model against Yosys per stage; docs/hardware.md has the tables). Units: LUT4 (on ECP5
a CCU2C carry cell counts as two), flip-flops, block RAMs of the MemoryModel
(iCE40 4-Kbit EBR, ECP5/generic 18-Kbit). `lone_ffs` are flip-flops that no LUT of
their own feeds: on iCE40 each takes a logic cell of its own.

The memory rules mirror the attributes the kernels put on their memories, so what is
estimated is what Yosys builds: `rom_style`/`ram_style` "block" -> block RAM, "logic"
-> LUTs (ROM) or flip-flops (RAM), "distributed" -> LUT-RAM where the family has it
(ECP5), and no attribute -> Yosys' own choice, modelled per family.
"""
from __future__ import annotations

import math

from .base import MemoryModel, Resources


def family(mem: MemoryModel) -> str:
    return getattr(mem, "family", "generic")


# LUT4 per unit of structure (see MatrixVectorUnit.structure), per family.
COST = {
    "ice40": dict(
        xnor_pair=2.0,        # two XNOR lanes summed into a 2-bit count
        select_pair=2.0,      # per result bit: 0 / x0 / x1 / x0+x1 chosen by two weight bits
        select_bit=1.0,       # per result bit: x or 0 (one lane)
        mul_bit=1.0,          # per product bit, small multipliers (x bits * w bits)
        adder_bit=1.0,        # a registered 2-input adder, per result bit
        adder_carry_out=-1.0,  # per adder: its top bit is the carry chain's out, no LUT (tfc-w1a1 layer 1: 560
                               # LUT4 for 736 result bits of 192 adds)
        acc_bit=2.0,          # accumulator: start-or-acc mux + adder, per bit
        fix_bit=1.0,          # 2*part - sum(x), per bit
        # counters and flags (MatrixVectorUnit.structure()["counter_bits"]: weight address, slice, the
        # input buffer's addresses, slot, pass and levels), per register bit: their adders, compares and
        # muxes. Fitted per stage on the bench designs (the small MVUs, where the control is most of the
        # unit: tfc-w2a2's last three on iCE40 and ECP5, cnv-w1a1's last): 1.6-2.5 on both families
        control=2.0,
        ternary_bit=1.3,      # per lane and input bit: x, -x or 0 (a negation and a mux)
        bank_mux=0.6,         # per bit and extra row of block RAMs in depth: the bank-select mux
        carry_out_lone=0.6,   # per adder: its carry-out bit's flip-flop, fed by the carry chain, not a LUT
        rom_lut_bits=16.0,    # LUT-ROM: bits of one LUT4 (depth <= 16)
        # split LUT-ROM, per distinct input of a distinct select beyond its first (tfc-w2a2 layer 1 on the
        # UP5K, 1792 words: 108 distinct pieces, 1932 such inputs, about 1260 LUT4)
        rom_select_input=0.6,
        ram_collision=1.0,    # block RAM with a write port: bypass LUT per data bit (Yosys' emulation)
        ram_collision_ff=1.0,
        fifo_abit=7.0,        # lib.fifo.SyncFIFOBuffered's pointers and levels, per address bit
        swg=(5.0, 14.0, 16.0),  # window generator: base, per ring address bit, per bit of OH and OW
        # threshold from a LUT-ROM of <= 16 words, compared: per threshold bit, max(floor, a + b*log2(depth));
        # the compare LUTs counted where they belong (boards/netlist.py follows ABC's LUTs to their readers):
        # 1.16 at 8 words (tfc-w2a2, digits-mlp-w2a2 layers 3 and 6 on the UP5K), 1.93 at 16 (tfc-w2a2 at II 1792)
        thr_rom_bit=(-1.15, 0.77, 1.0),
        # a compare's carry cells (SB_CARRY without a sum LUT: a logic cell each in nextpnr), per compare bit
        # above the lowest: 0.79-0.94 on the same stages (boards/netlist.py `carry_lcs`)
        carry_lc=0.88,
        thr_const_bit=1.0,    # a compare with a constant, per (bits + 1)
        # its read register's flip-flops per threshold bit, by log2(depth): Yosys moves most of them to the
        # address at 2-8 words (digits-mlp-w2a2: 0.24-0.3), fewer at 16 (tfc-w2a2 layer 3: 0.76)
        thr_rom_ff=(0.3, 0.3, 0.3, 0.76),
        carry_pack=0.0,       # nextpnr's logic cells over the netlist: boards.targets.LC_PACKING, whole design
        lutram_pack=0.0,
    ),
    "ecp5": dict(
        # adder_bit 1.0: a CCU2C (2 LUT4) adds 2 bits; 0.7 left the bench MLPs 7-23% low, 1.0 gives 2-16%
        xnor_pair=2.0, select_pair=2.0, select_bit=1.0, mul_bit=1.0, adder_bit=1.0, adder_carry_out=0.0, acc_bit=2.0,
        fix_bit=1.0,
        control=2.0, ternary_bit=1.3, bank_mux=0.6, carry_out_lone=0.0, rom_lut_bits=16.0, rom_select_input=0.6,
        ram_collision=0.0, carry_lc=0.0,
        ram_collision_ff=1.0, fifo_abit=10.0, swg=(-154.0, 35.0, 24.0),
        # the compare is a CCU2C chain (1 LUT4/bit) beside the ROM's LUTs: 1.0-1.06 per bit at 2 words (digits-mlp-w2a2
        # at II 2), 1.43-1.6 at 16 (tfc-w2a2 at II 49), with every LUT attributed (boards/netlist.py, 2026-11-29)
        thr_rom_bit=(0.87, 0.16, 0.0),
        thr_const_bit=0.73,   # a compare with a constant, per (bits + 1): tfc-w2a2's first threshold at PE 64
        thr_rom_ff=(0.0, 0.0, 0.28, 0.38),    # digits-mlp-w2a2 (2 words), tfc-w2a2 (4, 8, 16)
        # nextpnr's TRELLIS_COMB over Yosys' LUT4 + 2 CCU2C + 2 DPR16X4 (8 ECP5 bench designs, 2.9k-31.6k):
        # a DPR16X4 takes 4 LUT sites (RAM mode), not 2; per CCU2C, 1.1 sites more (0.83-1.40 measured)
        carry_pack=0.55,      # per LUT4 in a carry chain (adders, accumulators, compares)
        lutram_pack=2.0,      # per DPR16X4
    ),
}
COST["generic"] = COST["ice40"]


def c(mem: MemoryModel, key: str) -> float:
    return COST[family(mem)][key]


def rom(mem: MemoryModel, width: int, depth: int, style: str | None, pieces: int | None = None,
        live_bits: int | None = None) -> Resources:
    """A ROM with a synchronous read: block RAM ("block", or deep enough for Yosys) or LUTs. When the
    contents are known: pieces, the LUT-ROM's non-constant 16-word pieces over all bits; live_bits, the
    bit columns that are not constant (Yosys drops the others before mapping block RAM). Default: all."""
    r = Resources()
    if width <= 0 or depth <= 0:
        return r
    if style == "block" or (style is None and depth >= 128):
        width = width if live_bits is None else live_bits
        r.brams = mem.blocks(width, depth)
        rows = r.brams // max(1, math.ceil(width / max(w for w, _ in mem.configs)))
        r.luts = width * max(0, rows - 1) * c(mem, "bank_mux")
        return r
    # LUT-ROM: one LUT4 per 16 words and output bit, and the muxes between them (ABC shares them in
    # deep ROMs), and the read register
    blocks = math.ceil(depth / c(mem, "rom_lut_bits"))
    if pieces is None:
        pieces = width * blocks
    r.luts = pieces + max(0, pieces - width) * (0.9 if blocks <= 16 else 0.2)
    r.ffs = width
    return r


def ram(mem: MemoryModel, width: int, depth: int, style: str | None) -> Resources:
    """A 1-read 1-write RAM with a synchronous read: block RAM, LUT-RAM (ECP5) or flip-flops."""
    r = Resources()
    if width <= 0 or depth <= 0:
        return r
    fam = family(mem)
    bits = width * depth
    if style is None:   # Yosys' choice: block RAM when cheaper than flip-flops (cost 64 per EBR on iCE40)
        if fam == "ecp5":       # LUT-RAM while under ~24.6 16x4 LUT-RAMs per DP16KD it saves (Yosys 0.70 on
            lutrams = math.ceil(width / 4) * math.ceil(depth / 16)      # 30 memories: 24 went LUT, 25 block)
            style = "distributed" if lutrams < 24.6 * mem.blocks(width, depth) else "block"
        else:
            style = "block" if 64 * mem.blocks(width, depth) < bits else "logic"
    if style == "block":
        r.brams = mem.blocks(width, depth)
        r.luts = width * c(mem, "ram_collision") + 8
        r.ffs = width * c(mem, "ram_collision_ff")
        r.lone_ffs = r.ffs
    elif style == "distributed" and fam == "ecp5":
        # DPR16X4: 16 x 4 bits in two LUT4s' room; deeper than 16 words, a read mux between them: the
        # slice's PFUMX/L6MUX21 (not LUTs) up to 4 of them (cnv-w1a1's FIFOs of 24-64 beats: no mux LUTs)
        rows = math.ceil(depth / 16)
        r.luts = width * rows * 0.5 + width * (math.ceil(rows / 4) - 1) + 8
        r.ffs = width
        r.pack_luts = math.ceil(width / 4) * math.ceil(depth / 16) * c(mem, "lutram_pack")
    else:               # flip-flops and a read mux (depth - 1 2:1 muxes per bit)
        r.ffs = bits + width
        r.lone_ffs = bits
        r.luts = width * max(0, depth - 1) + 8
    return r
