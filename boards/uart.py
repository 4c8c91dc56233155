"""8N1 UART transmitter and receiver (Amaranth 0.5, lib.stream byte ports).

`divisor` is the number of clock cycles per bit (clock / baud rate). It is a
constructor parameter so that the same logic runs at 115200 baud on a board
(12 MHz / 115200 -> 104) and at a few cycles per bit in simulation.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

MIN_DIVISOR = 4


def divisor_for(clk_hz: float, baud: int) -> int:
    """Clock cycles per bit for a baud rate; refuses a rate more than 2% off."""
    d = int(round(clk_hz / baud))
    if d < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud} is too high for a {clk_hz / 1e6:g} MHz clock "
                         f"(at least {MIN_DIVISOR} cycles per bit)")
    err = abs(clk_hz / d - baud) / baud
    if err > 0.02:
        raise ValueError(f"baud rate {baud} is {100 * err:.1f}% off with a {clk_hz / 1e6:g} MHz clock "
                         f"(divisor {d}); pick another rate")
    return d


class UARTTx(wiring.Component):
    """`i`: bytes to send (stream, ready when the line is free); `tx`: the serial line (idle high)."""

    def __init__(self, divisor: int):
        if divisor < MIN_DIVISOR:
            raise ValueError(f"UART divisor must be >= {MIN_DIVISOR}, got {divisor}")
        self.divisor = int(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)       # stop bit, 8 data bits (LSB first), start bit
        bits = Signal(range(11))
        cnt = Signal(range(self.divisor))
        m.d.comb += [self.i.ready.eq(bits == 0), self.tx.eq(shreg[0])]
        with m.If(bits == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq((1 << 9) | (self.i.payload << 1)), bits.eq(10), cnt.eq(self.divisor - 1)]
        with m.Elif(cnt == 0):
            m.d.sync += [shreg.eq((shreg >> 1) | (1 << 9)), bits.eq(bits - 1), cnt.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += cnt.eq(cnt - 1)
        return m


class UARTRx(wiring.Component):
    """`rx`: the serial line; `o`: received bytes (always ready: one valid cycle per byte).

    `frame_error` pulses for a byte whose stop bit is low (the byte is dropped).
    """

    def __init__(self, divisor: int):
        if divisor < MIN_DIVISOR:
            raise ValueError(f"UART divisor must be >= {MIN_DIVISOR}, got {divisor}")
        self.divisor = int(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8, always_ready=True)),
                          "frame_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        s1, s2 = Signal(init=1), Signal(init=1)        # two-flop synchroniser
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]
        cnt = Signal(range(d + d // 2 + 1))
        bits = Signal(range(10))
        shreg = Signal(8)
        m.d.sync += [self.o.valid.eq(0), self.frame_error.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s2):
                    m.d.sync += cnt.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):            # middle of the start bit: still low?
                with m.If(cnt == 0):
                    with m.If(s2):
                        m.next = "IDLE"       # a glitch
                    with m.Else():
                        m.d.sync += [cnt.eq(d - 1), bits.eq(8)]
                        m.next = "DATA"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("DATA"):
                with m.If(cnt == 0):
                    m.d.sync += [shreg.eq((s2 << 7) | (shreg >> 1)), cnt.eq(d - 1), bits.eq(bits - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("STOP"):
                with m.If(cnt == 0):
                    with m.If(s2):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += cnt.eq(cnt - 1)
            with m.State("BREAK"):            # wait for the line to go idle again
                with m.If(s2):
                    m.next = "IDLE"
        return m
