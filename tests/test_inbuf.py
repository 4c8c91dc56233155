# amaranth: UnusedElaboratable=no
"""InputBuffer: every vector played `passes` times, in order, under random stalls; one beat per cycle."""
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qloom.compiler import ir
from qloom.hdl import streams
from qloom.hdl.inbuf import InputBuffer

from streamtb import drive, run_with_reset


def layout(bits):
    return streams.beat_layout(ir.Int(bits, False), 1)


def expected(beats, slots, passes):
    out = []
    for v in range(0, len(beats), slots):
        out += beats[v:v + slots] * passes
    return out


@settings(max_examples=40, deadline=None)
@given(slots=st.integers(1, 6), passes=st.integers(1, 5), banks=st.sampled_from([1, 2]),
       vectors=st.integers(1, 5), stall_in=st.sampled_from([0.0, 0.3, 0.6]),
       stall_out=st.sampled_from([0.0, 0.3, 0.6]), seed=st.integers(0, 2**16))
def test_replays_every_vector_in_order(slots, passes, banks, vectors, stall_in, stall_out, seed):
    if banks == 1 and slots == 1 and passes == 1:
        banks = 2
    rng = random.Random(seed)
    beats = [rng.getrandbits(12) for _ in range(slots * vectors)]
    dut = InputBuffer(layout(12), slots, passes, banks)
    got = streams.run_stream(dut, dut.i, dut.o, beats, slots * passes * vectors, stall_in=stall_in,
                             stall_out=stall_out, seed=seed)
    assert got == expected(beats, slots, passes)


@pytest.mark.parametrize("slots,passes,banks", [(1, 1, 2), (4, 1, 2), (1, 5, 2), (3, 4, 2), (3, 4, 1), (2, 7, 1)])
def test_one_beat_per_cycle(slots, passes, banks):
    """With an eager writer and reader the output never idles after the first beat; the input is ready
    whenever a bank (or, with one bank, an already played slot of the last pass) is free."""
    rng = random.Random(1)
    vectors = 6
    beats = [rng.getrandbits(8) for _ in range(slots * vectors)]
    dut = InputBuffer(layout(8), slots, passes, banks)
    got, t_in, t_out = drive(dut, beats, slots * passes * vectors)
    assert got == expected(beats, slots, passes)
    assert np.diff(t_out).tolist() == [1] * (len(t_out) - 1)
    assert t_out[0] - t_in[0] == 2


def test_reset_mid_vector():
    rng = random.Random(3)
    beats = [rng.getrandbits(8) for _ in range(12)]
    dut = InputBuffer(layout(8), 3, 2, 2)
    got = run_with_reset(dut, beats[:5], beats, 24)
    assert got == expected(beats, 3, 2)


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="banks"):
        InputBuffer(layout(8), 2, 2, 3)
    with pytest.raises(ValueError, match="use 2 banks"):
        InputBuffer(layout(8), 1, 1, 1)
    with pytest.raises(ValueError, match="ram_style"):
        InputBuffer(layout(8), 2, 2, 2, ram_style="bram")
