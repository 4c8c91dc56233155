"""Real utilisation and Fmax (YoWASP Yosys + nextpnr) per network and board, against the estimates.

For each NET:BOARD: compile with an argmax, take the fastest folding the estimates say fits
the board (`qloom.boards.fastest_fit`: per-layer PE/SIMD and where each memory goes), and
synthesise, place and route the board top (UART link + test-pattern mode). Reported per run:
II, LUT (iCE40: logic cells), FF, BRAM (iCE40 4-Kbit EBR, ECP5 DP16KD), DSP, each as
real/estimate, Fmax, frames/s = Fmax / II, lanes (sum of PE x SIMD) and LUT4 per lane for
the whole design (Yosys LUT4 cells / lanes) and for the MVUs alone, and the share of LUT4
outside the MVUs (overhead), from the netlist's cells per stage (boards/netlist.py;
--per-stage prints them against each kernel's estimate). `--search` also builds foldings one and two steps
faster than the chosen one (a small hand search): the choice should be within 10% of the
fastest that really fits. When a real design overflows, the fit is redone with the estimates held to
estimate/real of that run (boards.fit.refit_margin), or the target II doubles (--tries).
The old numbers (main before issue #15, same tools) are printed beside (bench/synth_baseline.json).

    .venv/bin/python bench/synth.py                                   # every run below (CNV: 40-60 min)
    .venv/bin/python bench/synth.py --runs tfc-w1a1:icebreaker --per-stage --search
"""
import argparse
import json
import pathlib
import sys
import time

import qloom
from qloom import boards
from qloom.boards import fit
from qloom.examples import build
from qloom.hdl import folding as folding_mod

RUNS = ["tfc-w1a1:icebreaker", "tfc-w1a1-u8:icebreaker", "tfc-w2a2:icebreaker", "digits-mlp-w1a1:icebreaker",
        "digits-mlp-w2a2:icebreaker",
        "tfc-w1a1:ulx3s", "tfc-w2a2:ulx3s", "digits-mlp-w1a1:ulx3s", "digits-mlp-w2a2:ulx3s", "cnv-w1a1:ulx3s"]
BASELINE = pathlib.Path(__file__).with_name("synth_baseline.json")
FAMILY = {"icebreaker": "ice40", "ulx3s": "ecp5"}


def lanes(pipe) -> int:
    return sum(s.extra["pe"] * s.extra["simd"] for s in pipe if s.kind == "mvu")


def yosys_luts(cells: dict, board: str) -> int:
    if FAMILY[board] == "ice40":
        return cells.get("SB_LUT4", 0)
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0) + 2 * cells.get("TRELLIS_DPR16X4", 0)


def stage_rows(out_dir, pipe, board) -> dict:
    """Per stage of the real netlist (boards/netlist.py): LUT4, FF, lone FF, BRAM; and the estimate's."""
    from qloom.boards import netlist
    real = netlist.by_stage(pathlib.Path(out_dir) / "top.json")
    mem = boards.BOARDS[board]["memory"]
    rows = {}
    for k, s in enumerate(pipe):
        key = f"s{k}_{s.kind}_" + "".join(c if c.isalnum() else "_" for c in s.name)
        rows[key] = {"kind": s.kind, "real": real.get(key, {}), "est": s.resources(mem).row()}
    rows["top"] = {"kind": "top", "real": real.get("top", {}), "est": {}}
    rows["unnamed"] = {"kind": "unnamed", "real": real.get("unnamed", {}), "est": {}}
    return rows


def within(stages, rel=0.2, floor=10) -> dict:
    """Per resource, (kernels whose estimate is within rel of the real count or within floor units of
    it, kernels): the board top and unnamed cells have no estimate and are left out."""
    out = {}
    for k in ("luts", "ffs", "brams"):
        pairs = [(v["real"].get(k, 0), v["est"].get(k, 0)) for v in stages.values()
                 if v["kind"] not in ("top", "unnamed")]
        ok = sum(abs(e - r) <= max(rel * r, floor if k != "brams" else 0) for r, e in pairs)
        out[k] = (ok, len(pairs))
    return out


