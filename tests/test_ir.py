import numpy as np
import pytest

from qloom.compiler import ir


def mlp_graph(w=None, t=None, out_type=ir.Int(2, False), in_type=ir.Int(4, False)):
    w = np.array([[1, -2, 3], [0, 1, -1]]) if w is None else w
    t = np.array([[0, 2, 5], [-1, 0, 1]]) if t is None else t
    nodes = [ir.Dense("fc", ["x"], "acc", weight=w, wtype=ir.Int(3, True)),
             ir.MultiThreshold("act", ["acc"], "y", thresholds=t, out_type=out_type, base=0)]
    return ir.Graph("x", ir.TensorType((3,), in_type), nodes, "y")


def test_types_and_minimal_accumulator():
    types = mlp_graph().validate()
    # inputs 0..15: row 0 in [-30, 60], row 1 in [-15, 15]
    assert types["acc"] == ir.TensorType((2,), ir.Int(7, True))
    assert types["y"].dtype == ir.Int(2, False)


@pytest.mark.parametrize("lo,hi,want", [(0, 0, ir.Int(1, False)), (0, 1, ir.Int(1, False)),
                                        (0, 255, ir.Int(8, False)), (-1, 0, ir.Int(1, True)),
                                        (-128, 127, ir.Int(8, True)), (-129, 0, ir.Int(9, True)),
                                        (-5, 200, ir.Int(9, True))])
def test_int_type_for(lo, hi, want):
    assert ir.int_type_for(lo, hi) == want


def test_shape_mismatch_names_node():
    g = mlp_graph()
    g.input_type = ir.TensorType((4,), ir.Int(4, False))
    with pytest.raises(ir.IRError, match=r"Dense 'fc': input shape \(4,\) does not match weight shape \(2, 3\)"):
        g.validate()


def test_unsorted_thresholds_named():
    with pytest.raises(ir.IRError, match=r"MultiThreshold 'act': thresholds of channel 1 are not sorted: "
                                         r"T\[1, 0\] = 3 > T\[1, 1\] = 0"):
        mlp_graph(t=np.array([[0, 2, 5], [3, 0, 1]])).validate()


def test_out_of_range_weight_named():
    with pytest.raises(ir.IRError, match=r"Dense 'fc': weight\[1, 2\] = 4 is out of range for int3 \(-4..3\)"):
        mlp_graph(w=np.array([[1, -2, 3], [0, 1, 4]])).validate()


def test_bipolar_weight_zero_refused():
    g = mlp_graph()
    g.nodes[0].wtype = ir.Bipolar
    with pytest.raises(ir.IRError, match=r"weight\[0, 1\] = -2 is out of range for bipolar"):
        g.validate()


def test_output_type_too_narrow():
    with pytest.raises(ir.IRError, match=r"outputs 0..3 do not fit uint1"):
        mlp_graph(out_type=ir.Int(1, False)).validate()


def test_threshold_rows_must_match_channels():
    with pytest.raises(ir.IRError, match="thresholds have 3 rows but the input has 2 channels"):
        mlp_graph(t=np.zeros((3, 3), dtype=int)).validate()


def test_non_integer_weights_refused():
    with pytest.raises(ir.IRError, match="values must be integers"):
        ir.Dense("d", ["x"], "y", weight=np.array([[0.5]]), wtype=ir.Int(2))


def test_topological_order_and_duplicates():
    g = mlp_graph()
    g.nodes.reverse()
    with pytest.raises(ir.IRError, match="input tensor 'acc' is not produced by an earlier node"):
        g.validate()
    g = mlp_graph()
    g.nodes[1].name = "fc"
    with pytest.raises(ir.IRError, match="duplicate node name 'fc'"):
        g.validate()


def test_bipolar_multithreshold_needs_one_threshold():
    with pytest.raises(ir.IRError, match="bipolar output needs exactly 1 threshold"):
        mlp_graph(out_type=ir.Bipolar).validate()


def test_hash_changes_with_any_weight():
    a, b = mlp_graph(), mlp_graph()
    assert a.hash() == b.hash()
    b.nodes[0].weight[0, 0] = 2
    assert a.hash() != b.hash()


def test_save_and_load_graph_round_trip(tmp_path):
    g = mlp_graph()
    conv = ir.Graph("x", ir.TensorType((6, 6, 2), ir.Bipolar),
                    [ir.Conv2d("c", ["x"], "a", weight=np.ones((3, 3, 3, 2), dtype=int), wtype=ir.Bipolar,
                               stride=2, padding=1, pad_value=-1),
                     ir.SumPool("p", ["a"], "s", kernel=3),
                     ir.Requantize("r", ["s"], "y", mult=[3, 1, 2], shift=2, offset=[1, 0, 0],
                                   rounding="half_up", out_type=ir.Int(4, True))], "y")
    for graph in (g, conv):
        ir.save_graph(graph, tmp_path / "g.npz")
        back = ir.load_graph(tmp_path / "g.npz")
        assert back.hash() == graph.hash() and back.validate() == graph.validate()
