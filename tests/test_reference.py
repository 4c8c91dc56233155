import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qloom.compiler import ir, reference


def one_node_graph(node, in_type):
    return ir.Graph("x", in_type, [node], node.output)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), wbits=st.integers(2, 16), xbits=st.integers(1, 16),
       k=st.integers(1, 300), n=st.integers(1, 20))
def test_dense_every_route_equals_int64(seed, wbits, xbits, k, n):
    rng = np.random.default_rng(seed)
    wt, xt = ir.Int(wbits, True), ir.Int(xbits, True)
    w = rng.integers(wt.min, wt.max + 1, size=(n, k))
    x = rng.integers(xt.min, xt.max + 1, size=(17, k))
    x[0], x[1] = xt.min, xt.max
    g = one_node_graph(ir.Dense("d", ["x"], "y", weight=w, wtype=wt), ir.TensorType((k,), xt))
    assert (reference.run(g, x) == x @ w.T).all()


def test_dense_beyond_float64_uses_int64():
    wt = ir.Int(32, True)
    w = np.full((1, 1024), wt.min)
    x = np.full((2, 1024), -(1 << 20))
    x[1, 0] = 1
    g = one_node_graph(ir.Dense("d", ["x"], "y", weight=w, wtype=wt), ir.TensorType((1024,), ir.Int(22, True)))
    assert reference.dense_bound(g.nodes[0], ir.Int(22, True)) >= 1 << 53
    out = reference.run(g, x)
    assert out[0, 0] == 1024 * (1 << 31) * (1 << 20)          # 2**61: exact, not a float64 rounding
    assert out[1, 0] == 1023 * (1 << 31) * (1 << 20) - (1 << 31)


def test_multithreshold_counts_and_bipolar():
    t = np.array([[-1, 0, 0, 4], [2, 3, 5, 9]])
    node = ir.MultiThreshold("m", ["x"], "y", thresholds=t, out_type=ir.Int(3, True), base=-2)
    g = one_node_graph(node, ir.TensorType((2,), ir.Int(5, True)))
    x = np.array([[-2, 1], [0, 3], [4, 9], [100 % 16, -16]])
    want = [[-2 + 0, -2 + 0], [-2 + 3, -2 + 2], [-2 + 4, -2 + 4], [-2 + 4, -2]]
    assert reference.run(g, x).tolist() == want
    node = ir.MultiThreshold("m", ["x"], "y", thresholds=[[3]], out_type=ir.Bipolar, base=-1)
    g = one_node_graph(node, ir.TensorType((2,), ir.Int(5, True)))
    assert reference.run(g, np.array([[2, 3]])).tolist() == [[-1, 1]]


@pytest.mark.parametrize("rounding", ["floor", "half_up", "half_even"])
def test_requantize_rounding(rounding):
    # x/4 hits -1.5, -1.25, -.75, -.5 (ties), -.25, 0, .5 (tie), .75
    node = ir.Requantize("r", ["x"], "y", mult=[1], shift=2, offset=[0], rounding=rounding, out_type=ir.Int(4))
    g = one_node_graph(node, ir.TensorType((1,), ir.Int(8, True)))
    x = np.array([-6, -5, -3, -2, -1, 0, 2, 2, 3])[:, None]
    got = reference.run(g, x)[:, 0]
    exact = x[:, 0] / 4
    if rounding == "floor":
        assert (got == np.floor(exact)).all()
    elif rounding == "half_up":
        assert (got == np.floor(exact + 0.5)).all()
    else:
        assert (got == np.round(exact)).all()   # numpy rounds half to even


def test_requantize_clamps():
    node = ir.Requantize("r", ["x"], "y", mult=[3, -3], shift=1, offset=[1, 0], out_type=ir.Int(3, False))
    g = one_node_graph(node, ir.TensorType((2,), ir.Int(8, True)))
    assert reference.run(g, np.array([[100, 100], [-100, -100]])).tolist() == [[7, 0], [0, 7]]


def test_argmax_ties_lowest_index_and_flatten():
    g = ir.Graph("x", ir.TensorType((2, 3), ir.Int(4, True)),
                 [ir.Flatten("f", ["x"], "v"), ir.ArgMax("a", ["v"], "y")], "y")
    x = np.array([[[1, 5, 5], [0, 5, 2]], [[-8, -8, -8], [-8, -8, -8]]])
    out = reference.run(g, x, return_all=True)
    assert out["y"].tolist() == [[1], [0]]
    assert out["v"].shape == (2, 6)


def test_input_errors_name_value():
    g = one_node_graph(ir.Flatten("f", ["x"], "y"), ir.TensorType((3,), ir.Int(2, False)))
    with pytest.raises(ValueError, match=r"element \(1, 2\) = 4 is out of range for uint2"):
        reference.run(g, np.array([[0, 1, 2], [3, 3, 4]]))
    with pytest.raises(ValueError, match="must have shape"):
        reference.run(g, np.zeros((2, 4), dtype=int))
    with pytest.raises(ValueError, match="non-integer floats"):
        reference.run(g, np.array([[0.5, 1, 2]]))
