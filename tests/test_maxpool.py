# amaranth: UnusedElaboratable=no
"""MaxPool against reference._maxpool under random valid/ready stalls (helpers shared with test_sumpool)."""

import numpy as np
import pytest
from amaranth.back import verilog
from hypothesis import given, settings
from hypothesis import strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams
from qloom.hdl.maxpool import MaxPool
from qloom.hdl.sumpool import SumPool
from streamtb import drive
from test_swg import divisors, random_map


@st.composite
def pool_cases(draw, max_hw=9, max_c=8):
    kind = draw(st.sampled_from(["bipolar", "uint", "int"]))
    dtype = ir.Bipolar if kind == "bipolar" else ir.Int(draw(st.integers(1, 8)), kind == "int")
    h, w, c = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw)), draw(st.integers(1, max_c))
    if draw(st.integers(0, 4)) == 0:                          # global pooling
        k = (h, w)
        s = draw(st.sampled_from([(1, 1), (h, w)]))
    else:
        k = (draw(st.integers(1, min(3, h))), draw(st.integers(1, min(3, w))))
        s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    return dict(dtype=dtype, shape=(h, w, c), kernel=k, stride=s, simd=draw(st.sampled_from(divisors(c))),
                frames=draw(st.integers(2, 3)), stall_in=draw(st.floats(0.3, 0.5)),
                stall_out=draw(st.floats(0.3, 0.5)), seed=draw(st.integers(0, 2**32 - 1)))


def make_pool(kind, c):
    """(dut, reference node, output element type)."""
    node = (ir.MaxPool2d if kind == "max" else ir.SumPool)("p", ["x"], "y", kernel=c["kernel"], stride=c["stride"])
    out_t = node.infer([ir.TensorType(c["shape"], c["dtype"])]).dtype
    if kind == "max":
        dut = MaxPool(c["dtype"], c["shape"], c["kernel"], c["stride"], c["simd"])
    else:
        dut = SumPool(c["dtype"], out_t, c["shape"], c["kernel"], c["stride"], c["simd"])
    return dut, node, out_t


def check_pool(kind, c, *, junk=None):
    dut, node, out_t = make_pool(kind, c)
    dt, simd = c["dtype"], c["simd"]
    x = random_map(np.random.default_rng(c["seed"]), dt, c["frames"], c["shape"])
    op = reference._maxpool if kind == "max" else reference._sumpool
    want = op(node, x, None).reshape(len(x), -1)
    assert want.shape[1] == np.prod(dut.out_shape)
    beats = streams.to_beats(dt, x.reshape(-1), simd)
    n_out = want.size // simd
    if junk is None:
        out = streams.run_stream(dut, dut.i, dut.o, beats, n_out, stall_in=c["stall_in"],
                                 stall_out=c["stall_out"], seed=c["seed"] % 2**31)
    else:
        out, _, _ = drive(dut, beats, n_out, stall_in=c["stall_in"], stall_out=c["stall_out"],
                          seed=c["seed"], junk_cycles=junk)
    got = np.array(streams.from_beats(out_t, out, simd)).reshape(want.shape)
    bad = np.argwhere(got != want)
    assert not len(bad), (f"{c}: frame {bad[0][0]}, element {bad[0][1]}: got {got[tuple(bad[0])]}, "
                          f"want {want[tuple(bad[0])]} ({len(bad)} mismatches)")


