# amaranth: UnusedElaboratable=no
"""SumPool against reference._sumpool under random valid/ready stalls."""
import pytest
from amaranth.back import verilog
from hypothesis import given, settings
from hypothesis import strategies as st

from qloom.compiler import ir
from qloom.hdl.sumpool import SumPool
from test_maxpool import check_cycles, check_pool, pool_cases


@settings(max_examples=150, deadline=None)
@given(pool_cases())
def test_sumpool_matches_reference(c):
    check_pool("sum", c)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(pool_cases(max_hw=14, max_c=16))
def test_sumpool_matches_reference_many(c):
    check_pool("sum", c)


@settings(max_examples=50, deadline=None)
@given(pool_cases(max_hw=6, max_c=4), st.integers(0, 60))
def test_sumpool_reset_mid_frame(c, junk):
    check_pool("sum", c, junk=junk)


@pytest.mark.parametrize("dtype", [ir.Int(8, False), ir.Int(8, True), ir.Int(1, True), ir.Bipolar])
@pytest.mark.parametrize("shape,simd", [((7, 7, 8), 4), ((3, 5, 3), 1), ((1, 1, 2), 2)])
def test_sumpool_global(dtype, shape, simd):
    """Global pooling, with the extremes of the type (first frame) and random frames."""
    c = dict(dtype=dtype, shape=shape, kernel=shape[:2], stride=1, simd=simd, frames=3, stall_in=0.4,
             stall_out=0.4, seed=hash((str(dtype), shape)) % 2**32)
    check_pool("sum", c)


@pytest.mark.parametrize("shape,kernel,stride,simd", [
    ((8, 8, 4), 2, 2, 2),
    ((7, 9, 3), 3, 1, 1),
    ((9, 7, 2), 3, 2, 2),
    ((6, 6, 8), (6, 6), (6, 6), 2),     # global average pool
])
def test_sumpool_cycles_and_latency(shape, kernel, stride, simd):
    check_cycles("sum", dict(dtype=ir.Int(4, False), shape=shape, kernel=kernel, stride=stride, simd=simd,
                             frames=3))


def test_sumpool_global_keeps_only_accumulators():
    """Global pooling of a 7x7x64 map, SIMD 8: 8 words of 8 accumulators, no row or column buffer."""
    v = verilog.convert(SumPool(ir.Int(4, False), ir.Int(10, False), (7, 7, 64), (7, 7), 1, 8), name="gap")
    assert "reg [79:0] rowbuf [7:0];" in v and "colbuf" not in v


def test_sumpool_bipolar_counts_plus_minus_one():
    c = dict(dtype=ir.Bipolar, shape=(5, 4, 2), kernel=(3, 2), stride=(2, 1), simd=1, frames=2,
             stall_in=0.3, stall_out=0.3, seed=1)
    check_pool("sum", c)
