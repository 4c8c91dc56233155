"""ThresholdUnit: MultiThreshold on a stream, PE channels per beat."""
import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


def fold_counter(m: Module, fold: int, step) -> Signal:
    """The beat index within the channel fold (0..fold-1), advancing where `step` is high."""
    ch = Signal(range(fold))
    with m.If(step):
        m.d.sync += ch.eq(Mux(ch == fold - 1, 0, ch + 1))
    return ch


def lane_tables(table: np.ndarray, pe: int, what: str) -> list[np.ndarray]:
    """Split a per-channel table (C, ...) over PE lanes: lane p, beat j holds channel j*pe + p.

    A table of one row is shared by every channel. Returns one (C/PE, ...) array per lane.
    """
    c = table.shape[0]
    if pe < 1:
        raise ValueError(f"{what}: PE must be at least 1, got {pe}")
    if c == 1:
        return [table] * pe
    if c % pe:
        raise ValueError(f"{what}: PE={pe} does not divide the {c} channels; "
                         f"valid PE values: {streams.divisors(c)}")
    return [table[p::pe] for p in range(pe)]


def popcount(bits: list):
    """Sum of 1-bit values as a balanced adder tree (log depth, unlike a chain)."""
    if not bits:
        return 0
    while len(bits) > 1:
        bits = [a + b for a, b in zip(bits[0::2], bits[1::2])] + bits[len(bits) & ~1:]
    return bits[0]


class ThresholdUnit(wiring.Component):
    """out = base + #{k : acc >= T[c, k]}; a Bipolar output is the bit acc >= T[c, 0].

    `thresholds` is (C, K), sorted per row, or (1, K) shared by all channels.
    Lane p of input beat j (counted from reset) is channel (j*pe + p) mod C.
    Each lane whose thresholds change from beat to beat reads them from its
    own ROM (depth C/PE, one row of K thresholds per word); other lanes use
    constants. Latency `self.latency` cycles (2 with ROMs, else 1), one beat
    per cycle; a stall on `o` stalls the whole pipeline.
    """

    def __init__(self, thresholds, in_type: ir.Int, out_type, base: int, pe: int):
        t = np.asarray(thresholds)
        if t.ndim != 2 or t.shape[0] < 1:
            raise ValueError(f"thresholds must be a (C, K) array, got shape {t.shape}")
        t = t.astype(np.int64)
        if (np.diff(t, axis=1) < 0).any():
            r = int(np.argwhere(np.diff(t, axis=1) < 0)[0][0])
            raise ValueError(f"thresholds of channel {r} are not sorted ascending: {t[r].tolist()}")
        if not isinstance(in_type, ir.Int):
            raise ValueError(f"in_type must be an Int accumulator, got {in_type!r}")
        k = t.shape[1]
        if isinstance(out_type, ir.BipolarType):
            if k != 1 or base != -1:
                raise ValueError(f"a Bipolar output needs 1 threshold per channel and base -1, "
                                 f"got {k} and base {base}")
        elif not isinstance(out_type, ir.Int):
            raise ValueError(f"out_type must be Int or Bipolar, got {out_type!r}")
        elif base < out_type.min or base + k > out_type.max:
            raise ValueError(f"outputs {base}..{base + k} do not fit {out_type}")
        # Thresholds outside the accumulator's range are always/never met: clamping
        # them to [min, max+1] keeps every comparison and costs at most one bit.
        self._t = np.clip(t, in_type.min, in_type.max + 1)
        self._tshape = streams.elem_shape(ir.int_type_for(in_type.min, in_type.max + 1))
        self._lanes = lane_tables(self._t, pe, "ThresholdUnit")
        self._rom = [k > 0 and not (tab == tab[0]).all() for tab in self._lanes]
        self.in_type, self.out_type, self.base, self.pe = in_type, out_type, int(base), pe
        self.latency = 2 if any(self._rom) else 1
        super().__init__({"i": In(streams.beat_signature(in_type, pe)),
                          "o": Out(streams.beat_signature(out_type, pe))})

    def elaborate(self, platform):
        m = Module()
        pe, k = self.pe, self._t.shape[1]
        fold = len(self._lanes[0])

        # Global-stall pipeline: every stage moves when the output register is free.
        en = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(en)
        acc, valid = self.i.payload, self.i.valid
        thr = [[int(v) for v in tab[0]] for tab in self._lanes]

        if any(self._rom):
            ch = fold_counter(m, fold, self.i.valid & en)
            word = data.ArrayLayout(self._tshape, k)
            for p, tab in enumerate(self._lanes):
                if self._rom[p]:
                    rom = Memory(shape=word, depth=fold, init=[[int(v) for v in row] for row in tab])
                    m.submodules[f"rom{p}"] = rom
                    rd = rom.read_port()       # sync read: the data arrives with stage 1
                    m.d.comb += [rd.addr.eq(ch), rd.en.eq(en)]
                    thr[p] = [rd.data[j] for j in range(k)]
            acc = Signal.like(self.i.payload)
            valid = Signal()
            with m.If(en):
                m.d.sync += [acc.eq(self.i.payload), valid.eq(self.i.valid)]

        with m.If(en):
            m.d.sync += self.o.valid.eq(valid)
            for p in range(pe):
                count = popcount([acc[p] >= thr[p][j] for j in range(k)])
                # Bipolar: the bit is the count itself (0 -> -1, 1 -> +1).
                out = count if isinstance(self.out_type, ir.BipolarType) else count + self.base
                m.d.sync += self.o.payload[p].eq(out)
        return m
