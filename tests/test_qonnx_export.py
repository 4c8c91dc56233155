"""write_qonnx: the integer IR as QONNX that qonnx's executor runs to reference.run's outputs, bit for bit."""
import warnings

import numpy as np
import pytest

pytest.importorskip("qonnx")
warnings.filterwarnings("ignore", message=".*fast_hadamard.*")

import onnx  # noqa: E402
import torch  # noqa: E402

import cnns  # noqa: E402
import mlps  # noqa: E402
from qloom.compiler import ir, reference  # noqa: E402
from qloom.compiler.errors import QuantError  # noqa: E402
from qloom.compiler.frontends import qonnx_ops, torch_nn  # noqa: E402
from qloom.compiler.qonnx_export import write_qonnx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")


def codes_for(graph, n, seed=0):
    """n input frames: random codes plus all-minimum and all-maximum frames."""
    t = graph.input_type
    rng = np.random.default_rng(seed)
    if t.dtype is ir.Bipolar:
        x = rng.choice([-1, 1], (n,) + t.shape)
    else:
        x = rng.integers(t.dtype.min, t.dtype.max + 1, (n,) + t.shape)
        x[0], x[1] = t.dtype.min, t.dtype.max
    return x


def check_roundtrip(graph, tmp_path, n=200, n_exact=6):
    """The written model, under qonnx's execute_onnx (n_exact frames) and FrameExecutor (n frames), equals
    reference.run; it passes onnx.checker and carries datatype annotations."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    path = tmp_path / f"{graph.name}.onnx"
    proto = write_qonnx(graph, path)
    onnx.checker.check_model(proto)
    w = ModelWrapper(str(path))
    assert w.check_all_tensor_shapes_specified()
    assert w.get_tensor_datatype("input").name != "FLOAT32"
    x = codes_for(graph, n)
    want = reference.run(graph, x)
    for i in range(n_exact):
        got = execute_onnx(w, {"input": x[i:i + 1].astype(np.float32)})["output"]
        assert np.array_equal(got, want[i:i + 1]), f"frame {i}"
    got = qonnx_ops.FrameExecutor(w).run(x.astype(np.float32))["output"]
    assert got.shape == want.shape and np.array_equal(got, want)
    return proto


def test_mlp(tmp_path):
    m = mlps.random_mlp(0, [16, 12, 10, 6], 3, 2, True, True)
    g = torch_nn.lower(m, torch.rand(64, 16)).graph
    p = check_roundtrip(g, tmp_path)
    ops = [n.op_type for n in p.graph.node]
    assert ops.count("MatMul") == 3 and ops.count("MultiThreshold") == 2


def test_cnn_padded_maxpool(tmp_path):
    m = cnns.random_cnn(1, c_in=3, hw=8, chans=(4, 6), wbits=2, abits=2, padding=1, pool="max")
    g = torch_nn.lower(m, torch.rand(4, 3, 8, 8)).graph
    p = check_roundtrip(g, tmp_path)
    assert {"Conv", "MaxPool", "Transpose", "Flatten"} <= {n.op_type for n in p.graph.node}


def test_binary_cnn_pad_value_groups_sumpool(tmp_path):
    m = cnns.random_cnn(2, c_in=4, hw=8, chans=(4, 4), wbits=1, abits=1, padding=1, pool="avg", in_bits=1, groups=2)
    g = torch_nn.lower(m, torch.rand(4, 4, 8, 8) * 2 - 1).graph
    assert any(isinstance(n, ir.Conv2d) and n.pad_value == -1 for n in g.nodes)
    assert any(isinstance(n, ir.SumPool) for n in g.nodes)
    p = check_roundtrip(g, tmp_path)
    assert "Pad" in {n.op_type for n in p.graph.node}


def test_requantize_with_negative_channels(tmp_path):
    m = mlps.random_mlp(3, [16, 12, 10], 4, 6, False, True, final_act=True)
    g = torch_nn.lower(m, torch.rand(64, 16), requantize=True).graph
    rq = [n for n in g.nodes if isinstance(n, ir.Requantize)]
    assert rq
    check_roundtrip(g, tmp_path)
    # the front end negates decreasing channels' weights, so its multipliers are >= 0; the IR allows
    # negative ones (and every rounding): the exporter must carry them too
    rng = np.random.default_rng(2)
    for rounding in ("floor", "half_up", "half_even"):
        nodes = [ir.Dense("d", ["x"], "a", weight=rng.integers(-3, 4, (6, 10)), wtype=ir.Int(3)),
                 ir.Requantize("r", ["a"], "y", mult=rng.integers(-300, 300, 6), shift=6,
                               offset=rng.integers(-50, 50, 6), rounding=rounding, out_type=ir.Int(5, True))]
        g2 = ir.Graph("x", ir.TensorType((10,), ir.Int(4, False)), nodes, "y", name=f"rq_{rounding}")
        assert (g2.nodes[1].mult < 0).any()
        (tmp_path / rounding).mkdir()
        check_roundtrip(g2, tmp_path / rounding)


def test_argmax_and_strided_conv(tmp_path):
    rng = np.random.default_rng(5)
    nodes = [ir.Conv2d("c", ["x"], "a", weight=rng.integers(-3, 4, (6, 3, 3, 1)), wtype=ir.Int(3), stride=2,
                       padding=1, groups=2),
             ir.MultiThreshold("t", ["a"], "q", thresholds=np.sort(rng.integers(-20, 20, (6, 3)), axis=1),
                               out_type=ir.Int(2, False), base=0),
             ir.Flatten("f", ["q"], "v"),
             ir.Dense("d", ["v"], "o", weight=rng.integers(-1, 2, (5, 96)), wtype=ir.Int(2)),
             ir.ArgMax("am", ["o"], "label")]
    g = ir.Graph("x", ir.TensorType((8, 8, 2), ir.Int(4)), nodes, "label", name="strided")
    p = check_roundtrip(g, tmp_path)
    assert p.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_wide_accumulators_run_in_float64(tmp_path):
    """8-bit x 8-bit over 2048 inputs passes 2**24: that MatMul runs in float64 and stays exact."""
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (4, 2048))
    w[0] = 127
    g = ir.Graph("x", ir.TensorType((2048,), ir.Int(8, False)),
                 [ir.Dense("d", ["x"], "o", weight=w, wtype=ir.Int(8))], "o", name="wide")
    assert reference.dense_bound(g.nodes[0], ir.Int(8, False)) >= 1 << 24
    p = check_roundtrip(g, tmp_path, n=20, n_exact=3)
    assert any(n.op_type == "Cast" for n in p.graph.node)


def test_imported_brevitas_roundtrip(tmp_path):
    """A Brevitas CNN imported to the IR and written back runs in the executor to the IR's outputs."""
    pytest.importorskip("brevitas")
    import brevitas_models as bm
    from qloom.compiler.frontends import qonnx_import
    spec = next(s for s in bm.FAMILY if s.name == "cnn-truncavg")
    raw = bm.export(bm.build(spec), bm.test_inputs()[:1])
    check_roundtrip(qonnx_import.lower(raw).graph, tmp_path, n=100)


