"""Per-stage resource model against Yosys: each stage's component synthesised alone.

For each NET:FAMILY[:TARGET_II] (FAMILY ice40 or ecp5), plan the network (with an argmax),
synthesise every stage's component with YoWASP Yosys (`synth_ice40 -dsp` / `synth_ecp5`)
and print LUT4 / FF / block RAM / DSP from Yosys next to the kernel's estimate for that
family (hdl/kernels/costs.py). This is the data the cost tables are fitted to; the whole
design through nextpnr is bench/synth.py.

    .venv/bin/python bench/calibrate.py --runs tfc-w1a1:ice40:128 cnv-w1a1:ecp5:8000
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import qloom
from qloom.boards import fit, targets
from qloom.boards.flow import tool_env
from qloom.examples import build
from qloom.hdl import folding as folding_mod

MEMORY = {"ice40": targets.BOARDS["icebreaker"]["memory"], "ecp5": targets.BOARDS["ulx3s"]["memory"]}
SYNTH = {"ice40": "synth_ice40 -dsp", "ecp5": "synth_ecp5"}


def yosys_cells(component, family, workdir) -> dict:
    """Cell counts of `component` synthesised alone for `family` (with -noabc if ABC fails, as the
    board flow does; the counts then carry "noabc": 1)."""
    from amaranth.back import rtlil
    d = pathlib.Path(tempfile.mkdtemp(dir=workdir))
    (d / "top.il").write_text(rtlil.convert(component, name="top", emit_src=False))
    env = tool_env()
    for opts in ("", " -noabc"):
        (d / "s.ys").write_text(f"read_rtlil top.il\n{SYNTH[family]}{opts} -top top\n"
                                f"tee -q -o stat.json stat -json\n")
        r = subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "s.ys"], cwd=d, env=env, capture_output=True,
                           text=True)
        if r.returncode == 0:
            cells = json.loads((d / "stat.json").read_text())["design"]["num_cells_by_type"]
            return {**cells, "noabc": 1} if opts else cells
    raise RuntimeError(f"yosys failed in {d}: {r.stdout[-500:]}{r.stderr[-500:]}")


def counts(cells: dict, family: str) -> dict:
    """LUT4 (a CCU2C is two), flip-flops, block RAMs, DSPs from Yosys cells."""
    if family == "ice40":
        return {"luts": cells.get("SB_LUT4", 0), "ffs": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
                "brams": cells.get("SB_RAM40_4K", 0), "dsps": cells.get("SB_MAC16", 0)}
    return {"luts": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
            + 2 * cells.get("TRELLIS_DPR16X4", 0),
            "ffs": sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
            "brams": cells.get("DP16KD", 0), "dsps": cells.get("MULT18X18D", 0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", required=True, help="NET:FAMILY[:TARGET_II]")
    ap.add_argument("--plain", action="store_true", help="fold(target_ii) without the board's per-layer options")
    ap.add_argument("--fold", default=None, help="a folding JSON for every run instead of the target II")
    ap.add_argument("--out", default="build/bench/calibrate")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in args.runs:
        name, family, *ii = run.split(":")
        model, x = build(name)
        acc = qloom.compile(model, x, argmax=True)
        target = int(ii[0]) if ii else None
        board = {"ice40": "icebreaker", "ecp5": "ulx3s"}[family]
        if args.fold:
            f = json.loads(args.fold)
        elif args.plain:
            f = folding_mod.fold(acc.graph, target_ii=target)
        else:
            f = fit.board_folding(acc.graph, board, target)
        pipe = folding_mod.plan(acc.graph, f)
        mem = MEMORY[family]
        print(f"{name} {family} II {pipe.ii}: stage  real/estimate LUT4, FF, BRAM, DSP", flush=True)
        tot = {k: [0, 0] for k in ("luts", "ffs", "brams", "dsps")}
        for s in pipe:
            real = counts(yosys_cells(s.build(), family, out), family)
            est = s.resources(mem).row()
            row = {"net": name, "family": family, "stage": s.name, "kind": s.kind, "real": real, "est": est,
                   "pe": s.extra.get("pe"), "simd": s.extra.get("simd"),
                   "options": {k: v for k, v in s.extra.items()
                               if k in ("weights", "ibuf", "banks", "mem_reg", "rom_bank")}}
            rows.append(row)
            for k in tot:
                tot[k][0] += real[k]
                tot[k][1] += est[k]
            print(f"  {s.kind:<10}{s.name:<22}" + "".join(f"{real[k]:>7}/{est[k]:<7}" for k in tot)
                  + f"  {row['pe']}x{row['simd']} {row['options']}", flush=True)
        print(f"  {'total':<32}" + "".join(f"{a:>7}/{b:<7}" for a, b in tot.values()), flush=True)
    (out / "calibrate.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
