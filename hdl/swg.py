"""SlidingWindowGenerator: the im2col stream of a convolution, from a stream of its input map.

For every output pixel (oh, ow) in raster order it emits the KH*KW*C elements of
the (padded) window in order (kh, kw, c), c fastest: the row of
`reference.windows` on the padded map that a MatrixVectorUnit with weights
reshaped to (OC, KH*KW*C) consumes.

Storage: one ring buffer (a Memory, sync read, so Yosys can map it to block RAM)
of `depth` beats that the input fills in stream order, frames back to back. Input
pixels are numbered p = r*W + c within a frame. Two registers follow the output
pixel the emitter is on:
  need: how many input pixels of its frame must be written before it can start
        (the last real pixel of its window, + 1; the frame's last output pixel
        needs the whole frame, so frames stay in step);
  free: the first pixel of the frame that it or a later output pixel may still read.
The emitter starts a pixel when written >= need; the input is accepted while
written < free + depth (a register too), so it never overwrites what is still to
be read. The next pixel's values come from small per-row and per-column step
tables and one adder (no multiplier: on ECP5 one had taken two DSPs per generator
and was the critical path). Padding is generated, never stored.

Timing: one output beat per cycle whenever the needed input is there, one input
beat per cycle whenever there is room. `depth` is the least ring size with which
back-to-back frames take exactly `cycles` = max(OH*OW*KH*KW*C/simd, H*W*C/simd)
each when neither side stalls (found with a model of these handshakes): about
(KH-1) rows + KW pixels with padding, up to 2*(KH-1) rows + KW pixels without,
where the next frame's first rows are taken in while the last output row goes out.
The first output beat is valid 2 cycles (`latency`) after the input beat that
completes its window (the first input pixel, for a window all in the top padding).
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir

from . import streams


def _pair(v, name):
    a, b = (v, v) if np.isscalar(v) else tuple(v)
    if int(a) != a or int(b) != b:
        raise ValueError(f"{name} must be an integer or a pair of integers, got {v!r}")
    return int(a), int(b)


def _table(values, index):
    """values[index] for a list of constants (a LUT lookup)."""
    values = [int(v) for v in values]
    if len(set(values)) == 1:
        return Const(values[0], range(min(values), max(values) + 1))
    return Array(Const(v, range(min(values), max(values) + 1)) for v in values)[index]


class SlidingWindowGenerator(wiring.Component):
    """(H, W, C) map in beats of simd channels -> im2col rows (OH*OW rows of KH*KW*C) in beats of simd.

    kernel, stride, padding: int or (h, w) pairs; pad_value: an element value of
    dtype (bipolar: +1 or -1) put around the map on each side. period: the consumer's
    cycles per output pixel (default: as fast as the windows go out); the ring is sized
    for it. Attributes: out_shape (OH, OW, KH*KW*C), depth (ring buffer beats), cycles
    (alone), pair_cycles (with the consumer), latency.
    """

    def __init__(self, dtype: ir.ElemType, in_shape, kernel, stride=1, padding=0, pad_value=0, simd=1, period=None):
        self._check(dtype, in_shape, kernel, stride, padding, pad_value, simd)
        self.dtype, self.simd, self.pad_value = dtype, int(simd), int(pad_value)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.kernel, self.stride = _pair(kernel, "kernel"), _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        (H, W, C), (KH, KW), (SH, SW), (PH, PW) = self.in_shape, self.kernel, self.stride, self.padding
        self.cf = C // self.simd
        self.oh, self.ow = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
        self.out_shape = (self.oh, self.ow, KH * KW * C)
        need, free = self._need_free(np.arange(self.oh)[:, None] * SH - PH, np.arange(self.ow)[None, :] * SW - PW)
        need, free = need.ravel().copy(), free.ravel()
        need[-1] = H * W                # the frame's last output pixel waits for the whole frame
        self._start = int(need[0]), int(free[0])
        self.cycles = max(self.oh * self.ow * KH * KW, H * W) * self.cf
        # the consumer's cycles per output pixel (an MVU with NF neuron folds: NF * KH*KW*CF); the ring
        # is sized so that the pair keeps max(its cycles, the consumer's) per frame
        L = KH * KW * self.cf
        self.period = max(L, int(period or L))
        self.pair_cycles = max(self.oh * self.ow * self.period, H * W * self.cf)
        self._need, self._free = need * self.cf, free * self.cf     # per output pixel, in beats
        self.depth = self._least_depth(self._need, self._free)
        self.latency = 2
        super().__init__({"i": In(streams.beat_signature(dtype, self.simd)),
                          "o": Out(streams.beat_signature(dtype, self.simd))})

    @staticmethod
    def _check(dtype, in_shape, kernel, stride, padding, pad_value, simd):
        if not isinstance(dtype, (ir.Int, ir.BipolarType)):
            raise ValueError(f"dtype must be ir.Int or ir.Bipolar, got {dtype!r}")
        if len(in_shape) != 3 or min(in_shape) < 1:
            raise ValueError(f"in_shape must be a channels-last (H, W, C) shape, got {in_shape!r}")
        (H, W, C), (KH, KW) = in_shape, _pair(kernel, "kernel")
        (SH, SW), (PH, PW) = _pair(stride, "stride"), _pair(padding, "padding")
        if min(KH, KW, SH, SW) < 1 or min(PH, PW) < 0:
            raise ValueError(f"kernel {kernel!r} and stride {stride!r} must be >= 1, padding {padding!r} >= 0")
        if H + 2 * PH < KH or W + 2 * PW < KW:
            raise ValueError(f"kernel {(KH, KW)} does not fit the {H}x{W} input with padding {(PH, PW)}")
        if max(PH, PW) and not ir.values_in(dtype, np.array(pad_value)):
            raise ValueError(f"pad_value {pad_value!r} is not a value of {dtype}")
        if not isinstance(simd, (int, np.integer)) or simd < 1 or C % simd:
            raise ValueError(f"SIMD={simd!r} does not divide C={C}; valid SIMD values: {streams.divisors(C)}")

    def _need_free(self, r0, c0):
        """need and free (in pixels, frame-relative) of the output pixels whose window
        starts at (r0, c0) in unpadded coordinates (numpy arrays)."""
        (H, W, _), (KH, KW) = self.in_shape, self.kernel
        r0, c0 = np.broadcast_arrays(r0, c0)
        r1 = r0 + KH - 1                                     # the window's last row
        # at least one pixel, so that no frame starts before its input does
        need = np.where(r1 < 0, 1, np.clip(r1, 0, H - 1) * W + np.clip(c0 + KW, 1, W))
        free = np.where(r0 < 0, 0, np.where(r0 >= H, H * W, np.clip(r0, 0, H - 1) * W + np.clip(c0, 0, W)))
        return need, free

    def _next_need_cap(self, m, current, oi, oj, last_ow, step):
        """The next output pixel's need and free + depth (beats), from their registers `current`
        and the pixel's row oi and column oj. Both are a row term plus a column term (or constant
        on rows in the padding), so the next value is the current one plus a per-column step
        along a row, and the row's first value (a register, `base`) plus a per-row step at the
        row's end: small constant tables and one adder, no multiplier."""
        OH, OW = self.oh, self.ow
        out = []
        for t, cur in zip((self._need.reshape(OH, OW), self._free.reshape(OH, OW) + self.depth), current):
            last = int(t[-1, -1])                       # the frame's last pixel (need: the whole frame)
            body = t.astype(np.int64).copy()
            if OW > 1:
                body[-1, -1] = body[-1, -2]             # the last pixel comes from `pen`
            const = [bool((body[i] == body[i, 0]).all()) for i in range(OH)]
            rows = [i for i in range(OH) if not const[i]]
            col = body[rows[0]] - body[rows[0], 0] if rows else np.zeros(OW, np.int64)
            for i in range(OH):
                for j in range(OW - (i == OH - 1)):
                    if not (const[i] or body[i, j] == body[i, 0] + col[j]):
                        raise RuntimeError(f"need/free of pixel {(i, j)} are not a row plus a column term")
            row0 = [int(body[i, 0]) for i in range(OH)]        # = t[i, 0]
            base = Signal(range(min(row0), max(row0) + 1), init=row0[0])
            konst = Signal(init=const[0])
            nxt = base + _table([row0[(i + 1) % OH] - row0[i] for i in range(OH)], oi)   # (oi + 1, 0)
            with m.If(step & last_ow):
                m.d.sync += [base.eq(nxt), konst.eq(_table(const[1:] + const[:1], oi))]
            along = cur + Mux(konst, 0, _table([int(col[j + 1] - col[j]) for j in range(OW - 1)] + [0], oj))
            pen = (oi == OH - 1) & (oj == OW - 2) if OW > 1 else Const(0)
            out.append(Mux(last_ow, nxt, Mux(pen, last, along)))
        return out

    def _least_depth(self, need, free):
        """The least ring size (beats) with which back-to-back frames take `pair_cycles` each.

        Below need - free the unit would deadlock; above it, the model `_frame_cycles`
        of the handshakes tells how fast it goes. Exponential, then binary search."""
        target = self.pair_cycles
        lo = max(2, int((need - free).max()))     # >= 2 beats: addresses are never 0 bits wide
        if self._frame_cycles(need, free, lo) <= target:
            return lo
        step, cap = 1, lo + 4 * self.in_shape[0] * self.in_shape[1] * self.cf   # cap: never blocks the input
        while lo + step < cap and self._frame_cycles(need, free, lo + step) > target:
            lo, step = lo + step, step * 2
        hi = lo + step                            # lo too small, hi enough
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self._frame_cycles(need, free, mid) <= target else (mid, hi)
        return hi

    def _frame_cycles(self, need, free, depth, frames=4):
        """Cycles between the ends of the last two of `frames` frames with no stalls, in a model
        of elaborate()'s handshakes and of the consumer: the input is taken every cycle while
        written < free + depth (free: of the pixel being emitted); a pixel's L beats go out one a
        cycle once written >= need and the consumer has a free bank (it holds two pixels and
        spends `period` cycles on each). need, free: per output pixel, in beats."""
        L, frame = self.kernel[0] * self.kernel[1] * self.cf, self.in_shape[0] * self.in_shape[1] * self.cf
        P = self.period
        need, free = need.tolist(), free.tolist()
        t = w = 0                        # the emitter enters the next pixel at t with w beats written
        cons = [-P, -P]                  # start cycles of the consumer's last two pixels
        ends = []
        for f in range(frames):
            for n, fr in zip(need, free):
                n, cap = n + f * frame, fr + f * frame + depth
                if n > cap:
                    return float("inf")  # deadlock: the pixel's window does not fit the ring
                start = max(t + max(0, n - w), cons[-2] + P)      # data in, and a bank free
                cons = [cons[-1], max(cons[-1] + P, start)]
                w = min(cap, w + (start + L - t))                 # the writer runs until the cap
                t = start + L
            ends.append(cons[-1] + P)
        return ends[-1] - ends[-2]

    def window_times(self, in_times) -> tuple[np.ndarray, np.ndarray]:
        """For one frame into an empty unit, whose input beats can be taken at in_times (cycles, one per
        beat): the cycle each output pixel's first beat leaves, and the cycle the consumer starts on
        each pixel. The same handshakes as _frame_cycles, beat by beat: a beat is written at the
        earliest of its arrival, the cycle after the previous write, and the cycle the ring has room
        for it; a pixel is issued the cycle after its last needed beat is written, once the previous
        pixel is out and the consumer has a free bank; the consumer (an MVU's input buffer) starts a
        pixel the cycle after its first beat arrives and `period` cycles after the previous one."""
        L, P = self.kernel[0] * self.kernel[1] * self.cf, self.period
        need, free = self._need.tolist(), self._free.tolist()
        t_in = [int(t) for t in in_times]
        k, t_w, t = 0, -(1 << 40), -(1 << 40)          # next beat to write, time of the last write, emitter
        cons = [-(1 << 40), -(1 << 40)]
        enter, firsts, starts = [], [], []
        for i, (n, fr) in enumerate(zip(need, free)):
            enter.append((fr + self.depth, t))          # from cycle t, beats below fr + depth may be written
            while k < n:
                allowed = next(e for cap, e in enter if cap > k)
                t_w = max(t_in[k], t_w + 1, allowed)
                k += 1
            start = max(t, t_w + 1, cons[-2] + P - L + 1 if P > L else t)    # P == L: it keeps pace
            cons = [cons[-1], max(cons[-1] + P, start + 2)]
            firsts.append(start + 1)
            starts.append(cons[-1])
            t = start + L
        return np.array(firsts), np.array(starts)

    def elaborate(self, platform):
        m = Module()
        (H, W, _), (KH, KW), (SH, SW), (PH, PW) = self.in_shape, self.kernel, self.stride, self.padding
        CF, N = self.cf, self.depth
        WCF, HWCF = W * CF, H * W * CF
        r0_last, c0_last = (self.oh - 1) * SH - PH, (self.ow - 1) * SW - PW

        def add(a, k):
            """a + k modulo the ring size (k a constant)."""
            k %= N
            if k == 0:
                return a
            s = a + k
            return Mux(s >= N, s - N, s)

        m.submodules.ring = ring = memory.Memory(shape=streams.beat_layout(self.dtype, self.simd),
                                                 depth=N, init=[])
        wr, rd = ring.write_port(), ring.read_port()

        # ---- writer: input beats go to the ring in stream order.
        need0, free0 = self._start
        written = Signal(range(HWCF + N + 1))   # beats written, counted from the emitter's frame start
        need = Signal(range(HWCF + 1), init=need0 * CF)
        cap = Signal(range(HWCF + N + 1), init=free0 * CF + N)      # the pixel's free + N
        wa = Signal(range(N))
        take = Signal()
        m.d.comb += [
            self.i.ready.eq(written < cap),
            take.eq(self.i.valid & self.i.ready),
            wr.addr.eq(wa), wr.data.eq(self.i.payload), wr.en.eq(take),
        ]
        with m.If(take):
            m.d.sync += wa.eq(add(wa, 1))

        # ---- emitter: counters of the beat to issue, and ring addresses (mod N) of
        # the beat (a), its kernel row start (a_k), window origin (a_w), output row origin (a_o).
        adv = Signal()      # the output register is free this cycle
        issue = Signal()
        m.d.comb += [adv.eq(~self.o.valid | self.o.ready), issue.eq(adv & (written >= need))]
        cf, kw, kh = Signal(range(CF)), Signal(range(KW)), Signal(range(KH))
        r0 = Signal(range(-PH, r0_last + 1), init=-PH)     # window origin in unpadded coordinates
        c0 = Signal(range(-PW, c0_last + 1), init=-PW)
        oi, oj = Signal(range(self.oh)), Signal(range(self.ow))   # the output pixel's row and column
        origin = -(PH * W + PW) * CF % N
        a, a_k, a_w, a_o = (Signal(range(N), init=origin, name=n) for n in ("a", "a_k", "a_w", "a_o"))

        last_cf, last_kw, last_kh = cf == CF - 1, kw == KW - 1, kh == KH - 1
        last_ow, last_oh = oj == self.ow - 1, oi == self.oh - 1
        # the next window origin; its need and free (+ N: the writer's bound) are table lookups
        # from the current pixel's row and column, so no multiplier sits between counters
        r0n = Mux(last_ow, Mux(last_oh, -PH, r0 + SH), r0)
        c0n = Mux(last_ow, -PW, c0 + SW)
        a_on = Mux(last_ow, Mux(last_oh, add(a_o, (H - PH - r0_last) * WCF), add(a_o, SH * WCF)), a_o)
        a_wn = Mux(last_ow, a_on, add(a_w, SW * CF))
        step = issue & last_cf & last_kw & last_kh            # to the next output pixel
        need_n, cap_n = self._next_need_cap(m, (need, cap), oi, oj, last_ow, step)

        with m.If(issue):
            with m.If(~(last_cf & last_kw)):                  # along a kernel row: consecutive beats
                m.d.sync += [cf.eq(Mux(last_cf, 0, cf + 1)), kw.eq(kw + last_cf), a.eq(add(a, 1))]
            with m.Elif(~last_kh):                            # next kernel row
                m.d.sync += [cf.eq(0), kw.eq(0), kh.eq(kh + 1), a_k.eq(add(a_k, WCF)), a.eq(add(a_k, WCF))]
            with m.Else():                                    # next output pixel (row, frame)
                m.d.sync += [cf.eq(0), kw.eq(0), kh.eq(0), r0.eq(r0n), c0.eq(c0n),
                             oj.eq(Mux(last_ow, 0, oj + 1)), oi.eq(Mux(last_ow, Mux(last_oh, 0, oi + 1), oi)),
                             a_o.eq(a_on), a_w.eq(a_wn), a_k.eq(a_wn), a.eq(a_wn),
                             need.eq(need_n), cap.eq(cap_n)]
        frame_done = step & last_ow & last_oh
        m.d.sync += written.eq(written + take - Mux(frame_done, HWCF, 0))

        # ---- output stage: the ring's registered read, or the padding value.
        pad, pad1 = Signal(), Signal()
        if PH or PW:
            r, c = r0 + kh, c0 + kw
            m.d.comb += pad.eq((r < 0) | (r >= H) | (c < 0) | (c >= W))
        m.d.comb += [rd.addr.eq(a), rd.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [self.o.valid.eq(issue), pad1.eq(pad)]
        pad_beat = Const(streams.pack(self.dtype, [self.pad_value] * self.simd), self.simd * self.dtype.bits)
        m.d.comb += self.o.payload.eq(Mux(pad1, pad_beat, rd.data.as_value()))
        return m
