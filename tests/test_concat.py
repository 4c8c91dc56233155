# amaranth: UnusedElaboratable=no
"""ConcatUnit against reference's Concat: two or three maps of different channel counts and element
types, random stalls on every port, reset mid-stream."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qloom.compiler import ir, reference
from qloom.hdl import streams
from qloom.hdl.concat import ConcatUnit

from streamtb import drive_ports


def values(rng, dtype, shape):
    if isinstance(dtype, ir.BipolarType):
        return rng.choice([-1, 1], size=shape)
    return rng.integers(dtype.min, dtype.max + 1, size=shape)


def check(types, channels, n, pixels, stalls_in, stall_out, seed, junk=None):
    rng = np.random.default_rng(seed)
    xs = [values(rng, t, (pixels, c)) for t, c in zip(types, channels)]
    node = ir.Concat("cat", [f"x{k}" for k in range(len(xs))], "y")
    out_t = node.infer([ir.TensorType((pixels, c), t) for t, c in zip(types, channels)])
    dut = ConcatUnit(types, out_t.dtype, channels, n)
    ins = {f"i{k}": streams.to_beats(t, x.reshape(-1), n) for k, (t, x) in enumerate(zip(types, xs))}
    got = drive_ports(dut, ins, {"o": out_t.size // n}, stall_in=dict(zip(ins, stalls_in)), stall_out=stall_out,
                      seed=seed, junk_cycles=junk)
    want = reference.OPS[ir.Concat](node, *xs, *([None] * len(xs)))
    assert streams.from_beats(out_t.dtype, got["o"], n) == want.reshape(-1).tolist()


@settings(max_examples=20, deadline=None)
@given(st.lists(st.sampled_from([ir.Int(2, False), ir.Int(3, True), ir.Int(4, False)]), min_size=2, max_size=3),
       st.sampled_from([1, 2]), st.lists(st.sampled_from([1, 2, 3]), min_size=3, max_size=3),
       st.lists(st.floats(0.0, 0.9), min_size=3, max_size=3), st.floats(0.0, 0.9), st.integers(0, 2**16))
def test_concat_matches_reference(types, n, mult, stalls_in, stall_out, seed):
    channels = [n * m for m in mult[:len(types)]]
    check(types, channels, n, 6, stalls_in, stall_out, seed)


def test_concat_bipolar_inputs_stay_bipolar_and_mix_with_ints():
    check([ir.Bipolar, ir.Bipolar], [2, 4], 2, 5, [0.3, 0.6], 0.3, seed=1)
    check([ir.Bipolar, ir.Int(2, False)], [3, 3], 3, 5, [0.5, 0.2], 0.5, seed=2)


@pytest.mark.parametrize("junk", [0, 4, 19])
def test_concat_reset_mid_stream(junk):
    check([ir.Int(3, True), ir.Int(2, False)], [4, 2], 2, 8, [0.4, 0.4], 0.4, seed=junk, junk=junk)


def test_concat_one_beat_per_cycle():
    """30 output beats in 31 cycles (latency 1): the inputs take turns without a bubble."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, (10, 2)), rng.integers(0, 4, (10, 4))
    t = ir.Int(2, False)
    dut = ConcatUnit([t, t], t, [2, 4], 2)
    got = drive_ports(dut, {"i0": streams.to_beats(t, a.reshape(-1), 2), "i1": streams.to_beats(t, b.reshape(-1), 2)},
                      {"o": 30}, stall_in=0, stall_out=0, max_cycles=31)
    want = np.concatenate([a, b], axis=1).reshape(-1).tolist()
    assert streams.from_beats(t, got["o"], 2) == want


def test_concat_checks_its_arguments():
    with pytest.raises(ValueError, match=r"n=2 does not divide input 1's 3 channels"):
        ConcatUnit([ir.Int(2), ir.Int(2)], ir.Int(2), [2, 3], 2)
    with pytest.raises(ValueError, match="cannot hold"):
        ConcatUnit([ir.Int(2), ir.Int(3)], ir.Int(2), [2, 2], 1)
