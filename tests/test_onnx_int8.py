"""ONNX Runtime int8 import (QDQ and QOperator from quantize_static) against ORT itself: every layer's
codes (read by adding the code tensors as outputs of a copy of the model), the final output, the
unfused float path (optimizations off), random families, and refusals."""
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import qloom
from qloom.compiler import reference
from qloom.compiler.errors import QuantError
from qloom.compiler.frontends import int8_common, onnx_int8
from qloom.compiler.frontends.onnx_int8_graph import ort_session

import int8_models as M

warnings.filterwarnings("ignore")
MLP = {"kind": "mlp", "hidden": [32], "act": "relu", "bn": False, "seed": 0}
CNN = {"kind": "cnn", "chans": [8, 12], "stride": 1, "padding": 1, "groups": 2, "pool": "max", "head": "gap",
       "act": "relu6", "bn": True, "seed": 3}


@pytest.fixture(scope="session")
def float_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx_float")
    torch.set_num_threads(1)
    out = {}
    for kind, cfg, epochs in (("mlp", MLP, 10), ("cnn", CNN, 8)):
        out[kind] = M.export_onnx(M.train(M.build_float(cfg), epochs=epochs), d / f"{kind}.onnx")
    return out


@pytest.fixture(scope="session")
def quantized(float_paths, tmp_path_factory):
    """quantize_static variants, made on demand and cached: (kind, fmt, activation, per_channel) -> path."""
    d = tmp_path_factory.mktemp("onnx_int8")
    cache = {}

    def get(kind, fmt, act, pc):
        key = (kind, fmt, act, pc)
        if key not in cache:
            cache[key] = M.quantize_onnx(float_paths[kind], d / f"{kind}_{fmt}_{act}_{pc}.onnx", fmt, act,
                                         per_channel=pc)
        return cache[key]
    return get


@pytest.fixture(scope="session")
def inputs():
    return M.test_inputs(1000)


def layer_report(low, x):
    fe = low.frontend
    got = reference.run(low.graph, fe.quantize_input(x), return_all=True)
    stats = {k: int8_common.code_stats(v, got[k]) for k, v in fe.layer_codes(x).items()}
    stats["<final>"] = int8_common.code_stats(fe.source_outputs(x, argmax=False).values, got[low.graph.output])
    return stats


def assert_exact(stats):
    bad = {k: (s["exact_share"], s["max_lsb"], s["histogram"]) for k, s in stats.items() if s["exact_share"] < 1}
    assert not bad, f"codes differ from ONNX Runtime: {bad}"


@pytest.mark.parametrize("kind,fmt,per_channel", [("mlp", "qdq", False), ("mlp", "qoperator", True),
                                                  ("cnn", "qdq", True), ("cnn", "qoperator", False)])
def test_uint8_exact_every_layer(quantized, inputs, kind, fmt, per_channel):
    path = quantized(kind, fmt, "uint8", per_channel)
    low = onnx_int8.lower(path, inputs[:32])
    stats = layer_report(low, inputs)
    assert stats["<final>"]["elements"] == 10 * len(inputs) and len(stats) >= 3
    assert_exact(stats)
    d = low.frontend.describe()
    assert d["frontend"] == {"qdq": "onnx-qdq", "qoperator": "onnx-qop"}[fmt]
    assert d["ort_optimization"] == "all" and d["layers"]


def test_int8_activations(quantized, inputs):
    """int8 activations (zero point -128): the MLPs are exact; measured on convolutions, ORT's fused s8 conv
    kernel is not a pure function of the accumulator on rare ties (docs), so: <= 1 LSB, >= 99.99%."""
    for fmt in ("qdq", "qoperator"):
        assert_exact(layer_report(onnx_int8.lower(quantized("mlp", fmt, "int8", True), inputs[:32]), inputs))
        stats = layer_report(onnx_int8.lower(quantized("cnn", fmt, "int8", True), inputs[:32]), inputs)
        for k, s in stats.items():
            assert s["exact_share"] >= 0.9999 and s["max_lsb"] <= 1, (fmt, k, s)


def test_api_from_onnx_without_example_input(quantized, inputs):
    """from_onnx picks the importer from the ops, checks on its own sample inputs (extreme codes included),
    and the IR's dequantized output and argmax equal ORT's."""
    path = quantized("cnn", "qoperator", "uint8", True)
    acc = qloom.from_onnx(path)
    assert acc.check_fidelity.exact and acc.check_fidelity.frames == 256
    codes = acc.quantize_input(acc.frontend.sample_inputs(64))
    assert codes.min() == 0 and codes.max() == 255
    sess = ort_session(onnx.load(path))
    y = sess.run(None, {"x": inputs})[0]
    assert np.array_equal(acc.predict(inputs), y)
    labels = qloom.from_onnx(path, inputs[:64], argmax=True)
    assert labels.fidelity(inputs).exact
    n = len(M.digits()[3])
    assert M.accuracy(y[:n]) == M.accuracy(labels.reference(acc.quantize_input(inputs[:n]))) > 0.8


def test_optimizations_off_is_another_runtime(quantized, inputs):
    """Measured: with graph optimizations off ORT runs DequantizeLinear -> float op -> QuantizeLinear;
    its codes differ from the fused default on some elements, and the importer (probing that path)
    follows whichever it is given."""
    path = quantized("cnn", "qdq", "uint8", False)
    on, off = (ort_session(onnx.load(path), o).run(None, {"x": inputs})[0] for o in ("all", "disabled"))
    low_off = onnx_int8.lower(path, inputs[:32], optimization="disabled")
    stats = layer_report(low_off, inputs)
    assert low_off.frontend.describe()["ort_optimization"] == "disabled"
    assert stats["<final>"]["exact_share"] >= 0.99 and stats["<final>"]["max_lsb"] <= 2
    assert not np.array_equal(on, off) or stats["<final>"]["exact_share"] == 1


