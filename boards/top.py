"""Board tops: the accelerator behind a UART link (framing in docs/boards.md).

`UARTAccelTop` is plain logic (ports clk, rst, rx, tx, overrun, error): it
receives frames on `rx`, feeds their beats to the accelerator, and sends each
result frame back on `tx`. The accelerator is either an Amaranth component (a
DataflowAccelerator, `dut=`) or, for a build dir, an `Instance` of the emitted
Verilog module (the manifest's "top"), whose accelerator.v is read alongside.

Framing (bytes, 8N1):
  host -> board:  0xA5, then the input frame: beats_per_frame beats, each
                  ceil(width/8) bytes, least significant byte first.
  board -> host:  0x5A, then the output frame, packed the same way.
Beats are the manifest's stream beats (element 0 in the least significant bits).
Test-pattern mode (measures the accelerator on the board, without the line's limits):
  host -> board:  0xB5, then N (4 bytes, least significant first): N frames of
                  input beats come from an on-chip LFSR (link.pattern_beats), the
                  outputs go into a checksum (link.checksum) instead of the line.
  board -> host:  0x5B, then the cycles from the first input beat to the last
                  output beat (4 bytes), then the checksum (4 bytes).
Bytes before a 0xA5 are ignored. A pause longer than `idle_timeout` cycles
inside a frame resets the accelerator and the framers (the partial frame and
every frame in flight are dropped) and sets `error`. A beat that completes
while the previous one still waits for the accelerator is dropped and sets
`overrun` (the host sent too many frames ahead: see Link's window).

`BoardTop` puts it on an amaranth-boards platform: the platform's default
clock, the board's UART pins, and one LED lit on error/overrun.
"""
from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Cat, DomainRenamer, Elaboratable, Instance, Module, \
    ResetSignal, Signal
from amaranth.lib import fifo, io, wiring
from amaranth.lib.wiring import In, Out

from .uart import UARTRx, UARTTx, divisor_for

SYNC_IN = 0xA5
SYNC_OUT = 0x5A
SYNC_TEST = 0xB5           # host -> board: run N frames from the on-chip test pattern (4 bytes N follow)
SYNC_TEST_OUT = 0x5B       # board -> host: cycles (4 bytes) and the output checksum (4 bytes)
DEFAULT_BAUD = 115200
SIM_DIVISOR = 4            # cycles per bit in simulation (the fastest the UART allows)


def nbytes(width: int) -> int:
    return (int(width) + 7) // 8


def _send_framed(m, utx, states, sync, buf, count, last, on_last, shift=True):
    """FSM states (sync, bytes): send the sync byte, then buf's bytes LSB first; after byte `last`
    (count == last) call on_last() and go back to IDLE. shift: buf is a register shifted a byte at a
    time; else a value that holds still while it is sent, its bytes selected by `count`."""
    sync_state, bytes_state = states
    with m.State(sync_state):
        m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(sync)]
        with m.If(utx.i.ready):
            m.next = bytes_state
    with m.State(bytes_state):
        m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(buf[:8] if shift else buf.word_select(count, 8))]
        with m.If(utx.i.ready):
            if shift:
                m.d.core += buf.eq(buf >> 8)
            m.d.core += count.eq(count + 1)
            with m.If(count == last):
                on_last()
                m.next = "IDLE"


