# amaranth: UnusedElaboratable=no
"""ThresholdUnit against reference._multithreshold, under random valid/ready stalls."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams

from streamtb import handshakes, run_with_reset
from qloom.hdl.threshold import ThresholdUnit


def reference_out(t, out_type, base, x):
    """x (rows, C) -> the MultiThreshold of every row."""
    node = ir.MultiThreshold("mt", ["x"], "y", thresholds=t, out_type=out_type, base=base)
    return reference._multithreshold(node, x, None)


@st.composite
def cases(draw, max_k=15):
    in_bits = draw(st.integers(1, 16))
    in_type = ir.Int(in_bits, draw(st.booleans()))
    pe = draw(st.sampled_from([1, 2, 3, 4]))
    c = 1 if draw(st.integers(0, 4)) == 0 else pe * draw(st.integers(1, 4))
    out = draw(st.sampled_from(["bipolar", 1, 2, 4, 8]))
    if out == "bipolar":
        out_type, k, base = ir.Bipolar, 1, -1
    else:
        out_type = ir.Int(out, draw(st.booleans()))
        k = draw(st.integers(0, min(max_k, out_type.max - out_type.min)))
        base = draw(st.integers(out_type.min, out_type.max - k))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Thresholds around and beyond the input range, with duplicates.
    lo, hi = in_type.min - 3, in_type.max + 3
    pool = rng.integers(lo, hi + 1, size=max(1, k // 2 + 1))
    dups = draw(st.booleans())
    t = np.sort(rng.choice(pool, size=(c, k)) if dups else rng.integers(lo, hi + 1, (c, k)), axis=1)
    return in_type, out_type, base, pe, t, seed


def check(case, stall_in, stall_out):
    in_type, out_type, base, pe, t, seed = case
    rng = np.random.default_rng(seed)
    c = t.shape[0] if t.shape[0] > 1 else pe * int(rng.integers(1, 4))
    frames = int(rng.integers(2, 6))
    x = rng.integers(in_type.min, in_type.max + 1, size=(frames, c))
    # hit the thresholds themselves and their neighbours
    near = np.clip(t.reshape(-1)[:, None] + np.array([-1, 0, 1]), in_type.min, in_type.max).reshape(-1)
    if near.size:
        x.reshape(-1)[:min(near.size, x.size)] = rng.permutation(near)[:x.size]
    dut = ThresholdUnit(t, in_type, out_type, base, pe)
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got = streams.run_stream(dut, dut.i, dut.o, beats, len(beats), stall_in=stall_in,
                             stall_out=stall_out, seed=seed, max_cycles=50_000)
    assert streams.from_beats(out_type, got, pe) == reference_out(t, out_type, base, x).reshape(-1).tolist()


@settings(max_examples=40, deadline=None)
@given(cases(), st.floats(0.3, 0.5), st.floats(0.3, 0.5))
def test_threshold_matches_reference(case, stall_in, stall_out):
    check(case, stall_in, stall_out)


def test_threshold_8bit_output_full_set():
    """255 thresholds (an 8-bit activation), folded with ROMs, some outside the input range."""
    rng = np.random.default_rng(1)
    in_type, out_type, pe, c = ir.Int(12, True), ir.Int(8, False), 2, 6
    t = np.sort(rng.integers(-2100, 2100, size=(c, 255)), axis=1)
    x = rng.integers(in_type.min, in_type.max + 1, size=(3, c))
    dut = ThresholdUnit(t, in_type, out_type, 0, pe)
    assert dut.latency == 2
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got = streams.run_stream(dut, dut.i, dut.o, beats, len(beats), stall_in=0.4, stall_out=0.4,
                             max_cycles=50_000)
    assert streams.from_beats(out_type, got, pe) == reference_out(t, out_type, 0, x).reshape(-1).tolist()


@pytest.mark.parametrize("fold", [1, 4])
def test_threshold_throughput_and_latency(fold):
    rng = np.random.default_rng(2)
    in_type, pe = ir.Int(8, True), 2
    t = np.sort(rng.integers(-128, 128, size=(pe * fold, 3)), axis=1)
    x = rng.integers(-128, 128, size=(10, pe * fold))
    dut = ThresholdUnit(t, in_type, ir.Int(2, False), 0, pe)
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got, t_in, t_out = handshakes(dut, beats, len(beats))
    want = reference_out(t, ir.Int(2, False), 0, x).reshape(-1).tolist()
    assert streams.from_beats(ir.Int(2, False), got, pe) == want
    assert np.all(np.diff(t_in) == 1) and np.all(np.diff(t_out) == 1)   # one beat per cycle
    assert t_out[0] - t_in[0] == dut.latency == (2 if fold > 1 else 1)


@pytest.mark.parametrize("out_type,base,k", [(ir.Int(2, False), 0, 3), (ir.Bipolar, -1, 1)])
def test_threshold_reset_mid_frame(out_type, base, k):
    rng = np.random.default_rng(3)
    in_type, pe, c = ir.Int(6, True), 2, 6
    t = np.sort(rng.integers(-40, 40, size=(c, k)), axis=1)
    dut = ThresholdUnit(t, in_type, out_type, base, pe)
    x = rng.integers(in_type.min, in_type.max + 1, size=(4, c))
    pre = streams.to_beats(in_type, rng.integers(-32, 32, size=8), pe)   # 4 beats: 1 1/3 frames
    beats = streams.to_beats(in_type, x.reshape(-1), pe)
    got = run_with_reset(dut, pre, beats, len(beats))
    assert streams.from_beats(out_type, got, pe) == reference_out(t, out_type, base, x).reshape(-1).tolist()


def test_threshold_shared_row_uses_no_rom():
    dut = ThresholdUnit(np.array([[-5, 0, 5]]), ir.Int(4, True), ir.Int(2, False), 0, 4)
    assert dut.latency == 1
    x = np.arange(-8, 8).reshape(4, 4)
    beats = streams.to_beats(ir.Int(4, True), x.reshape(-1), 4)
    got = streams.run_stream(dut, dut.i, dut.o, beats, 4, max_cycles=50_000)
    want = np.searchsorted([-5, 0, 5], x.reshape(-1), "right").tolist()
    assert streams.from_beats(ir.Int(2, False), got, 4) == want


def test_threshold_constructor_errors():
    t = np.zeros((6, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"valid PE values: \[1, 2, 3, 6\]"):
        ThresholdUnit(t, ir.Int(8), ir.Int(2, False), 0, 4)
    with pytest.raises(ValueError, match="not sorted"):
        ThresholdUnit(np.array([[3, 1]]), ir.Int(8), ir.Int(2, False), 0, 1)
    with pytest.raises(ValueError, match="do not fit"):
        ThresholdUnit(t, ir.Int(8), ir.Int(2, False), 1, 1)
    with pytest.raises(ValueError, match="Bipolar"):
        ThresholdUnit(t, ir.Int(8), ir.Bipolar, -1, 1)
    with pytest.raises(ValueError, match="Int accumulator"):
        ThresholdUnit(t, ir.Bipolar, ir.Int(2, False), 0, 1)
    with pytest.raises(ValueError, match=r"\(C, K\)"):
        ThresholdUnit(np.zeros(3), ir.Int(8), ir.Int(2, False), 0, 1)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(cases(max_k=255), st.floats(0.3, 0.5), st.floats(0.3, 0.5))
def test_threshold_matches_reference_many(case, stall_in, stall_out):
    check(case, stall_in, stall_out)
