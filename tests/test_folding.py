# amaranth: UnusedElaboratable=no
import numpy as np
import pytest

from qloom.compiler import ir
from qloom.hdl import folding


def mlp(widths=(64, 32, 16, 10), wtype=ir.Int(2, True), act=ir.Int(2, False)):
    rng = np.random.default_rng(0)
    nodes, cur = [], "x"
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        w = rng.integers(-1, 2, size=(n, k))
        nodes.append(ir.Dense(f"fc{i}", [cur], f"a{i}", weight=w, wtype=wtype))
        cur = f"a{i}"
        if i < len(widths) - 2:
            t = np.sort(rng.integers(-k, k, size=(n, act.max)), axis=1)
            nodes.append(ir.MultiThreshold(f"t{i}", [cur], f"y{i}", thresholds=t, out_type=act, base=0))
            cur = f"y{i}"
    return ir.Graph("x", ir.TensorType((widths[0],), ir.Int(8, False)), nodes, cur)


def test_fully_folded_default():
    g = mlp()
    f = folding.fold(g)
    assert all(v == {"pe": 1, "simd": 1} for v in f.values())
    assert folding.estimate(g, f)["ii"] == 64 * 32


@pytest.mark.parametrize("target", [1, 7, 64, 100, 512, 2048])
def test_target_ii_is_met_with_fewest_lanes(target):
    g = mlp()
    f = folding.fold(g, target_ii=target)
    est = folding.estimate(g, f)
    assert est["ii"] <= max(target, 1)
    for node in g.nodes:
        if isinstance(node, ir.Dense):
            pe, simd = f[node.name]["pe"], f[node.name]["simd"]
            n, k = node.weight.shape
            lanes = pe * simd
            # no cheaper folding meets the target
            assert all((k // s) * (n // p) > target or p * s >= lanes
                       for p in folding.divisors(n) for s in folding.divisors(k))


def test_manual_folding_checked():
    g = mlp()
    with pytest.raises(folding.FoldingError, match=r"layer 'fc0': SIMD=5 does not divide its 64 inputs; "
                                                   r"valid SIMD: \[1, 2, 4, 8, 16, 32, 64\]"):
        folding.fold(g, manual={"fc0": {"pe": 1, "simd": 5}})
    with pytest.raises(folding.FoldingError, match=r"layer 'fc1': PE=3 does not divide its 16 outputs"):
        folding.fold(g, manual={"fc1": {"pe": 3, "simd": 1}})
    with pytest.raises(folding.FoldingError, match="not a Dense or Conv2d layer"):
        folding.fold(g, manual={"nope": {"pe": 1}})


def test_plan_inserts_width_converters():
    """Width converters where beat widths differ; no FIFO before a Dense MVU (its input buffer holds
    the vector)."""
    g = mlp()
    f = {"fc0": {"pe": 4, "simd": 8}, "fc1": {"pe": 2, "simd": 2}, "fc2": {"pe": 5, "simd": 16}}
    kinds = [(s.kind, s.in_n, s.out_n) for s in folding.plan(g, f)]
    assert kinds == [("mvu", 8, 4), ("threshold", 4, 4), ("width", 4, 2),
                     ("mvu", 2, 2), ("threshold", 2, 2), ("width", 2, 16), ("mvu", 16, 5)]
    est = folding.estimate(g, f)
    assert est["ii"] == max(64 // 8 * 32 // 4, 32 // 2 * 16 // 2, 16 // 16 * 10 // 5)
    assert est["luts"] > 0 and est["ffs"] > 0


def test_estimates_grow_with_parallelism():
    g = mlp()
    small = folding.estimate(g, folding.fold(g))
    big = folding.estimate(g, folding.fold(g, target_ii=16))
    assert big["luts"] > small["luts"] and big["ii"] < small["ii"]
