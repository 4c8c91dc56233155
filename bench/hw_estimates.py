"""Estimated II, latency and LUT/FF/BRAM/DSP for each built-in network at several foldings."""
import argparse

import qloom
from qloom.hdl import folding as folding_mod
from qloom.examples import build

NETS = ["tfc-w1a1", "tfc-w2a2", "tfc-w4a4", "digits-mlp-w1a1", "digits-mlp-w2a2", "digits-cnn", "cnv-w1a1",
        "cnv-w2a2"]
TARGETS = {"cnv": [None, 1_000_000, 100_000, 30_000, 10_000], "": [None, 4096, 1024, 256, 64, 16]}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nets", nargs="*", default=NETS)
    args = ap.parse_args()
    print(f"{'network':<17}{'target':>9}{'II':>9}{'latency':>9}{'LUT':>8}{'FF':>8}{'BRAM18':>7}{'DSP':>5}"
          f"  folding (PE,SIMD)")
    for name in args.nets:
        model, x = build(name)
        acc = qloom.compile(model, x)
        for t in TARGETS["cnv" if name.startswith("cnv") else ""]:
            f = folding_mod.fold(acc.graph, target_ii=t)
            e = folding_mod.estimate(acc.graph, f)
            fs = " ".join(f"{v['pe']},{v['simd']}" for v in f.values())
            print(f"{name:<17}{t or 'full':>9}{e['ii']:>9}{e['latency']:>9}{e['luts']:>8}{e['ffs']:>8}"
                  f"{e['brams']:>7}{e['dsps']:>5}  {fs}")


if __name__ == "__main__":
    main()
