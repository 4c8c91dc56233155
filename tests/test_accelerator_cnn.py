# amaranth: UnusedElaboratable=no
"""CNN accelerators in amaranth.sim: sliding windows + MVU, pooling; bit-exact with stalls, II as estimated."""
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import qloom
from qloom.hdl import folding as folding_mod

from cnns import random_cnn
from hw import measured_ii, simulate
from test_frontend_cnn import calibrate_cnn, images


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), c_in=st.integers(1, 3), hw=st.integers(5, 8),
       chans=st.lists(st.sampled_from([2, 4]), min_size=1, max_size=2),
       wbits=st.sampled_from(["bipolar", "ternary", 2, 4]), abits=st.sampled_from([1, 2]),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from([0, 1]), groups=st.sampled_from([1, 2]),
       pool=st.sampled_from(["max", "avg", None]), in_bits=st.sampled_from([1, 8]),
       target=st.sampled_from([None, 64, 8]))
def test_random_cnn_hardware_bit_exact(seed, c_in, hw, chans, wbits, abits, stride, padding, groups, pool,
                                       in_bits, target):
    try:
        model = random_cnn(seed, c_in, hw, tuple(chans), wbits, abits, True, True, stride, padding, groups,
                           pool, in_bits, dense=4)
    except ValueError:
        assume(False)
    x = images(seed, 4, c_in, hw, bipolar=in_bits == 1)
    calibrate_cnn(model, x)
    acc = qloom.compile(model, x)
    f = folding_mod.fold(acc.graph, target_ii=target)
    xi = acc.quantize_input(x[:3])
    got = simulate(acc.graph, f, xi, stall_in=0.3, stall_out=0.3, seed=seed % 1000)
    assert (got == acc.reference(xi)).all()


@pytest.fixture(scope="module")
def digits_cnn():
    # the digits-cnn topology; bit-exactness and II do not need the full 30 training epochs
    from qloom.examples import cnv
    model, x = cnv.digits_cnn(epochs=3)
    return qloom.compile(model, x), x


def test_digits_cnn_bit_exact_with_stalls(digits_cnn):
    acc, x = digits_cnn
    f = folding_mod.fold(acc.graph, target_ii=256)
    xi = acc.quantize_input(x[:20])
    got = simulate(acc.graph, f, xi, stall_in=0.3, stall_out=0.4, seed=3)
    assert (got == acc.reference(xi)).all()


@pytest.mark.parametrize("target", [1024, 256])
def test_digits_cnn_measured_ii(digits_cnn, target):
    acc, x = digits_cnn
    f = folding_mod.fold(acc.graph, target_ii=target)
    est = folding_mod.estimate(acc.graph, f)["ii"]
    ii, _ = measured_ii(acc.graph, f, acc.quantize_input(x[:4]))
    assert abs(ii - est) <= max(1, est // 100), f"folding {f}: measured {ii}, estimated {est}"


@pytest.mark.parametrize("groups,fold", [(4, {"pe": 2, "simd": 2}), (2, {"pe": 2, "simd": 4})])
def test_grouped_conv_stores_nonzero_words(groups, fold):
    """A grouped (not depthwise) conv stays on the matrix unit with only its non-zero words stored:
    a G-th of the zero-expanded ROM (plus one zero word), bit-exact with stalls, II as estimated."""
    model = random_cnn(7, 8, 6, (8,), 4, 2, True, True, 1, 1, groups, None, 8, dense=4)
    x = images(7, 4, 8, 6)
    calibrate_cnn(model, x)
    acc = qloom.compile(model, x)
    conv = next(n for n in acc.graph.nodes if type(n).__name__ == "Conv2d")
    f = folding_mod.fold(acc.graph)
    f[conv.name] = dict(fold)
    mvu = next(s for s in folding_mod.plan(acc.graph, f) if s.kind == "mvu" and s.name == conv.name)
    k = 3 * 3 * 8
    assert mvu.unit.skip_zero
    assert mvu.unit.rom_depth == (8 // fold["pe"]) * (k // fold["simd"]) // groups + 1
    xi = acc.quantize_input(x[:3])
    got = simulate(acc.graph, f, xi, stall_in=0.3, stall_out=0.3, seed=5)
    assert (got == acc.reference(xi)).all()
    ii, _ = measured_ii(acc.graph, f, xi)
    assert ii == folding_mod.estimate(acc.graph, f)["ii"]
