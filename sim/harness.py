"""An Amaranth harness around an emitted accelerator, for fast whole-test-set simulation.

The per-cycle cocotb driver tops out near 40k cycles/s because Python touches the
ports every cycle. The harness moves that work into the design: it wraps the
accelerator's Verilog module (an `Instance` of the manifest's top), feeds it input
beats from a memory, makes valid gaps and backpressure with xorshift LFSRs at a
set probability, captures every output beat into a memory and stamps cycles per
frame (first input beat accepted, last output beat accepted). cocotb only loads
the memories through VPI, lets it run, and reads everything back.

Runtime configuration (ports, so one built simulator serves every run of a build
dir): frame count, stall thresholds, LFSR seeds and the drain window. Build-time
configuration (part of the simulator's cache key): beat widths, beats per frame
and the capacity in frames.

Ports (besides clk, rst):
  run       in   1 starts the run (hold high); 0 loads the seeds
  n_frames  in   frames to send this run (<= capacity)
  thr_in    in   input valid gap: no beat offered in a cycle when rand16 < thr_in  (p * 65536)
  thr_out   in   output backpressure: ready low in a cycle when rand16 < thr_out
  seed_in   in   xorshift32 seeds (0 is replaced by a constant)
  seed_out  in
  drain     in   cycles to wait, with ready high, after the last expected output beat
  done      out  all expected beats received and the drain window over
  cycles    out  cycles since run went high (stops at done)
  in_count  out  input beats accepted
  out_count out  output beats accepted (more than expected means the design made extra beats)
Memories (read/written by cocotb through VPI): in_mem, out_mem, in_stamp, out_stamp.
"""
from __future__ import annotations

import re

from amaranth.hdl import ClockSignal, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import builddir

COUNTER_BITS = 32
HARNESS_TOP = "qloom_harness"
MEMORIES = ("in_mem", "out_mem", "in_stamp", "out_stamp")


def _xorshift32(m, state: Signal):
    """Next xorshift32 state (combinational)."""
    a = Signal(32)
    b = Signal(32)
    c = Signal(32)
    m.d.comb += [a.eq(state ^ (state << 13)[:32]), b.eq(a ^ (a >> 17)), c.eq(b ^ (b << 5)[:32])]
    return c


