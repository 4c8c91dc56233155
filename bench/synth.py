"""Real utilisation and Fmax (YoWASP Yosys + nextpnr) per network and board, against the estimates.

For each (network, board): compile with an argmax, take the fastest folding that the
estimates say fits the board (qloom.boards.fastest_fit), synthesise, place and route
the UART board top; when the real design overflows, double the target II and try
again (up to --tries). One row per attempt: estimate vs actual LUT/FF/BRAM/DSP (the
board's units: iCE40 LC and 4-Kbit EBR, ECP5 LUT4 and DP16KD), Fmax, frames/s at
Fmax (Fmax / II), tool times. Needs `pip install 'qloom[boards]'`.

    .venv/bin/python bench/synth.py                       # the default list below
    .venv/bin/python bench/synth.py --runs tfc-w1a1:icebreaker --timeout 600
"""
import argparse
import json
import pathlib
import sys
import time

import qloom
from qloom import boards
from qloom.hdl import folding as folding_mod
from qloom.examples import build

RUNS = ["digits-mlp-w1a1:icebreaker", "digits-mlp-w2a2:icebreaker", "tfc-w1a1:icebreaker", "cnv-w1a1:ulx3s"]


def attempt(name, board, acc, folding, out, timeout):
    est = boards.estimate_for(acc.graph, folding, board)
    row = {"net": name, "board": board, "ii": est["ii"], "folding": folding,
           "est": {k: est[k] for k in ("luts", "ffs", "brams", "dsps")}}
    t0 = time.perf_counter()
    try:
        r = boards.synthesize(acc.graph, board=board, out_dir=out, folding=folding, timeout=timeout)
        row.update(status="ok", luts=r["luts"], ffs=r["ffs"], brams=r["brams"], dsps=r["dsps"], io=r["io"],
                   fmax_mhz=r["fmax_mhz"], fps=r["frames_per_second"], seconds=r["seconds"], notes=r["notes"],
                   bitstream=r["bitstream"])
    except boards.DoesNotFit as e:
        row.update(status="does not fit", overflow={k: list(v) for k, v in e.overflow.items()}, error=str(e))
    except boards.SynthError as e:
        row.update(status="error", error=str(e))
    row["wall_s"] = time.perf_counter() - t0
    return row


def fmt(row):
    e = row["est"]

    def a(k):
        return f"{row.get(k, '-')!s:>6}/{e[k]!s:<6}"
    fm = f"{row['fmax_mhz']:.1f}" if row.get("fmax_mhz") else "-"
    fps = f"{row['fps']:.0f}" if row.get("fps") else "-"
    st = row["status"] if row["status"] != "does not fit" else "no fit: " + ", ".join(
        f"{k} {u}/{c}" for k, (u, c) in row["overflow"].items())
    return (f"{row['net']:<16}{row['board']:<11}{row['ii']:>8} {a('luts')}{a('ffs')}{a('brams')}{a('dsps')}"
            f"{fm:>7}{fps:>10}{row['wall_s']:>7.0f}s  {st}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="*", default=RUNS, help="NET:BOARD pairs")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per tool flow")
    ap.add_argument("--tries", type=int, default=3, help="attempts per run (target II doubles after a no-fit)")
    ap.add_argument("--out", default="build/bench/synth")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    rows = []
    print("actual/estimate per resource (board units); fps = frames/s at Fmax", flush=True)
    print(f"{'network':<16}{'board':<11}{'II':>8} {'LUT':^13}{'FF':^13}{'BRAM':^13}{'DSP':^13}"
          f"{'Fmax':>7}{'fps':>10}{'wall':>8}  status", flush=True)
    for run in args.runs:
        name, board = run.split(":")
        model, x = build(name)
        acc = qloom.compile(model, x, argmax=True)
        fit = boards.fastest_fit(acc.graph, board)
        if fit is None:
            folding, ii = folding_mod.fold(acc.graph), None
        else:
            ii, folding, _ = fit
        for k in range(args.tries):
            row = attempt(name, board, acc, folding, out / f"{name}-{board}-{k}", args.timeout)
            row["choice"] = "fastest estimated fit" if k == 0 else f"target II x{2 ** k}"
            rows.append(row)
            print(fmt(row), flush=True)
            if row["status"] != "does not fit":
                break
            ii = 2 * (ii or row["ii"])
            nf = folding_mod.fold(acc.graph, target_ii=ii)
            if nf == folding:
                break
            folding = nf
        (out).mkdir(parents=True, exist_ok=True)
        (out / "synth.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"rows: {out / 'synth.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
