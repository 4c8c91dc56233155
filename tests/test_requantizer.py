# amaranth: UnusedElaboratable=no
"""Requantizer against reference._requantize, under random valid/ready stalls."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams

from streamtb import handshakes, run_with_reset
from qloom.hdl.requantizer import Requantizer


def reference_out(mult, shift, offset, rounding, in_type, out_type, x):
    """x (rows, C) -> the Requantize of every row."""
    node = ir.Requantize("rq", ["x"], "y", mult=mult, shift=shift, offset=offset, rounding=rounding,
                         out_type=out_type)
    node.infer([ir.TensorType(x.shape[1:], in_type)])
    return reference._requantize(node, x, ir.TensorType(x.shape[1:], in_type))


@st.composite
def cases(draw):
    in_type = ir.Int(draw(st.integers(1, 16)), draw(st.booleans()))
    out_type = ir.Int(draw(st.sampled_from([1, 2, 4, 8, 12, 16])), draw(st.booleans()))
    pe = draw(st.sampled_from([1, 2, 3, 4]))
    c = pe * draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mbits = draw(st.integers(0, 20))
    n_mult = 1 if draw(st.booleans()) else c
    mult = rng.integers(-(1 << mbits) if draw(st.booleans()) else 0, (1 << mbits) + 1, size=n_mult)
    # a shift that lands the result near the output range (most values unclamped), sometimes not
    shift = int(np.clip(in_type.bits + mbits - out_type.bits + draw(st.integers(-4, 4)), 0, 62))
    obits = draw(st.integers(0, 24))
    offset = rng.integers(-(1 << obits), (1 << obits) + 1, size=1 if draw(st.booleans()) else c)
    rounding = draw(st.sampled_from(ir.ROUNDINGS))
    return mult, shift, offset, rounding, in_type, out_type, pe, c, seed


def check(case, stall_in, stall_out, frames=4):
    mult, shift, offset, rounding, in_type, out_type, pe, c, seed = case
    rng = np.random.default_rng(seed)
    x = rng.integers(in_type.min, in_type.max + 1, size=(frames, c))
    x[0] = np.where(rng.random(c) < 0.5, in_type.min, in_type.max)     # the extremes
    dut = Requantizer(mult, shift, offset, rounding, in_type, out_type, pe)
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got = streams.run_stream(dut, dut.i, dut.o, beats, len(beats), stall_in=stall_in,
                             stall_out=stall_out, seed=seed, max_cycles=50_000)
    want = reference_out(mult, shift, offset, rounding, in_type, out_type, x)
    assert streams.from_beats(out_type, got, pe) == want.reshape(-1).tolist()


@settings(max_examples=40, deadline=None)
@given(cases(), st.floats(0.3, 0.5), st.floats(0.3, 0.5))
def test_requantizer_matches_reference(case, stall_in, stall_out):
    check(case, stall_in, stall_out)


@pytest.mark.parametrize("rounding", ir.ROUNDINGS)
def test_requantizer_ties(rounding):
    """Every residue of a small shift, so every tie (x.5, positive and negative) is hit."""
    in_type, out_type = ir.Int(6, True), ir.Int(4, True)
    x = np.arange(in_type.min, in_type.max + 1).reshape(-1, 4)
    mult, offset = np.array([1, 1, 3, -1]), np.array([0, 1, -2, 0])
    dut = Requantizer(mult, 2, offset, rounding, in_type, out_type, 2)
    beats = streams.to_beats(in_type, x.reshape(-1), 2)
    got = streams.run_stream(dut, dut.i, dut.o, beats, len(beats), stall_in=0.4, stall_out=0.4,
                             max_cycles=50_000)
    want = reference_out(mult, 2, offset, rounding, in_type, out_type, x)
    assert streams.from_beats(out_type, got, 2) == want.reshape(-1).tolist()


@pytest.mark.parametrize("rounding", ir.ROUNDINGS)
def test_requantizer_wide_values(rounding):
    """Products past 32 bits with a large shift; then a shift wider than acc * mult + offset."""
    in_type, out_type = ir.Int(16, True), ir.Int(8, True)
    mult, offset = np.array([(1 << 30) + 7, -(1 << 29) - 3]), np.array([1 << 40, -(1 << 41)])
    check((mult, 38, offset, rounding, in_type, out_type, 1, 2, 5), 0.4, 0.4, frames=16)
    mult, offset = np.array([3, -3]), np.array([-16, 15])
    check((mult, 7, offset, rounding, ir.Int(4, True), ir.Int(2, True), 2, 2, 6), 0.4, 0.4, frames=16)


@pytest.mark.parametrize("per_channel", [False, True])
def test_requantizer_throughput_and_latency(per_channel):
    rng = np.random.default_rng(2)
    in_type, out_type, pe, c = ir.Int(10, True), ir.Int(8, False), 2, 6
    mult = rng.integers(1, 100, size=c if per_channel else 1)
    dut = Requantizer(mult, 6, 3, "half_up", in_type, out_type, pe)
    x = rng.integers(in_type.min, in_type.max + 1, size=(10, c))
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got, t_in, t_out = handshakes(dut, beats, len(beats))
    assert streams.from_beats(out_type, got, pe) == \
        reference_out(mult, 6, 3, "half_up", in_type, out_type, x).reshape(-1).tolist()
    assert np.all(np.diff(t_in) == 1) and np.all(np.diff(t_out) == 1)   # one beat per cycle
    assert t_out[0] - t_in[0] == dut.latency == (3 if per_channel else 2)


def test_requantizer_reset_mid_frame():
    rng = np.random.default_rng(3)
    in_type, out_type, pe, c = ir.Int(8, True), ir.Int(4, True), 2, 6
    mult, offset = rng.integers(-20, 20, size=c), rng.integers(-50, 50, size=c)
    dut = Requantizer(mult, 5, offset, "half_even", in_type, out_type, pe)
    x = rng.integers(in_type.min, in_type.max + 1, size=(4, c))
    pre = streams.to_beats(in_type, rng.integers(-128, 128, size=8), pe)   # 4 beats: 1 1/3 frames
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got = run_with_reset(dut, pre, beats, len(beats))
    want = reference_out(mult, 5, offset, "half_even", in_type, out_type, x)
    assert streams.from_beats(out_type, got, pe) == want.reshape(-1).tolist()


def test_requantizer_constructor_errors():
    i8, u4 = ir.Int(8), ir.Int(4, False)
    with pytest.raises(ValueError, match=r"valid PE values: \[1, 2, 3, 6\]"):
        Requantizer(np.arange(6), 3, 0, "floor", i8, u4, 4)
    with pytest.raises(ValueError, match="one per channel"):
        Requantizer(np.arange(6), 3, np.arange(4), "floor", i8, u4, 1)
    with pytest.raises(ValueError, match="rounding"):
        Requantizer(1, 3, 0, "nearest", i8, u4, 1)
    with pytest.raises(ValueError, match="shift"):
        Requantizer(1, 63, 0, "floor", i8, u4, 1)
    with pytest.raises(ValueError, match="must be Int"):
        Requantizer(1, 3, 0, "floor", i8, ir.Bipolar, 1)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(cases(), st.floats(0.3, 0.5), st.floats(0.3, 0.5))
def test_requantizer_matches_reference_many(case, stall_in, stall_out):
    check(case, stall_in, stall_out, frames=8)
