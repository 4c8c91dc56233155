# amaranth: UnusedElaboratable=no
"""SlidingWindowGenerator against reference.windows on the padded map, under random stalls."""

import numpy as np
import pytest
from amaranth.back import verilog
from hypothesis import given, settings
from hypothesis import strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams
from qloom.hdl.swg import SlidingWindowGenerator

from streamtb import drive


def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def random_map(rng, dtype, frames, shape):
    """Random frames; the first holds the type's extremes so every bit gets exercised."""
    if isinstance(dtype, ir.BipolarType):
        x = rng.choice([-1, 1], size=(frames, *shape))
    else:
        x = rng.integers(dtype.min, dtype.max + 1, size=(frames, *shape))
    x.reshape(frames, -1)[0, ::2] = dtype.max
    x.reshape(frames, -1)[0, 1::2] = dtype.min
    return x


def expected_windows(x, kernel, stride, padding, pad_value):
    """(B, H, W, C) -> (B, OH*OW*KH*KW*C): the im2col rows of every frame, flattened."""
    (ph, pw) = padding
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=pad_value)
    return reference.windows(np.ascontiguousarray(xp), kernel, stride).reshape(len(x), -1)


@st.composite
def cases(draw, max_hw=9, max_c=8):
    kind = draw(st.sampled_from(["bipolar", "uint", "int"]))
    dtype = ir.Bipolar if kind == "bipolar" else ir.Int(draw(st.integers(1, 8)), kind == "int")
    c = draw(st.integers(1, max_c))
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    h = draw(st.integers(max(1, k[0] - 2 * pad[0]), max_hw))
    w = draw(st.integers(max(1, k[1] - 2 * pad[1]), max_hw))
    if draw(st.integers(0, 9)) == 0:                        # sometimes a kernel as big as the map
        k, pad = (h, w), (0, 0)
    pv = draw(st.sampled_from([-1, 1])) if kind == "bipolar" else draw(st.integers(dtype.min, dtype.max))
    return dict(dtype=dtype, shape=(h, w, c), kernel=k, stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                padding=pad, pad_value=pv, simd=draw(st.sampled_from(divisors(c))),
                frames=draw(st.integers(2, 3)), stall_in=draw(st.floats(0.3, 0.5)),
                stall_out=draw(st.floats(0.3, 0.5)), seed=draw(st.integers(0, 2**32 - 1)))


def make(c):
    return SlidingWindowGenerator(c["dtype"], c["shape"], c["kernel"], c["stride"], c["padding"],
                                  c["pad_value"], c["simd"])


def check(c, *, junk=None):
    rng = np.random.default_rng(c["seed"])
    dut = make(c)
    dt, simd = c["dtype"], c["simd"]
    x = random_map(rng, dt, c["frames"], c["shape"])
    want = expected_windows(x, dut.kernel, dut.stride, dut.padding, c["pad_value"])
    beats = streams.to_beats(dt, x.reshape(-1), simd)
    n_out = want.size // simd
    if junk is None:
        out = streams.run_stream(dut, dut.i, dut.o, beats, n_out, stall_in=c["stall_in"],
                                 stall_out=c["stall_out"], seed=c["seed"] % 2**31)
    else:
        out, _, _ = drive(dut, beats, n_out, stall_in=c["stall_in"], stall_out=c["stall_out"],
                          seed=c["seed"], junk_cycles=junk)
    got = np.array(streams.from_beats(dt, out, simd)).reshape(want.shape)
    bad = np.argwhere(got != want)
    assert not len(bad), (f"{c}: frame {bad[0][0]}, element {bad[0][1]}: got {got[tuple(bad[0])]}, "
                          f"want {want[tuple(bad[0])]} ({len(bad)} mismatches)")
    # the ring holds a few rows (window, next rows, padding rows to run ahead of), never a whole map
    h, w, ch = c["shape"]
    assert dut.depth * simd <= max(2 * simd, (2 * dut.kernel[0] + dut.stride[0] + 2 * dut.padding[0]) * w * ch)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_swg_matches_reference(c):
    check(c)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(cases(max_hw=14, max_c=16))
def test_swg_matches_reference_many(c):
    check(c)


@settings(max_examples=40, deadline=None)
@given(cases(max_hw=6, max_c=4), st.integers(0, 80))
def test_swg_reset_mid_frame(c, junk):
    check(c, junk=junk)


