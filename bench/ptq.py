"""PTQ vs QAT on the digits MLP, and automatic bit allocation on a digits CNN.

    .venv/bin/python bench/ptq.py [--epochs 60] [--json]

1. A float 64-64-64-10 MLP (Linear, BatchNorm, ReLU) trained on the digits train split,
   quantized post-training at 8/4/2 bits (weights and activations) with min-max,
   percentile and MSE calibration, then PTQ + 5 epochs of QAT fine-tuning; against QAT
   from scratch (examples.digits.build). Test-split accuracy; every PTQ model is compiled
   and its IR checked bit-exact against torch eval (fidelity 100%).
2. A float digits CNN (conv16, pool, conv32, pool, dense 10): greedy per-layer weight bit
   allocation within a 1-point accuracy budget (8-bit activations, MSE calibration) on a validation split
   carved out of the train split, against uniform widths; the allocation is then checked
   on the test split.

`bench/ptq.py:digits_ptq` is also a spec for `qloom analyze` (returns model, x, float_model).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import qloom  # noqa: E402
from qloom.compiler import ptq  # noqa: E402
from qloom.examples import digits  # noqa: E402


def float_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def digits_ptq(bits=4, epochs=30):
    """(PTQ model, test images, float model): a spec for `qloom analyze bench/ptq.py:digits_ptq`."""
    xtr, ytr, xte, _ = digits.load()
    torch.manual_seed(0)
    fm = digits.train(digits.float_mlp(), xtr, ytr, epochs=epochs)
    return qloom.quantize(fm, xtr[:512], bits, bits, calibration="percentile"), xte, fm


def check_exact(qm, x_cal, x_test):
    acc = qloom.compile(qm, x_cal)
    rep = acc.fidelity(x_test)
    assert rep.exact, rep
    return 100 * rep.fidelity


def mlp_table(epochs, log):
    xtr, ytr, xte, yte = digits.load()
    torch.manual_seed(0)
    t0 = time.time()
    fm = digits.train(digits.float_mlp(), xtr, ytr, epochs=epochs)
    f_acc = digits.accuracy(fm, xte, yte)
    log(f"float MLP trained in {time.time() - t0:.1f} s: {100 * f_acc:.1f}%")
    cal = xtr[:512]
    rows = []
    for bits in (8, 4, 2):
        row = {"bits": bits, "float": f_acc}
        for method in ptq.CALIBRATIONS:
            qm = qloom.quantize(fm, cal, bits, bits, calibration=method)
            row[f"ptq_{method}"] = ptq.accuracy(qm, xte, yte)
            row[f"fidelity_{method}"] = check_exact(qm, cal, xte)
        best = max(ptq.CALIBRATIONS, key=lambda m: row[f"ptq_{m}"])
        qm = qloom.quantize(fm, cal, bits, bits, calibration=best)
        t0 = time.time()
        ptq.finetune(qm, (xtr, ytr), epochs=5, lr=1e-3)
        row["ptq_ft"] = ptq.accuracy(qm, xte, yte)
        row["ft_from"] = best
        row["fidelity_ft"] = check_exact(qm, cal, xte)
        t0 = time.time()
        qat, _ = digits.build(bits, bits, epochs=epochs)
        row["qat"] = digits.accuracy(qat, xte, yte)
        row["qat_seconds"] = time.time() - t0
        rows.append(row)
        log(f"{bits}-bit done")
    return rows


def print_mlp(rows):
    print("Digits 64-64-64-10 MLP, test split (355 images); weights and activations at the same width.")
    print("PTQ: per-channel weights, 8-bit input; +FT: PTQ then 5 epochs QAT fine-tuning; QAT: trained from "
          "scratch (examples.digits, 5-bit input).")
    print(f"{'bits':>4} {'float':>7} {'PTQ minmax':>11} {'PTQ pct':>8} {'PTQ mse':>8} {'PTQ+FT':>8} {'QAT':>7}"
          f" {'fidelity':>9}")
    for r in rows:
        fid = min(v for k, v in r.items() if k.startswith("fidelity"))
        print(f"{r['bits']:>4} {100 * r['float']:>6.1f}% {100 * r['ptq_minmax']:>10.1f}% "
              f"{100 * r['ptq_percentile']:>7.1f}% {100 * r['ptq_mse']:>7.1f}% {100 * r['ptq_ft']:>7.1f}% "
              f"{100 * r['qat']:>6.1f}% {fid:>8.1f}%")


def cnn_allocation(epochs, log):
    xtr, ytr, xte, yte = digits.load()
    img, imt = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(len(img), generator=g)
    nval = len(img) // 5
    val, tr = perm[:nval], perm[nval:]
    torch.manual_seed(0)
    fm = digits.train(float_cnn(), img[tr], ytr[tr], epochs=epochs, batch=128)
    log(f"float CNN: val {100 * digits.accuracy(fm, img[val], ytr[val]):.1f}%, "
        f"test {100 * digits.accuracy(fm, imt, yte):.1f}%")
    t0 = time.time()
    alloc = qloom.allocate_bits(fm, img[tr][:512], (img[val], ytr[val]), budget=0.01, act_bits=8,
                                candidates=(8, 7, 6, 5, 4, 3, "ternary"), uniform=(8, 4, 3, "ternary"),
                                calibration="mse")
    secs = time.time() - t0
    test = {"float": digits.accuracy(fm, imt, yte), "allocated": ptq.accuracy(alloc.model, imt, yte)}
    for b in (8, 4):
        test[f"uniform{b}"] = ptq.accuracy(qloom.quantize(fm, img[tr][:512], b, 8, calibration="mse"), imt, yte)
    fid = check_exact(alloc.model, img[tr][:128], imt)
    sens = qloom.sensitivity(fm, img[tr][:512], (img[val], ytr[val]), bits=(4, 3, "ternary", 2),
                             calibration="mse")
    return alloc, secs, test, fid, sens


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60, help="float and QAT training epochs (default 60)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    def log(m):
        print(f"[bench] {m}", file=sys.stderr, flush=True)
    t0 = time.time()
    rows = mlp_table(args.epochs, log)
    alloc, secs, test, fid, sens = cnn_allocation(args.epochs, log)
    if args.json:
        print(json.dumps({"mlp": rows, "cnn": {"weight_bits": alloc.weight_bits, "total": alloc.total_weight_bits,
                                               "uniform": alloc.uniform, "val": alloc.value, "test": test}},
                         indent=2, default=str))
        return
    print_mlp(rows)
    print()
    print("Digits CNN (conv16-pool-conv32-pool-dense10), greedy weight-bit allocation, 1-point budget on a "
          "validation split (287 images), 8-bit activations:")
    print(sens)
    print()
    print(alloc)
    print(f"allocation took {secs:.1f} s ({alloc.evaluations} PTQ evaluations); IR fidelity {fid:.1f}%")
    u4 = alloc.uniform[4][1]
    print(f"test split: float {100 * test['float']:.1f}%, allocated {100 * test['allocated']:.1f}% "
          f"({alloc.total_weight_bits} weight bits = {100 * alloc.total_weight_bits / u4:.0f}% of uniform 4-bit), "
          f"uniform 4-bit {100 * test['uniform4']:.1f}%, uniform 8-bit {100 * test['uniform8']:.1f}%")
    ok8 = min(rows[0][f"ptq_{m}"] for m in ptq.CALIBRATIONS) >= rows[0]["float"] - 0.01
    print(f"checks: 8-bit PTQ within 1 point of float: {ok8}; "
          f"allocation meets the budget: {alloc.value >= alloc.target}; fewer weight bits than uniform 4-bit: "
          f"{alloc.total_weight_bits < u4}")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