class Harness(wiring.Component):
    def __init__(self, top: str, ports: dict, frames_cap: int, dut=None, init=None):
        """top, ports: the manifest's "top" and "ports"; frames_cap: frames per run.

        dut: an Amaranth component with streams `i`, `o` (a DataflowAccelerator) to wrap
        instead of an Instance of `top` (for amaranth.sim: see run_amaranth); init: the
        input memory's initial beats (amaranth.sim only; cocotb writes it through VPI).
        """
        self.dut, self.init = dut, list(init or [])
        pin, pout = ports["input"], ports["output"]
        self.top, self.pin, self.pout = top, pin, pout
        self.win, self.wout = pin["width"], pout["width"]
        self.bin, self.bout = pin["beats_per_frame"], pout["beats_per_frame"]
        self.frames_cap = frames_cap
        super().__init__({
            "run": In(1), "n_frames": In(COUNTER_BITS),
            "thr_in": In(17), "thr_out": In(17), "seed_in": In(32), "seed_out": In(32),
            "drain": In(COUNTER_BITS),
            "done": Out(1), "cycles": Out(COUNTER_BITS),
            "in_count": Out(COUNTER_BITS), "out_count": Out(COUNTER_BITS),
            # read ports on the capture memories, so that Yosys' opt_clean keeps them
            "peek_addr": In(COUNTER_BITS), "peek_out": Out(self.wout), "peek_in_stamp": Out(COUNTER_BITS),
            "peek_out_stamp": Out(COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        cap = self.frames_cap
        m.submodules.in_mem = in_mem = memory.Memory(shape=self.win, depth=cap * self.bin, init=self.init)
        m.submodules.out_mem = out_mem = memory.Memory(shape=self.wout, depth=cap * self.bout, init=[])
        m.submodules.in_stamp = in_stamp = memory.Memory(shape=COUNTER_BITS, depth=cap, init=[])
        m.submodules.out_stamp = out_stamp = memory.Memory(shape=COUNTER_BITS, depth=cap, init=[])
        self.memories = {"in_mem": in_mem, "out_mem": out_mem, "in_stamp": in_stamp, "out_stamp": out_stamp}
        rd = in_mem.read_port(domain="comb")
        wr_out, wr_is, wr_os = out_mem.write_port(), in_stamp.write_port(), out_stamp.write_port()

        i_payload, i_valid, i_ready = Signal(self.win, name="i_payload"), Signal(name="i_valid"), Signal(name="i_ready")
        o_payload = Signal(self.wout, name="o_payload")
        o_valid, o_ready = Signal(name="o_valid"), Signal(name="o_ready")
        pin, pout = self.pin, self.pout
        if self.dut is None:
            m.submodules.dut = Instance(
                self.top,
                i_clk=ClockSignal(), i_rst=ResetSignal(),
                **{f"i_{pin['payload']}": i_payload, f"i_{pin['valid']}": i_valid, f"o_{pin['ready']}": i_ready,
                   f"o_{pout['payload']}": o_payload, f"o_{pout['valid']}": o_valid, f"i_{pout['ready']}": o_ready})
        else:
            d = m.submodules.dut = self.dut
            m.d.comb += [d.i.payload.as_value().eq(i_payload), d.i.valid.eq(i_valid), i_ready.eq(d.i.ready),
                         o_payload.eq(d.o.payload.as_value()), o_valid.eq(d.o.valid), d.o.ready.eq(o_ready)]

        # random streams: one xorshift32 per side, stepped every running cycle
        xs_in, xs_out = Signal(32, init=1, name="xs_in"), Signal(32, init=1, name="xs_out")
        nx_in, nx_out = _xorshift32(m, xs_in), _xorshift32(m, xs_out)
        running = Signal()
        with m.If(~self.run):
            m.d.sync += [xs_in.eq(Mux(self.seed_in == 0, 0x9E3779B9, self.seed_in)),
                         xs_out.eq(Mux(self.seed_out == 0, 0x7F4A7C15, self.seed_out))]
        with m.Elif(running):
            m.d.sync += [xs_in.eq(nx_in), xs_out.eq(nx_out)]
        go_in = xs_in[:16] >= self.thr_in
        go_out = xs_out[:16] >= self.thr_out

        n_in = Signal(COUNTER_BITS)
        n_out = Signal(COUNTER_BITS)
        m.d.comb += [n_in.eq(self.n_frames * self.bin), n_out.eq(self.n_frames * self.bout)]

        cycle = self.cycles
        draining = Signal()
        drain_cnt = Signal(COUNTER_BITS)
        m.d.comb += [draining.eq(self.out_count >= n_out), self.done.eq(draining & (drain_cnt >= self.drain)),
                     running.eq(self.run & ~self.done)]
        with m.If(running):
            m.d.sync += cycle.eq(cycle + 1)
            with m.If(draining):
                m.d.sync += drain_cnt.eq(drain_cnt + 1)

        # ---- input side: offer beat in_count; hold valid until accepted (stream rule)
        valid = Signal(name="valid")
        take_i = Signal()
        m.d.comb += [rd.addr.eq(self.in_count), i_payload.eq(rd.data), i_valid.eq(valid),
                     take_i.eq(valid & i_ready)]
        nxt = Signal(COUNTER_BITS)
        m.d.comb += nxt.eq(self.in_count + take_i)
        with m.If(running):
            m.d.sync += [self.in_count.eq(nxt),
                         valid.eq(Mux(valid & ~take_i, 1, (nxt < n_in) & go_in))]
        in_pos = Signal(range(max(self.bin, 2)))
        in_frame = Signal(COUNTER_BITS)
        with m.If(take_i):
            m.d.sync += in_pos.eq(Mux(in_pos == self.bin - 1, 0, in_pos + 1))
            with m.If(in_pos == self.bin - 1):
                m.d.sync += in_frame.eq(in_frame + 1)
        m.d.comb += [wr_is.addr.eq(in_frame), wr_is.data.eq(cycle), wr_is.en.eq(take_i & (in_pos == 0))]

        # ---- output side: random ready (always ready while draining), capture every beat
        take_o = Signal()
        m.d.comb += [o_ready.eq(running & (go_out | draining)), take_o.eq(o_valid & o_ready)]
        m.d.comb += [wr_out.addr.eq(self.out_count), wr_out.data.eq(o_payload),
                     wr_out.en.eq(take_o & (self.out_count < n_out))]
        out_pos = Signal(range(max(self.bout, 2)))
        out_frame = Signal(COUNTER_BITS)
        with m.If(take_o):
            m.d.sync += [self.out_count.eq(self.out_count + 1),
                         out_pos.eq(Mux(out_pos == self.bout - 1, 0, out_pos + 1))]
            with m.If(out_pos == self.bout - 1):
                m.d.sync += out_frame.eq(out_frame + 1)
        m.d.comb += [wr_os.addr.eq(out_frame), wr_os.data.eq(cycle),
                     wr_os.en.eq(take_o & (out_pos == self.bout - 1) & (out_frame < self.n_frames))]
        for mem, port in ((out_mem, self.peek_out), (in_stamp, self.peek_in_stamp),
                          (out_stamp, self.peek_out_stamp)):
            rp = mem.read_port(domain="comb")
            m.d.comb += [rp.addr.eq(self.peek_addr), port.eq(rp.data)]
        return m


_MEMINIT = re.compile(r"\n  cell \$meminit_v2 \S+\n    parameter \\MEMID \"\\\\(?:%s)\"\n.*?\n  end\n"
                      % "|".join(MEMORIES), re.S)


def verilog(top: str, ports: dict, frames_cap: int) -> str:
    """Verilog of the harness module `qloom_harness` (the accelerator's module is instantiated, not included).

    The harness memories' zero init is dropped from the RTLIL before Yosys sees it:
    cocotb writes every input word it uses, the captures are written by the design,
    and megabits of init only slow Yosys and the simulator builds.
    """
    from amaranth.back import rtlil

    from qloom.hdl import emit
    il = rtlil.convert(Harness(top, ports, frames_cap), name=HARNESS_TOP, emit_src=False)
    il, n = _MEMINIT.subn("\n", il)
    assert n == len(MEMORIES), f"expected {len(MEMORIES)} memory init cells in the harness RTLIL, found {n}"
    return emit.rtlil_to_verilog(il)


def run_amaranth(dut, ports: dict, beats: list[int], n_frames: int, stall_prob: float = 0.3, seed: int = 0,
                 drain: int = 64, max_cycles: int = 10_000_000) -> dict:
    """The same harness around an Amaranth `dut` (e.g. a DataflowAccelerator), in amaranth.sim.

    Same LFSRs, seeds and stall thresholds as a cocotb harness run of batch 0, so the
    two give the same cycle counts and stamps when the emitted Verilog behaves as the
    Amaranth design does: a tool to tell a Verilog/simulator problem from a design one.
    Returns {"out": beats, "in_stamp", "out_stamp", "cycles", "done"}.
    """
    from amaranth.sim import Simulator
    h = Harness("dut", ports, n_frames, dut=dut, init=beats)
    res = {}

    async def bench(ctx):
        thr = min(int(round(stall_prob * 65536)), 65535)
        s_in, s_out = builddir.stimulus_seeds(seed, 0)
        for sig, v in ((h.thr_in, thr), (h.thr_out, thr), (h.seed_in, s_in), (h.seed_out, s_out),
                       (h.drain, drain), (h.n_frames, n_frames)):
            ctx.set(sig, v)
        await ctx.tick().repeat(2)
        ctx.set(h.run, 1)
        n = 0
        while not ctx.get(h.done) and n < max_cycles:
            await ctx.tick()
            n += 1
        mem = h.memories
        n_out = ctx.get(h.out_count)
        res.update(done=bool(ctx.get(h.done)), cycles=ctx.get(h.cycles),
                   out=[ctx.get(mem["out_mem"].data[i]) for i in range(min(n_out, n_frames * h.bout))],
                   in_stamp=[ctx.get(mem["in_stamp"].data[i]) for i in range(n_frames)],
                   out_stamp=[ctx.get(mem["out_stamp"].data[i]) for i in range(n_out // h.bout)])

    sim = Simulator(h)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res
