# amaranth: UnusedElaboratable=no
"""Whole accelerators in amaranth.sim: bit-exact with the reference under random stalls; II as estimated."""
import numpy as np
import pytest

import qloom
from qloom.hdl import folding as folding_mod
from qloom.examples import tfc

from hw import measured_ii, simulate

NETS = {
    "tfc-w1a1": lambda: tfc.build(1, 1),
    "tfc-w2a2": lambda: tfc.build(2, 2),
    "tfc-w4a4": lambda: tfc.build(4, 4),
    "mlp64-w2a2": lambda: tfc.build(2, 2, n_in=64),
}
_cache = {}


def compiled(name):
    if name not in _cache:
        model, x = NETS[name]()
        _cache[name] = (qloom.compile(model, x), x)
    return _cache[name]


def frames(acc, x, n, seed):
    rng = np.random.default_rng(seed)
    xi = acc.quantize_input(x)
    idx = rng.integers(0, xi.shape[0], size=n)
    return xi[idx]


@pytest.mark.parametrize("name,target_ii", [("tfc-w1a1", 64), ("tfc-w2a2", 128), ("tfc-w4a4", 256),
                                            ("mlp64-w2a2", 16)])
def test_bit_exact_with_stalls(name, target_ii):
    acc, x = compiled(name)
    f = folding_mod.fold(acc.graph, target_ii=target_ii)
    xi = frames(acc, x, 100, seed=1)
    got = simulate(acc.graph, f, xi, stall_in=0.3, stall_out=0.4, seed=2)
    want = acc.reference(xi)
    assert got.shape == want.shape
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} mismatches, first at frame/element {bad[0]}: got {got[tuple(bad[0])]}, " \
                          f"want {want[tuple(bad[0])]}"


@pytest.mark.parametrize("name,targets", [("mlp64-w2a2", [None, 256, 32, 4]),
                                          ("tfc-w1a1", [2048, 256, 49])])
def test_measured_ii_equals_estimate(name, targets):
    acc, x = compiled(name)
    for t in targets:
        f = folding_mod.fold(acc.graph, target_ii=t)
        e = folding_mod.estimate(acc.graph, f)
        est = e["ii"]
        ii, times = measured_ii(acc.graph, f, frames(acc, x, 4, seed=3))
        assert abs(ii - est) <= 1, f"target {t}: folding {f}: measured II {ii}, estimated {est}"
        lat = times[len(times) // 4 - 1] + 1            # frame 0: first input beat at cycle 0
        assert abs(lat - e["latency"]) <= 0.05 * lat + 10, f"target {t}: latency {lat}, estimated {e['latency']}"


@pytest.mark.slow
@pytest.mark.parametrize("name,targets", [("tfc-w1a1", [None]), ("tfc-w2a2", [None, 1024, 64]),
                                          ("tfc-w4a4", [None, 512, 49])])
def test_measured_ii_tfc_slow(name, targets):
    """Fully folded TFC runs ~50k cycles per frame in amaranth.sim: slow."""
    test_measured_ii_equals_estimate(name, targets)


def test_argmax_accelerator_bit_exact():
    model, x = tfc.build(2, 2, n_in=64)
    acc = qloom.compile(model, x, argmax=True)
    f = folding_mod.fold(acc.graph, target_ii=32)
    xi = frames(acc, x, 100, seed=5)
    assert (simulate(acc.graph, f, xi, seed=6) == acc.reference(xi)).all()
