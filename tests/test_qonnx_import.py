"""QONNX / Brevitas import: every activation code and output against qonnx's executor, on >= 1,000 inputs.

Oracles: qonnx.core.onnx_exec.execute_onnx on the model as given (through
FrameExecutor, checked here to equal it bit for bit), and the Brevitas module
in eval mode. Models: tests/brevitas_models.py (a fixed family plus seeded
random configurations; `-m slow` sweeps many more seeds). Trained models are
built once per session.
"""
import warnings

import json

import numpy as np
import pytest

pytest.importorskip("brevitas")
pytest.importorskip("qonnx")
warnings.filterwarnings("ignore", message=".*fast_hadamard.*")

import onnx  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import brevitas_models as bm  # noqa: E402
import qloom  # noqa: E402
from qloom.compiler import reference  # noqa: E402
from qloom.compiler.errors import QuantError  # noqa: E402
from qloom.compiler.frontends import qonnx_import, qonnx_ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
X = bm.test_inputs()
_MODELS = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def model(spec):
    """(module, raw export, cleaned export), built once per session."""
    if spec.name not in _MODELS:
        m = bm.build(spec)
        raw = bm.export(m, X[:1])
        _MODELS[spec.name] = (m, raw, bm.cleaned(raw))
    return _MODELS[spec.name]


def spec_named(name):
    return next(s for s in bm.FAMILY if s.name == name)


def compare(proto, x=X):
    """Import `proto`; compare every quantizer's codes and the outputs with the executor on x."""
    low = qonnx_import.lower(proto)
    g, fe = low.graph, low.frontend
    src = fe.source_codes(x)
    got = reference.run(g, fe.quantize_input(x), return_all=True)
    assert set(src) <= set(got) and len(src) >= 2
    code_bad = sum(int((src[k] != got[k]).sum()) for k in src)
    codes = sum(v.size for v in src.values())
    out = fe.source_outputs(x, argmax=False)
    y = got[g.output]
    mine = fe.dequantize(y) if out.compared == "floats" else y
    local_bad, _ = bm.local_code_mismatches(g, src)
    return {"fe": fe, "graph": g, "code_bad": code_bad, "codes": codes, "src": out.values, "mine": np.asarray(mine),
            "compared": out.compared, "local_bad": local_bad, "low": low, "x": x}


