"""Stream beats: element shapes, packing, and amaranth.sim helpers with random stalls.

A stream carries `stream.Signature(data.ArrayLayout(elem, n))`: n elements per
beat, element 0 in the least significant bits, elements in stream order
(C fastest, then W, then H). Int elements are `signed(b)`/`unsigned(b)`;
Bipolar elements are `unsigned(1)` with bit 1 meaning +1.
"""
from __future__ import annotations

import random

import numpy as np
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data, stream

from qloom.compiler import builddir, ir


def divisors(n: int) -> list[int]:
    """The valid PE/SIMD values for n lanes' worth of elements (for folding errors and searches)."""
    return [d for d in range(1, n + 1) if n % d == 0]


def elem_shape(dtype: ir.ElemType) -> Shape:
    if isinstance(dtype, ir.BipolarType):
        return unsigned(1)
    return signed(dtype.bits) if dtype.signed else unsigned(dtype.bits)


def beat_layout(dtype: ir.ElemType, n: int) -> data.ArrayLayout:
    return data.ArrayLayout(elem_shape(dtype), n)


def beat_signature(dtype: ir.ElemType, n: int) -> stream.Signature:
    return stream.Signature(beat_layout(dtype, n))


def _port(dtype: ir.ElemType, n: int) -> builddir.Port:
    return builddir.Port.for_stream("x", dtype, n, (n,))


def encode(dtype: ir.ElemType, v: int) -> int:
    """An element's value -> its bits (two's complement; bipolar +1 -> 1, -1 -> 0)."""
    return int(_port(dtype, 1).encode(v))


def decode(dtype: ir.ElemType, bits: int) -> int:
    return int(_port(dtype, 1).decode(bits))


def pack(dtype: ir.ElemType, values) -> int:
    """Element values -> one beat's payload as an integer (element 0 in the LSBs)."""
    values = list(values)
    return to_beats(dtype, values, len(values))[0]


def to_beats(dtype: ir.ElemType, flat, n: int) -> list[int]:
    """A flat sequence of elements -> packed beats of n elements (builddir.Port.pack)."""
    flat = np.asarray(list(flat), dtype=np.int64)
    assert flat.size % n == 0, f"{flat.size} elements do not split into beats of {n}"
    return _port(dtype, n).pack(flat.reshape(-1, n))


def from_beats(dtype: ir.ElemType, beats, n: int) -> list[int]:
    return _port(dtype, n).unpack(beats).reshape(-1).tolist()


# ---------------------------------------------------------------- amaranth.sim testbenches

async def stream_put(ctx, port, payload: int, *, rng: random.Random | None = None, stall: float = 0.0):
    """Send one beat; before it, hold valid low for a random number of cycles."""
    while rng is not None and rng.random() < stall:
        await ctx.tick()
    ctx.set(port.payload.as_value(), payload)
    ctx.set(port.valid, 1)
    # (a plain loop, not .until(): a testbench left waiting when another raises then closes quietly)
    while not (await ctx.tick().sample(port.ready))[2]:
        pass
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, *, rng: random.Random | None = None, stall: float = 0.0) -> int:
    """Receive one beat; before it, hold ready low for a random number of cycles."""
    while rng is not None and rng.random() < stall:
        await ctx.tick()
    ctx.set(port.ready, 1)
    while True:
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload.as_value())
        if valid:
            break
    ctx.set(port.ready, 0)
    return int(payload)


class Deadlock(TimeoutError):
    """No beat moved anywhere for a long time; the message names the stages that hold a beat nobody takes."""


def stalled_report(held: list[str], waiting: list[str]) -> str:
    """The deadlock message: streams holding valid without ready (their producer is stuck), then the rest."""
    lines = [f"  {label} holds valid without ready" for label in held] or ["  (no stream holds valid)"]
    return "\n".join(lines + [f"  {label} is ready, nothing valid" for label in waiting])


def run_stream(dut, i_port, o_port, beats_in: list[int], n_out: int, *, stall_in=0.3, stall_out=0.3,
               seed=0, max_cycles=1_000_000, vcd: str | None = None, extra=None,
               beat_times: list | None = None, probes: list | None = None,
               idle_cycles: int | None = None) -> list[int]:
    """Simulate `dut`: push `beats_in` into i_port under random valid gaps, collect
    `n_out` beats from o_port under random backpressure, and check nothing more comes.

    Returns the payloads received. `extra` may add testbenches: fn(sim).
    `beat_times`, if given, receives the cycle number of every output beat.
    `probes`: (label, stream port) of internal streams (DataflowAccelerator.probes, read after
    the simulator elaborates the design, or a list filled then). With `idle_cycles`, a cycle
    count after which no handshake on any probe or port means a deadlock: Deadlock is raised,
    naming the streams that hold valid without ready.
    """
    from amaranth.sim import Simulator

    got = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    rin, rout = random.Random(seed), random.Random(seed + 1)

    async def producer(ctx):
        for b in beats_in:
            await stream_put(ctx, i_port, b, rng=rin, stall=stall_in)

    cycle = [0]

    async def counter(ctx):
        async for _ in ctx.tick():
            cycle[0] += 1

    async def consumer(ctx):
        for _ in range(n_out):
            got.append(await stream_get(ctx, o_port, rng=rout, stall=stall_out))
            if beat_times is not None:
                beat_times.append(cycle[0])
        # nothing more may come out: watch a while with ready high
        ctx.set(o_port.ready, 1)
        for _ in range(64):
            await ctx.tick()
            assert not ctx.get(o_port.valid), "the design produced more beats than expected"

    async def watchdog(ctx):
        await ctx.delay(max_cycles * 1e-8)
        raise TimeoutError(f"no result after {max_cycles} cycles: {len(got)} of {n_out} beats received")

    async def deadlock_watch(ctx):
        ports = [("input", i_port), ("output", o_port)] + list(probes() if callable(probes) else probes or [])
        signals = [sig for _, p in ports for sig in (p.valid, p.ready)]
        idle = 0
        async for _, _, *vr in ctx.tick().sample(*signals):
            moved = any(v and r for v, r in zip(vr[0::2], vr[1::2]))
            idle = 0 if moved else idle + 1
            if idle >= idle_cycles:
                held = [lbl for (lbl, _), v, r in zip(ports, vr[0::2], vr[1::2]) if v and not r]
                waiting = [lbl for (lbl, _), v, r in zip(ports, vr[0::2], vr[1::2]) if r and not v]
                raise Deadlock(f"deadlock: no beat moved for {idle} cycles ({len(got)} of {n_out} output beats "
                               f"received):\n" + stalled_report(held, waiting))

    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(watchdog, background=True)
    if idle_cycles:
        sim.add_testbench(deadlock_watch, background=True)
    if beat_times is not None:
        sim.add_testbench(counter, background=True)
    if extra:
        extra(sim)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return got
