"""QONNX import of Brevitas models: op counts, import time, fidelity against qonnx's executor, hardware estimates.

Models: tests/brevitas_models.py's fixed family (trained a few epochs on the 8x8
digits) plus `--random N` seeded random configurations, each as the raw Brevitas
export and as qonnx's cleanup of it. Fidelity on the digits test split plus
random and boundary inputs (1,076 frames): the share of integer activation
codes equal to the executor's (every quantizer, hooked through the executor's
full context), the largest output difference relative to the frame's largest
output, and argmax agreement. Run: python bench/qonnx_import.py [--random 20]
"""
import argparse
import pathlib
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import brevitas_models as bm  # noqa: E402
import torch  # noqa: E402

from qloom.api import Accelerator  # noqa: E402
from qloom.compiler import reference  # noqa: E402
from qloom.compiler.frontends import qonnx_import  # noqa: E402


def fidelity(low, x):
    g, fe = low.graph, low.frontend
    src = fe.source_codes(x)
    got = reference.run(g, fe.quantize_input(x), return_all=True)
    bad = sum(int((src[k] != got[k]).sum()) for k in src)
    total = sum(v.size for v in src.values())
    out = fe.source_outputs(x, argmax=False)
    y = got[g.output]
    mine = np.asarray(fe.dequantize(y) if out.compared == "floats" else y, dtype=np.float64)
    a = out.values.reshape(len(x), -1).astype(np.float64)
    b = mine.reshape(len(x), -1)
    rel = (np.abs(a - b).max(1) / np.maximum(np.abs(a).max(1), 1e-30)).max()
    frames_bad = int(np.any(np.stack([(src[k] != got[k]).reshape(len(x), -1).any(1) for k in src]), axis=0).sum())
    local_bad, _ = bm.local_code_mismatches(g, src)
    ex = bm.explain_differences(low, x) if local_bad else {"differ": 0, "explained": 0}
    return {"codes": total, "codes_bad": bad, "frames_bad": frames_bad, "max_rel": float(rel),
            "bitwise": bool(np.array_equal(a, b)), "labels": float((a.argmax(1) == b.argmax(1)).mean()),
            "local_bad": local_bad, "unexplained": local_bad - ex["explained"]}


def op_counts(proto):
    c = {}
    for n in proto.graph.node:
        c[n.op_type] = c.get(n.op_type, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(c.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--random", type=int, default=0, help="also N random configurations (seeds 0..N-1)")
    ap.add_argument("--only", nargs="*", help="model names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    specs = [s for s in bm.FAMILY if not args.only or s.name in args.only]
    specs += [bm.random_spec(i) for i in range(args.random)]
    x = bm.test_inputs()
    print(f"fidelity over {len(x)} frames against qonnx's executor; rel = max |diff| / max |output| per frame\n")
    print("codes exact: every quantizer's codes, layers chained; local: each layer fed the executor's own input "
          "codes;\nunexpl.: local differences not within the executor's float32 summation error of a rounding "
          "boundary\n")
    print(f"{'model':<28}{'form':<6}{'scales':<7}{'import s':>9}{'codes exact':>13}{'frames':>7}{'local':>7}"
          f"{'unexpl.':>8}{'max rel':>9}{'bitwise':>8}{'labels':>8}{'II':>6}{'LUT':>7}{'BRAM':>5}{'DSP':>4}  ops")
    totals = {"po2": [0, 0, 0], "float": [0, 0, 0]}
    for spec in specs:
        proto = bm.export(bm.build(spec), x[:1])
        for form, p in (("raw", proto), ("clean", bm.cleaned(proto))):
            t = time.perf_counter()
            try:
                low = qonnx_import.lower(p)
            except Exception as e:  # the bench reports refusals, it does not stop
                print(f"{spec.name:<28}{form:<6}refused: {e}")
                break
            dt = time.perf_counter() - t
            f = fidelity(low, x)
            e = Accelerator(low, {}).estimate()
            kind = "po2" if low.frontend.power_of_two else "float"
            totals[kind][0] += f["codes_bad"]
            totals[kind][1] += f["codes"]
            totals[kind][2] += f["local_bad"]
            share = 1 - f["codes_bad"] / f["codes"]
            print(f"{spec.name:<28}{form:<6}{kind:<7}{dt:>9.2f}{100 * share:>12.4f}%{f['frames_bad']:>7}"
                  f"{f['local_bad']:>7}{f['unexplained']:>8}{f['max_rel']:>9.2g}{'yes' if f['bitwise'] else 'no':>8}"
                  f"{100 * f['labels']:>7.1f}%{e['ii']:>6}{e['luts']:>7}{e['brams']:>5}{e['dsps']:>4}  {op_counts(p)}")
    for kind, (bad, n, local) in totals.items():
        if n:
            print(f"\n{kind} scales: {n - bad} of {n} activation codes equal the executor's "
                  f"({100 * (1 - bad / n):.4f}%); layer by layer {n - local} ({100 * (1 - local / n):.4f}%)")


if __name__ == "__main__":
    main()
