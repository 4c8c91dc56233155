"""Simulation speed: frames/s and cycles/s on Verilator and Icarus, harness and per-cycle driver.

All four runs use the same build dir (default: tfc-w2a2 folded to II 256, written
once to build/bench-sim-tfc-w2a2). Simulator builds are cached in the build dir,
so the first run of this script also pays 10-40 s per Verilator build; the build
time is reported separately and never counted in cycles/s.

    .venv/bin/python bench/sim_speed.py [--dir DIR] [--frames-harness 2048] [--frames-cocotb 256]
                                        [--frames-icarus 256] [--json rows.json]
"""
import argparse
import json
import pathlib
import sys

from qloom.sim import available, simulate


def ensure_build_dir(path: pathlib.Path, example: str, target_ii: int) -> None:
    if (path / "manifest.json").exists():
        return
    import qloom
    from qloom.examples import build
    print(f"[bench] compiling {example} (target II {target_ii}) into {path}", file=sys.stderr)
    model, x = build(example)
    qloom.compile(model, x, target_ii=target_ii).save(path, x_float=x[:64])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="build dir (default: build/bench-sim-<example>)")
    ap.add_argument("--example", default="tfc-w2a2")
    ap.add_argument("--target-ii", type=int, default=256)
    ap.add_argument("--frames-harness", type=int, default=2048, help="frames per Verilator harness run")
    ap.add_argument("--frames-cocotb", type=int, default=256, help="frames per Verilator per-cycle (cocotb) run")
    ap.add_argument("--frames-icarus", type=int, default=256,
                    help="frames per Icarus run, both drivers (Icarus runs ~8k cycles/s on a TFC)")
    ap.add_argument("--stall-prob", type=float, default=0.3)
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    d = pathlib.Path(args.dir or f"build/bench-sim-{args.example}")
    if args.dir is None:
        ensure_build_dir(d, args.example, args.target_ii)
    man = json.loads((d / "manifest.json").read_text())
    print(f"build dir {d}: II {man['ii_estimate']} (estimate), latency ~{man['latency_estimate']} cycles, "
          f"stall probability {args.stall_prob}")
    hdr = (f"{'simulator':<10} {'driver':<8} {'frames':>7} {'cycles':>9} {'sim s':>7} {'cycles/s':>10} "
           f"{'frames/s':>9} {'load s':>7} {'wall s':>7} {'build s':>8}  bit-exact")
    print(hdr)
    print("-" * len(hdr))
    rows = []
    for simulator in ("verilator", "icarus"):
        ok, why = available(simulator)
        if not ok:
            print(f"{simulator:<10} skipped: {why}")
            continue
        for driver in ("harness", "cocotb"):
            n = args.frames_icarus if simulator == "icarus" else \
                args.frames_harness if driver == "harness" else args.frames_cocotb
            r = simulate(d, simulator=simulator, driver=driver, frames=n, stall_prob=args.stall_prob)
            r.pop("outputs")
            rows.append(r)
            print(f"{simulator:<10} {driver:<8} {n:>7} {r['cycles']:>9} {r['sim_seconds']:>7.2f} "
                  f"{r['cycles_per_second']:>10,.0f} {r['frames_per_second']:>9,.1f} {r['load_seconds']:>7.2f} "
                  f"{r['wall_seconds']:>7.1f} {r['build_seconds']:>8.1f}  {'yes' if r['bit_exact'] else 'NO'}",
                  flush=True)
    print("sim s: wall time of the simulation loop only; load s: writing/reading the harness memories "
          "over VPI; wall s: the whole call (process start, imports, build check).")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
