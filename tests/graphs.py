"""Graph-shaped IR networks for the hardware tests (residual blocks, concatenation, a three-way fork)."""
import numpy as np

from qloom.compiler import ir

U2 = ir.Int(2, False)


def _conv_act(rng, name, src, c_in, c_out, k=3, stride=1, pad=1, out=U2, groups=1):
    w = rng.integers(-1, 2, (c_out, k, k, c_in // groups))
    t = np.sort(rng.integers(-4, 5, (c_out, out.max - out.min)), axis=1)
    return [ir.Conv2d(name, [src], name + ":acc", weight=w, wtype=ir.Int(2), stride=stride, padding=pad,
                      groups=groups),
            ir.MultiThreshold(name + ".q", [name + ":acc"], name + ":out", thresholds=t, out_type=out)]


def residual(hw=6, c=4, convs=2, shortcut=False, seed=0, coeffs=(1, 2)):
    """x -> convs x (3x3 conv, thresholds) -> add(., x or a 1x1 stride-1 conv of x) -> thresholds."""
    rng = np.random.default_rng(seed)
    nodes, cur = [], "x"
    for k in range(convs):
        nodes += _conv_act(rng, f"c{k}", cur, c, c)
        cur = nodes[-1].output
    skip = "x"
    if shortcut:
        nodes += _conv_act(rng, "short", "x", c, c, k=1, pad=0)
        skip = nodes[-1].output
    nodes.append(ir.Add("add", [cur, skip], "s", coeffs=coeffs))
    t = np.sort(rng.integers(0, 9, (c, 3)), axis=1)
    nodes.append(ir.MultiThreshold("act", ["s"], "y", thresholds=t, out_type=U2))
    return ir.Graph("x", ir.TensorType((hw, hw, c), U2), nodes, "y", name="residual")


def inception(hw=5, c=2, seed=0):
    """x -> [3x3 conv 4 | x | 1x1 conv 2] -> concat (8 channels): a three-way fork into one join."""
    rng = np.random.default_rng(seed)
    nodes = _conv_act(rng, "b3", "x", c, 4) + _conv_act(rng, "b1", "x", c, 2, k=1, pad=0)
    nodes.append(ir.Concat("cat", ["b3:out", "x", "b1:out"], "y"))
    return ir.Graph("x", ir.TensorType((hw, hw, c), U2), nodes, "y", name="inception")


def depthwise_separable(hw=6, c=4, seed=0):
    """x -> depthwise 3x3 -> thresholds -> pointwise 1x1 (8) -> thresholds."""
    rng = np.random.default_rng(seed)
    nodes = _conv_act(rng, "dw", "x", c, c, groups=c) + _conv_act(rng, "pw", "dw:out", c, 8, k=1, pad=0)
    return ir.Graph("x", ir.TensorType((hw, hw, c), U2), nodes, "pw:out", name="dwsep")


def frames(graph, n, seed=0):
    t = graph.input_type
    return np.random.default_rng(seed).integers(t.dtype.min, t.dtype.max + 1, (n, *t.shape))
