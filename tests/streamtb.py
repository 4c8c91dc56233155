# amaranth: UnusedElaboratable=no
"""amaranth.sim testbenches shared by the component tests: handshake timing, reset mid-frame, per-cycle driving."""
import random

from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from qloom.hdl import streams


def handshakes(dut, beats, n_out):
    """Run with no stalls; return (outputs, cycles of input handshakes, cycles of output handshakes)."""
    t_in, t_out = [], []

    async def spy(ctx):
        cycle = 0
        ports = (dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready)
        async for _, _, iv, ir_, ov, or_ in ctx.tick().sample(*ports):
            if iv and ir_:
                t_in.append(cycle)
            if ov and or_:
                t_out.append(cycle)
            cycle += 1

    got = streams.run_stream(dut, dut.i, dut.o, beats, n_out, stall_in=0, stall_out=0, max_cycles=50_000,
                             extra=lambda sim: sim.add_testbench(spy, background=True))
    return got, t_in, t_out


def run_with_reset(dut, pre_beats, beats, n_out, seed=0, stall=0.4, pre_ready=0.5):
    """Push `pre_beats` (a partial frame), leave outputs pending, pulse the synchronous reset,
    then stream `beats` under random stalls. Returns the outputs after the reset."""
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut
    i, o = dut.i, dut.o
    got, pending = [], []
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def tb(ctx):
        rng = random.Random(seed)
        for b in pre_beats:                      # outputs of these are thrown away
            ctx.set(i.payload.as_value(), b)
            ctx.set(i.valid, 1)
            for _ in range(1000):
                ctx.set(o.ready, rng.random() < pre_ready)
                _, _, accepted = await ctx.tick().sample(i.ready)
                if accepted:
                    break
            else:
                raise AssertionError("the input never became ready before the reset")
        ctx.set(i.valid, 0)
        ctx.set(o.ready, 0)
        for _ in range(4):
            await ctx.tick()
        pending.append(ctx.get(o.valid))
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        k, idle = 0, 0
        for _ in range(50_000):
            if len(got) >= n_out and idle >= 64:
                break
            if not ctx.get(i.valid) and k < len(beats) and rng.random() >= stall:
                ctx.set(i.payload.as_value(), beats[k])
                ctx.set(i.valid, 1)
            ctx.set(o.ready, len(got) >= n_out or rng.random() >= stall)
            _, _, iv, ir_, ov, or_, op = await ctx.tick().sample(i.valid, i.ready, o.valid, o.ready,
                                                                 o.payload.as_value())
            if iv and ir_:
                k += 1
                ctx.set(i.valid, 0)
            if ov and or_:
                got.append(int(op))
            idle = idle + 1 if len(got) >= n_out else 0

    sim.add_testbench(tb)
    sim.run()
    assert pending == [1], "the reset test should leave an output pending"
    assert len(got) == n_out, f"{len(got)} of {n_out} beats after the reset"
    return got


def drive(dut, beats, n_out, *, stall_in=0.0, stall_out=0.0, seed=0, junk_cycles=None, max_cycles=200_000,
          in_gap=0):
    """Drive dut cycle by cycle. With junk_cycles, first feed random beats and take outputs
    for that many cycles, then pulse the synchronous reset (with an output possibly waiting).
    in_gap: cycles between an accepted input beat and the next offered one (a slow writer).
    Returns (payloads out, input handshake cycles, output handshake cycles), counted after the reset."""
    top = Module()
    top.domains.sync = cd = ClockDomain()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8)
    rng = random.Random(seed)
    width = dut.i.payload.as_value().shape().width
    res = {}

    async def phase(ctx, beats, n_out, cycles):
        got, t_in, t_out, pos, valid, wait = [], [], [], 0, False, 0
        for cycle in range(cycles):
            if len(got) >= n_out:
                break
            wait -= 1
            if not valid and wait < 0 and pos < len(beats) and rng.random() >= stall_in:
                valid = True              # once offered, a beat stays valid until taken
                ctx.set(dut.i.payload.as_value(), beats[pos])
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.o.ready, rng.random() >= stall_out)
            *_, iv, ir_, ov, or_, op = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload.as_value())
            if iv and ir_:
                t_in.append(cycle)
                pos, valid, wait = pos + 1, False, in_gap
            if ov and or_:
                t_out.append(cycle)
                got.append(op)
        ctx.set(dut.i.valid, 0)
        return got, t_in, t_out

    async def tb(ctx):
        if junk_cycles is not None:
            junk = [rng.getrandbits(width) for _ in range(junk_cycles + 1)]
            await phase(ctx, junk, 1 << 30, junk_cycles)
            ctx.set(dut.o.ready, 0)
            ctx.set(cd.rst, 1)
            await ctx.tick()
            ctx.set(cd.rst, 0)
        res["got"], res["t_in"], res["t_out"] = await phase(ctx, beats, n_out, max_cycles)
        ctx.set(dut.o.ready, 1)
        for _ in range(64):                       # nothing more may come out
            await ctx.tick()
            assert not ctx.get(dut.o.valid), "the design produced more beats than expected"

    sim.add_testbench(tb)
    sim.run()
    assert len(res["got"]) == n_out, f"{len(res['got'])} of {n_out} output beats"
    return res["got"], res["t_in"], res["t_out"]