@pytest.mark.parametrize("kernel,stride,padding", [
    ((3, 3), (1, 1), (0, 0)),      # output-bound (9 beats out per input beat)
    ((3, 3), (1, 1), (1, 1)),      # same-size conv
    ((3, 3), (2, 2), (1, 1)),
    ((2, 2), (2, 2), (0, 0)),      # balanced: 4 out per 4 in
    ((1, 1), (1, 1), (0, 0)),      # pass-through
    ((1, 1), (2, 2), (0, 0)),      # input-bound (1 out per 4 in)
    ((3, 1), (2, 1), (2, 0)),
])
@pytest.mark.parametrize("shape,simd", [((8, 7, 4), 2), ((5, 6, 3), 3)])
def test_swg_cycles_per_frame(kernel, stride, padding, shape, simd):
    """No stalls: back-to-back frames take exactly `cycles` = max(out beats, in beats) each."""
    dt = ir.Int(4, False)
    dut = SlidingWindowGenerator(dt, shape, kernel, stride, padding, 3, simd)
    frames = 4
    x = random_map(np.random.default_rng(1), dt, frames, shape)
    want = expected_windows(x, kernel, stride, padding, 3)
    per_frame = want.shape[1] // simd
    got, t_in, t_out = drive(dut, streams.to_beats(dt, x.reshape(-1), simd), frames * per_frame)
    assert (np.array(streams.from_beats(dt, got, simd)).reshape(want.shape) == want).all()
    ends = t_out[per_frame - 1::per_frame]
    assert np.diff(ends).tolist() == [dut.cycles] * (frames - 1), (ends, dut.cycles)
    in_per_frame = len(t_in) // frames
    # the first output beat comes `latency` cycles after the input beat that completes its need
    first_need = dut._start[0] * dut.cf
    assert t_out[0] - t_in[first_need - 1] == dut.latency
    assert len(t_in) == frames * in_per_frame


def test_swg_cnv_layer_throughput():
    """CNV's first conv (32x32x3, 3x3, no padding), 2 frames: 8100 beats a frame, one per cycle."""
    dt = ir.Int(8, False)
    dut = SlidingWindowGenerator(dt, (32, 32, 3), 3, 1, 0, 0, 3)
    x = random_map(np.random.default_rng(2), dt, 2, (32, 32, 3))
    want = expected_windows(x, (3, 3), (1, 1), (0, 0), 0)
    per_frame = want.shape[1] // 3
    got, t_in, t_out = drive(dut, streams.to_beats(dt, x.reshape(-1), 3), 2 * per_frame)
    assert (np.array(streams.from_beats(dt, got, 3)).reshape(want.shape) == want).all()
    assert dut.cycles == per_frame == 30 * 30 * 9
    assert t_out[2 * per_frame - 1] - t_out[per_frame - 1] == per_frame
    assert dut.depth == 4 * 32 + 6            # the 2 window rows + the next frame's 2 rows, + 6 pixels


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 0), (3, 1, 1), (3, 2, 1), (5, 1, 2), (2, 2, 0), (1, 2, 0)])
def test_swg_ring_holds_rows_not_the_map(kernel, stride, padding):
    """The ring's size depends on W and C, not on H: rows, never the whole map."""
    depths = {h: SlidingWindowGenerator(ir.Int(4), (h, 20, 8), kernel, stride, padding, 0, 2).depth
              for h in (12, 40, 100)}
    assert len(set(depths.values())) == 1, depths
    assert depths[12] <= (2 * kernel + stride) * 20 * 4


def test_swg_constructor_errors():
    with pytest.raises(ValueError, match=r"SIMD=4 does not divide C=6; valid SIMD values: \[1, 2, 3, 6\]"):
        SlidingWindowGenerator(ir.Int(4), (5, 5, 6), 3, 1, 0, 0, 4)
    with pytest.raises(ValueError, match="does not fit"):
        SlidingWindowGenerator(ir.Int(4), (2, 5, 6), 3, 1, 0, 0, 1)
    with pytest.raises(ValueError, match="pad_value 0 is not a value of bipolar"):
        SlidingWindowGenerator(ir.Bipolar, (5, 5, 6), 3, 1, 1, 0, 1)
    with pytest.raises(ValueError, match="pad_value 8 is not a value of int4"):
        SlidingWindowGenerator(ir.Int(4), (5, 5, 6), 3, 1, 1, 8, 1)
    with pytest.raises(ValueError, match="stride"):
        SlidingWindowGenerator(ir.Int(4), (5, 5, 6), 3, 0, 0, 0, 1)


def test_swg_verilog_has_one_ring_memory():
    dut = SlidingWindowGenerator(ir.Int(4, True), (16, 16, 8), 3, 1, 1, 0, 4)
    v = verilog.convert(dut, name="swg")
    depth = dut.depth
    assert depth == (2 * 16 + 4) * 2            # 2 rows + 4 pixels of 2 beats
    assert f"reg [15:0] ring [{depth - 1}:0];" in v
