# amaranth: UnusedElaboratable=no
"""The graph-shaped example networks end to end: digits-resnet and digits-dwsep (QAT-trained for a few
seconds, once per session) compile exactly, run bit-exact in amaranth.sim and on Verilator with random
stalls at the estimated II; the depthwise net needs far fewer lanes and weight bits than the
zero-expanded form at the same II; ResNet-8 on Verilator (slow)."""
import functools

import numpy as np
import pytest

import qloom
from qloom.compiler import ir
from qloom.examples import digits, resnet
from qloom.hdl import folding
from qloom.hdl.kernels.vvu import zero_expanded
from qloom.sim import available
from qloom.sim import simulate as sim_run

from hw import measured_ii, simulate

VERILATOR, WHY = available("verilator")
needs_verilator = pytest.mark.skipif(not VERILATOR, reason=f"Verilator not available: {WHY}")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.lru_cache(maxsize=None)
def net(name):
    """(accelerator, float inputs): trained briefly; the examples train longer (qloom examples)."""
    model, x = {"digits-resnet": lambda: resnet.digits_resnet(epochs=3),
                "digits-dwsep": lambda: resnet.digits_dwsep(epochs=4)}[name]()
    return qloom.compile(model, x), x


@pytest.fixture(scope="module", autouse=True)
def sim_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QLOOM_SIM_CACHE", str(tmp_path_factory.mktemp("sim_cache")))
        yield


@pytest.mark.parametrize("name,kinds", [("digits-resnet", {"Add": 2}), ("digits-dwsep", {"Conv2d": 5})])
def test_compiles_exactly_and_learns(name, kinds):
    acc, x = net(name)
    assert acc.check_fidelity.exact
    for kind, n in kinds.items():
        assert sum(node.kind == kind for node in acc.graph.nodes) == n
    _, _, xte, yte = digits.load()
    labels = acc.predict(xte.reshape(-1, 1, 8, 8)).argmax(axis=1)
    assert (labels == yte.numpy()).mean() > 0.5           # a few seconds of QAT already classify


@pytest.mark.parametrize("name,target", [("digits-resnet", 1000), ("digits-dwsep", 300)])
def test_bit_exact_with_stalls_at_the_estimated_ii(name, target):
    acc, x = net(name)
    f = folding.fold(acc.graph, target_ii=target)
    xi = acc.quantize_input(x[:4])
    got = simulate(acc.graph, f, xi[:3], stall_in=0.6, stall_out=0.6, seed=5, idle_cycles=5000)
    assert np.array_equal(got, acc.reference(xi[:3]))
    ii, _ = measured_ii(acc.graph, f, xi[:3])
    assert ii == folding.estimate(acc.graph, f)["ii"]


@pytest.mark.parametrize("target", [4000, 1200])
def test_depthwise_uses_4x_fewer_lanes_and_weight_bits(target):
    acc, _ = net("digits-dwsep")
    g, gx = acc.graph, zero_expanded(acc.graph)
    dw_names = {n.name for n in g.nodes if isinstance(n, ir.Conv2d) and n.groups > 1}
    native = folding.plan(g, folding.fold(g, target_ii=target))
    zero = folding.plan(gx, folding.fold(gx, target_ii=target))
    assert native.ii == zero.ii                            # the same II ...
    vv = [s for s in native if s.name in dw_names and s.kind == "vvu"]
    mv = [s for s in zero if s.name in dw_names and s.kind == "mvu"]
    assert len(vv) == len(mv) == 2
    lanes_v, lanes_m = sum(s.pe for s in vv), sum(s.pe * s.simd for s in mv)
    bits_v, bits_m = sum(s.weight_bits for s in vv), sum(s.weight.size * s.wtype.bits for s in mv)
    assert lanes_m >= 4 * lanes_v and bits_m >= 4 * bits_v, (lanes_v, lanes_m, bits_v, bits_m)


@needs_verilator
@pytest.mark.parametrize("name,target", [("digits-resnet", 1000),
                                         pytest.param("digits-dwsep", 300, marks=pytest.mark.slow)])
def test_verilator_bit_exact_with_stalls(name, target, tmp_path):
    acc, x = net(name)
    acc.fold(target_ii=target)
    acc.save(tmp_path / name, x_float=x[:24])
    r = sim_run(tmp_path / name, stall_prob=0.3, seed=2)
    assert r.bit_exact and r.frames == 24, r.verdict
    r0 = sim_run(tmp_path / name, stall_prob=0.0)
    assert r0.bit_exact and r0.ii_measured == r0.ii_estimated, (r0.ii_measured, r0.ii_estimated)


@pytest.mark.slow
@needs_verilator
@pytest.mark.parametrize("name,target", [("resnet8", 12_000), ("resnet8-w1a1", 12_000)])
def test_resnet8_verilator(name, target, tmp_path):
    from qloom.examples import build
    model, x = build(name)
    acc = qloom.compile(model, x)
    acc.fold(target_ii=target)
    acc.save(tmp_path / name, x_float=x[:8])
    r = sim_run(tmp_path / name, stall_prob=0.3, seed=1)
    assert r.bit_exact and r.frames == 8, r.verdict
    r0 = sim_run(tmp_path / name, stall_prob=0.0)
    assert r0.bit_exact and r0.ii_measured == r0.ii_estimated, (r0.ii_measured, r0.ii_estimated)