def drive_ports(dut, inputs: dict, n_out: dict, *, stall_in=0.3, stall_out=0.3, seed=0, junk_cycles=None,
                max_cycles=200_000):
    """Drive a component with several streams cycle by cycle (forks, joins): `inputs` {port name: beats},
    `n_out` {port name: beats expected}. Every port has its own random valid gaps / backpressure
    (stall_in, stall_out: a probability, or {port: probability}). With junk_cycles, first feed random
    beats and take outputs for that many cycles, then pulse the synchronous reset. Returns
    {output port: payloads} after the reset, and checks that nothing more comes out."""
    top = Module()
    top.domains.sync = cd = ClockDomain()
    top.submodules.dut = dut
    sim = Simulator(top)
    sim.add_clock(1e-8)
    rng = random.Random(seed)
    ins = {p: getattr(dut, p) for p in inputs}
    outs = {p: getattr(dut, p) for p in n_out}
    p_in = stall_in if isinstance(stall_in, dict) else {p: stall_in for p in ins}
    p_out = stall_out if isinstance(stall_out, dict) else {p: stall_out for p in outs}
    res = {}

    async def phase(ctx, beats, want, cycles):
        got = {p: [] for p in outs}
        pos, valid = {p: 0 for p in ins}, {p: False for p in ins}
        for _ in range(cycles):
            if all(len(got[p]) >= want[p] for p in outs):
                break
            for p, port in ins.items():
                if not valid[p] and pos[p] < len(beats[p]) and rng.random() >= p_in[p]:
                    valid[p] = True            # once offered, a beat stays valid until taken
                    ctx.set(port.payload.as_value(), beats[p][pos[p]])
                ctx.set(port.valid, valid[p])
            for p, port in outs.items():
                ctx.set(port.ready, rng.random() >= p_out[p])
            sigs = [s for port in ins.values() for s in (port.valid, port.ready)]
            sigs += [s for port in outs.values() for s in (port.valid, port.ready, port.payload.as_value())]
            _, _, *v = await ctx.tick().sample(*sigs)
            for k, p in enumerate(ins):
                if v[2 * k] and v[2 * k + 1]:
                    pos[p], valid[p] = pos[p] + 1, False
            base = 2 * len(ins)
            for k, p in enumerate(outs):
                ov, or_, op = v[base + 3 * k: base + 3 * k + 3]
                if ov and or_:
                    got[p].append(op)
        for port in ins.values():
            ctx.set(port.valid, 0)
        return got

    async def tb(ctx):
        if junk_cycles is not None:
            junk = {p: [rng.getrandbits(len(port.payload.as_value())) for _ in range(junk_cycles + 1)]
                    for p, port in ins.items()}
            await phase(ctx, junk, {p: 1 << 30 for p in outs}, junk_cycles)
            for port in outs.values():
                ctx.set(port.ready, 0)
            ctx.set(cd.rst, 1)
            await ctx.tick()
            ctx.set(cd.rst, 0)
        res.update(await phase(ctx, inputs, n_out, max_cycles))
        for port in outs.values():
            ctx.set(port.ready, 1)
        for _ in range(64):                       # nothing more may come out
            await ctx.tick()
            for p, port in outs.items():
                assert not ctx.get(port.valid), f"port {p} produced more beats than expected"

    sim.add_testbench(tb)
    sim.run()
    for p in outs:
        assert len(res[p]) == n_out[p], f"port {p}: {len(res[p])} of {n_out[p]} beats"
    return res
