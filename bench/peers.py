"""The same QONNX models through qloom and through hls4ml's QONNX front end (C simulation), side by side.

Each Brevitas model of tests/brevitas_models.py is exported once; qonnx's
executor on it is the oracle. qloom: the imported IR, dequantized. hls4ml
1.3.0 (`pip install 'qloom[peers]'`): qonnx cleanup, channels-last and
Gemm-to-MatMul (the preparation hls4ml's docs give), then
`convert_from_onnx_model` for the Vitis backend, io_parallel, C-simulated with
`compile()`/`predict()` (g++, no vendor tool), once with hls4ml's default
configuration (`default_precision='fixed<16,6>'`) and once with its widest
types (`fixed<64,32>`). FINN is not run: building and simulating its dataflow
designs needs Vitis HLS / Vivado, which are vendor tools not available here.

Columns: share of output elements equal to the executor's, largest difference
relative to the frame's largest output, argmax agreement, on the digits test
split plus random and boundary inputs. Run: python bench/peers.py [--frames N]
"""
import argparse
import pathlib
import sys
import tempfile
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import brevitas_models as bm  # noqa: E402
import torch  # noqa: E402

from qloom.compiler import reference  # noqa: E402
from qloom.compiler.frontends import qonnx_import  # noqa: E402

MODELS = ["mlp-w1a1-po2", "mlp-w2a2", "mlp-w4a4-po2-int32bias", "mlp-w8a8-perchannel", "mlp-mixed-po2",
          "cnn-valid-max", "cnn-padded-po2", "cnn-truncavg"]
CONFIGS = {"hls4ml default": "fixed<16,6>", "hls4ml widest": "fixed<64,32>"}
FINN_NOTE = ("FINN: not run. Its flow builds and simulates dataflow designs with Vitis HLS / Vivado "
             "(vendor tools, not on PyPI); qonnx's executor, which FINN also uses as its golden model, is the oracle "
             "here instead.")


def scores(want, got):
    a = np.asarray(want, np.float64).reshape(len(want), -1)
    b = np.asarray(got, np.float64).reshape(len(got), -1)
    if a.shape != b.shape:
        return None
    rel = (np.abs(a - b).max(1) / np.maximum(np.abs(a).max(1), 1e-30)).max()
    return {"equal": float((a == b).mean()), "max_rel": float(rel),
            "labels": float((a.argmax(1) == b.argmax(1)).mean())}


def qloom_outputs(proto, x):
    low = qonnx_import.lower(proto)
    fe = low.frontend
    y = reference.run(low.graph, fe.quantize_input(x))
    return fe.dequantize(y) if fe.source_outputs(x[:1], False).compared == "floats" else fe.output.quant.dequant(y)


def hls4ml_outputs(proto, x, precision, out_dir):
    """hls4ml's C simulation of the model; raises with hls4ml's own message when it cannot."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model
    m = cleanup_model(ModelWrapper(proto))
    m = cleanup_model(m.transform(ConvertToChannelsLastAndClean()).transform(GemmToMatMul()))
    cfg = hls4ml.utils.config.config_from_onnx_model(m, granularity="name", backend="Vitis",
                                                     default_precision=precision)
    hm = hls4ml.converters.convert_from_onnx_model(m, output_dir=str(out_dir), io_type="io_parallel",
                                                   backend="Vitis", hls_config=cfg)
    hm.compile()
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    xi = x.transpose(0, 2, 3, 1) if len(shape) == 4 and shape[-1] == x.shape[1] and shape[1] != x.shape[1] else x
    return np.asarray(hm.predict(np.ascontiguousarray(xi.reshape((len(x),) + tuple(shape[1:])))))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--frames", type=int, default=0, help="limit the number of frames (default: all 1,076)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x = bm.test_inputs()
    if args.frames:
        x = x[:args.frames]
    try:
        import hls4ml
        hls_why = None
        print(f"hls4ml {hls4ml.__version__}")
    except Exception as e:   # not installed: say so, still run qloom
        hls_why = f"hls4ml cannot run here: {type(e).__name__}: {e} (pip install 'qloom[peers]')"
        print(hls_why)
    print(f"{len(x)} frames; oracle: qonnx.core.onnx_exec.execute_onnx\n")
    print(f"{'model':<24}{'tool':<16}{'outputs equal':>14}{'max rel':>10}{'labels':>8}{'time s':>8}  note")
    with tempfile.TemporaryDirectory(prefix="qloom-peers-") as tmp:
        for name in args.models:
            spec = next(s for s in bm.FAMILY if s.name == name)
            proto = bm.export(bm.build(spec), x[:1])
            fe = qonnx_import.lower(proto).frontend
            want = fe.executor.run(x, full=True)[fe.output_name]
            runs = [("qloom", lambda: qloom_outputs(proto, x))]
            for label, prec in CONFIGS.items():
                runs.append((label, lambda prec=prec, label=label: hls4ml_outputs(
                    proto, x, prec, pathlib.Path(tmp) / f"{name}-{label.split()[-1]}")))
            for tool, fn in runs:
                if tool != "qloom" and hls_why:
                    print(f"{name:<24}{tool:<16}{'-':>14}{'-':>10}{'-':>8}{'-':>8}  {hls_why}")
                    continue
                t = time.perf_counter()
                try:
                    got = fn()
                except Exception as e:   # a peer that cannot convert this model: report its reason
                    msg = str(e).strip().splitlines()[-1] if str(e).strip() else ""
                    print(f"{name:<24}{tool:<16}{'-':>14}{'-':>10}{'-':>8}{'-':>8}  failed: {type(e).__name__}: "
                          f"{msg[:110]}")
                    continue
                dt = time.perf_counter() - t
                s = scores(want, got)
                if s is None:
                    print(f"{name:<24}{tool:<16}  output shape {np.shape(got)} != {np.shape(want)}")
                    continue
                print(f"{name:<24}{tool:<16}{100 * s['equal']:>13.2f}%{s['max_rel']:>10.2g}"
                      f"{100 * s['labels']:>7.1f}%{dt:>8.1f}  {'power-of-two scales' if fe.power_of_two else ''}")
    print("\n" + FINN_NOTE)


if __name__ == "__main__":
    main()
