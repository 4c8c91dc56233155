"""ArgMax: the index of the greatest element of each vector; ties go to the lowest index."""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


def _greater(a, b):
    """a > b as the sign of b - a: a subtraction maps to the carry chain, where Yosys builds a
    comparison out of LUT levels."""
    return (b - a)[-1]


class ArgMax(wiring.Component):
    """Consumes a vector of n elements as n/simd beats, emits one beat with its argmax.

    Each beat's best lane comes from a comparison tree, then competes with the
    best so far; a later element wins only when strictly greater, so ties keep
    the lowest index (as numpy.argmax). Bipolar elements compare as their bits
    (+1 -> 1 > -1 -> 0). Each beat is registered before the comparisons (the
    producer's output mux and the route to this unit stay off the compare path),
    and each level of the tree is registered (one compare and one mux per cycle:
    a chain of compares was the critical path on ECP5), so the result leaves
    2 + ceil(log2 simd) cycles after the last beat (`self.latency`). Every stage
    moves together unless a finished result waits for the consumer; a vector
    takes n/simd cycles.
    """

    @staticmethod
    def latency_for(simd: int) -> int:
        """Cycles from the last beat's handshake to the result: input register, tree levels, compare."""
        return 2 + (simd - 1).bit_length()

    def __init__(self, dtype: ir.ElemType, n: int, simd: int):
        if n < 1 or simd < 1 or n % simd:
            raise ValueError(f"SIMD={simd} must divide the vector length n={n}; "
                             f"valid SIMD values: {streams.divisors(n) if n >= 1 else []}")
        self.dtype, self.n, self.simd = dtype, n, simd
        self.out_type = ir.int_type_for(0, n - 1)
        self.latency = self.latency_for(simd)
        super().__init__({"i": In(streams.beat_signature(dtype, simd)),
                          "o": Out(streams.beat_signature(self.out_type, 1))})

    def elaborate(self, platform):
        m = Module()
        n, simd = self.n, self.simd
        elem = streams.elem_shape(self.dtype)

        # all stages move together unless the compare stage holds a vector's last beat and the
        # result before it has not been read
        adv = Signal()

        # the input register: a beat waits in it until the tree takes it
        beat = Signal.like(self.i.payload)
        valid = Signal()
        m.d.comb += self.i.ready.eq(adv | ~valid)
        with m.If(self.i.ready):
            m.d.sync += [beat.eq(self.i.payload), valid.eq(self.i.valid)]

        # The beat's best (value, lane): pairwise tree, the right one wins only if greater; a register
        # after each level
        cands = [(beat[j], j) for j in range(simd)]
        level = 0
        while len(cands) > 1:
            pairs = []
            for (va, ia), (vb, ib) in zip(cands[0::2], cands[1::2]):
                right = _greater(vb, va)
                pairs.append((Mux(right, vb, va), Mux(right, ib, ia)))
            pairs += cands[len(cands) & ~1:]
            cands = []
            for k, (v, i) in enumerate(pairs):
                rv, ri = Signal(elem, name=f"t{level}_v{k}"), Signal(range(simd), name=f"t{level}_i{k}")
                with m.If(adv):
                    m.d.sync += [rv.eq(v), ri.eq(i)]
                cands.append((rv, ri))
            nv = Signal(name=f"t{level}_valid")
            with m.If(adv):
                m.d.sync += nv.eq(valid)
            valid = nv
            level += 1
        beat_val, beat_lane = cands[0]

        first = Signal(range(n))  # index of this beat's lane 0: 0, simd, 2*simd...
        best_val = Signal(elem)
        best_idx = Signal(range(n))
        last = first == n - simd
        take = (first == 0) | _greater(beat_val, best_val)
        idx = Mux(take, first + beat_lane, best_idx)

        # Only the last beat needs the output register; it may be read in the same cycle.
        m.d.comb += adv.eq(~(valid & last) | ~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(valid & adv):
            m.d.sync += [best_val.eq(Mux(take, beat_val, best_val)), best_idx.eq(idx),
                         first.eq(Mux(last, 0, first + simd))]
            with m.If(last):
                m.d.sync += [self.o.valid.eq(1), self.o.payload[0].eq(idx)]
        return m
