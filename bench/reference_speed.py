"""Reference-model frames/s vs torch eval frames/s on the same inputs (one core)."""
import argparse
import os
import sys
import time

if "--threads" not in sys.argv:  # one core unless asked: set before numpy/torch load their BLAS
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import torch

import qloom
from qloom.examples import build


def rate(fn, frames, min_time=2.0):
    fn()                                  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        n += frames
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--example", default="tfc-w1a1")
    ap.add_argument("--batch", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, x0 = build(args.example)
    acc = qloom.compile(model, x0)
    x = torch.rand(args.batch, x0.shape[1], generator=torch.Generator().manual_seed(1))
    xi = acc.quantize_input(x)
    ref = rate(lambda: acc.reference(xi), args.batch)
    with torch.no_grad():
        tor = rate(lambda: model(x), args.batch)
    rep = acc.fidelity(x)
    print(f"{args.example}: batch {args.batch}, {args.threads} thread(s)")
    print(f"  reference model : {ref:12,.0f} frames/s")
    print(f"  torch eval      : {tor:12,.0f} frames/s")
    print(f"  ratio ref/torch : {ref / tor:12.2f}")
    print(f"  {rep}")


if __name__ == "__main__":
    main()