def check_cycles(kind, c):
    """No stalls: an input beat every cycle, H*W*C/simd cycles a frame, outputs 2 cycles after
    the last beat of their window."""
    dut, node, out_t = make_pool(kind, c)
    dt, simd = c["dtype"], c["simd"]
    x = random_map(np.random.default_rng(0), dt, c["frames"], c["shape"])
    op = reference._maxpool if kind == "max" else reference._sumpool
    want = op(node, x, None)
    beats = streams.to_beats(dt, x.reshape(-1), simd)
    got, t_in, t_out = drive(dut, beats, want.size // simd)
    assert (np.array(streams.from_beats(out_t, got, simd)).reshape(want.shape) == want).all()
    assert t_in == list(range(t_in[0], t_in[0] + len(beats)))      # one input beat per cycle
    assert dut.cycles == len(beats) // c["frames"]
    (_, w, ch), (kh, kw), (sh, sw) = c["shape"], dut.kernel, dut.stride
    oh, ow, _ = dut.out_shape
    cf = ch // simd
    for f in range(c["frames"]):
        for o in range(oh * ow):                                  # the last beat of each window
            r, col = (o // ow) * sh + kh - 1, (o % ow) * sw + kw - 1
            last_in = t_in[f * dut.cycles + (r * w + col) * cf]
            first_out = t_out[(f * oh * ow + o) * cf]
            assert first_out - last_in == dut.latency == 2


@settings(max_examples=150, deadline=None)
@given(pool_cases())
def test_maxpool_matches_reference(c):
    check_pool("max", c)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(pool_cases(max_hw=14, max_c=16))
def test_maxpool_matches_reference_many(c):
    check_pool("max", c)


@settings(max_examples=50, deadline=None)
@given(pool_cases(max_hw=6, max_c=4), st.integers(0, 60))
def test_maxpool_reset_mid_frame(c, junk):
    check_pool("max", c, junk=junk)


@pytest.mark.parametrize("shape,kernel,stride,simd", [
    ((8, 8, 4), 2, 2, 2),          # the common 2x2/2 pool: row buffer of 1 partial per column
    ((7, 9, 3), 3, 1, 1),          # overlapping both ways: 3 row slots, 3 column slots
    ((9, 7, 2), 3, 2, 2),          # 2 slots each way, floor drops the last column
    ((5, 6, 4), (5, 6), 1, 4),     # global
    ((5, 1, 1), (2, 1), 1, 1),     # one column, one channel: a read right after a write, every beat
])
@pytest.mark.parametrize("dtype", [ir.Int(4, True), ir.Bipolar])
def test_maxpool_cycles_and_latency(shape, kernel, stride, simd, dtype):
    check_cycles("max", dict(dtype=dtype, shape=shape, kernel=kernel, stride=stride, simd=simd, frames=3))


def test_maxpool_bipolar_is_or():
    """Bipolar max: +1 wherever a window holds a +1."""
    c = dict(dtype=ir.Bipolar, shape=(4, 4, 2), kernel=2, stride=2, simd=2, frames=2, stall_in=0.3,
             stall_out=0.3, seed=5)
    check_pool("max", c)


def test_maxpool_verilog_memories():
    """The row buffer holds OW*C/simd words of ceil(KH/SH) partial maxima; the column
    buffer exists only where windows overlap along W."""
    v = verilog.convert(MaxPool(ir.Int(4), (8, 8, 8), 2, 2, 4), name="mp")
    assert "reg [15:0] rowbuf [7:0];" in v and "colbuf" not in v       # 4 columns x 2 groups
    v = verilog.convert(MaxPool(ir.Int(4), (8, 8, 8), 3, 1, 4), name="mp")
    assert "reg [47:0] rowbuf [11:0];" in v and "reg [47:0] colbuf [1:0];" in v   # 3 slots


def test_pool_constructor_errors():
    with pytest.raises(ValueError, match=r"SIMD=4 does not divide C=6; valid SIMD values: \[1, 2, 3, 6\]"):
        MaxPool(ir.Int(4), (4, 4, 6), 2, 2, 4)
    with pytest.raises(ValueError, match="does not fit"):
        MaxPool(ir.Int(4), (4, 4, 6), 5, 1, 1)
    with pytest.raises(ValueError, match="stride"):
        MaxPool(ir.Int(4), (4, 4, 6), 2, 0, 1)
    with pytest.raises(ValueError, match=r"out_dtype int5 cannot hold the window sums -32\.\.28 "
                                         r"\(needs at least int6\)"):
        SumPool(ir.Int(4), ir.Int(5), (4, 4, 6), 2, 2, 1)
    with pytest.raises(ValueError, match="out_dtype must be an ir.Int"):
        SumPool(ir.Int(3), ir.Bipolar, (4, 4, 6), 2, 2, 1)
    with pytest.raises(ValueError, match="SIMD"):
        SumPool(ir.Int(3), ir.Int(8), (4, 4, 6), 2, 2, 5)
