"""Int8 importers (PyTorch eager/FX/PT2E, ONNX Runtime QDQ/QOperator) on trained digits models.

Per model and format: accuracy in the runtime, accuracy of the qloom reference, share of output
codes equal to the runtime's (and of every layer's codes), max LSB difference, the requantization
chosen per layer (R = Requantize, T = thresholds), and hardware estimates. Inputs: the digits test
split plus boundary inputs (>= 1,000).

    python bench/int8_import.py [--quick] [--ort-disabled]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
import int8_models as M  # noqa: E402

from qloom.compiler import reference  # noqa: E402
from qloom.compiler.frontends import int8_common, onnx_int8, torch_int8  # noqa: E402

MODELS = {
    "digits-mlp": {"kind": "mlp", "hidden": [64, 32], "act": "relu", "bn": True, "seed": 0},
    "digits-cnn": {"kind": "cnn", "chans": [8, 16], "stride": 1, "padding": 1, "groups": 1, "pool": "max",
                   "head": "gap", "act": "relu", "bn": True, "seed": 1},
    "digits-cnn-avg": {"kind": "cnn", "chans": [8, 16], "stride": 1, "padding": 1, "groups": 2, "pool": "avg",
                       "head": "flatten", "act": "relu6", "bn": False, "seed": 2},
}


def formats(quick: bool):
    fs = [("eager", "fbgemm", True), ("eager", "qnnpack", False), ("fx", "fbgemm", False), ("fx", "qnnpack", True),
          ("pt2e", None, True), ("qdq", "uint8", True), ("qdq", "int8", True), ("qoperator", "uint8", False),
          ("qoperator", "int8", True)]
    return fs[::3] if quick else fs


def build(fmt, a, pc, f, tmp):
    if fmt in ("eager", "fx"):
        return (M.quantize_eager if fmt == "eager" else M.quantize_fx)(f, a, pc)
    if fmt == "pt2e":
        return M.quantize_pt2e(f, pc)
    fp = M.export_onnx(f, tmp / "f.onnx")
    return M.quantize_onnx(fp, tmp / f"{fmt}_{a}_{pc}.onnx", fmt, a, per_channel=pc)


def measure(name, fmt, a, pc, f, x, n_test, tmp, opt):
    src = build(fmt, a, pc, f, tmp)
    t0 = time.time()
    with M._engine(a if fmt in ("eager", "fx") else "fbgemm"):
        low = (torch_int8.lower(src, torch.from_numpy(x[:64])) if fmt in ("eager", "fx", "pt2e")
               else onnx_int8.lower(src, x[:64], optimization=opt))
        t_lower = time.time() - t0
        fe = low.frontend
        got = reference.run(low.graph, fe.quantize_input(x), return_all=True)
        layers = fe.layer_codes(x)
        final = fe.source_outputs(x, argmax=False).values
        runtime_out = fe.dequantize(final)
    out = got[low.graph.output]
    st = int8_common.code_stats(final, out)
    worst = min((int8_common.code_stats(v, got[k])["exact_share"] for k, v in layers.items()), default=1.0)
    d = fe.describe()
    methods = "".join("R" if r["method"] == "requantize" else "T" for r in d["layers"])
    from qloom.api import Accelerator
    est = Accelerator(low, {}).estimate() if fmt != "skip" else {}
    label = f"{fmt}/{a}/{'pc' if pc else 'pt'}" if fmt != "pt2e" else "pt2e/xnnpack/" + ("pc" if pc else "pt")
    return {"model": name, "format": label, "acc_runtime": M.accuracy(runtime_out[:n_test]),
            "acc_qloom": M.accuracy(fe.dequantize(out)[:n_test]), "exact": st["exact_share"], "layers_min": worst,
            "max_lsb": st["max_lsb"], "hist": st["histogram"], "methods": methods, "lower_s": t_lower,
            "ii": est.get("ii"), "luts": est.get("luts"), "dsps": est.get("dsps"), "brams": est.get("brams")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a third of the formats")
    ap.add_argument("--ort-disabled", action="store_true", help="ONNX oracle and probes with optimizations off")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    x = M.test_inputs(1000)
    n_test = len(M.digits()[3])
    opt = "disabled" if args.ort_disabled else "all"
    print(f"{len(x)} inputs ({n_test} digits test images + boundary inputs); ONNX Runtime optimization: {opt}")
    hdr = (f"{'model':<15}{'format':<22}{'acc rt':>7}{'acc IR':>7}{'exact':>9}{'layers':>9}{'LSB':>4}  "
           f"{'requant':<8}{'II':>7}{'LUT':>7}{'DSP':>4}{'BRAM':>5}{'lower s':>8}")
    print(hdr)
    print("-" * len(hdr))
    with tempfile.TemporaryDirectory() as d:
        for name, cfg in MODELS.items():
            f = M.train(M.build_float(cfg), epochs=15)
            for fmt, a, pc in formats(args.quick):
                try:
                    r = measure(name, fmt, a, pc, f, x, n_test, pathlib.Path(d), opt)
                except Exception as e:  # a refusal is a result too
                    print(f"{name:<15}{fmt + '/' + str(a):<22} refused: {type(e).__name__}: {str(e)[:90]}")
                    continue
                print(f"{r['model']:<15}{r['format']:<22}{r['acc_runtime']:>7.3f}{r['acc_qloom']:>7.3f}"
                      f"{100 * r['exact']:>8.3f}%{100 * r['layers_min']:>8.3f}%{r['max_lsb']:>4}  {r['methods']:<8}"
                      f"{r['ii'] or 0:>7}{r['luts'] or 0:>7}{r['dsps'] or 0:>4}{r['brams'] or 0:>5}"
                      f"{r['lower_s']:>8.2f}" + (f"  {r['hist']}" if r["hist"] else ""))
    print("exact: share of output codes equal to the runtime's; layers: the worst layer's share; LSB: max |diff| "
          "of output codes; requant: R = fixed-point Requantize (exact), T = thresholds, per layer")


if __name__ == "__main__":
    main()