def attempt(name, board, acc, folding, out, timeout, per_stage, seeds=1):
    est = boards.estimate_for(acc.graph, folding, board)
    pipe = folding_mod.plan(acc.graph, folding)
    row = {"net": name, "board": board, "ii": est["ii"], "folding": folding, "lanes": lanes(pipe),
           "est": {k: est[k] for k in ("luts", "ffs", "brams", "dsps")}, "latency": est["latency"]}
    t0 = time.perf_counter()
    try:
        r = boards.synthesize(acc.graph, board=board, out_dir=out, folding=folding, timeout=timeout, seeds=seeds)
        row.update(status="ok", luts=r["luts"], ffs=r["ffs"], brams=r["brams"], dsps=r["dsps"], io=r["io"],
                   fmax_mhz=r["fmax_mhz"], fps=r["frames_per_second"], seconds=r["seconds"], notes=r["notes"],
                   seed=r.get("seed"),
                   yosys_luts=yosys_luts(r["yosys_cells"], board), bitstream=r["bitstream"])
        row["lut_per_lane"] = row["yosys_luts"] / row["lanes"]
        st = stage_rows(r["out_dir"], pipe, board)
        row["stages"] = st
        row["mvu_luts"] = sum(v["real"].get("luts", 0) for v in st.values() if v["kind"] == "mvu")
        row["mvu_lut_per_lane"] = row["mvu_luts"] / row["lanes"]
        row["overhead"] = 1 - row["mvu_luts"] / max(1, sum(v["real"].get("luts", 0) for v in st.values()))
        # the issue's overhead: buffers, FIFOs, thresholds, control; the board's UART link and test pattern aside
        row["overhead_accel"] = 1 - row["mvu_luts"] / max(1, sum(v["real"].get("luts", 0) for k, v in st.items()
                                                                  if k != "top"))
        row["kernels_within"] = within(st)
        if per_stage:
            for name, v in st.items():
                real, est = dict(v["real"]), dict(v["est"])
                if FAMILY[board] == "ice40":     # the compares' carry-only logic cells (netlist) vs their estimate
                    real["carry"], est["carry"] = real.get("carry_lcs", "-"), est.get("pack_luts", "-")
                cols = ("luts", "ffs", "lone_ffs", "brams", "carry")
                print(f"    {name:<28}" + "".join(f"{real.get(k, '-')!s:>7}/{est.get(k, '-')!s:<7}" for k in cols),
                      flush=True)
            print("    kernels whose estimate is within 20% (or 10 units): " + ", ".join(
                f"{k} {n}/{t}" for k, (n, t) in row["kernels_within"].items()), flush=True)
    except boards.DoesNotFit as e:
        row.update(status="does not fit", overflow={k: list(v) for k, v in e.overflow.items()}, error=str(e))
    except boards.SynthError as e:
        row.update(status="error", error=str(e))
    row["wall_s"] = time.perf_counter() - t0
    return row


HEAD = (f"{'network':<16}{'board':<11}{'II':>7} {'LUT':^13}{'FF':^13}{'BRAM':^9}{'DSP':^7}"
        f"{'Fmax':>6}{'frames/s':>10}{'lanes':>7}{'L/lane':>7}{'MVU':>6}{'ovh':>5}{'acc':>5}{'wall':>7}  status")


def fmt(row):
    e = row["est"]

    def a(k, w):
        return f"{row.get(k, '-')!s:>{w}}/{e[k]!s:<{w}}"
    fm = f"{row['fmax_mhz']:.1f}" if row.get("fmax_mhz") else "-"
    fps = f"{row['fps']:.0f}" if row.get("fps") else "-"
    lpl = f"{row['lut_per_lane']:.2f}" if row.get("lut_per_lane") else "-"
    mpl = f"{row['mvu_lut_per_lane']:.2f}" if row.get("mvu_lut_per_lane") else "-"
    ovh = f"{100 * row['overhead']:.0f}%" if row.get("overhead") is not None else "-"
    ova = f"{100 * row['overhead_accel']:.0f}%" if row.get("overhead_accel") is not None else "-"
    st = row["status"] if row["status"] != "does not fit" else "no fit: " + ", ".join(
        f"{k} {u}/{c}" for k, (u, c) in row["overflow"].items())
    return (f"{row['net']:<16}{row['board']:<11}{row['ii']:>7} {a('luts', 6)}{a('ffs', 6)}{a('brams', 4)}"
            f"{a('dsps', 3)}{fm:>6}{fps:>10}{row['lanes']:>7}{lpl:>7}{mpl:>6}{ovh:>5}{ova:>5}"
            f"{row['wall_s']:>6.0f}s  {st}")


def baseline_rows():
    if not BASELINE.exists():
        return {}
    return {(r["net"], r["board"]): r for r in json.loads(BASELINE.read_text())["rows"]}


