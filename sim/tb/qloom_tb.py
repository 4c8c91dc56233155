"""cocotb testbench for a qloom build dir (accelerator.v + manifest.json + vectors).

Run by qloom.sim (cocotb_tools.runner), which passes a JSON config file in
QLOOM_SIM_CONFIG. Two tests, one per toplevel (the runner picks one):

* `per_cycle`: the toplevel is the accelerator. A driver (StreamSource) offers
  input beats with random valid gaps, a monitor (StreamSink) collects output
  beats under random backpressure, and a checker (qloom_tb_check.Scoreboard)
  compares every element with the reference outputs (qloom_tb_model). The
  three are plain objects stepped by ONE coroutine, one wake-up per clock edge
  (reads after RisingEdge see pre-edge values): the fastest cocotb style.
* `harness`: the toplevel is qloom_harness (sim/harness.py), which holds input
  beats and captured outputs in memories and makes its stalls with LFSRs.
  cocotb writes the input memory through VPI, runs, reads everything back, and
  the same Scoreboard checks it. No Python runs per cycle.

Both write a results JSON (QLOOM config "results") and the received outputs
(.npy), then fail the cocotb test on any mismatch with frame, element,
expected, got and the waveform file in the message.

Imports: cocotb, numpy and the two sibling modules only (no amaranth, no qloom:
the embedded interpreter pays for every import).
"""
from __future__ import annotations

import json
import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer

from qloom_tb_check import Scoreboard, write_results
from qloom_tb_model import BuildDir, stimulus_seeds

PERIOD_NS = 10


def _config() -> dict:
    with open(os.environ["QLOOM_SIM_CONFIG"]) as f:
        return json.load(f)


def _word(handle):
    """A handle's value as an int, or None when any bit is X/Z."""
    s = handle._handle.get_signal_val_binstr()     # the string LogicArray would parse; skip the object
    try:
        return int(s, 2)
    except ValueError:
        return None


def _bit(handle) -> bool:
    """A 1-bit handle is 1 (X/Z read as 0: a stream that never says valid/ready times out, reported)."""
    return handle._handle.get_signal_val_binstr() == "1"


def _measures(frame_in: list, frame_out: list, batch_of: list) -> tuple[list, list]:
    """Per frame: latency (first input beat accepted -> last output beat accepted, in cycles),
    and the interval since the previous frame's last output beat (None at a batch's first frame)."""
    n = min(len(frame_in), len(frame_out))
    lat = [int(frame_out[f] - frame_in[f]) for f in range(n)]
    gaps = [None] + [int(frame_out[f] - frame_out[f - 1]) if batch_of[f] == batch_of[f - 1] else None
                     for f in range(1, len(frame_out))]
    return lat, gaps


def _finish(dut, cfg, bd, board: Scoreboard, got_beats, extra, **fields):
    board.check(got_beats, extra)
    np.save(cfg["got"], board.got)
    write_results(cfg["results"], ok=board.ok, mismatches=board.mismatches, first_mismatches=board.first,
                  received=board.received, beats_expected=board.beats_expected, extra_beats=board.extra_beats,
                  unknown_beats=board.unknown_beats, frames=board.frames, verdict=board.describe(), **fields)
    if board.ok:
        dut._log.info(board.describe())
    assert board.ok, "\n" + board.describe()


# ---------------------------------------------------------------- per-cycle driver, monitor

class StreamSource:
    """Driver: offers beats on (payload, valid), keeps valid until ready, random gaps between beats."""

    def __init__(self, dut, port, beats: list[int], stall: float, rng: random.Random):
        self.payload = getattr(dut, port.payload)
        self.valid_h = getattr(dut, port.valid)
        self.ready_h = getattr(dut, port.ready)
        self.beats, self.stall, self.rng = beats, stall, rng
        self.bpf = port.beats_per_frame
        self.pos = 0             # beats accepted
        self.valid = False       # what we drive now
        self.frame_start: list[int] = []

    def sample(self, cycle: int) -> None:
        """At a clock edge (pre-edge values): was the offered beat taken?"""
        if self.valid and _bit(self.ready_h):
            if self.pos % self.bpf == 0:
                self.frame_start.append(cycle)
            self.pos += 1
            self.valid = False

    def drive(self) -> None:
        if not self.valid:
            if self.pos < len(self.beats) and (self.stall <= 0 or self.rng.random() >= self.stall):
                self.payload.value = self.beats[self.pos]
                self.valid_h.value = 1
                self.valid = True
            else:
                self.valid_h.value = 0


class StreamSink:
    """Monitor: drives a random ready, collects every beat taken, stamps each frame's last beat."""

    def __init__(self, dut, port, stall: float, rng: random.Random):
        self.payload = getattr(dut, port.payload)
        self.valid_h = getattr(dut, port.valid)
        self.ready_h = getattr(dut, port.ready)
        self.stall, self.rng = stall, rng
        self.bpf = port.beats_per_frame
        self.ready = False
        self.beats: list = []
        self.frame_end: list[int] = []
        self.always_ready = False

    def sample(self, cycle: int) -> None:
        if self.ready and _bit(self.valid_h):
            self.beats.append(_word(self.payload))
            if len(self.beats) % self.bpf == 0:
                self.frame_end.append(cycle)

    def drive(self) -> None:
        r = self.always_ready or self.stall <= 0 or self.rng.random() >= self.stall
        if r != self.ready:
            self.ready_h.value = int(r)
            self.ready = r


