"""`qloom.explore` on tfc-w1a1 and the digits MLPs for the iCEBreaker: Pareto table, 1 vs 2 workers.

The same sweep runs twice from an empty cache, with 1 and then 2 local workers: each point
is compiled, folded for a target II relative to the fastest folding the estimates say fits
("fit/2", "fit", "fit*4"), synthesised with Yosys + nextpnr for two placement seeds, and the
digits nets' accuracy is measured on the digits test split. Prints the Pareto table (frames/s
vs LUT, accuracy vs LUT), the wall time of each run and their ratio, and checks that both
runs wrote the same table. Needs `pip install 'qloom[boards]'`.

    .venv/bin/python bench/explore.py                     # ~25 min on 2 shared cores
    .venv/bin/python bench/explore.py --no-synth          # estimates only (a minute or two)
"""
import argparse
import json
import pathlib
import shutil
import sys
import time

from qloom.explore import explore

MODELS = ["tfc-w1a1", "digits-mlp-w1a1", "digits-mlp-w2a2"]


def digits_data():
    """The digits test split for the two digits nets (tfc-w1a1 has seeded weights: no accuracy)."""
    from qloom.examples import digits
    _, _, xte, yte = digits.load()
    pair = (xte.numpy(), yte.numpy())
    return {"digits-mlp-w1a1": pair, "digits-mlp-w2a2": pair}


def run(out, workers, args):
    shutil.rmtree(out, ignore_errors=True)        # from an empty cache: the wall time is the real work
    space = {"model": MODELS, "target_ii": args.targets, "board": ["icebreaker"], "seed": args.seeds}
    t0 = time.perf_counter()
    res = explore(None, space, data=digits_data(), out=out, synth=not args.no_synth, workers=workers,
                  timeout=args.timeout, title=f"qloom explore: {', '.join(MODELS)} on the iCEBreaker")
    return res, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", nargs="*", default=["fit/2", "fit", "fit*4"], help="target_ii entries")
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 2], help="nextpnr seeds")
    ap.add_argument("--no-synth", action="store_true", help="estimates only")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per point")
    ap.add_argument("--out", default="build/bench/explore")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    runs = {}
    for workers in (1, 2):
        print(f"--- {workers} worker{'s' * (workers > 1)}", flush=True)
        runs[workers] = run(out / f"workers{workers}", workers, args)
    res, _ = runs[2]
    print()
    print(res)
    t1, t2 = runs[1][1], runs[2][1]
    same = (out / "workers1" / "results.csv").read_text() == (out / "workers2" / "results.csv").read_text()
    print(f"\n{len(res.rows)} points; wall time: 1 worker {t1:.0f} s, 2 workers {t2:.0f} s, ratio {t1 / t2:.2f}x; "
          f"tables identical: {'yes' if same else 'NO'}")
    print(f"plot: {res.paths.get('pareto_png')}")
    summary = {"points": len(res.rows), "wall_1_worker_s": round(t1, 1), "wall_2_workers_s": round(t2, 1),
               "ratio": round(t1 / t2, 3), "tables_identical": same, "front_fps": res.front_fps,
               "front_accuracy": res.front_accuracy, "best": res.best}
    (out / "bench.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
