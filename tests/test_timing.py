# amaranth: UnusedElaboratable=no
"""The timing model against amaranth.sim: II measured == estimated exactly at zero stalls, on every
folding tried; latency exact for chains of Dense layers, within timing.latency_bound with convolutions
and pooling. Random small networks and foldings (the IR directly: no torch)."""
import numpy as np
import pytest

from qloom.compiler import ir
from qloom.hdl import folding, timing
from qloom.hdl.kernels import kernel_for
from qloom.hdl.streams import divisors


def _dense_stack(rng, nodes, cur, k, layers):
    for j in range(layers):
        n = int(rng.choice([2, 4, 6, 8]))
        kind = rng.choice(["bip", "tern", "int3"])
        if kind == "bip":
            w, wt = rng.choice([-1, 1], size=(n, k)), ir.Bipolar
        elif kind == "tern":
            w, wt = rng.integers(-1, 2, size=(n, k)), ir.Int(2)
        else:
            w, wt = rng.integers(-4, 4, size=(n, k)), ir.Int(3)
        nodes.append(ir.Dense(f"d{j}", [cur], f"d{j}o", weight=w, wtype=wt))
        cur = f"d{j}o"
        tail = rng.choice(["none", "bip", "int", "requant"])
        if tail == "bip":
            t = rng.integers(-2, 3, size=(n, 1))
            nodes.append(ir.MultiThreshold(f"t{j}", [cur], f"t{j}o", thresholds=t, out_type=ir.Bipolar, base=-1))
            cur = f"t{j}o"
        elif tail == "int":
            t = np.sort(rng.integers(-k, k + 1, size=(n, 3)), axis=1)
            nodes.append(ir.MultiThreshold(f"t{j}", [cur], f"t{j}o", thresholds=t, out_type=ir.Int(2, False),
                                           base=0))
            cur = f"t{j}o"
        elif tail == "requant":
            nodes.append(ir.Requantize(f"r{j}", [cur], f"r{j}o", mult=np.array([3]), shift=2, offset=None,
                                       rounding="half_up", out_type=ir.Int(4, True)))
            cur = f"r{j}o"
        k = n
    return cur


def random_mlp(rng):
    k = int(rng.choice([2, 4, 6, 8, 12, 16]))
    xt = ir.Bipolar if rng.random() < 0.4 else ir.Int(int(rng.integers(1, 5)), bool(rng.random() < 0.5))
    nodes = []
    cur = _dense_stack(rng, nodes, "x", k, int(rng.integers(1, 4)))
    if rng.random() < 0.3:
        nodes.append(ir.ArgMax("am", [cur], "amo"))
        cur = "amo"
    return ir.Graph("x", ir.TensorType((k,), xt), nodes, cur)