def fmt_baseline(b):
    fm = f"{b['fmax_mhz']:.1f}" if b.get("fmax_mhz") else "-"
    fps = f"{b['fps']:.0f}" if b.get("fps") else "-"
    return (f"  before: II {b['ii']}, LUT {b.get('luts', '-')}/{b['est']['luts']}, FF {b.get('ffs', '-')}/"
            f"{b['est']['ffs']}, BRAM {b.get('brams', '-')}/{b['est']['brams']}, Fmax {fm}, {fps} frames/s"
            + (f" ({b['status']})" if b.get("status", "ok") != "ok" else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=RUNS, help="NET:BOARD pairs")
    ap.add_argument("--timeout", type=float, default=4800, help="seconds per tool flow (cnv-w1a1 on ECP5: 40-60 min)")
    ap.add_argument("--tries", type=int, default=3,
                    help="attempts per run (after a no-fit: the fit redone with scaled estimates, else II x2)")
    ap.add_argument("--per-stage", action="store_true",
                    help="print each stage's real/estimated LUT4, FF, lone FF, BRAM")
    ap.add_argument("--search", action="store_true", help="also build the foldings 1 and 2 steps faster")
    ap.add_argument("--max-lanes", type=int, default=None,
                    help="cap on PE x SIMD per layer (default: the board's; ulx3s 2048)")
    ap.add_argument("--seeds-ice40", type=int, default=1,
                    help="iCE40 runs: place and route with this many nextpnr seeds and keep the fastest "
                         "(synthesize(seeds=...); the notes list every seed's Fmax)")
    ap.add_argument("--out", default="build/bench/synth")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = baseline_rows()
    rows = []
    print("real/estimate per resource (board units: iCE40 LUT = logic cells, BRAM = 4-Kbit EBR; ECP5 LUT4, "
          "DP16KD); frames/s = Fmax / II; L/lane = LUT4 / lanes, whole design and MVUs; ovh = LUT4 outside the "
          "MVUs (board top included), acc = the same in the accelerator alone", flush=True)
    print(HEAD, flush=True)

    def save():
        (out / "synth.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")

    for run in args.runs:
        name, board = run.split(":")
        model, x = build(name)
        acc = qloom.compile(model, x, argmax=True)
        t0 = time.perf_counter()
        r = boards.fastest_fit(acc.graph, board, max_lanes=args.max_lanes)
        if r is None:
            print(f"{name} {board}: even the fully folded design is estimated not to fit", flush=True)
            continue
        ii, folding, _ = r
        search_s = time.perf_counter() - t0
        for k in range(args.tries):
            row = attempt(name, board, acc, folding, out / f"{name}-{board}-{k}", args.timeout, args.per_stage,
                          args.seeds_ice40 if boards.BOARDS[board]["family"] == "ice40" else 1)
            row.update(choice="fastest estimated fit" if k == 0 else f"after a no-fit: target II {ii}", target_ii=ii,
                       fit_search_s=search_s)
            rows.append(row)
            print(fmt(row), flush=True)
            for note in row.get("notes") or []:
                if note.startswith("nextpnr seeds"):
                    print("  " + note, flush=True)
            save()
            if row["status"] != "does not fit":
                break
            # the fastest fit with the estimates scaled by how far off they were here; else double the II
            margin = fit.refit_margin(row["est"], row["overflow"], board)
            r = boards.fastest_fit(acc.graph, board, margin=margin, max_lanes=args.max_lanes) if margin else None
            if r is not None and r[1] != folding and r[2]["ii"] >= row["ii"]:
                ii, nf, _ = r
            else:
                ii *= 2
                nf = fit.board_folding(acc.graph, board, ii)
            if nf == folding:
                break
            folding = nf
        if args.search and rows[-1]["status"] == "ok":
            chosen = rows[-1]
            for step, tgt in enumerate(sorted({max(1, int(chosen["ii"] * f)) for f in (0.5, 0.75)}, reverse=True)):
                f2 = fit.board_folding(acc.graph, board, tgt)
                if folding_mod.estimate(acc.graph, f2)["ii"] >= chosen["ii"]:
                    continue
                row = attempt(name, board, acc, f2, out / f"{name}-{board}-search{step}", args.timeout, False)
                row.update(choice=f"search: target II {tgt}", target_ii=tgt)
                rows.append(row)
                print(fmt(row), flush=True)
                save()
        if (name, board) in base:
            print(fmt_baseline(base[(name, board)]), flush=True)
    save()
    print(f"rows: {out / 'synth.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