def _setup():
    """The run's config, build dir, input frames, stall probability, seed and scoreboard."""
    cfg = _config()
    bd = BuildDir(cfg["build_dir"])
    x, y = bd.frames(cfg["frames"])
    board = Scoreboard(bd.out, y, cfg.get("waves"))
    return cfg, bd, x, float(cfg["stall_prob"]), int(cfg["seed"]), board


@cocotb.test()
async def per_cycle(dut):
    cfg, bd, x, stall, seed, board = _setup()
    src = StreamSource(dut, bd.inp, bd.inp.pack(x), stall, random.Random(seed))
    sink = StreamSink(dut, bd.out, stall, random.Random(seed + 0x5EED))
    n_out = board.beats_expected

    clk, rst = getattr(dut, bd.clock), getattr(dut, bd.reset)
    Clock(clk, PERIOD_NS, unit="ns", impl="gpi").start()
    src.valid_h.value = 0
    sink.ready_h.value = 0
    rst.value = 1
    await ClockCycles(clk, 2)
    rst.value = 0

    edge = RisingEdge(clk)
    max_cycles, drain = int(cfg["timeout_cycles"]), int(cfg["drain"])
    cycle, drain_left, timed_out = 0, drain, False
    src.drive()
    sink.drive()
    t0 = time.perf_counter()
    while True:
        await edge
        cycle += 1
        src.sample(cycle)
        sink.sample(cycle)
        if len(sink.beats) >= n_out:
            if drain_left <= 0:
                break
            drain_left -= 1
            sink.always_ready = True
        if cycle >= max_cycles:
            timed_out = True
            break
        src.drive()
        sink.drive()
    wall = time.perf_counter() - t0
    lat, gaps = _measures(src.frame_start, sink.frame_end, [0] * len(sink.frame_end))
    if timed_out:
        dut._log.error(f"timeout after {cycle} cycles: {src.pos} of {len(src.beats)} input beats accepted, "
                       f"{len(sink.beats)} of {n_out} output beats received")
    _finish(dut, cfg, bd, board, sink.beats[:n_out], max(0, len(sink.beats) - n_out),
            mode="cocotb", cycles=cycle, run_seconds=wall, load_seconds=0.0, timed_out=timed_out,
            latency=lat, intervals=gaps, in_beats=src.pos)


# ---------------------------------------------------------------- harness

@cocotb.test()
async def harness(dut):
    cfg, bd, x, stall, seed, board = _setup()
    cap = int(cfg["frames_cap"])
    thr = min(int(round(stall * 65536)), 65535)

    Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start()
    dut.run.value = 0
    dut.rst.value = 1
    dut.thr_in.value = thr
    dut.thr_out.value = thr
    dut.drain.value = int(cfg["drain"])
    in_mem, out_mem, in_stamp, out_stamp = dut.in_mem, dut.out_mem, dut.in_stamp, dut.out_stamp
    bin_, bout = bd.inp.beats_per_frame, bd.out.beats_per_frame

    got: list = []
    frame_in: list[int] = []
    frame_out: list[int] = []
    batch_of: list[int] = []
    cycles = extra = in_beats = 0
    load_s = run_s = 0.0
    timed_out = False
    for b, start in enumerate(range(0, len(x), cap)):
        nb = min(cap, len(x) - start)
        t0 = time.perf_counter()
        for i, w in enumerate(bd.inp.pack(x[start:start + nb])):
            in_mem[i].value = w
        dut.n_frames.value = nb
        dut.seed_in.value, dut.seed_out.value = stimulus_seeds(seed, b)
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        t1 = time.perf_counter()
        dut.run.value = 1
        limit = int(cfg["timeout_cycles"]) * nb // max(len(x), 1) + 10_000
        await First(RisingEdge(dut.done), Timer(limit * PERIOD_NS, unit="ns"))
        t2 = time.perf_counter()
        done = bool(dut.done.value)
        n_cyc, n_in, n_out = int(dut.cycles.value), int(dut.in_count.value), int(dut.out_count.value)
        want = nb * bout
        got.extend(_word(out_mem[i]) for i in range(min(n_out, want)))
        fi = [int(in_stamp[f].value) for f in range(min(n_in // bin_ + (n_in % bin_ > 0), nb))]
        fo = [int(out_stamp[f].value) for f in range(min(n_out // bout, nb))]
        frame_in += [cycles + c for c in fi]
        frame_out += [cycles + c for c in fo]
        batch_of += [b] * len(fo)
        cycles += n_cyc
        extra += max(0, n_out - want)
        in_beats += n_in
        dut.run.value = 0
        load_s += (t1 - t0) + (time.perf_counter() - t2)
        run_s += t2 - t1
        if not done:
            timed_out = True
            dut._log.error(f"timeout after {n_cyc} cycles in batch {b}: {n_in} of {nb * bin_} input beats "
                           f"accepted, {n_out} of {want} output beats received")
            break
    lat, gaps = _measures(frame_in, frame_out, batch_of)
    _finish(dut, cfg, bd, board, got, extra, mode="harness", cycles=cycles, run_seconds=run_s,
            load_seconds=load_s, timed_out=timed_out, latency=lat, intervals=gaps, in_beats=in_beats)
