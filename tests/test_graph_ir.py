"""Graph-shaped IR: Add and Concat nodes, DAG validation, the reference model, summary and save/load."""
import numpy as np
import pytest

from qloom.compiler import ir, reference


def residual_graph(coeffs=(1, 2)):
    """x -> conv -> thresholds -> (+ x) -> thresholds; and a concat of the branch with x."""
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, (4, 3, 3, 4))
    t1 = np.sort(rng.integers(-6, 6, (4, 3)), axis=1)
    t2 = np.sort(rng.integers(-2, 8, (4, 3)), axis=1)
    nodes = [ir.Conv2d("conv", ["x"], "a", weight=w, wtype=ir.Int(2), padding=1),
             ir.MultiThreshold("q", ["a"], "y", thresholds=t1, out_type=ir.Int(2, False)),
             ir.Add("add", ["y", "x"], "s", coeffs=coeffs),
             ir.MultiThreshold("act", ["s"], "z", thresholds=t2, out_type=ir.Int(2, False)),
             ir.Concat("cat", ["z", "x"], "c")]
    return ir.Graph("x", ir.TensorType((5, 5, 4), ir.Int(2, False)), nodes, "c")


def test_add_types_hold_every_sum():
    types = residual_graph((1, 2)).validate()
    assert types["s"] == ir.TensorType((5, 5, 4), ir.Int(4, False))          # 0..3 + 2 * (0..3) = 0..9
    types = residual_graph((1, -4)).validate()
    assert types["s"].dtype == ir.int_type_for(-12, 3)
    a = ir.Add("a", ["p", "q"], "r")
    assert a.infer([ir.TensorType((3,), ir.Bipolar)] * 2).dtype == ir.Int(3, True)   # -2..2


def test_add_and_concat_errors_name_the_node():
    with pytest.raises(ir.IRError, match=r"Add 'a': inputs have shapes \(3,\) and \(4,\)"):
        ir.Add("a", ["p", "q"], "r").infer([ir.TensorType((3,), ir.Int(2)), ir.TensorType((4,), ir.Int(2))])
    with pytest.raises(ir.IRError, match=r"Add 'a': expects 2 input\(s\), got 3"):
        ir.Add("a", ["p", "q", "s"], "r").infer([ir.TensorType((3,), ir.Int(2))] * 3)
    with pytest.raises(ir.IRError, match="coeffs must be two nonzero integers"):
        ir.Add("a", ["p", "q"], "r", coeffs=(1, 0))
    with pytest.raises(ir.IRError, match=r"Concat 'c': input 1 has shape \(4, 4, 2\), input 0 has \(5, 5, 3\)"):
        ir.Concat("c", ["p", "q"], "r").infer([ir.TensorType((5, 5, 3), ir.Int(2)),
                                               ir.TensorType((4, 4, 2), ir.Int(2))])
    with pytest.raises(ir.IRError, match="expects 2 or more inputs"):
        ir.Concat("c", ["p"], "r").infer([ir.TensorType((5, 5, 3), ir.Int(2))])


def test_concat_type_is_the_union():
    c = ir.Concat("c", ["p", "q"], "r")
    assert c.infer([ir.TensorType((2, 3), ir.Bipolar), ir.TensorType((2, 1), ir.Bipolar)]) == \
        ir.TensorType((2, 4), ir.Bipolar)
    assert c.infer([ir.TensorType((2, 3), ir.Bipolar), ir.TensorType((2, 1), ir.Int(2, False))]).dtype == \
        ir.Int(3, True)                                                         # -1..3


def test_reference_runs_the_dag():
    g = residual_graph((1, 2))
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, (6, 5, 5, 4))
    env = reference.run(g, x, return_all=True)
    assert np.array_equal(env["s"], env["y"] + 2 * x)
    assert np.array_equal(env["c"], np.concatenate([env["z"], x], axis=-1))
    assert env["c"].shape == (6, 5, 5, 8)


def test_dag_helpers_and_summary():
    g = residual_graph()
    users = g.consumers()
    assert [n.name for n in users["x"]] == ["conv", "add", "cat"]
    assert users["c"] == []
    assert not g.is_chain
    chain = ir.Graph("x", g.input_type, g.nodes[:2], "y")
    assert chain.is_chain
    text = g.summary()
    assert "Add            add             (y, x) -> s uint4[5x5x4] coeffs=(1, 2)" in text
    assert "Concat         cat             (z, x) -> c" in text
    assert "(x)" not in text.splitlines()[1]                # a chain step names no inputs


def test_topological_order_is_checked():
    g = residual_graph()
    g.nodes = [g.nodes[0], g.nodes[2], g.nodes[1]] + g.nodes[3:]
    with pytest.raises(ir.IRError, match="Add 'add': input tensor 'y' is not produced by an earlier node"):
        g.validate()


def test_save_and_load_a_dag(tmp_path):
    g = residual_graph((2, -1))
    ir.save_graph(g, tmp_path / "g.npz")
    h = ir.load_graph(tmp_path / "g.npz")
    assert h.hash() == g.hash()
    assert h.node("add").coeffs == (2, -1) and h.node("cat").inputs == ["z", "x"]
    x = np.random.default_rng(2).integers(0, 4, (3, 5, 5, 4))
    assert np.array_equal(reference.run(h, x), reference.run(g, x))
