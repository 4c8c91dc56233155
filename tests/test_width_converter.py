# amaranth: UnusedElaboratable=no
"""WidthConverter: the same elements in the same order, under random valid/ready stalls."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir
from qloom.hdl import streams

from streamtb import handshakes, run_with_reset
from qloom.hdl.width_converter import WidthConverter


dtypes = st.one_of(st.just(ir.Bipolar), st.builds(ir.Int, st.integers(1, 16), st.booleans()))


def elements(dtype, n, rng):
    if isinstance(dtype, ir.BipolarType):
        return rng.choice([-1, 1], size=n).tolist()
    return rng.integers(dtype.min, dtype.max + 1, size=n).tolist()


def check(dtype, n_in, n_out, frame, frames, stall_in, stall_out, seed):
    flat = elements(dtype, frame * frames, np.random.default_rng(seed))
    dut = WidthConverter(dtype, n_in, n_out, frame)
    got = streams.run_stream(dut, dut.i, dut.o, streams.to_beats(dtype, flat, n_in), len(flat) // n_out,
                             stall_in=stall_in, stall_out=stall_out, seed=seed, max_cycles=50_000)
    assert streams.from_beats(dtype, got, n_out) == flat


@settings(max_examples=40, deadline=None)
@given(dtypes, st.integers(1, 8), st.integers(1, 8), st.integers(1, 3), st.integers(2, 4),
       st.floats(0.3, 0.5), st.floats(0.3, 0.5), st.integers(0, 2**32 - 1))
def test_width_converter_keeps_the_stream(dtype, n_in, n_out, mul, frames, stall_in, stall_out, seed):
    check(dtype, n_in, n_out, math.lcm(n_in, n_out) * mul, frames, stall_in, stall_out, seed)


@pytest.mark.parametrize("n_in,n_out", [(4, 1), (1, 4), (3, 2), (2, 3), (4, 4), (6, 4), (4, 6), (5, 7)])
def test_width_converter_throughput(n_in, n_out):
    """No idle cycle on the slower side: max(frame/n_in, frame/n_out) cycles per frame."""
    dtype, frame, frames = ir.Int(5, True), 2 * math.lcm(n_in, n_out), 5
    flat = elements(dtype, frame * frames, np.random.default_rng(0))
    dut = WidthConverter(dtype, n_in, n_out, frame)
    got, t_in, t_out = handshakes(dut, streams.to_beats(dtype, flat, n_in), len(flat) // n_out)
    assert streams.from_beats(dtype, got, n_out) == flat
    per_frame = frame // n_out
    ends = t_out[per_frame - 1::per_frame]
    assert set(np.diff(ends).tolist()) == {max(frame // n_in, frame // n_out)}
    slow = t_in if n_in <= n_out else t_out
    assert np.all(np.diff(slow) == 1)
    # the first beat leaves the cycle after the input beat that completes it
    assert t_out[0] - t_in[-(-n_out // n_in) - 1] == dut.latency == 1


@pytest.mark.parametrize("n_in,n_out", [(3, 2), (1, 4), (4, 1), (2, 2)])
def test_width_converter_reset_mid_frame(n_in, n_out):
    dtype, frame = ir.Int(4, True), 2 * math.lcm(n_in, n_out)
    rng = np.random.default_rng(4)
    flat = elements(dtype, frame * 3, rng)
    # a partial frame that leaves at least one output beat pending
    pre_n = n_in * max(1, -(-n_out // n_in))
    pre = streams.to_beats(dtype, elements(dtype, pre_n, rng), n_in)
    assert pre_n % frame
    dut = WidthConverter(dtype, n_in, n_out, frame)
    got = run_with_reset(dut, pre, streams.to_beats(dtype, flat, n_in), len(flat) // n_out)
    assert streams.from_beats(dtype, got, n_out) == flat


def test_width_converter_constructor_errors():
    with pytest.raises(ValueError, match="multiple of n_in=4 and n_out=6"):
        WidthConverter(ir.Int(8), 4, 6, 8)
    with pytest.raises(ValueError, match="multiple"):
        WidthConverter(ir.Int(8), 4, 6, 0)
    with pytest.raises(ValueError, match="at least 1"):
        WidthConverter(ir.Int(8), 0, 6, 6)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(dtypes, st.integers(1, 16), st.integers(1, 16), st.integers(1, 3), st.integers(2, 5),
       st.floats(0.3, 0.5), st.floats(0.3, 0.5), st.integers(0, 2**32 - 1))
def test_width_converter_keeps_the_stream_many(dtype, n_in, n_out, mul, frames, stall_in, stall_out, seed):
    check(dtype, n_in, n_out, math.lcm(n_in, n_out) * mul, frames, stall_in, stall_out, seed)
