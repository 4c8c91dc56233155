# amaranth: UnusedElaboratable=no
"""ArgMax against reference._argmax (numpy.argmax: ties go to the lowest index), under random stalls."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams

from streamtb import handshakes, run_with_reset
from qloom.hdl.argmax import ArgMax


dtypes = st.one_of(st.just(ir.Bipolar), st.builds(ir.Int, st.integers(1, 16), st.booleans()))


def vectors(dtype, count, n, rng):
    """Random vectors, half of them from a pool of 3 values so that ties are common."""
    lo, hi = dtype.min, dtype.max
    if isinstance(dtype, ir.BipolarType):
        return rng.choice([-1, 1], size=(count, n))
    x = rng.integers(lo, hi + 1, size=(count, n))
    pool = rng.integers(lo, hi + 1, size=3)
    x[::2] = rng.choice(pool, size=x[::2].shape)
    return x


def check(dtype, n, simd, x, stall_in, stall_out, seed=0):
    dut = ArgMax(dtype, n, simd)
    got = streams.run_stream(dut, dut.i, dut.o, streams.to_beats(dtype, x.reshape(-1), simd), len(x),
                             stall_in=stall_in, stall_out=stall_out, seed=seed, max_cycles=50_000)
    want = reference._argmax(None, x, None).reshape(-1).tolist()
    assert streams.from_beats(dut.out_type, got, 1) == want


@settings(max_examples=40, deadline=None)
@given(dtypes, st.integers(1, 8), st.integers(1, 5), st.integers(2, 6),
       st.floats(0.3, 0.5), st.floats(0.3, 0.5), st.integers(0, 2**32 - 1))
def test_argmax_matches_reference(dtype, simd, fold, count, stall_in, stall_out, seed):
    x = vectors(dtype, count, simd * fold, np.random.default_rng(seed))
    check(dtype, simd * fold, simd, x, stall_in, stall_out, seed)


def test_argmax_ties_and_extremes():
    """All equal, maximum first / last / in every lane position, the type's extremes."""
    dtype, n, simd = ir.Int(4, True), 6, 2
    x = np.full((8, n), -8)
    x[1] = 7
    for r in range(n):
        x[2 + r, r] = 7
        x[2 + r, (r + 3) % n] = 7       # a later tie must lose
    check(dtype, n, simd, x, 0.4, 0.4)
    check(ir.Int(1, False), 1, 1, np.array([[0], [1], [0]]), 0.4, 0.4)   # n = 1: index always 0


@pytest.mark.parametrize("n,simd", [(12, 3), (10, 10), (10, 1)])
def test_argmax_throughput(n, simd):
    """One vector per n/simd cycles, the result 2 + ceil(log2 simd) cycles after the last beat (input register,
    one register per tree level, then the compare)."""
    dtype, count = ir.Int(8, True), 6
    x = vectors(dtype, count, n, np.random.default_rng(1))
    dut = ArgMax(dtype, n, simd)
    got, t_in, t_out = handshakes(dut, streams.to_beats(dtype, x.reshape(-1), simd), count)
    assert streams.from_beats(dut.out_type, got, 1) == np.argmax(x, axis=1).tolist()
    assert np.all(np.diff(t_in) == 1)
    assert set(np.diff(t_out).tolist()) == {n // simd}
    assert t_out[0] - t_in[n // simd - 1] == dut.latency == 2 + {1: 0, 3: 2, 10: 4}[simd]


def test_argmax_reset_mid_vector():
    dtype, n, simd = ir.Int(6, True), 12, 3
    rng = np.random.default_rng(5)
    x = vectors(dtype, 5, n, rng)
    # one whole vector (its result left pending) and 2 beats of the next
    pre = streams.to_beats(dtype, vectors(dtype, 1, n + 2 * simd, rng).reshape(-1), simd)
    dut = ArgMax(dtype, n, simd)
    got = run_with_reset(dut, pre, streams.to_beats(dtype, x.reshape(-1), simd), len(x), pre_ready=0)
    assert streams.from_beats(dut.out_type, got, 1) == np.argmax(x, axis=1).tolist()


def test_argmax_constructor_errors():
    with pytest.raises(ValueError, match=r"valid SIMD values: \[1, 2, 5, 10\]"):
        ArgMax(ir.Int(8), 10, 4)
    with pytest.raises(ValueError, match="SIMD=0"):
        ArgMax(ir.Int(8), 10, 0)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(dtypes, st.integers(1, 16), st.integers(1, 12), st.integers(2, 8),
       st.floats(0.3, 0.5), st.floats(0.3, 0.5), st.integers(0, 2**32 - 1))
def test_argmax_matches_reference_many(dtype, simd, fold, count, stall_in, stall_out, seed):
    x = vectors(dtype, count, simd * fold, np.random.default_rng(seed))
    check(dtype, simd * fold, simd, x, stall_in, stall_out, seed)
