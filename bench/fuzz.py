"""Differential fuzzing through the public API: random qloom.nn networks, torch eval = IR = RTL.

    python bench/fuzz.py --n 1000 --rtl 100 --jobs 2 [--seed0 0] [--json out.json]

Every case (tests/fuzznets.py) is compiled and checked torch eval = IR on every element of its
inputs (random, extremes, half-step ties, out-of-range); the first --rtl cases that compile are
also simulated on Verilator with random stalls (every element) and without (II measured ==
estimated exactly, latency within 5% + 10 cycles). Prints counts per outcome and per feature.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import json
import os
import pathlib
import random
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))


def run_case(args):
    seed, rtl, cache = args
    import torch
    torch.set_num_threads(1)
    import fuzznets as fz
    t0 = time.perf_counter()
    case = fz.random_case(seed)
    outcome, acc = fz.check_case(case)
    rtl_outcome = None
    if rtl and outcome == "ok":
        stall = random.Random(seed).choice([0.0, 0.3, 0.6, 0.85])
        try:
            rtl_outcome = fz.check_rtl(case, acc, stall, cache_dir=cache)
        except Exception as e:  # noqa: BLE001 - a tool failure is an outcome too
            rtl_outcome = f"FAIL: {type(e).__name__}: {str(e)[:200]}"
    return {"seed": seed, "features": case.features, "ir": outcome, "rtl": rtl_outcome,
            "seconds": time.perf_counter() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="reference cases (torch eval = IR)")
    ap.add_argument("--rtl", type=int, default=10, help="of those, how many also run on Verilator")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--json", default=None, help="write every case's result here")
    a = ap.parse_args(argv)
    cache = os.environ.get("QLOOM_SIM_CACHE") or tempfile.mkdtemp(prefix="qloom-fuzz-sim-")
    jobs = [(a.seed0 + i, i < a.rtl, cache) for i in range(a.n)]
    t0 = time.perf_counter()
    results = []
    with cf.ProcessPoolExecutor(max_workers=a.jobs) as pool:
        for r in pool.map(run_case, jobs):
            results.append(r)
            if r["ir"].startswith("FAIL") or (r["rtl"] or "").startswith("FAIL"):
                print(f"seed {r['seed']}: {r['ir']} / {r['rtl']}  {r['features']}", flush=True)
    wall = time.perf_counter() - t0
    ir = collections.Counter(r["ir"].split(":")[0] for r in results)
    rtl = collections.Counter((r["rtl"] or "not run").split(":")[0] for r in results)
    feats = collections.defaultdict(collections.Counter)
    for r in results:
        for f in r["features"]:
            feats[f][r["ir"].split(":")[0]] += 1
            if r["rtl"]:
                feats[f]["rtl " + r["rtl"].split(":")[0]] += 1
    print(f"\n{len(results)} cases in {wall:.0f} s ({a.jobs} jobs)")
    print("torch eval = IR:", dict(ir))
    print("IR = RTL (Verilator, stalls) and II/latency:", dict(rtl))
    print("\nper feature:")
    for f in sorted(feats):
        print(f"  {f:<22} " + ", ".join(f"{k} {v}" for k, v in sorted(feats[f].items())))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))
    bad = ir.get("FAIL", 0) + rtl.get("FAIL", 0)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
