"""StreamFIFO: a FIFO between two streams that keeps the payload's layout."""
from amaranth.hdl import Module
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out


class StreamFIFO(wiring.Component):
    """`depth` beats of `shape` (any shape-castable, e.g. an ArrayLayout), one beat per cycle in and out.

    Up to 2 beats: lib.fifo.SyncFIFO (first-word fall-through from registers; latency 1). Deeper:
    lib.fifo.SyncFIFOBuffered (a synchronous-read memory Yosys can put in block RAM, and an
    output register; latency 2). A SyncFIFOBuffered of depth 2 would move one beat every other
    cycle (its inner FIFO holds one beat and cannot read and write it in the same cycle), so it
    is never used for 2. The payload keeps its layout on both sides.
    """

    def __init__(self, shape, depth: int):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._shape, self._depth = shape, max(2, int(depth))
        self.latency = self.latency_for(self._depth)
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    @staticmethod
    def latency_for(depth: int) -> int:
        """Cycles from a beat's input handshake to its output beat being valid."""
        return 1 if depth <= 2 else 2

    def elaborate(self, platform):
        m = Module()
        width = self.i.payload.as_value().shape().width
        if self._depth <= 2:
            m.submodules.fifo = q = fifo.SyncFIFO(width=width, depth=self._depth)
        else:
            m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=width, depth=self._depth)
        m.d.comb += [
            q.w_data.eq(self.i.payload.as_value()),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
            self.o.payload.eq(q.r_data),
            self.o.valid.eq(q.r_rdy),
            q.r_en.eq(self.o.ready),
        ]
        return m
