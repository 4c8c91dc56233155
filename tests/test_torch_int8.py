"""PyTorch int8 import (eager, FX, PT2E) against the runtime itself: every layer's codes, the final
output, families of seeded random models, the requantization choice, and refusals.

The oracle is the converted model's own int8 forward pass (fbgemm / qnnpack engines), read through
the front end's layer_codes (quantized tensors' int_repr at every tensor the IR also holds).
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qloom
from qloom.compiler import reference
from qloom.compiler.errors import QuantError
from qloom.compiler.frontends import int8_common, torch_int8

import int8_models as M

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
MLP = {"kind": "mlp", "hidden": [32], "act": "relu", "bn": True, "seed": 0}
CNN = {"kind": "cnn", "chans": [8, 12], "stride": 1, "padding": 1, "groups": 2, "pool": "max", "head": "gap",
       "act": "relu", "bn": True, "seed": 3}


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def floats():
    """Trained float models (a few seconds each), shared by every test."""
    return {"mlp": M.train(M.build_float(MLP), epochs=10), "cnn": M.train(M.build_float(CNN), epochs=8)}


@pytest.fixture(scope="session")
def inputs():
    return M.test_inputs(1000)


def lowered(model, engine, x):
    with M._engine(engine):
        return torch_int8.lower(model, torch.from_numpy(x[:64]))


def layer_report(low, x):
    """{IR tensor: code_stats} against the runtime, plus the final output's."""
    fe = low.frontend
    got = reference.run(low.graph, fe.quantize_input(x), return_all=True)
    with M._engine(getattr(fe, "engine", "fbgemm")):
        want = fe.layer_codes(x)
        final = fe.source_outputs(x, argmax=False).values
    stats = {k: int8_common.code_stats(v, got[k]) for k, v in want.items()}
    stats["<final>"] = int8_common.code_stats(final, got[low.graph.output])
    return stats


def assert_exact(stats):
    bad = {k: (s["exact_share"], s["max_lsb"]) for k, s in stats.items() if s["exact_share"] < 1}
    assert not bad, f"codes differ from the runtime: {bad}"


@pytest.mark.parametrize("api,engine,per_channel,kind", [
    ("eager", "fbgemm", True, "mlp"), ("eager", "qnnpack", False, "cnn"),
    ("fx", "fbgemm", False, "cnn"), ("fx", "qnnpack", True, "mlp")])
def test_exact_every_layer(floats, inputs, api, engine, per_channel, kind):
    quant = M.quantize_eager if api == "eager" else M.quantize_fx
    model = quant(floats[kind], engine, per_channel)
    low = lowered(model, engine, inputs)
    stats = layer_report(low, inputs)
    assert len(stats) >= 3 and stats["<final>"]["elements"] == 10 * len(inputs) >= 10_000
    assert_exact(stats)
    d = low.frontend.describe()
    assert d["api"] == api and d["engine"] == engine
    assert {r["method"] for r in d["layers"]} <= {"thresholds", "requantize"}


def test_api_accuracy_argmax_and_io(floats, inputs):
    """from_torch_quantized: quantize_input/dequantize are the model's own; accuracy and argmax equal."""
    model = M.quantize_eager(floats["cnn"], "fbgemm", True)
    with M._engine("fbgemm"):
        acc = qloom.from_torch_quantized(model, inputs[:64])
        labels = qloom.from_torch_quantized(model, inputs[:64], argmax=True)
        assert acc.fidelity(inputs).exact and labels.fidelity(inputs).exact
        out = model(torch.from_numpy(inputs)).numpy()
    assert np.array_equal(acc.predict(inputs), out)          # dequantized IR output == the model's floats
    xte_n = len(M.digits()[3])
    assert M.accuracy(out[:xte_n]) == M.accuracy(labels.reference(acc.quantize_input(inputs[:xte_n])))
    assert M.accuracy(out[:xte_n]) > 0.8


