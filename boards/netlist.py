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
of it goes to the stage whose module holds that line. A LUT or carry cell whose outputs all go to
cells of one stage goes with them, through any depth of logic (ABC's LUTs carry no `src`: the
compare LUTs of a threshold unit whose output register drives the next stage's port were
counted with the board top).

iCE40: a carry cell (SB_CARRY) whose inputs no LUT4 of the same bit shares (a compare, whose sum
bits are unused) takes a logic cell of its own in nextpnr: `carry_lcs` counts them per stage.
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
_OUTPUTS = {"SB_LUT4": ("O",), "LUT4": ("Z",), "CCU2C": ("S0", "S1", "COUT"), "SB_CARRY": ("CO",),
            "TRELLIS_DPR16X4": ("DO",)}
_LUT_OUT = {"SB_LUT4": ("O",), "LUT4": ("Z",), "CCU2C": ("S0", "S1")}    # what a flip-flop can share a cell with
_LOGIC = ("SB_LUT4", "LUT4", "CCU2C", "SB_CARRY")     # cells that follow their readers' stage
_ROW = ("luts", "ffs", "lone_ffs", "brams", "dsps", "carry_lcs")


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


def _outputs(cell) -> list:
    dirs = cell.get("port_directions")
    ports = [p for p, d in dirs.items() if d == "output"] if dirs else _OUTPUTS.get(cell["type"], ("Q",))
    return [b for p in ports for b in cell["connections"].get(p, []) if isinstance(b, int)]


def _port_registers(cells, stage, outputs, depth=4):
    """A flip-flop inside the accelerator named after a port (`link.accel.i__payload$83`) without a `src`
    in accelerator.v (a memory's read register, mapped by Yosys' techmap) goes to the one stage of the
    cells its data input comes from, looking back through up to `depth` levels of logic (ECP5: a FIFO's
    LUT-RAM read mux and register, which went to the board top). outputs: {cell: its output nets}."""
    driver = {b: name for name, outs in outputs.items() for b in outs}
    for name, cell in cells.items():
        src = cell.get("attributes", {}).get("src", "")
        if not cell["type"].startswith(_FF) or stage[name] != "top" or ".accel." not in "." + name \
                or ".py:" in src or "accelerator.v" in src:     # the board top's own (Amaranth source) keep theirs
            continue
        found, front, seen = set(), _d_bits(cell), set()
        for _ in range(depth):
            nxt = []
            for b in front:
                drv = driver.get(b)
                if drv is None or drv in seen:
                    continue
                seen.add(drv)
                if stage[drv] not in ("top", "unnamed"):
                    found.add(stage[drv])
                elif cells[drv]["type"] in _LOGIC or cells[drv]["type"] == "TRELLIS_DPR16X4":
                    nxt += _inputs(cells[drv], outputs[drv])
            front = nxt
            if found:
                break
        if len(found) == 1:
            stage[name] = found.pop()


def _inputs(cell, outs) -> list:
    """The nets a cell reads: every connected net but its outputs."""
    outs = set(outs)
    return [b for bits in cell["connections"].values() for b in bits if isinstance(b, int) and b not in outs]


def _follow_readers(cells, stage, outputs):
    """Move each LUT / carry cell to the stage of the cells that read its outputs, where that is one
    stage, until nothing moves (flip-flops, block RAMs and DSPs keep theirs)."""
    readers = collections.defaultdict(list)
    for name, cell in cells.items():
        for b in _inputs(cell, outputs[name]):
            readers[b].append(name)
    logic = [(name, outputs[name]) for name, cell in cells.items() if cell["type"] in _LOGIC]
    for _ in range(64):
        moved = False
        for name, outs in logic:
            feeds = {stage.get(r) for b in outs for r in readers.get(b, [None])} if outs else {None}
            if len(feeds) == 1 and None not in feeds:
                s = feeds.pop()
                if s != stage[name]:
                    stage[name], moved = s, True
        if not moved:
            break


def by_stage(netlist_json, verilog=None) -> dict:
    """{stage: {"luts", "ffs", "lone_ffs", "brams", "dsps", "carry_lcs"}} from a Yosys JSON netlist (path or dict).
    verilog: the accelerator's Verilog (default: accelerator.v beside a netlist path, if there)."""
    is_path = isinstance(netlist_json, (str, bytes)) or hasattr(netlist_json, "__fspath__")
    d = json.loads(open(netlist_json).read()) if is_path else netlist_json
    if verilog is None and is_path and (pathlib.Path(netlist_json).parent / "accelerator.v").exists():
        verilog = pathlib.Path(netlist_json).parent / "accelerator.v"
    modules = _module_stages(verilog) if verilog else ([], [])
    mod = next(m for m in d["modules"].values() if m.get("attributes", {}).get("top"))
    cells = mod["cells"]
    lut_driven = {b for cell in cells.values() for port in _LUT_OUT.get(cell["type"], ())
                  for b in cell["connections"].get(port, []) if isinstance(b, int)}
    stage = {name: _src_stage(cell, modules) or stage_of(name) for name, cell in cells.items()}
    outputs = {name: _outputs(cell) for name, cell in cells.items()}
    _port_registers(cells, stage, outputs)
    _follow_readers(cells, stage, outputs)
    out = collections.defaultdict(lambda: dict.fromkeys(_ROW, 0))
    lut_pairs = {frozenset((c["connections"]["I1"][0], c["connections"]["I2"][0]))
                 for c in cells.values() if c["type"] == "SB_LUT4"}
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
        elif t == "SB_CARRY":
            pins = cell["connections"]
            if frozenset((pins["I0"][0], pins["I1"][0])) not in lut_pairs:
                out[stage[name]]["carry_lcs"] += 1
        elif t in _BRAM:
            out[stage[name]]["brams"] += 1
        elif t in _DSP:
            out[stage[name]]["dsps"] += 1
    return dict(out)
