"""The graph-shaped examples on Verilator: bit-exact with random stalls, measured II against the estimate.

For each network: compile, fold for a target II, write a build dir with N frames of test vectors,
simulate with stalls (every output element compared with the reference) and without (measured II).

    .venv/bin/python bench/graph_sim.py                       # digits-resnet, digits-dwsep, resnet8, resnet8-w1a1
    .venv/bin/python bench/graph_sim.py --nets resnet8 --frames 16
"""
import argparse
import pathlib
import tempfile
import time

import numpy as np

import qloom
from qloom.examples import build
from qloom.hdl import folding
from qloom.sim import simulate

NETS = {"digits-resnet": 1000, "digits-dwsep": 300, "resnet8": 12_000, "resnet8-w1a1": 12_000}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="*", default=list(NETS))
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--stall", type=float, default=0.3)
    args = ap.parse_args()
    print(f"{'network':<15}{'target':>8}{'frames':>7}{'elements':>10}{'mismatch':>9}{'II est':>8}{'II meas':>8}"
          f"{'lat est':>9}{'lat meas':>9}{'skip FIFOs':>24}{'wall':>7}", flush=True)
    for name in args.nets:
        t0 = time.perf_counter()
        model, x = build(name)
        acc = qloom.compile(model, x)
        pipe = folding.plan(acc.graph, acc.fold(target_ii=NETS[name]))
        joins = {s.name for s in pipe if len(s.in_ports) > 1}
        fifos = [s.extra["depth"] for s in pipe if s.kind == "fifo" and s.name.rsplit(":fifo", 1)[0] in joins]
        with tempfile.TemporaryDirectory() as d:
            out = pathlib.Path(d) / name
            acc.save(out, x_float=x[:args.frames])
            r = simulate(out, stall_prob=args.stall, seed=1)
            r0 = simulate(out, stall_prob=0.0)
            want = np.load(out / "outputs.npy")
        print(f"{name:<15}{NETS[name]:>8}{r.frames:>7}{want.size:>10}{r.mismatches:>9}{r0.ii_estimated:>8}"
              f"{r0.ii_measured:>8.0f}{r0.latency_estimated:>9}{r0.latency_cycles:>9}{str(fifos):>24}"
              f"{time.perf_counter() - t0:>6.0f}s", flush=True)
        assert r.bit_exact and r0.bit_exact, r.verdict


if __name__ == "__main__":
    main()