def test_sample_inputs_cover_the_codes(floats):
    model = M.quantize_fx(floats["mlp"], "qnnpack", False)
    with M._engine("qnnpack"):
        low = torch_int8.lower(model, torch.zeros(4, 64))
        x = low.frontend.sample_inputs(256, seed=1)
        codes = low.frontend.quantize_input(x)
        stats = layer_report(low, x)
    assert codes.min() == 0 and codes.max() == 255 and len(np.unique(codes)) > 200
    assert_exact(stats)


def test_requantization_choice(floats, inputs):
    """Each layer reports its method; a ReLU above zero point 0 keeps thresholds (Requantize clamps only
    at the type's ends); where a fixed-point line reproduces every step, Requantize; all exact."""
    mlp = M.quantize_eager(floats["mlp"], "fbgemm", True)      # Linear+BN, then a separate ReLU (zp > 0)
    assert lowered(mlp, "fbgemm", inputs).frontend.describe()["layers"][0]["method"] == "thresholds"
    cnn = M.quantize_eager(floats["cnn"], "fbgemm", True)
    low = lowered(cnn, "fbgemm", inputs)
    layers = low.frontend.describe()["layers"]
    kinds = {n.name: n.kind for n in low.graph.nodes}
    for r in layers:
        assert kinds[r["output"].rsplit(":out", 1)[0]] == {"thresholds": "MultiThreshold",
                                                           "requantize": "Requantize"}[r["method"]]
    assert layers[-1]["method"] == "requantize"                # measured for this seeded model
    rq = [n for n in low.graph.nodes if n.kind == "Requantize"]
    assert rq[0].rounding == "floor" and 0 < rq[0].shift <= 48
    assert_exact(layer_report(low, inputs))
    with M._engine("fbgemm"):
        only_t = torch_int8.lower(cnn, torch.from_numpy(inputs[:64]), method="thresholds")
        with pytest.raises(QuantError, match="no fixed-point Requantize"):
            torch_int8.lower(mlp, torch.from_numpy(inputs[:64]), method="requantize")
    assert {r["method"] for r in only_t.frontend.describe()["layers"]} == {"thresholds"}
    assert_exact(layer_report(only_t, inputs))


def test_fit_requantize_is_exact_or_none():
    """fit_requantize reproduces a float requantization's steps exactly, or says it cannot."""
    rng = np.random.default_rng(0)
    out = int8_common.CODE_TYPES["uint8"]
    for _ in range(20):
        m, b = rng.uniform(1e-4, 5e-2), rng.uniform(-50, 300)
        lo, hi = np.array([-40000]), np.array([40000])
        acc = np.arange(lo[0], hi[0] + 1)
        codes = np.clip(np.rint(np.float32(acc) * np.float32(m) + np.float32(b)), 0, 255).astype(np.int64)
        t = np.array([[acc[np.argmax(codes >= k)] if (codes >= k).any() else hi[0] + 1 for k in range(1, 256)]])
        fit = int8_common.fit_requantize(t, lo, hi, out)
        if fit is None:
            continue
        mult, offset, shift = fit
        got = np.clip((acc * mult[0] + offset[0]) >> shift, 0, 255)
        assert np.array_equal(got, codes)


def test_qnnpack_relu6_after_conv_is_refused():
    """Measured: qnnpack's quantized hardtanh/ReLU6 permutes a channels-last tensor (a conv's output).
    The importer detects it on the model's own tensors and refuses, naming the module."""
    x = torch.quantize_per_tensor(torch.randn(2, 4, 3, 3), 0.05, 128, torch.quint8)
    xc = x.contiguous(memory_format=torch.channels_last)
    with M._engine("qnnpack"):
        scrambled = not torch.equal(nn.ReLU6()(x).int_repr(), nn.ReLU6()(xc).int_repr())
    cfg = dict(CNN, act="relu6", seed=1)
    model = M.quantize_eager(M.build_float(cfg), "qnnpack", False)
    if not scrambled:
        pytest.skip("this PyTorch's qnnpack ReLU6 no longer permutes channels-last tensors")
    with pytest.raises(QuantError, match="ReLU6.*element by element"):
        lowered(model, "qnnpack", M.test_inputs(64))
    assert_exact(layer_report(lowered(M.quantize_eager(M.build_float(cfg), "fbgemm", False), "fbgemm",
                                      M.test_inputs(400)), M.test_inputs(400)))