def row_rel(a, b):
    """max |a - b| per frame, relative to that frame's largest |a|."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (np.abs(a - b).max(1) / np.maximum(np.abs(a).max(1), 1e-30)).max()


def labels_agree_except_ties(r):
    """argmax labels equal, except where the IR's output ties between classes (the executor's float noise
    then picks one of the tied classes)."""
    a = r["src"].reshape(len(r["src"]), -1)
    b = r["mine"].reshape(len(r["mine"]), -1).astype(np.float64)
    differ = a.argmax(1) != b.argmax(1)
    tie = (b == b.max(1, keepdims=True)).sum(1) > 1
    return not (differ & ~tie).any(), int(differ.sum())


def check_exact(r):
    assert r["code_bad"] == 0 and r["local_bad"] == 0, f"{r['code_bad']} of {r['codes']} codes differ"
    assert np.array_equal(r["src"], r["mine"]), "outputs are not bitwise equal to the executor's"
    ok, n = labels_agree_except_ties(r)
    assert ok and n == 0


def check_float(r):
    """Float scales: every code that differs, with each layer fed the executor's own input codes, lies within
    the executor's float32 summation error of a rounding boundary (bm.explain_differences); where no code
    differs, outputs agree to float32 rounding."""
    if r["local_bad"]:
        ex = bm.explain_differences(r["low"], r["x"])
        assert ex["differ"] == r["local_bad"], "codes differ where no float32 rounding is involved"
        assert ex["explained"] == ex["differ"], f"{ex['differ'] - ex['explained']} differences are unexplained"
    if r["code_bad"] == 0:
        assert row_rel(r["src"], r["mine"]) <= 1e-5
        assert labels_agree_except_ties(r)[0]


# ---------------------------------------------------------------------------- the fixed family

@pytest.mark.parametrize("form", ["raw", "cleaned"])
@pytest.mark.parametrize("spec", bm.FAMILY, ids=lambda s: s.name)
def test_family_codes_and_outputs_match_executor(spec, form):
    m, raw, clean = model(spec)
    r = compare(raw if form == "raw" else clean)
    assert len(X) >= 1000
    if r["fe"].exact:
        check_exact(r)
    else:   # float scales: measured 0 code differences on this family; outputs to float32 rounding
        check_float(r)
        assert r["code_bad"] == 0


@pytest.mark.parametrize("spec", [s for s in bm.FAMILY if s.name in ("mlp-w4a4-po2-int32bias", "cnn-truncavg",
                                                                     "mlp-w2a2", "cnn-gap")], ids=lambda s: s.name)
def test_brevitas_module_agrees(spec):
    """The second oracle: the Brevitas module in eval mode gives the same classes (and, with power-of-two
    scales, the same floats) as the imported model."""
    m, raw, _ = model(spec)
    r = compare(raw)
    with torch.no_grad():
        out = m(torch.as_tensor(X))
    out = getattr(out, "value", out).numpy()
    ir_out = r["mine"].reshape(len(X), -1)
    assert (out.argmax(1) == ir_out.argmax(1)).mean() >= 0.99
    if r["fe"].exact:
        assert np.array_equal(out, ir_out)
    else:
        assert row_rel(out, ir_out) <= 1e-5


def test_family_covers_the_ops():
    """The family's exports hold every op the importer claims (so the tests above exercise them)."""
    seen, modes = set(), set()
    for spec in bm.FAMILY:
        _, raw, clean = model(spec)
        for p in (raw, clean):
            for n in p.graph.node:
                seen.add(n.op_type)
                for a in n.attribute:
                    if a.name == "rounding_mode":
                        modes.add(a.s.decode().upper())
                if n.op_type == "Conv":
                    pads = [x for a in n.attribute if a.name == "pads" for x in a.ints]
                    seen.add("Conv-padded" if any(pads) else "Conv-valid")
    for op in ("Quant", "BipolarQuant", "Trunc", "MatMul", "Gemm", "Conv-padded", "Conv-valid", "BatchNormalization",
               "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Transpose"):
        assert op in seen, op
    assert {"ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO"} <= modes