class UARTAccelTop(wiring.Component):
    """The accelerator with a UART frame link.

    ports: the manifest's "ports" (payload/valid/ready names, widths, beats per frame).
    top: the accelerator's Verilog module name (an Instance is made) unless `dut` is given.
    dut: an Amaranth component with streams `i` and `o` (a DataflowAccelerator).
    divisor: clock cycles per UART bit. idle_timeout: cycles of silence inside an
    input frame before the link resets (0: never).
    """

    def __init__(self, ports: dict, *, top: str | None = None, dut=None, divisor: int = SIM_DIVISOR,
                 idle_timeout: int = 0):
        if (top is None) == (dut is None):
            raise ValueError("give exactly one of top= (an Instance of emitted Verilog) and dut= (a component)")
        self.ports, self.top_name, self.dut = ports, top, dut
        self.divisor, self.idle_timeout = int(divisor), int(idle_timeout)
        pin, pout = ports["input"], ports["output"]
        self.win, self.wout = int(pin["width"]), int(pout["width"])
        self.bin, self.bout = int(pin["beats_per_frame"]), int(pout["beats_per_frame"])
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "overrun": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        soft = Signal()                                    # timeout: reset everything in "core"
        core_rst = Signal(init=1)      # a register alone drives the core's reset net: 1 in reset, then `soft`
        m.d.sync += core_rst.eq(soft)
        m.domains.core = cd = ClockDomain("core", local=True)
        m.d.comb += [cd.clk.eq(ClockSignal("sync")), cd.rst.eq(core_rst)]
        core = DomainRenamer({"sync": "core"})
        m.submodules.uart_rx = urx = core(UARTRx(self.divisor))
        m.submodules.uart_tx = utx = core(UARTTx(self.divisor))
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        i_payload, i_valid, i_ready = Signal(self.win), Signal(), Signal()
        a_payload, a_valid, a_ready = Signal(self.wout), Signal(), Signal()   # the accelerator's output
        if self.dut is None:
            pin, pout = self.ports["input"], self.ports["output"]
            m.submodules.accel = Instance(
                self.top_name, i_clk=ClockSignal("core"), i_rst=ResetSignal("core"),
                **{f"i_{pin['payload']}": i_payload, f"i_{pin['valid']}": i_valid, f"o_{pin['ready']}": i_ready,
                   f"o_{pout['payload']}": a_payload, f"o_{pout['valid']}": a_valid, f"i_{pout['ready']}": a_ready})
        else:
            d = self.dut
            m.submodules.accel = core(d)
            m.d.comb += [d.i.payload.as_value().eq(i_payload), d.i.valid.eq(i_valid), i_ready.eq(d.i.ready),
                         a_payload.eq(d.o.payload.as_value()), a_valid.eq(d.o.valid), d.o.ready.eq(a_ready)]
        # a 2-beat FIFO after the accelerator: its ready is a register, so the transmitter's state never
        # reaches into the accelerator's stall logic
        m.submodules.out_fifo = ofifo = core(fifo.SyncFIFO(width=self.wout, depth=2))
        o_payload, o_valid, o_ready = Signal(self.wout), Signal(), Signal()
        m.d.comb += [ofifo.w_data.eq(a_payload), ofifo.w_en.eq(a_valid), a_ready.eq(ofifo.w_rdy),
                     o_payload.eq(ofifo.r_data), o_valid.eq(ofifo.r_rdy), ofifo.r_en.eq(o_ready)]

        # ---- receive: sync byte, then bytes -> beats -> accelerator input
        bin_b = nbytes(self.win)
        shreg = Signal(8 * bin_b)
        byte_i = Signal(range(max(bin_b, 2)))
        beat_i = Signal(range(max(self.bin, 2)))
        in_frame = Signal()
        # the input beat: the UART's, or the test pattern's LFSR (one register for both, so no mux
        # before the accelerator's input; max(win, 2) bits, the LFSR's width)
        hold, hold_valid = Signal(max(self.win, 2)), Signal()
        overrun = Signal()
        cmd, cmd_i, test_n, go = Signal(), Signal(2), Signal(32), Signal()     # a test command's count bytes
        reporting = Signal()                               # a test's report waits or is being sent
        test = self._test_pattern(m, hold, i_valid, i_ready, o_payload, o_valid, o_ready, test_n)
        # a test starts once its command is complete and no report waits or is being sent (the report
        # is read straight from the cycle and checksum registers, which the start clears); `start` is a
        # register: it resets most of the test's registers, and the transmitter's state stays off that net
        start = Signal()
        m.d.core += start.eq(go & ~reporting & ~start)
        m.d.comb += [test.start.eq(start), i_payload.eq(hold[:self.win])]
        with m.If(start):
            m.d.core += go.eq(0)
        with m.If(test.run):
            m.d.comb += i_valid.eq(test.beat_valid)
        with m.Else():
            m.d.comb += i_valid.eq(hold_valid)
        with m.If(i_valid & i_ready & ~test.run):
            m.d.core += hold_valid.eq(0)
        new = Cat(shreg[8:], urx.o.payload)
        with m.If(urx.o.valid):
            with m.If(cmd):
                m.d.core += [test_n.eq(Cat(test_n[8:], urx.o.payload)), cmd_i.eq(cmd_i + 1)]
                with m.If(cmd_i == 3):
                    m.d.core += [cmd.eq(0), go.eq(1)]        # the test starts once test_n has its last byte
            with m.Elif(~in_frame):
                with m.If(urx.o.payload == SYNC_IN):
                    m.d.core += [in_frame.eq(1), byte_i.eq(0), beat_i.eq(0)]
                with m.Elif((urx.o.payload == SYNC_TEST) & ~test.run & ~hold_valid):
                    m.d.core += [cmd.eq(1), cmd_i.eq(0)]
            with m.Else():
                m.d.core += shreg.eq(new)
                with m.If(byte_i == bin_b - 1):
                    m.d.core += byte_i.eq(0)
                    with m.If((hold_valid & ~i_ready) | test.run | go):
                        m.d.comb += overrun.eq(1)        # the beat before it still waits, or a test waits or runs
                    with m.Else():
                        m.d.core += [hold.eq(new[:self.win]), hold_valid.eq(1)]
                    with m.If(beat_i == self.bin - 1):
                        m.d.core += [in_frame.eq(0), beat_i.eq(0)]
                    with m.Else():
                        m.d.core += beat_i.eq(beat_i + 1)
                with m.Else():
                    m.d.core += byte_i.eq(byte_i + 1)

        # ---- transmit: accelerator output beats -> sync byte (per frame) + bytes
        bout_b = nbytes(self.wout)
        obuf = Signal(8 * bout_b)
        obyte = Signal(range(max(bout_b, 2)))
        obeat = Signal(range(max(self.bout, 2)))
        rbyte = Signal(range(8))
        with m.FSM(domain="core") as fsm:
            with m.State("IDLE"):
                m.d.comb += o_ready.eq(1)
                with m.If(test.done):
                    m.d.core += [rbyte.eq(0), test.done.eq(0)]
                    m.next = "TSYNC"
                with m.Elif(o_valid & ~test.run):
                    m.d.core += [obuf.eq(o_payload), obyte.eq(0)]
                    with m.If(obeat == 0):
                        m.next = "SYNC"
                    with m.Else():
                        m.next = "BYTES"
            # the report: cycles and checksum, least significant first, straight from their registers
            # (they hold still: the next test starts after it)
            _send_framed(m, utx, ("TSYNC", "TBYTES"), SYNC_TEST_OUT, Cat(test.cycles, test.checksum), rbyte, 7,
                         lambda: None, shift=False)

            def next_beat():
                with m.If(obeat == self.bout - 1):
                    m.d.core += obeat.eq(0)
                with m.Else():
                    m.d.core += obeat.eq(obeat + 1)
            _send_framed(m, utx, ("SYNC", "BYTES"), SYNC_OUT, obuf, obyte, bout_b - 1, next_beat)
        m.d.comb += reporting.eq(test.done | fsm.ongoing("TSYNC") | fsm.ongoing("TBYTES"))

        # ---- status and the idle timeout (in sync: they survive the soft reset)
        with m.If(overrun):
            m.d.sync += self.overrun.eq(1)
        with m.If(urx.frame_error):
            m.d.sync += self.error.eq(1)
        if self.idle_timeout > 0:
            idle = Signal(range(self.idle_timeout + 1))
            with m.If(~in_frame | urx.o.valid):
                m.d.sync += idle.eq(0)
            with m.Elif(idle == self.idle_timeout):
                m.d.comb += soft.eq(1)
                m.d.sync += [self.error.eq(1), idle.eq(0)]
            with m.Else():
                m.d.sync += idle.eq(idle + 1)
        return m


    def _test_pattern(self, m, lfsr, i_valid, i_ready, o_payload, o_valid, o_ready, test_n):
        """The test-pattern source and output checker (see the module docstring); returns its signals:
        start (in), run, beat_valid, done (the report waits: cleared by the transmitter), cycles,
        checksum. `lfsr` is the input beat register, stepped here while the test runs; `test_n` is N at
        the start. Outputs count when they are taken (o_ready comes from the transmitter, idle in a
        test)."""
        class T:
            pass
        t = T()
        t.start, t.run, t.done, t.beat_valid = Signal(), Signal(), Signal(), Signal()
        t.cycles, t.checksum = Signal(32), Signal(32)
        frames_in, frames_out = Signal(32), Signal(32)        # frames still to send / to receive
        in_last, out_last = Signal(), Signal()                # registered: this frame is the last
        bi = Signal(range(max(self.bin, 2)))
        bo = Signal(range(max(self.bout, 2)))
        bi_last, bo_last = Signal(), Signal()                 # registered: bi / bo is the frame's last beat
        counting = Signal()
        # registered: this cycle counts (the count lands a cycle later, so the 32-bit counter's enable
        # comes from a flip-flop, not from the accelerator's ready across the chip: tfc-w2a2's ECP5 path);
        # `finish` holds `done` back that cycle
        inc, finish = Signal(), Signal()
        take, got = Signal(), Signal()
        m.d.comb += [take.eq(t.run & i_valid & i_ready), got.eq(t.run & o_valid & o_ready)]
        # every decision is a register or one gate from registers (the last-beat flags too), so the test
        # logic stays off the critical path; o_ready comes from the transmitter's state through one gate
        with m.If(take):
            m.d.core += [lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[1])), counting.eq(1)]
            with m.If(bi_last):
                m.d.core += [bi.eq(0), bi_last.eq(self.bin == 1), frames_in.eq(frames_in - 1),
                             in_last.eq(frames_in == 2)]
                with m.If(in_last):
                    m.d.core += t.beat_valid.eq(0)
            with m.Else():
                m.d.core += [bi.eq(bi + 1), bi_last.eq(bi == self.bin - 2)]
        m.d.core += inc.eq(t.run & (counting | take))
        with m.If(inc):
            m.d.core += t.cycles.eq(t.cycles + 1)
        with m.If(finish):
            m.d.core += [finish.eq(0), t.done.eq(1)]
        with m.If(got):                    # the transmitter gives o_ready in IDLE, and stays there
            chunks = [o_payload[k:k + 32] for k in range(0, self.wout, 32)]
            fold = chunks[0]
            for c in chunks[1:]:
                fold = fold ^ c
            m.d.core += t.checksum.eq(Cat(t.checksum[31], t.checksum[:31]) ^ fold)
            with m.If(bo_last):
                m.d.core += [bo.eq(0), bo_last.eq(self.bout == 1), frames_out.eq(frames_out - 1),
                             out_last.eq(frames_out == 2)]
                with m.If(out_last):
                    m.d.core += [t.run.eq(0), finish.eq(1)]
            with m.Else():
                m.d.core += [bo.eq(bo + 1), bo_last.eq(bo == self.bout - 2)]
        with m.If(t.start):               # last: it overrides the rest, a synchronous reset
            m.d.core += [t.run.eq(test_n != 0), t.done.eq(test_n == 0), t.beat_valid.eq(test_n != 0),
                         frames_in.eq(test_n), frames_out.eq(test_n), in_last.eq(test_n == 1), out_last.eq(test_n == 1),
                         lfsr.eq(1), bi.eq(0), bo.eq(0), t.cycles.eq(0),
                         bi_last.eq(self.bin == 1), bo_last.eq(self.bout == 1),
                         t.checksum.eq(0), counting.eq(0)]
        return t


class BoardTop(Elaboratable):
    """UARTAccelTop on an amaranth-boards platform (default clock, UART 0, LED 0 = error/overrun)."""

    def __init__(self, ports: dict, *, top: str | None = None, dut=None, baud: int | None = None,
                 idle_timeout_s: float = 0.1):
        self.ports, self.top, self.dut, self.baud, self.idle_timeout_s = ports, top, dut, baud, idle_timeout_s
        self.divisor = None

    def elaborate(self, platform):
        m = Module()
        clk_hz = platform.default_clk_frequency
        self.divisor = divisor_for(clk_hz, self.baud or DEFAULT_BAUD)
        m.submodules.link = link = UARTAccelTop(self.ports, top=self.top, dut=self.dut, divisor=self.divisor,
                                                idle_timeout=int(clk_hz * self.idle_timeout_s))
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [link.rx.eq(rx.i), tx.o.eq(link.tx)]
        try:
            led = platform.request("led", 0, dir="-")
        except Exception:  # noqa: BLE001 - a board without LEDs
            led = None
        if led is not None:
            m.submodules.led_buf = lb = io.Buffer("o", led)
            m.d.comb += lb.o.eq(link.error | link.overrun)
        return m

