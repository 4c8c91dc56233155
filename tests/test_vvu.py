# amaranth: UnusedElaboratable=no
"""VectorVectorUnit (depthwise conv) against the reference: windows in, one dot product per channel out;
every weight and input kind, PE folding, random stalls, reset mid-frame, one beat per cycle."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams
from qloom.hdl.vvu import VectorVectorUnit

from streamtb import handshakes, run_with_reset

WTYPES = {"bipolar": ir.Bipolar, "ternary": ir.Int(2, True), "int4": ir.Int(4, True)}
XTYPES = [ir.Bipolar, ir.Int(2, False), ir.Int(4, True)]


def rand(rng, dtype, shape):
    if isinstance(dtype, ir.BipolarType):
        return rng.choice([-1, 1], size=shape)
    return rng.integers(dtype.min, dtype.max + 1, size=shape)


def case(wkind, xtype, c, k, pe, pixels, seed):
    """(dut, input beats, expected accumulators (pixels, C)) for a depthwise conv given its windows."""
    rng = np.random.default_rng(seed)
    wtype = WTYPES[wkind]
    w = rand(rng, wtype, (c, k))
    x = rand(rng, xtype, (pixels, k, c))                       # window order: position, then channel
    # the reference's depthwise conv of a 1 x k "image" per pixel is this dot product
    conv = ir.Conv2d("dw", ["x"], "y", weight=w.reshape(c, 1, k, 1), wtype=wtype, groups=c)
    acc_t = conv.infer([ir.TensorType((1, k, c), xtype)]).dtype
    want = np.concatenate([reference.OPS[ir.Conv2d](conv, x[p:p + 1, None], ir.TensorType((1, k, c), xtype))
                           for p in range(pixels)]).reshape(pixels, c)
    dut = VectorVectorUnit(w, wtype, xtype, acc_t, pe)
    return dut, streams.to_beats(xtype, x.reshape(-1), pe), want, acc_t


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(list(WTYPES)), st.sampled_from(XTYPES), st.sampled_from([1, 2, 4, 6]),
       st.sampled_from([1, 4, 9]), st.data(), st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.integers(0, 2**16))
def test_vvu_matches_reference(wkind, xtype, c, k, data, stall_in, stall_out, seed):
    pe = data.draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    dut, beats, want, acc_t = case(wkind, xtype, c, k, pe, 5, seed)
    got = streams.run_stream(dut, dut.i, dut.o, beats, want.size // pe, stall_in=stall_in, stall_out=stall_out,
                             seed=seed, max_cycles=100_000)
    assert streams.from_beats(acc_t, got, pe) == want.reshape(-1).tolist()


@pytest.mark.parametrize("c,pe", [(4, 1), (4, 4), (6, 2)])
def test_vvu_one_beat_per_cycle_and_latency(c, pe):
    dut, beats, want, acc_t = case("int4", ir.Int(4, True), c, 9, pe, 4, seed=c)
    got, t_in, t_out = handshakes(dut, beats, want.size // pe)
    assert streams.from_beats(acc_t, got, pe) == want.reshape(-1).tolist()
    assert np.all(np.diff(t_in) == 1)                          # an input beat every cycle
    cf = c // pe
    assert t_out[0] - t_in[8 * cf] == dut.latency == 2         # after the last window position's beat


@pytest.mark.parametrize("pe", [1, 3])
def test_vvu_reset_mid_frame(pe):
    dut, beats, want, acc_t = case("ternary", ir.Int(3, True), 6, 4, pe, 6, seed=pe)
    pre = beats[:4 * 6 // pe]                  # a whole pixel: its last outputs are pending
    got = run_with_reset(dut, pre, beats, want.size // pe)
    assert streams.from_beats(acc_t, got, pe) == want.reshape(-1).tolist()


def test_vvu_checks_its_arguments():
    w = np.ones((6, 9), dtype=int)
    with pytest.raises(ValueError, match=r"PE=4 does not divide C=6; valid PE values: \[1, 2, 3, 6\]"):
        VectorVectorUnit(w, ir.Int(2), ir.Int(4), ir.Int(10), 4)
    with pytest.raises(ValueError, match="cannot hold the dot products"):
        VectorVectorUnit(w, ir.Int(2), ir.Int(4), ir.Int(4), 1)


def test_zero_expanded_form_computes_the_same():
    """The comparison baseline (a depthwise conv as a block-diagonal dense conv) is the same function."""
    from graphs import depthwise_separable, frames
    from qloom.hdl.kernels.vvu import zero_expanded
    g = depthwise_separable()
    gx = zero_expanded(g)
    assert [n.groups for n in gx.nodes if n.kind == "Conv2d"] == [1, 1]
    x = frames(g, 4)
    assert np.array_equal(reference.run(g, x), reference.run(gx, x))
