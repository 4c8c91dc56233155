# amaranth: UnusedElaboratable=no
"""Measured II and latency of an accelerator in amaranth.sim, against the estimates.

`measure(graph, folding, x_int)` streams frames through the DataflowAccelerator with no
stalls (input always valid, output always ready) and records the clock edge of every
input and output handshake. Conventions (the same as `folding.Pipeline`):
  latency = (edge of frame 0's last output beat) - (edge of its first input beat) + 1,
  II      = edges between the last output beats of the last two frames (steady state).
`check(graph, folding, x_int)` raises TimingMismatch unless the measured II equals the
estimate exactly and the measured latency is within `latency_bound` of the estimate.

The latency model (`Pipeline.latency`, each kernel's `frame_times`) is exact for chains
of Dense MVUs, elementwise stages, width converters and argmax (each stage's output
beats follow from its input beats' times). A convolution's window generator models its
own handshakes with its MVU beat by beat, and is exact for one convolution; window
generators and pooling release their outputs in bursts that a later stage's (first,
last) model sees as evenly spaced, so such networks get `latency_bound` instead.
"""
from __future__ import annotations

import numpy as np

from . import streams
from .folding import plan


class TimingMismatch(AssertionError):
    """The measured II or latency is not what the model says."""


EXACT_KINDS = {"mvu", "threshold", "requantize", "width", "argmax"}
BOUND = (0.20, 10)


def latency_bound(graph, folding) -> tuple[float, int]:
    """(relative, absolute): the measured latency must be within relative * estimate + absolute cycles.
    Exact, (0, 0), for chains of Dense MVUs, thresholds, requantizers, width converters and argmax;
    BOUND (20% + 10 cycles) once a window generator, pooling or a fork/join is in the pipeline: their
    bursts reach later stages, whose (first, last) model then assumes evenly spaced beats (measured on
    random small CNNs: within 15%)."""
    stages = plan(graph, folding)
    if all(s.kind in EXACT_KINDS and (s.kind != "mvu" or s.in_type.size == s.in_type.shape[-1])
           for s in stages):
        return 0.0, 0
    return BOUND


def measure(graph, folding, x_int, max_cycles: int = 5_000_000) -> dict:
    """{ii, latency, ii_estimate, latency_estimate, frames} for the frames x_int (at least 3)."""
    from amaranth.sim import Simulator

    from .accelerator import DataflowAccelerator
    from qloom.compiler import reference

    x_int = reference.check_input(graph, x_int)
    if x_int.shape[0] < 3:
        raise ValueError(f"measure() needs at least 3 frames for a steady-state II, got {x_int.shape[0]}")
    dut = DataflowAccelerator(graph, folding)
    pipe = dut.pipeline
    beats = streams.to_beats(dut.in_type, x_int.reshape(-1), dut.in_n)
    per_in = len(beats) // x_int.shape[0]
    per_out = int(np.prod(graph.validate()[graph.output].shape)) // dut.out_n
    n_out = per_out * x_int.shape[0]
    t_in, t_out = [], []
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        pos, cycle = 0, 0
        while len(t_out) < n_out:
            if cycle > max_cycles:
                raise TimeoutError(f"{len(t_out)} of {n_out} output beats after {max_cycles} cycles")
            if pos < len(beats):
                ctx.set(dut.i.payload.as_value(), beats[pos])
            ctx.set(dut.i.valid, pos < len(beats))
            _, _, iv, ir_, ov = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid)
            if iv and ir_:
                t_in.append(cycle)
                pos += 1
            if ov:
                t_out.append(cycle)
            cycle += 1

    sim.add_testbench(tb)
    sim.run()
    ends = t_out[per_out - 1::per_out]
    return {"ii": ends[-1] - ends[-2], "latency": t_out[per_out - 1] - t_in[0] + 1,
            "ii_estimate": pipe.ii, "latency_estimate": pipe.latency, "frames": x_int.shape[0],
            "in_beats_per_frame": per_in}


def check(graph, folding, x_int) -> dict:
    """measure(), then raise TimingMismatch unless II == estimate and the latency is within the bound."""
    m = measure(graph, folding, x_int)
    rel, ab = latency_bound(graph, folding)
    if m["ii"] != m["ii_estimate"]:
        raise TimingMismatch(f"folding {folding}: measured II {m['ii']}, estimated {m['ii_estimate']}")
    if abs(m["latency"] - m["latency_estimate"]) > rel * m["latency_estimate"] + ab:
        raise TimingMismatch(f"folding {folding}: measured latency {m['latency']}, estimated "
                             f"{m['latency_estimate']} (bound {rel:.0%} + {ab} cycles)")
    return m
