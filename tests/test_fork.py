# amaranth: UnusedElaboratable=no
"""StreamFork: every output gets every beat, in order, whatever each side stalls; reset mid-stream."""
import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from qloom.hdl.fork import StreamFork

from streamtb import drive_ports


def beats(n, width=6, seed=0):
    rng = random.Random(seed)
    return [rng.getrandbits(width) for _ in range(n)]


@pytest.mark.parametrize("outputs", [2, 3])
@pytest.mark.parametrize("stall_in,stalls_out", [(0.0, (0.0, 0.0, 0.0)), (0.3, (0.5, 0.1, 0.7)),
                                                 (0.9, (0.2, 0.9, 0.0)), (0.1, (0.9, 0.9, 0.9))])
def test_fork_every_output_gets_every_beat(outputs, stall_in, stalls_out):
    dut = StreamFork(data.ArrayLayout(6, 1), outputs)
    x = beats(200, seed=outputs)
    ports = [f"o{k}" for k in range(outputs)]
    got = drive_ports(dut, {"i": x}, {p: len(x) for p in ports}, stall_in=stall_in,
                      stall_out=dict(zip(ports, stalls_out)), seed=7)
    for p in ports:
        assert got[p] == x, p


def test_fork_one_beat_per_cycle_without_stalls():
    dut = StreamFork(data.ArrayLayout(6, 1), 2)
    x = beats(50, seed=3)
    got = drive_ports(dut, {"i": x}, {"o0": 50, "o1": 50}, stall_in=0, stall_out=0, max_cycles=50)
    assert got["o0"] == got["o1"] == x            # 50 beats in 50 cycles: no bubble


def test_fork_outputs_take_the_beat_independently():
    """One output stalled for good: the other takes the current beat, and no further one."""
    dut = StreamFork(data.ArrayLayout(6, 1), 2)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = []

    async def tb(ctx):
        ctx.set(dut.i.payload.as_value(), 5)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.o0.ready, 1)
        for _ in range(20):
            _, _, v0, p0, iready = await ctx.tick().sample(dut.o0.valid, dut.o0.payload.as_value(), dut.i.ready)
            if v0:
                seen.append(p0)
            assert not iready, "the input moved on before the stalled output took the beat"
            ctx.set(dut.i.payload.as_value(), 9)      # a new payload would show if the input moved on

    sim.add_testbench(tb)
    sim.run()
    assert seen == [5]


@pytest.mark.parametrize("junk", [0, 3, 17])
def test_fork_reset_mid_stream(junk):
    dut = StreamFork(data.ArrayLayout(4, 2), 3)
    x = beats(80, width=8, seed=junk)
    ports = ["o0", "o1", "o2"]
    got = drive_ports(dut, {"i": x}, {p: 80 for p in ports}, stall_in=0.4,
                      stall_out={"o0": 0.6, "o1": 0.2, "o2": 0.4}, seed=junk, junk_cycles=junk)
    for p in ports:
        assert got[p] == x


def test_fork_needs_two_outputs():
    with pytest.raises(ValueError, match="at least 2 outputs"):
        StreamFork(data.ArrayLayout(4, 1), 1)