def test_frame_executor_equals_execute_onnx():
    """FrameExecutor (sessions kept, custom ops batched) is qonnx's execute_onnx, every tensor, bit for bit."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    for name in ("mlp-w8a8-perchannel", "cnn-valid-max"):
        _, raw, clean = model(spec_named(name))
        for proto in (raw, clean):
            w = ModelWrapper(proto).transform(InferShapes())
            ctx = qonnx_ops.FrameExecutor(w).run(X[:12], full=True)
            inp = w.graph.input[0].name
            for i in range(12):
                ref = execute_onnx(w, {inp: X[i:i + 1]}, return_full_exec_context=True)
                for n in w.graph.node:
                    for o in n.output:
                        got = ctx[o] if ctx[o].shape == ref[o].shape else ctx[o][i:i + 1]   # constants
                        assert np.array_equal(ref[o], got), (name, o, i)


# ---------------------------------------------------------------------------- random configurations

def random_check(seed):
    spec = bm.random_spec(seed)
    m = bm.build(spec)
    raw = bm.export(m, X[:1])
    for proto in (raw, bm.cleaned(raw)):
        r = compare(proto)
        if r["fe"].exact:
            check_exact(r)
        else:   # near-ties the executor's float32 sums decide: see docs/importers.md for the measured shares
            check_float(r)


@pytest.mark.parametrize("seed", [0, 4, 7, 12])
def test_random_family(seed):
    random_check(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(13, 73))
def test_random_family_sweep(seed):
    random_check(seed)


# ---------------------------------------------------------------------------- API

def test_from_qonnx_path_compile_and_argmax(tmp_path):
    _, raw, clean = model(spec_named("cnn-truncavg"))
    p = tmp_path / "m.onnx"
    onnx.save(clean, p)
    acc = qloom.compile(str(p))                       # .onnx path, no example input: sample_inputs are checked
    assert acc.check_fidelity.exact and acc.frontend.kind == "qonnx"
    acc2 = qloom.from_qonnx(raw, X[:300], argmax=True)
    labels = acc2.predict(X[:300])
    ctx = acc2.frontend.executor.run(X[:300])
    want = next(iter(ctx.values())).argmax(1)
    assert np.array_equal(labels.reshape(-1), want)
    from qonnx.core.modelwrapper import ModelWrapper
    acc3 = qloom.from_qonnx(ModelWrapper(clean), X[:50])
    assert acc3.graph.hash() == acc.graph.hash()


def test_from_brevitas(tmp_path):
    m, _, _ = model(spec_named("mlp-w4a4-po2-int32bias"))
    acc = qloom.from_brevitas(m, X[:200], export_path=tmp_path / "b.onnx")
    assert (tmp_path / "b.onnx").is_file()
    with torch.no_grad():
        want = m(torch.as_tensor(X[:200])).numpy()
    assert np.array_equal(acc.predict(X[:200]), want)


def test_argmax_refused_with_bias():
    _, raw, _ = model(spec_named("mlp-w4a4-po2-int32bias"))
    with pytest.raises(QuantError, match="argmax.*bias"):
        qloom.from_qonnx(raw, X[:10], argmax=True)


def test_sample_inputs_cover_codes_and_ties():
    _, raw, _ = model(spec_named("mlp-w2a2"))
    fe = qonnx_import.lower(raw).frontend
    x = fe.sample_inputs(256, seed=1)
    codes = fe.quantize_input(x)
    t = fe.input_type.dtype
    assert codes.min() == t.min and codes.max() == t.max
    s = float(fe.input_quant.scale)
    frac = np.abs(x.reshape(256, -1) / s - np.round(x.reshape(256, -1) / s))
    assert (np.isclose(frac, 0.5)).any()           # half-step ties are exercised


# ---------------------------------------------------------------------------- hardware

@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QLOOM_SIM_CACHE", str(tmp_path_factory.mktemp("sim_cache")))
        yield


@pytest.mark.parametrize("name", ["mlp-mixed-po2", "cnn-valid-max"])
def test_verilator_bit_exact(name, sim_cache, tmp_path):
    """The imported MLP and CNN on Verilator with random stalls: every output equals the reference."""
    from qloom.sim import available, simulate
    ok, why = available("verilator")
    if not ok:
        pytest.skip(f"Verilator not available: {why}")
    _, raw, _ = model(spec_named(name))
    acc = qloom.from_qonnx(raw, X[:64], check=False)
    acc.save(tmp_path, x_float=X[:24])           # what Accelerator.simulate does, without its temp dir
    res = simulate(tmp_path, simulator="verilator", stall_prob=0.3)
    assert res["bit_exact"] and res["frames"] == 24
    want = acc.reference(acc.quantize_input(X[:24]))
    assert np.array_equal(np.asarray(res["outputs"]).reshape(want.shape), want)


# ---------------------------------------------------------------------------- bad inputs

def tiny(nodes, inits, in_shape=(1, 4), out_shape=None, out="y"):
    """A hand-built QONNX model around nodes: input 'x', output `out`."""
    g = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                          [onnx.numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("qonnx.custom_op.general", 2)])
    return m


def quant(x, y, s="s", z="z", b="b", **kw):
    return helper.make_node("Quant", [x, s, z, b], [y], domain="qonnx.custom_op.general", signed=1, narrow=0,
                            rounding_mode="ROUND", **kw)


BASE = {"s": 0.25, "z": 0.0, "b": 4.0, "W": np.ones((4, 3)), "ws": 1.0}


def import_error(m):
    with pytest.raises(QuantError) as e:
        qonnx_import.lower(m)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_unsupported_op_named():
    m = tiny([quant("x", "q"), quant("W", "wq", s="ws"), helper.make_node("MatMul", ["q", "wq"], ["a"], name="mm"),
              helper.make_node("Softmax", ["a"], ["y"], name="soft")], BASE)
    msg = import_error(m)
    assert "'soft' (Softmax)" in msg and "supports" in msg and "MultiThreshold" in msg


def test_non_constant_weights():
    m = tiny([quant("x", "q"), helper.make_node("Conv", ["q", "q"], ["y"], name="c", kernel_shape=[3, 3])], BASE,
             in_shape=(1, 1, 3, 3))
    assert "not a constant" in import_error(m) and "'c' (Conv)" in import_error(m)


def test_per_channel_zero_point():
    inits = dict(BASE, zc=np.zeros(4))
    m = tiny([quant("x", "y", z="zc")], inits)
    msg = import_error(m)
    assert "per-channel zero point" in msg


def test_dilation_refused():
    inits = dict(BASE, Wc=np.ones((2, 1, 3, 3)))
    m = tiny([quant("x", "q"), quant("Wc", "wq", s="ws"),
              helper.make_node("Conv", ["q", "wq"], ["a"], name="dil", kernel_shape=[3, 3], dilations=[2, 2]),
              quant("a", "y")], inits, in_shape=(1, 1, 8, 8))
    assert "dilations" in import_error(m)


@pytest.mark.parametrize("bits", [3.5, np.array([2.0, 3.0])])
def test_non_integer_bit_width(bits):
    m = tiny([quant("x", "q"), quant("W", "wq", s="ws"), helper.make_node("MatMul", ["q", "wq"], ["a"]),
              quant("a", "y", b="bb")], dict(BASE, bb=bits))
    msg = import_error(m)
    assert "bit width" in msg


def test_bit_width_from_the_input_refused():
    m = tiny([quant("x", "q"), quant("x", "y", b="q")], BASE)
    msg = import_error(m)
    assert "must be a constant" in msg


def test_residual_add_refused():
    m = tiny([quant("x", "q"), quant("W", "wq", s="ws"), helper.make_node("MatMul", ["q", "wq"], ["a"]),
              quant("a", "q2"), quant("W2", "w2q", s="ws"), helper.make_node("MatMul", ["q", "w2q"], ["b2"]),
              quant("b2", "q3"), helper.make_node("Add", ["q2", "q3"], ["y"], name="res")],
             dict(BASE, W2=np.ones((4, 3))))
    msg = import_error(m)
    assert "'res' (Add)" in msg and "residual" in msg


def test_float_weights_and_unquantized_input():
    m = tiny([quant("x", "q"), helper.make_node("MatMul", ["q", "Wf"], ["y"], name="mm")],
             dict(BASE, Wf=np.full((4, 3), 0.3)))
    assert "float constant" in import_error(m)
    m = tiny([helper.make_node("MatMul", ["x", "W"], ["a"], name="mm"), quant("a", "y")], BASE)
    assert "input quantizer" in import_error(m)


def test_bipolar_padding_refused():
    inits = {"s1": 1.0, "Wc": np.ones((2, 1, 3, 3)), "ws": 1.0, "s": 0.5, "z": 0.0, "b": 4.0}
    m = tiny([helper.make_node("BipolarQuant", ["x", "s1"], ["q"], domain="qonnx.custom_op.general"),
              quant("Wc", "wq", s="ws"),
              helper.make_node("Conv", ["q", "wq"], ["a"], name="cv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              quant("a", "y")], inits, in_shape=(1, 1, 6, 6))
    assert "bipolar" in import_error(m)


def test_not_onnx(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"not a model")
    with pytest.raises(QuantError, match="could not be read"):
        qloom.from_qonnx(str(p))


# ---------------------------------------------------------------------------- hand-built graphs

def hand(nodes, inits, in_shape, out_shape):
    m = tiny(nodes, inits, in_shape=in_shape, out_shape=out_shape)
    low = qonnx_import.lower(m)
    fe = low.frontend
    x = np.concatenate([fe.sample_inputs(400, seed=3), fe.sample_inputs(400, seed=4)])
    r = compare(m, x)
    check_exact(r)
    return low


def test_decreasing_chain_and_software_prefix():
    """c - x (decreasing: weights negated), a per-channel negative Mul, Div by a constant, and float ops
    before the input quantizer; power-of-two scales, so every code is exact."""
    rng = np.random.default_rng(0)
    inits = {"s": 0.25, "z": 0.0, "b": 4.0, "W": rng.integers(-7, 8, (6, 5)).astype(np.float32), "ws": 0.5,
             "k": 2.0, "c": 3.0, "neg": np.array([1, -1, 2, -0.5, 1], np.float32), "d": 4.0, "s2": 0.125,
             "b2": 3.0, "half": 0.5}
    low = hand([helper.make_node("Mul", ["x", "half"], ["xh"]), quant("xh", "q"), quant("W", "wq", s="ws"),
                helper.make_node("MatMul", ["q", "wq"], ["a"]), helper.make_node("Sub", ["c", "a"], ["a2"]),
                helper.make_node("Mul", ["a2", "neg"], ["a3"]), helper.make_node("Div", ["a3", "d"], ["a4"]),
                quant("a4", "y", s="s2", b="b2")], inits, (1, 6), (1, 5))
    w = low.graph.nodes[0].weight                     # decreasing channels (c - x, times a positive factor)
    sign = np.where(inits["neg"] > 0, -1, 1)           # run on negated weight rows
    codes = np.clip(np.round(inits["W"] / inits["ws"]), -8, 7).T.astype(int)
    assert np.array_equal(w, codes * sign[:, None])


def test_maxpool_on_accumulator_and_global_pool_flatten():
    """Conv -> MaxPool -> Quant (max of accumulators), then GlobalAveragePool -> Flatten -> Quant."""
    rng = np.random.default_rng(1)
    inits = {"s": 0.25, "z": 0.0, "b": 4.0, "Wc": rng.integers(-3, 4, (4, 2, 3, 3)).astype(np.float32),
             "ws": 0.5, "s2": 0.5, "b2": 3.0, "s3": 0.25}
    nodes = [quant("x", "q"), quant("Wc", "wq", s="ws"),
             helper.make_node("Conv", ["q", "wq"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["a"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Quant", ["r", "s2", "z", "b2"], ["q2"], domain="qonnx.custom_op.general", signed=0,
                              narrow=0, rounding_mode="ROUND"),
             helper.make_node("GlobalAveragePool", ["q2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Quant", ["f", "s3", "z", "b"], ["y"], domain="qonnx.custom_op.general", signed=0,
                              narrow=0, rounding_mode="FLOOR")]
    low = hand(nodes, inits, (1, 2, 6, 6), (1, 4))
    assert [n.kind for n in low.graph.nodes] == ["Conv2d", "MaxPool2d", "MultiThreshold", "SumPool", "Flatten",
                                                 "MultiThreshold"]


def test_multithreshold_quantizer_and_requantized_codes():
    """A FINN MultiThreshold after a MatMul, and a Quant -> Relu -> Quant chain on codes (no MatMul between)."""
    rng = np.random.default_rng(2)
    inits = {"s": 0.25, "z": 0.0, "b": 4.0, "W": rng.integers(-7, 8, (4, 3)).astype(np.float32), "ws": 1.0,
             "T": np.sort(rng.integers(-12, 12, (3, 3)), axis=1).astype(np.float32) * 0.25, "s2": 0.5, "b3": 2.0}
    nodes = [quant("x", "q"), quant("W", "wq", s="ws"), helper.make_node("MatMul", ["q", "wq"], ["a"]),
             helper.make_node("MultiThreshold", ["a", "T"], ["t"], domain="qonnx.custom_op.general",
                              out_dtype="UINT2", out_scale=1.0, out_bias=0.0),
             helper.make_node("Relu", ["t"], ["tr"]), quant("tr", "y", s="s2", b="b3")]
    low = hand(nodes, inits, (1, 4), (1, 3))
    assert [n.kind for n in low.graph.nodes] == ["Dense", "MultiThreshold", "MultiThreshold"]


def test_cli_compile_onnx_then_sim(sim_cache, tmp_path, capsys):
    """`qloom compile model.onnx --out DIR` (no inputs given: the importer makes them) then `qloom sim DIR`."""
    from qloom.cli import main as cli
    from qloom.sim import available
    _, raw, _ = model(spec_named("mlp-mixed-po2"))
    p = tmp_path / "mixed.onnx"
    onnx.save(raw, p)
    out = tmp_path / "build"
    assert cli(["compile", str(p), "--out", str(out), "--frames", "16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["ii_estimate"] > 0 and (out / "accelerator.v").is_file()
    assert np.load(out / "inputs.npy").shape[0] == 16
    if not available("verilator")[0]:
        pytest.skip("Verilator not available")
    assert cli(["sim", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bit_exact"]
    assert cli(["compile", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err