def family(seeds):
    cases = []
    for s in seeds:
        cfg = M.random_config(s)
        cases.append((cfg, ("qdq", "qoperator")[s % 2], bool((s // 2) % 2)))
    return cases


def assert_exact_or_measured(low, stats):
    """Exact, except where the importer itself measured that ORT's kernel is not a function of the
    accumulator (float average pools in NHWC: see docs); there <= 2 LSB and >= 98% of codes."""
    varies = [r for r in low.frontend.describe()["layers"] if r.get("not_a_function_of_the_sum")]
    if not varies:
        return assert_exact(stats)
    for k, s in stats.items():
        assert s["exact_share"] >= 0.98 and s["max_lsb"] <= 2, (k, s)


def run_family_case(cfg, fmt, per_channel, tmp_path, x):
    f = M.export_onnx(M.train(M.build_float(cfg), epochs=2), tmp_path / "f.onnx")
    q = M.quantize_onnx(f, tmp_path / "q.onnx", fmt, "uint8", per_channel=per_channel)
    low = onnx_int8.lower(q, x[:32])
    assert_exact_or_measured(low, layer_report(low, x))


@pytest.mark.parametrize("cfg,fmt,per_channel", family(range(300, 303)))
def test_random_family(cfg, fmt, per_channel, tmp_path):
    run_family_case(cfg, fmt, per_channel, tmp_path, M.test_inputs(1000, seed=cfg["seed"]))


@pytest.mark.slow
@pytest.mark.parametrize("cfg,fmt,per_channel", family(range(400, 440)))
def test_random_family_sweep(cfg, fmt, per_channel, tmp_path):
    run_family_case(cfg, fmt, per_channel, tmp_path, M.test_inputs(1000, seed=cfg["seed"]))


# ---------------------------------------------------------------- refusals

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)) + x)


def test_refuses_residual_add(tmp_path):
    f = M.export_onnx(Residual().eval(), tmp_path / "res.onnx")
    for fmt in ("qdq", "qoperator"):
        q = M.quantize_onnx(f, tmp_path / f"res_{fmt}.onnx", fmt)
        with pytest.raises(QuantError, match="residual|branch"):
            onnx_int8.lower(q, M.test_inputs(8))


def test_refuses_dynamic_quantization(float_paths, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = tmp_path / "dyn.onnx"
    quantize_dynamic(float_paths["mlp"], str(out), weight_type=QuantType.QUInt8)
    with pytest.raises(QuantError, match="dynamic"):
        onnx_int8.lower(str(out), M.test_inputs(8))


def test_refuses_float_layer_in_the_middle(float_paths, tmp_path):
    model = onnx.load(float_paths["mlp"])
    first_gemm = next(n.name for n in model.graph.node if n.op_type == "Gemm")
    q = M.quantize_onnx(float_paths["mlp"], tmp_path / "mid.onnx", "qdq", nodes_to_exclude=[first_gemm])
    with pytest.raises(QuantError, match="float layer"):
        onnx_int8.lower(q, M.test_inputs(8))


def test_refuses_unsupported_node_by_name(quantized, tmp_path):
    """An op qloom does not know, on the quantized path, is named in the error."""
    model = onnx.load(quantized("mlp", "qoperator", "uint8", False))
    g = model.graph
    i = next(k for k, n in enumerate(g.node) if n.op_type == "QGemm")
    out = g.node[i].output[0]
    g.node[i].output[0] = out + "_pre"
    g.node.insert(i + 1, onnx.helper.make_node("Transpose", [out + "_pre"], [out], name="odd_transpose", perm=[0, 1]))
    path = tmp_path / "transpose.onnx"
    onnx.save(model, str(path))
    with pytest.raises(QuantError, match="odd_transpose.*Transpose"):
        onnx_int8.lower(str(path), M.test_inputs(8))


def test_refuses_non_quantized_onnx(float_paths):
    with pytest.raises(QuantError, match="no quantization ops"):
        qloom.from_onnx(float_paths["mlp"])


# ---------------------------------------------------------------- hardware

def verilator_bit_exact(acc, x, tmp_path):
    """Build dir + cocotb/Verilator with random stalls: every output equals the reference."""
    from qloom.sim import available, simulate
    ok, why = available("verilator")
    if not ok:
        pytest.skip(f"Verilator not available: {why}")
    acc.save(tmp_path / "build", x_float=x)
    return simulate(tmp_path / "build", stall_prob=0.3, cache_dir=tmp_path / "cache")


def test_verilator_qoperator_mlp(quantized, inputs, tmp_path):
    acc = qloom.from_onnx(quantized("mlp", "qoperator", "uint8", True), inputs[:64], target_ii=256)
    r = verilator_bit_exact(acc, inputs[:24], tmp_path)
    assert r["bit_exact"] and r["frames"] == 24


@pytest.mark.slow
def test_verilator_qdq_cnn(quantized, inputs, tmp_path):
    acc = qloom.from_onnx(quantized("cnn", "qdq", "uint8", True), inputs[:64], target_ii=2000)
    r = verilator_bit_exact(acc, inputs[:24], tmp_path)
    assert r["bit_exact"] and r["frames"] == 24
