"""Estimated II, latency and LUT/FF/BRAM/DSP for each built-in network at several foldings; and, for the
depthwise-separable net, the vector-vector unit against the zero-expanded matrix unit at the same II."""
import argparse

import qloom
from qloom.compiler import ir
from qloom.examples import build
from qloom.hdl import folding as folding_mod
from qloom.hdl.kernels import BRAM18
from qloom.hdl.kernels.vvu import zero_expanded

NETS = ["tfc-w1a1", "tfc-w2a2", "tfc-w4a4", "digits-mlp-w1a1", "digits-mlp-w2a2", "digits-cnn", "cnv-w1a1",
        "cnv-w2a2", "digits-resnet", "digits-dwsep", "resnet8", "resnet8-w1a1"]
TARGETS = {"cnv": [None, 1_000_000, 100_000, 30_000, 10_000], "resnet8": [None, 1_000_000, 100_000, 30_000, 10_000],
           "": [None, 4096, 1024, 256, 64, 16]}


def targets(name):
    return next(v for k, v in TARGETS.items() if name.startswith(k))


def depthwise_rows(graph, name):
    """Per target: lanes (PE x SIMD) and weight bits of the depthwise layers, native vs zero-expanded."""
    dw = {n.name for n in graph.nodes if isinstance(n, ir.Conv2d) and n.groups > 1}
    gx = zero_expanded(graph)
    print(f"\n{name}: depthwise layers {sorted(dw)}, vector-vector unit vs zero-expanded matrix unit")
    print(f"{'target':>8}{'II':>8}{'II(x)':>8}{'lanes':>7}{'lanes(x)':>9}{'wbits':>8}{'wbits(x)':>9}"
          f"{'LUT':>7}{'LUT(x)':>8}")
    for t in [None, 4096, 1024, 300]:
        p, px = (folding_mod.plan(g, folding_mod.fold(g, target_ii=t)) for g in (graph, gx))
        vv = [s for s in p if s.name in dw and s.node is not None and s.kind == "vvu"]
        mv = [s for s in px if s.name in dw and s.node is not None and s.kind == "mvu"]
        lanes, lanes_x = sum(s.pe for s in vv), sum(s.pe * s.simd for s in mv)
        bits, bits_x = sum(s.weight_bits for s in vv), sum(s.weight.size * s.wtype.bits for s in mv)
        luts = sum(s.resources(BRAM18).luts for s in vv)
        luts_x = sum(s.resources(BRAM18).luts for s in mv)
        print(f"{t or 'full':>8}{p.ii:>8}{px.ii:>8}{lanes:>7}{lanes_x:>9}{bits:>8}{bits_x:>9}"
              f"{luts:>7.0f}{luts_x:>8.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nets", nargs="*", default=NETS)
    args = ap.parse_args()
    print(f"{'network':<17}{'target':>9}{'II':>9}{'latency':>9}{'LUT':>8}{'FF':>8}{'BRAM18':>7}{'DSP':>5}"
          f"  folding (PE,SIMD)")
    dwsep = []
    for name in args.nets:
        model, x = build(name)
        acc = qloom.compile(model, x)
        for t in targets(name):
            f = folding_mod.fold(acc.graph, target_ii=t)
            e = folding_mod.estimate(acc.graph, f)
            fs = " ".join(f"{v['pe']},{v['simd']}" for v in f.values())
            print(f"{name:<17}{t or 'full':>9}{e['ii']:>9}{e['latency']:>9}{e['luts']:>8}{e['ffs']:>8}"
                  f"{e['brams']:>7}{e['dsps']:>5}  {fs}")
        if any(isinstance(n, ir.Conv2d) and n.groups > 1 for n in acc.graph.nodes):
            dwsep.append((name, acc.graph))
    for name, g in dwsep:
        depthwise_rows(g, name)


if __name__ == "__main__":
    main()
