"""Planted faults: flip one bit of a ROM word in a copy of a build dir's accelerator.v.

Used by the tests to prove that the testbench catches a wrong design and says
where (frame, element). A fault is only worth planting where it is observable;
the caller checks that (tests/test_sim.py predicts the faulty outputs from the
weights).

ROM words appear in the Verilog that hdl/emit.py writes (RTLIL + Yosys proc)
as init lines inside the module of their stage:

    module \\qloom_top.s1_mvu_fc (...);
      reg [15:0] rom0 [15:0];
      initial begin
        rom0[0] = 16'hffc1;
"""
from __future__ import annotations

import pathlib
import re
import shutil

from qloom.compiler import builddir

_MODULE = re.compile(r"^module\s+(\\?\S+)\s*\(", re.M)
_INIT = re.compile(r"^(\s+)(\w+)\[(\d+)\] = (\d+)'([hdb])([0-9a-fA-F_xXzZ]+);$", re.M)


def rom_words(text: str):
    """Every memory init line: dicts with module, memory, address, width, value, span (of the line)."""
    mods = [(m.start(), m.group(1).lstrip("\\")) for m in _MODULE.finditer(text)]
    out = []
    for m in _INIT.finditer(text):
        module = None
        for start, name in mods:
            if start > m.start():
                break
            module = name
        base = {"h": 16, "d": 10, "b": 2}[m.group(5)]
        digits = m.group(6).replace("_", "")
        if any(c in "xXzZ" for c in digits):
            continue
        out.append({"module": module, "memory": m.group(2), "address": int(m.group(3)),
                    "width": int(m.group(4)), "value": int(digits, base), "span": m.span()})
    return out


def flip_rom_bit(text: str, module: str | None = None, memory: str = "rom0", address: int = 0,
                 bit: int = 0) -> tuple[str, dict]:
    """Flip `bit` of word `address` of `memory` in `module` (a substring of the Verilog module
    name, e.g. "mvu_fc"; default: the first module that has such a memory).

    Returns (new Verilog text, info dict with module, memory, address, bit, width, old, new).
    """
    words = [w for w in rom_words(text) if w["memory"] == memory and w["address"] == address
             and (module is None or module in w["module"])]
    if not words:
        have = sorted({(w["module"], w["memory"]) for w in rom_words(text)})
        raise ValueError(f"no init line for {memory}[{address}] in a module matching {module!r}; "
                         f"memories with init lines: {have}")
    w = words[0]
    if not 0 <= bit < w["width"]:
        raise ValueError(f"bit {bit} is outside the {w['width']}-bit word {w['memory']}[{address}]")
    new = w["value"] ^ (1 << bit)
    indent = re.match(r"\s*", text[w["span"][0]:w["span"][1]]).group(0)
    line = f"{indent}{w['memory']}[{address}] = {w['width']}'h{new:0{(w['width'] + 3) // 4}x};"
    a, b = w["span"]
    info = {k: w[k] for k in ("module", "memory", "address", "width")}
    info.update(bit=bit, old=w["value"], new=new)
    return text[:a] + line + text[b:], info


def plant_fault(build_dir, out_dir, **where) -> dict:
    """Copy build_dir (without its sim_build cache) to out_dir and flip one ROM bit in the copy's
    accelerator.v (see flip_rom_bit for `where`). Returns the fault's info."""
    src, dst = pathlib.Path(build_dir), pathlib.Path(out_dir)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("sim_build"))
    text, info = flip_rom_bit((dst / "accelerator.v").read_text(), **where)
    (dst / "accelerator.v").write_text(text)
    (dst / "FAULT.txt").write_text(f"planted fault: {info}\n")
    builddir.rehash(dst, f"planted fault: {info}")
    return info
