# amaranth: UnusedElaboratable=no
"""AddUnit against reference._add: random element types, coefficients and beat widths, random stalls on
all three ports, reset mid-stream."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams
from qloom.hdl.add import AddUnit

from streamtb import drive_ports

TYPES = [ir.Bipolar, ir.Int(1, False), ir.Int(2, False), ir.Int(3, True), ir.Int(4, True), ir.Int(6, False)]


def values(rng, dtype, n):
    if isinstance(dtype, ir.BipolarType):
        return rng.choice([-1, 1], size=n)
    v = rng.integers(dtype.min, dtype.max + 1, size=n)
    v[:2] = dtype.min, dtype.max                    # the extremes, so the widest sums occur
    return v


def check(ta, tb, coeffs, n, frames, stall_in, stall_out, seed, junk=None):
    rng = np.random.default_rng(seed)
    node = ir.Add("add", ["a", "b"], "y", coeffs=coeffs)
    size = n * frames
    a, b = values(rng, ta, size), values(rng, tb, size)
    out_t = node.infer([ir.TensorType((size,), ta), ir.TensorType((size,), tb)]).dtype
    dut = AddUnit(ta, tb, out_t, coeffs, n)
    got = drive_ports(dut, {"i0": streams.to_beats(ta, a, n), "i1": streams.to_beats(tb, b, n)},
                      {"o": size // n}, stall_in=stall_in, stall_out=stall_out, seed=seed, junk_cycles=junk)
    want = reference.OPS[ir.Add](node, a, b, None, None)
    assert streams.from_beats(out_t, got["o"], n) == want.tolist()


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(TYPES), st.sampled_from(TYPES), st.sampled_from([(1, 1), (1, 2), (4, 1), (1, -1), (-2, 3)]),
       st.sampled_from([1, 2, 4]), st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.integers(0, 2**16))
def test_add_matches_reference(ta, tb, coeffs, n, p_in, p_out, seed):
    check(ta, tb, coeffs, n, 12, {"i0": p_in, "i1": 0.9 - p_in}, p_out, seed)


@pytest.mark.parametrize("junk", [0, 5, 23])
def test_add_reset_mid_stream(junk):
    check(ir.Int(3, True), ir.Int(2, False), (1, 2), 2, 20, 0.4, 0.5, seed=junk, junk=junk)


def test_add_one_beat_per_cycle():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 40), rng.integers(-4, 4, 40)
    dut = AddUnit(ir.Int(2, False), ir.Int(3, True), ir.Int(4, True), (1, 1), 1)
    got = drive_ports(dut, {"i0": streams.to_beats(ir.Int(2, False), a, 1), "i1": streams.to_beats(ir.Int(3), b, 1)},
                      {"o": 40}, stall_in=0, stall_out=0, max_cycles=41)     # latency 1, then a beat per cycle
    assert streams.from_beats(ir.Int(4, True), got["o"], 1) == (a + b).tolist()


def test_add_refuses_a_narrow_output():
    with pytest.raises(ValueError, match=r"cannot hold the sums -8\.\.9"):
        AddUnit(ir.Int(3, True), ir.Int(2, False), ir.Int(4, True), (2, 1), 1)
