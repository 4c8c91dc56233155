"""InputBuffer: holds each vector of an MVU's input and plays it back once per neuron fold.

A vector arrives as `slots` beats on `i`; `o` gives its beats `passes` times, slot 0
first in every pass (slots * passes beats per vector). Storage is a ring of
`banks` * `slots` beats (banks: 1 or 2) in one lib.memory.Memory (sync read: block
RAM, LUT-RAM or flip-flops, as Yosys or `ram_style` decides).

The writer fills the ring in order; the reader plays the vector at `base` and moves
`base` on by `slots` after its last pass. Two counters decide everything:
  used   beats written and not yet released; the reader releases a slot when its
         last pass issues it. The writer may write while used < ring size: into the
         other bank, or, one bank ahead, into the slots the last pass has played.
  avail  beats written and not yet issued by a first pass: the first pass follows
         the writer beat by beat (no wait for the whole vector); later passes re-read.
Two banks keep the reader busy every cycle with any writer; one bank needs a writer
that sends a vector in a burst while the last pass plays (the accelerator's input).
A slot is never written in the cycle it is read (a released slot is written the
cycle after at the earliest), so the read port's transparency never matters.

`i.ready` and "the next slot can be read" are registers, set from the counters'
next values with compares made on the current ones (no adder or compare after a
handshake), so the buffer cuts the combinational ready path between the layers
before and after it and its own paths are short.

Timing: a beat written in cycle t can be issued in t+1 and is on `o` in t+2; `issue`
is high in the cycles a beat is read (it is on `o` the cycle after), so a unit that
reads its own memories in step with the buffer (the MVU's weights) addresses them on
`issue`. One beat per cycle on both sides with no stalls.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

RAM_STYLES = ("block", "distributed", "logic")


class InputBuffer(wiring.Component):
    """`slots` beats of `layout` per vector, played `passes` times; `banks` 1 or 2.

    ram_style goes into the memory's attributes ("block", "distributed", "logic").
    """

    def __init__(self, layout, slots: int, passes: int, banks: int = 2, ram_style: str | None = None):
        if slots < 1 or passes < 1:
            raise ValueError(f"slots and passes must be at least 1, got {slots} and {passes}")
        if banks not in (1, 2):
            raise ValueError(f"banks must be 1 or 2, got {banks}")
        if banks == 1 and passes == 1 and slots == 1:
            raise ValueError("one bank of one slot played once cannot overlap reads and writes: use 2 banks")
        if ram_style not in (None, *RAM_STYLES):
            raise ValueError(f"ram_style must be None or one of {RAM_STYLES}, got {ram_style!r}")
        self.layout, self.slots, self.passes, self.banks = layout, int(slots), int(passes), int(banks)
        self.ram_style = ram_style
        self.depth = self.slots * self.banks
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout)),
                          "issue": Out(1)})

    def elaborate(self, platform):
        m = Module()
        S, P, B = self.slots, self.passes, self.banks
        N = S * B
        attrs = {"ram_style": self.ram_style} if self.ram_style else None
        m.submodules.mem = mem = memory.Memory(shape=self.layout, depth=N, init=[], attrs=attrs)
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))

        def inc(x):
            return Mux(x == N - 1, 0, x + 1)

        waddr, raddr, base = (Signal(range(N), name=n) for n in ("waddr", "raddr", "base"))
        rs, rp = Signal(range(S)), Signal(range(P))          # reader slot and pass
        used, avail = Signal(range(N + 1)), Signal(range(N + 1))
        ready = Signal(init=1)                                # i.ready: used < N, registered
        can_read = Signal()                                   # the next slot is written, registered
        adv, take = Signal(), Signal()
        release, fresh = Signal(), Signal()                   # an issue in the last pass / the first pass
        m.d.comb += [
            self.i.ready.eq(ready), take.eq(self.i.valid & ready),
            adv.eq(~self.o.valid | self.o.ready), self.issue.eq(adv & can_read),
            release.eq(self.issue & (rp == P - 1)), fresh.eq(self.issue & (rp == 0)),
            wr.addr.eq(waddr), wr.data.eq(self.i.payload), wr.en.eq(take),
            rd.addr.eq(raddr), rd.en.eq(adv), self.o.payload.eq(rd.data),
        ]
        with m.If(take):
            m.d.sync += waddr.eq(inc(waddr))
        m.d.sync += used.eq(used + take - release)
        m.d.sync += avail.eq(avail + take - fresh)
        # the next values' compares, from compares of the current values (+1, 0 or -1)
        m.d.sync += ready.eq(Mux(take & ~release, used < N - 1, Mux(~take & release, 1, used < N)))
        avail_next_nz = Mux(take & ~fresh, 1, Mux(~take & fresh, avail > 1, avail != 0))
        with m.If(adv):
            m.d.sync += self.o.valid.eq(can_read)
        # the reader: slot by slot, back to the vector's base for the next pass, on after the last
        last_slot, last_pass = rs == S - 1, rp == P - 1
        with m.If(self.issue):
            with m.If(~last_slot):
                m.d.sync += [rs.eq(rs + 1), raddr.eq(inc(raddr))]
            with m.Elif(~last_pass):
                m.d.sync += [rs.eq(0), rp.eq(rp + 1), raddr.eq(base)]
            with m.Else():
                m.d.sync += [rs.eq(0), rp.eq(0), raddr.eq(inc(raddr)), base.eq(inc(raddr))]
        # can_read next: a later pass re-reads written slots; a first pass needs an unread written one
        next_first = Mux(self.issue, Mux(last_slot, last_pass, rp == 0), rp == 0)
        if P == 1:
            next_first = 1
        m.d.sync += can_read.eq(~next_first | avail_next_nz)
        return m