def family(seeds):
    """Seeded random configs x API x engine x per-channel (qnnpack ReLU6 after a conv: refused)."""
    cases = []
    for s in seeds:
        cfg = M.random_config(s)
        api = ("eager", "fx")[s % 2]
        engine = M.ENGINES[(s // 2) % 2]
        cases.append((cfg, api, engine, bool((s // 4) % 2)))
    return cases


def run_family_case(cfg, api, engine, per_channel, x):
    model = (M.quantize_eager if api == "eager" else M.quantize_fx)(M.train(M.build_float(cfg), epochs=2),
                                                                   engine, per_channel)
    if engine == "qnnpack" and cfg["kind"] == "cnn" and cfg["act"] == "relu6":
        with pytest.raises(QuantError, match="element by element"):
            lowered(model, engine, x)
        return
    assert_exact(layer_report(lowered(model, engine, x), x))


@pytest.mark.parametrize("cfg,api,engine,per_channel", family(range(100, 104)))
def test_random_family(cfg, api, engine, per_channel):
    run_family_case(cfg, api, engine, per_channel, M.test_inputs(1000, seed=cfg["seed"]))


@pytest.mark.slow
@pytest.mark.parametrize("cfg,api,engine,per_channel", family(range(200, 260)))
def test_random_family_sweep(cfg, api, engine, per_channel):
    run_family_case(cfg, api, engine, per_channel, M.test_inputs(1000, seed=cfg["seed"]))


# ---------------------------------------------------------------- pools called as functions (FX)

@pytest.mark.parametrize("engine,fn,args,kwargs,kernel,stride", [
    ("fbgemm", F.max_pool2d, (2,), {}, 2, 2),
    ("qnnpack", F.max_pool2d, (), {"kernel_size": 2, "stride": 2}, 2, 2),
    ("fbgemm", F.max_pool2d, (3, 2), {}, 3, 2),
    ("qnnpack", F.max_pool2d, ((2, 2), (1, 1)), {}, 2, 1),
    ("fbgemm", F.max_pool2d, (2, 2, 0, 1, True), {}, 2, 2),        # ceil_mode=True, same size: accepted
    ("fbgemm", torch.max_pool2d, (2,), {}, 2, 2),                  # FX runs it on floats: dequantize -> quantize
    ("qnnpack", F.avg_pool2d, (2,), {}, 2, 2)])
def test_functional_pools_exact(engine, fn, args, kwargs, kernel, stride):
    """F.max_pool2d is a boolean-dispatch wrapper whose signature is (*args, **kwargs): its arguments are
    read by position and name, with torch's defaults; every layer's codes equal the runtime's."""
    model = M.quantize_fx(M.pool_cnn(M.Call(fn, *args, **kwargs)), engine, per_channel=False)
    assert any(n.op == "call_function" and n.target is fn for n in model.graph.nodes)
    x = np.concatenate([M.test_inputs(200, seed=1), np.random.default_rng(0).uniform(-4, 24, (200, 64))])
    x = x.astype(np.float32)
    with M._engine(engine):
        acc = qloom.from_torch_quantized(model, x[:64])
        stats = layer_report(acc, x)
        out = model(torch.from_numpy(x)).numpy()
    pool = next(n for n in acc.graph.nodes if n.kind in ("MaxPool2d", "SumPool"))       # the first: this one
    assert (pool.kind == "SumPool") == (fn is F.avg_pool2d)
    assert pool.kernel == (kernel, kernel) and pool.stride == (stride, stride)
    assert_exact(stats)
    assert np.array_equal(acc.predict(x), out)               # the IR's codes, dequantized: the model's floats


@pytest.mark.parametrize("kwargs,message", [
    ({"kernel_size": 3, "stride": 2, "padding": 1}, "padding=1"),
    ({"kernel_size": 2, "dilation": 2}, "dilation=2"),
    ({"kernel_size": 3, "stride": 2, "ceil_mode": True}, r"ceil_mode=True changes the output size \(8x8 -> 4x4"),
    ({"kernel_size": 2, "return_indices": True}, "return_indices=True")])
def test_functional_max_pool_refusals_name_node_and_value(kwargs, message):
    f = M.Call(lambda x, **kw: F.max_pool2d(x, **kw)[0] if kw.get("return_indices") else F.max_pool2d(x, **kw),
               **kwargs)
    model = M.quantize_fx(M.pool_cnn(f), "fbgemm", per_channel=False)
    with pytest.raises(QuantError, match=r"'max_pool2d\w*' \(max_pool2d\w*\): .*" + message):
        lowered(model, "fbgemm", M.test_inputs(64))


# ---------------------------------------------------------------- PT2E (float reference graphs)

@pytest.fixture(scope="session")
def pt2e_models(floats):
    return {k: M.quantize_pt2e(floats[k], per_channel=k == "cnn") for k in ("mlp", "cnn")}


def test_pt2e_mlp_measured_fidelity(pt2e_models, inputs):
    """PT2E graphs sum float products, so the IR is not exact by construction; measured here."""
    low = torch_int8.lower(pt2e_models["mlp"], torch.from_numpy(inputs[:64]))
    d = low.frontend.describe()
    assert d["api"] == "pt2e" and d["exact_by_construction"] is False
    for k, s in layer_report(low, inputs).items():
        assert s["exact_share"] >= 0.999 and s["max_lsb"] <= 1, (k, s)


def test_pt2e_cnn_pool_differs_only_at_float_ties(pt2e_models, inputs):
    """The reference graph averages dequantized floats; where the window's integer mean is exactly
    k + 1/2 the float rounding noise decides, so those windows (and only those) may differ."""
    low = torch_int8.lower(pt2e_models["cnn"], torch.from_numpy(inputs[:64]))
    stats = layer_report(low, inputs)
    pool = next(n for n in low.graph.nodes if n.kind == "SumPool")
    rq = next(n for n in low.graph.nodes if n.inputs == [pool.output])
    fe = low.frontend
    got = reference.run(low.graph, fe.quantize_input(inputs), return_all=True)
    want = fe.layer_codes(inputs)
    src = pool.inputs[0]
    same_in = (got[src] == want[src]).reshape(len(inputs), -1).all(axis=1)
    n = pool.kernel[0] * pool.kernel[1]
    sums = got[pool.output].reshape(len(inputs), -1)
    diff = (got[rq.output] != want[rq.output]).reshape(len(inputs), -1)
    # in the IR's codes the tie condition is (sum - n*zp) % n == n/2 for the pool input's zero point
    zps = [int(nd.args[2]) for nd in fe.gm.graph.nodes if "dequantize_per_tensor" in str(nd.target)]
    tie = np.zeros_like(diff)
    for z in set(zps):
        tie |= (sums - n * z) % n == n // 2
    assert n % 2 == 0 and diff[same_in].any() <= tie[same_in].any()
    assert not (diff[same_in] & ~tie[same_in]).any(), "a pool output differs away from a float tie"
    assert 0 < tie.mean() < 0.2
    for k, s in stats.items():
        assert s["max_lsb"] <= 3, (k, s)
        if k in (src,) or k.startswith("conv"):
            assert s["exact_share"] >= 0.999, (k, s)


# ---------------------------------------------------------------- refusals

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.fc1, self.fc2 = nn.Linear(64, 64), nn.Linear(64, 10)
        self.add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        x = self.quant(x)
        return self.dequant(self.fc2(self.add.add(x, self.fc1(x))))


class FloatMiddle(nn.Module):
    def __init__(self):
        super().__init__()
        self.q1, self.dq1 = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.q2, self.dq2 = torch.ao.quantization.QuantStub(), torch.ao.quantization.DeQuantStub()
        self.fc1, self.mid, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        x = self.dq1(self.fc1(self.q1(x)))
        return self.dq2(self.fc2(self.q2(self.mid(x))))


def convert(model, engine="fbgemm", skip=()):
    from torch.ao import quantization as tq
    model.eval()
    model.qconfig = tq.get_default_qconfig(engine)
    for name in skip:
        getattr(model, name).qconfig = None
    with M._engine(engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare(model, inplace=True)
        model(torch.from_numpy(M.digits()[0][:200]))
        tq.convert(model, inplace=True)
    return model


def test_refuses_residual_add():
    with pytest.raises(QuantError, match="chain.*Add|Add.*chain|residual"):
        lowered(convert(Residual()), "fbgemm", M.test_inputs(16))


def test_refuses_float_layer_in_the_middle():
    with pytest.raises(QuantError, match="float.*middle|middle"):
        lowered(convert(FloatMiddle(), skip=("mid",)), "fbgemm", M.test_inputs(16))


def test_refuses_dynamic_quantization(floats):
    dyn = torch.ao.quantization.quantize_dynamic(floats["mlp"].body, {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(QuantError, match="dynamic"):
        lowered(dyn, "fbgemm", M.test_inputs(16))


def test_refuses_unsupported_op_by_name(floats):
    import copy
    f = copy.deepcopy(floats["mlp"])
    f.body[2] = nn.Hardswish()                   # not monotone: no code map
    model = M.quantize_eager(f, "fbgemm", True)
    with pytest.raises(QuantError, match="body.2.*Hardswish"):
        lowered(model, "fbgemm", M.test_inputs(16))


def test_refuses_float_model():
    with pytest.raises(QuantError, match="never quantizes"):
        torch_int8.lower(nn.Sequential(nn.Linear(64, 10)), torch.zeros(2, 64))


def test_requires_example_input(floats):
    with pytest.raises(QuantError, match="example_input"):
        torch_int8.lower(M.quantize_eager(floats["mlp"], "fbgemm", True), None)


# ---------------------------------------------------------------- hardware

def verilator_bit_exact(acc, x, tmp_path):
    """Build dir + cocotb/Verilator with random stalls on both sides: every output equals the reference.
    (qloom.sim.simulate on a saved build dir: what Accelerator.simulate runs.)"""
    from qloom.sim import available, simulate
    ok, why = available("verilator")
    if not ok:
        pytest.skip(f"Verilator not available: {why}")
    acc.save(tmp_path / "build", x_float=x)
    return simulate(tmp_path / "build", stall_prob=0.3, cache_dir=tmp_path / "cache")


def test_verilator_eager_cnn(floats, inputs, tmp_path):
    model = M.quantize_eager(floats["cnn"], "fbgemm", True)
    with M._engine("fbgemm"):
        acc = qloom.from_torch_quantized(model, inputs[:64], target_ii=2000)
    r = verilator_bit_exact(acc, inputs[:24], tmp_path)
    assert r["bit_exact"] and r["frames"] == 24


@pytest.mark.slow
def test_verilator_pt2e_mlp(pt2e_models, inputs, tmp_path):
    acc = qloom.from_torch_quantized(pt2e_models["mlp"], inputs[:64], check=False, target_ii=256)
    r = verilator_bit_exact(acc, inputs[:24], tmp_path)
    assert r["bit_exact"] and r["frames"] == 24
