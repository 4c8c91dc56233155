"""StreamFIFO: a FIFO between two streams that keeps the payload's layout."""
from amaranth.hdl import Module
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out


class StreamFIFO(wiring.Component):
    """`depth` beats of `shape` (any shape-castable, e.g. an ArrayLayout).

    A thin wrapper on lib.fifo.SyncFIFOBuffered: the payload keeps its layout on
    both sides, so views (elements of an ArrayLayout) stay usable.
    """

    LATENCY = 1     # SyncFIFOBuffered: a beat written in one cycle can be read from the next

    def __init__(self, shape, depth: int):
        self._shape, self._depth = shape, depth
        self.latency = self.LATENCY
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        width = self.i.payload.as_value().shape().width
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
