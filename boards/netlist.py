"""Where the cells of a synthesised board design go: LUT4, flip-flops, block RAMs per pipeline stage.

Yosys flattens the design but names each cell after the wire it drives, and those names keep
the hierarchy: `link.accel.s3_mvu_7.pe2_l1_0_SB_LUT4_O` belongs to stage 3 (MVU '7'), cells
without an `accel` stage prefix to the board top (UART, framers, test pattern). `by_stage`
reads the netlist nextpnr gets (top.json) and counts per stage: LUT4 (on ECP5 a CCU2C counts
two, a DPR16X4 LUT-RAM two), flip-flops, flip-flops that cannot share a logic cell with the LUT
driving them ("lone": no LUT drives them, or their LUT already has a flip-flop; an iCE40 logic
cell each), block RAMs and DSPs. Cells whose name carries no prefix (Yosys' `$abc$...` names) go to
"unnamed"; after `synth_*` they are few.

A name can point at the wrong stage: a register that drives a port takes the port's name, so a
width converter's shift register was counted with the board top or its consumer. Where the
accelerator's Verilog (`accelerator.v`, beside the netlist) is given, a cell whose `src` is a line
of it goes to the stage whose module holds that line. A LUT or carry cell that only feeds
flip-flops of one stage goes with them.
"""
from __future__ import annotations

import bisect
import collections
import json
import pathlib
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


def _module_stages(verilog) -> tuple[list, list]:
    """(first lines, stages) of the accelerator's Verilog modules: `qloom_top.sK_...` and its submodules
    are stage sK_..., the top module itself "top"."""
    lines, stages = [], []
    for k, line in enumerate(open(verilog), 1):
        if line.startswith("module "):
            m = re.match(r"module \\?\S*?qloom_top\.(s\d+_[A-Za-z]+_[^.\s]+)", line)
            lines.append(k)
            stages.append(m.group(1) if m else "top")
    return lines, stages


def _src_stage(cell, modules):
    """The stage whose Verilog module holds the cell's `src` line, or None."""
    m = re.match(r"accelerator\.v:(\d+)", cell.get("attributes", {}).get("src", ""))
    if not m or not modules[0]:
        return None
    i = bisect.bisect_right(modules[0], int(m.group(1))) - 1
    return modules[1][i] if i >= 0 else None


def _d_bits(cell) -> list:
    """The nets on a flip-flop's data input (iCE40 D, ECP5 DI)."""
    return [b for b in (cell["connections"].get("D") or cell["connections"].get("DI") or []) if isinstance(b, int)]


def by_stage(netlist_json, verilog=None) -> dict:
    """{stage: {"luts", "ffs", "lone_ffs", "brams", "dsps"}} from a Yosys JSON netlist (path or dict).
    verilog: the accelerator's Verilog (default: accelerator.v beside a netlist path, if there)."""
    is_path = isinstance(netlist_json, (str, bytes)) or hasattr(netlist_json, "__fspath__")
    d = json.loads(open(netlist_json).read()) if is_path else netlist_json
    if verilog is None and is_path and (pathlib.Path(netlist_json).parent / "accelerator.v").exists():
        verilog = pathlib.Path(netlist_json).parent / "accelerator.v"
    modules = _module_stages(verilog) if verilog else ([], [])
    mod = next(m for m in d["modules"].values() if m.get("attributes", {}).get("top"))
    cells = mod["cells"]
    lut_driven = set()
    stage = {name: _src_stage(cell, modules) or stage_of(name) for name, cell in cells.items()}
    ff_stage = collections.defaultdict(set)        # net -> stages of the flip-flops it feeds (by src)
    for name, cell in cells.items():
        for port in _OUTPUTS.get(cell["type"], ()):
            lut_driven.update(b for b in cell["connections"].get(port, []) if isinstance(b, int))
        if cell["type"].startswith(_FF):
            for b in _d_bits(cell):
                ff_stage[b].add(stage[name])
    for name, cell in cells.items():
        outs = [b for port in _OUTPUTS.get(cell["type"], ()) for b in cell["connections"].get(port, [])
                if isinstance(b, int)]
        feeds = {s for b in outs for s in ff_stage.get(b, {None})}     # None: a net that feeds no flip-flop
        if len(feeds) == 1 and None not in feeds:
            stage[name] = feeds.pop()
    out = collections.defaultdict(lambda: {"luts": 0, "ffs": 0, "lone_ffs": 0, "brams": 0, "dsps": 0})
    paired = set()                  # a LUT output pairs with one flip-flop only (one logic cell)
    for name, cell in cells.items():
        t, row = cell["type"], None
        if t in _LUTS:
            row = out[stage[name]]
            row["luts"] += _LUTS[t]
        elif t.startswith(_FF):
            row = out[stage[name]]
            row["ffs"] += 1
            free = [b for b in _d_bits(cell) if b in lut_driven and b not in paired]
            if free:
                paired.add(free[0])
            else:
                row["lone_ffs"] += 1
        elif t in _BRAM:
            out[stage[name]]["brams"] += 1
        elif t in _DSP:
            out[stage[name]]["dsps"] += 1
    return dict(out)
