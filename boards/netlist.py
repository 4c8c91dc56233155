"""Where the cells of a synthesised board design go: LUT4, flip-flops, block RAMs per pipeline stage.

Yosys flattens the design but names each cell after the wire it drives, and those names keep
the hierarchy: `link.accel.s3_mvu_7.pe2_l1_0_SB_LUT4_O` belongs to stage 3 (MVU '7'), cells
without an `accel` stage prefix to the board top (UART, framers, test pattern). `by_stage`
reads the netlist nextpnr gets (top.json) and counts per stage: LUT4 (on ECP5 a CCU2C counts
two, a DPR16X4 LUT-RAM two), flip-flops, flip-flops that cannot share a logic cell with the LUT
driving them ("lone": no LUT drives them, or their LUT already has a flip-flop; an iCE40 logic
cell each), block RAMs and DSPs. Cells whose name carries no prefix (Yosys' `$abc$...` names) go to
"unnamed"; after `synth_*` they are few.
"""
from __future__ import annotations

import collections
import json
import re

_STAGE = re.compile(r"(?:^|\.)accel\.(s\d+_[A-Za-z]+_[^.]+)\.")
_LUTS = {"SB_LUT4": 1, "LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2}
_FF = ("SB_DFF", "TRELLIS_FF")
_BRAM = ("SB_RAM40_4K", "DP16KD")
_DSP = ("SB_MAC16", "MULT18X18D")
_OUTPUTS = {"SB_LUT4": ("O",), "LUT4": ("Z",), "CCU2C": ("S0", "S1")}


def stage_of(name: str) -> str:
    m = _STAGE.search(name)
    if m:
        return m.group(1)
    return "unnamed" if name.startswith("$") else "top"


def by_stage(netlist_json) -> dict:
    """{stage: {"luts", "ffs", "lone_ffs", "brams", "dsps"}} from a Yosys JSON netlist (path or dict)."""
    d = json.loads(open(netlist_json).read()) if isinstance(netlist_json, (str, bytes)) or hasattr(
        netlist_json, "__fspath__") else netlist_json
    mod = next(m for m in d["modules"].values() if m.get("attributes", {}).get("top"))
    cells = mod["cells"]
    lut_driven = set()
    for cell in cells.values():
        for port in _OUTPUTS.get(cell["type"], ()):
            lut_driven.update(b for b in cell["connections"].get(port, []) if isinstance(b, int))
    out = collections.defaultdict(lambda: {"luts": 0, "ffs": 0, "lone_ffs": 0, "brams": 0, "dsps": 0})
    paired = set()                  # a LUT output pairs with one flip-flop only (one logic cell)
    for name, cell in cells.items():
        t, row = cell["type"], None
        if t in _LUTS:
            row = out[stage_of(name)]
            row["luts"] += _LUTS[t]
        elif t.startswith(_FF):
            row = out[stage_of(name)]
            row["ffs"] += 1
            d_in = [b for b in (cell["connections"].get("D") or cell["connections"].get("DI") or [])
                    if isinstance(b, int)]
            free = [b for b in d_in if b in lut_driven and b not in paired]
            if free:
                paired.add(free[0])
            else:
                row["lone_ffs"] += 1
        elif t in _BRAM:
            out[stage_of(name)]["brams"] += 1
        elif t in _DSP:
            out[stage_of(name)]["dsps"] += 1
    return dict(out)