def test_wide_requantize_refused(tmp_path):
    g = ir.Graph("x", ir.TensorType((4,), ir.Int(8)),
                 [ir.Dense("d", ["x"], "a", weight=np.ones((2, 4), int), wtype=ir.Int(2)),
                  ir.Requantize("r", ["a"], "o", mult=3, shift=1, rounding="half_even", out_type=ir.Int(16))], "o")
    with pytest.raises(QuantError, match="16-bit output"):
        write_qonnx(g, tmp_path / "x.onnx")


def test_written_mlp_imports_back(tmp_path):
    """FINN-style QONNX (integer-annotated input, Quant-ed integer weights, MultiThreshold) imports back to
    an IR that computes the same outputs."""
    from qloom.compiler.frontends import qonnx_import
    m = mlps.random_mlp(4, [16, 12, 10, 6], 2, 3, False, True)
    g = torch_nn.lower(m, torch.rand(64, 16)).graph
    write_qonnx(g, tmp_path / "m.onnx")
    low = qonnx_import.lower(str(tmp_path / "m.onnx"))
    x = codes_for(g, 300)
    assert np.array_equal(reference.run(low.graph, x), reference.run(g, x))
    assert low.frontend.power_of_two and [n.kind for n in low.graph.nodes] == [n.kind for n in g.nodes]