def random_cnn(rng):
    h = w = int(rng.integers(4, 8))
    c = int(rng.choice([1, 2, 3, 4]))
    xt = ir.Bipolar if rng.random() < 0.3 else ir.Int(int(rng.integers(2, 5)), False)
    nodes, cur, shape, bip = [], "x", (h, w, c), xt is ir.Bipolar
    for i in range(int(rng.integers(1, 3))):
        k = int(rng.choice([1, 2, 3]))
        s = int(rng.choice([1, 2]))
        p = int(rng.choice([0, 1])) if k > 1 else 0
        if shape[0] + 2 * p < k or shape[1] + 2 * p < k:
            break
        oc = int(rng.choice([2, 3, 4]))
        wt = rng.choice([-1, 1], size=(oc, k, k, shape[2]))
        nodes.append(ir.Conv2d(f"c{i}", [cur], f"c{i}o", weight=wt, wtype=ir.Bipolar, stride=(s, s), padding=(p, p),
                               pad_value=1 if bip else 0))
        shape = ((shape[0] + 2 * p - k) // s + 1, (shape[1] + 2 * p - k) // s + 1, oc)
        t = rng.integers(-2, 3, size=(oc, 1))
        nodes.append(ir.MultiThreshold(f"ct{i}", [f"c{i}o"], f"ct{i}o", thresholds=t, out_type=ir.Bipolar, base=-1))
        cur, bip = f"ct{i}o", True
        if min(shape[:2]) >= 2 and rng.random() < 0.4:
            nodes.append(ir.MaxPool2d(f"p{i}", [cur], f"p{i}o", kernel=(2, 2), stride=(2, 2)))
            cur, shape = f"p{i}o", (shape[0] // 2, shape[1] // 2, shape[2])
    nodes.append(ir.Flatten("fl", [cur], "flo"))
    cur = _dense_stack(rng, nodes, "flo", int(np.prod(shape)), int(rng.integers(1, 3)))
    return ir.Graph("x", ir.TensorType((h, w, c), xt), nodes, cur)


def random_folding(rng, g):
    types = g.validate()
    f = {}
    for n in folding.foldable_layers(g):
        nn_, kk, _ = kernel_for(n).space(n, types)
        f[n.name] = {"pe": int(rng.choice(divisors(nn_))), "simd": int(rng.choice(divisors(kk)))}
    return f


def frames(rng, g, n=4):
    t = g.input_type
    if t.dtype is ir.Bipolar:
        return rng.choice([-1, 1], size=(n,) + t.shape)
    return rng.integers(t.dtype.min, t.dtype.max + 1, size=(n,) + t.shape)


@pytest.mark.parametrize("seed", range(24))
def test_mlp_ii_and_latency_exact(seed):
    rng = np.random.default_rng(seed)
    g = random_mlp(rng)
    f = random_folding(rng, g)
    assert timing.latency_bound(g, f) == (0.0, 0)
    m = timing.check(g, f, frames(rng, g))
    assert m["ii"] == m["ii_estimate"] and m["latency"] == m["latency_estimate"]


@pytest.mark.parametrize("seed", range(10))
def test_cnn_ii_exact_latency_bounded(seed):
    rng = np.random.default_rng(100 + seed)
    g = random_cnn(rng)
    f = random_folding(rng, g)
    timing.check(g, f, frames(rng, g))


def test_issue18_cases():
    """Dense with K/SIMD <= 2 and N/PE = 1 (was half rate behind a 2-deep FIFO), and a strided 1x1 conv
    (was 132 cycles for an estimated 108)."""
    rng = np.random.default_rng(18)
    for k, n, simd, want in ((4, 2, 2, 2), (1, 1, 1, 1), (4, 1, 2, 2)):
        g = ir.Graph("x", ir.TensorType((k,), ir.Int(4, False)),
                     [ir.Dense("d", ["x"], "y", weight=rng.integers(-1, 2, size=(n, k)), wtype=ir.Int(2))], "y")
        m = timing.check(g, {"d": {"pe": n, "simd": simd}}, frames(rng, g))
        assert m["ii"] == want
    w = rng.choice([-1, 1], size=(3, 1, 1, 4))
    g = ir.Graph("x", ir.TensorType((5, 5, 4), ir.Int(3, False)),
                 [ir.Conv2d("c", ["x"], "y", weight=w, wtype=ir.Bipolar, stride=(2, 2))], "y")
    m = timing.check(g, {"c": {"pe": 1, "simd": 1}}, frames(rng, g))
    assert m["ii"] == 108 and m["latency"] == m["latency_estimate"]


def test_check_raises_on_a_wrong_model(monkeypatch):
    rng = np.random.default_rng(0)
    g = random_mlp(rng)
    f = random_folding(rng, g)
    monkeypatch.setattr(folding.Pipeline, "latency", property(lambda self: 1))
    with pytest.raises(timing.TimingMismatch, match="latency"):
        timing.check(g, f, frames(rng, g))


@pytest.mark.parametrize("opts", [
    {"banks": 1, "mem_reg": True, "weights": "logic", "ibuf": "logic"},     # two-level LUT-ROM, one bank
    {"banks": 1, "weights": "block", "ibuf": "block"},
    {"mem_reg": True, "weights": "block", "ibuf": "distributed"},
])
def test_board_options_keep_ii_latency_and_bits(opts):
    """The per-layer options boards/fit.py sets (one buffer bank on the first layer, the memory register,
    where the memories go): II and latency exact, outputs bit-exact under random stalls."""
    from hw import simulate
    from qloom.compiler import reference
    rng = np.random.default_rng(7)
    w1, w2 = rng.choice([-1, 1], size=(16, 96)), rng.choice([-1, 1], size=(8, 16))
    t1 = rng.integers(-6, 7, size=(16, 1))
    g = ir.Graph("x", ir.TensorType((96,), ir.Bipolar), [
        ir.Dense("d0", ["x"], "a0", weight=w1, wtype=ir.Bipolar),
        ir.MultiThreshold("t0", ["a0"], "y0", thresholds=t1, out_type=ir.Bipolar, base=-1),
        ir.Dense("d1", ["y0"], "a1", weight=w2, wtype=ir.Bipolar)], "a1")
    second = {k: v for k, v in opts.items() if k != "banks"}
    f = {"d0": {"pe": 2, "simd": 8, **opts}, "d1": {"pe": 1, "simd": 4, **second}}   # 12 x 8 and 4 x 8 words
    x = frames(rng, g, 6)
    m = timing.check(g, f, x)
    assert m["latency"] == m["latency_estimate"]
    assert (simulate(g, f, x, stall_in=0.3, stall_out=0.4, seed=3) == reference.run(g, x)).all()


def test_banked_weight_rom_keeps_ii_latency_and_bits():
    """rom_bank (boards/fit.py on ECP5: a weight memory deeper than one row of DP16KDs) in a whole
    accelerator: 768 words in banks of 256, II and latency exact, bit-exact under random stalls."""
    from hw import simulate
    from qloom.compiler import reference
    rng = np.random.default_rng(8)
    w1, w2 = rng.choice([-1, 1], size=(16, 96)), rng.choice([-1, 1], size=(8, 16))
    g = ir.Graph("x", ir.TensorType((96,), ir.Bipolar), [
        ir.Dense("d0", ["x"], "a0", weight=w1, wtype=ir.Bipolar),
        ir.MultiThreshold("t0", ["a0"], "y0", thresholds=rng.integers(-6, 7, size=(16, 1)), out_type=ir.Bipolar,
                          base=-1),
        ir.Dense("d1", ["y0"], "a1", weight=w2, wtype=ir.Bipolar)], "a1")
    opts = {"mem_reg": True, "weights": "block", "ibuf": "block"}
    f = {"d0": {"pe": 1, "simd": 2, "rom_bank": 256, **opts}, "d1": {"pe": 1, "simd": 4, **opts}}
    assert [s.unit.rom_banks for s in folding.plan(g, f) if s.kind == "mvu"] == [3, 1]
    x = frames(rng, g, 4)
    m = timing.check(g, f, x)
    assert m["latency"] == m["latency_estimate"]
    assert (simulate(g, f, x, stall_in=0.3, stall_out=0.4, seed=4) == reference.run(g, x)).all()
