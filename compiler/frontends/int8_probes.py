"""Probes: make an int8 runtime's own kernels compute chosen accumulator values (int8_common's rule).

`MatmulProbe` and `PoolProbe` give a torch quantized module or an ONNX Runtime session synthetic
weights and inputs with the layer's own scales, zero points, bias and fused activation, so the
codes it answers are its requantization of exactly the accumulators asked for. Also the layout
helpers between the runtimes' NCHW tensors and the IR's channels-last ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from .base import QuantError

CODE_TYPES = {"uint8": ir.Int(8, False), "int8": ir.Int(8, True)}
METHODS = ("auto", "thresholds", "requantize")


def flatten_perm(h: int, w: int, c: int) -> np.ndarray:
    """For a (H, W, C) map flattened by the IR: the runtime's NCHW-flattened index of each IR element."""
    return (np.arange(c)[None, None, :] * h * w + np.arange(h)[:, None, None] * w
            + np.arange(w)[None, :, None]).reshape(-1)


def to_ir_layout(a: np.ndarray, layout) -> np.ndarray:
    """A runtime tensor (batch first, NCHW maps) in the IR's layout: maps channels-last, flattened
    maps in (H, W, C) order. `layout` is 'nchw', 'vec' or a permutation (see flatten_perm)."""
    a = np.asarray(a)
    if isinstance(layout, str) and layout == "nchw":
        return a.transpose(0, 2, 3, 1)
    a = a.reshape(a.shape[0], -1)
    return a if isinstance(layout, str) else a[:, layout]


def from_ir_layout(a: np.ndarray, layout, rt_shape) -> np.ndarray:
    """The inverse of to_ir_layout: IR-layout codes back in the runtime's layout (`rt_shape` without batch)."""
    a = np.asarray(a)
    if isinstance(layout, str) and layout == "nchw":
        return a.transpose(0, 3, 1, 2)
    if not isinstance(layout, str):
        out = np.empty_like(a)
        out[:, layout] = a
        a = out
    return a.reshape((a.shape[0],) + tuple(rt_shape))


# ---------------------------------------------------------------- probes: runtimes on chosen accumulators

@dataclass
class Geometry:
    """A Dense (spatial False: K = cin inputs) or Conv2d layer as the runtime holds it (OIHW weights)."""
    cin: int
    cout: int
    kernel: tuple = (1, 1)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    spatial: bool = False
    in_hw: tuple | None = None          # the layer's real input size: probes use it (kernels may pick by size)

    @property
    def window(self) -> int:
        return self.cin // self.groups * self.kernel[0] * self.kernel[1]

    def site(self):
        """(H, W, r0, c0, oh0, ow0): a probe input size, where one output's window lies inside it
        (no padding in that window), and that output's position."""
        if not self.spatial:
            return 1, 1, 0, 0, 0, 0
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        oh0, ow0 = -(-ph // sh), -(-pw // sw)
        r0, c0 = oh0 * sh - ph, ow0 * sw - pw
        h, w = self.in_hw or (0, 0)
        return max(h, r0 + kh), max(w, c0 + kw), r0, c0, oh0, ow0


class MatmulProbe:
    """Makes a runtime's Dense/Conv kernel compute chosen accumulators acc = sum (x - x_zp)(w - w_zp).

    run(w_raw, x) -> codes: the runtime's layer with raw weights `w_raw` (OIHW or (N, K), the
    layer's own weight scales, zero points, bias and output quantization) on input codes `x`
    (B, Cin, H, W) or (B, K), answering the codes (B, C) at the probe site. The probe weights of a
    group are [1, d, d, ...] (d = the largest weight step up, or down), the same for every output
    channel of the group, so one input row sets one accumulator per group; the extreme
    accumulators are made with the real weights.
    """

    def __init__(self, geom: Geometry, run, w_raw, w_zp, w_range, x_zp: int, x_range):
        self.geom, self.run = geom, run
        self.w_raw = np.asarray(w_raw, dtype=np.int64).reshape(geom.cout, -1)
        self.w_zp = np.broadcast_to(np.asarray(w_zp, dtype=np.int64).reshape(-1), (geom.cout,))
        self.w_dev = self.w_raw - self.w_zp[:, None]
        self.x_zp = int(x_zp)
        self.umin, self.umax = x_range[0] - self.x_zp, x_range[1] - self.x_zp
        wmin, wmax = w_range
        if (self.w_zp + 1 > wmax).any():
            raise QuantError(f"weight zero point {self.w_zp.max()} leaves no room for probe weights")
        self.bigs = [d for d in (int((wmax - self.w_zp).min()), -int((self.w_zp - wmin).min())) if d]
        self.reaches = [self._reach(d) for d in self.bigs]
        self.shape = (geom.cout, geom.cin // geom.groups) + (tuple(geom.kernel) if geom.spatial else ())

    @property
    def reach(self):
        return min(r[0] for r in self.reaches), max(r[1] for r in self.reaches)

    def _reach(self, d):
        n = self.geom.window - 1
        ends = sorted((d * n * self.umin, d * n * self.umax))
        return self.umin + ends[0], self.umin + abs(d) - 1 + ends[1]

    def _weights(self, d):
        pattern = np.full(self.geom.window, d, dtype=np.int64)
        pattern[0] = 1
        return (self.w_zp[:, None] + pattern[None, :]).reshape(self.shape)

    def _decompose(self, t, d):
        """u (R, G, window), each in [umin, umax], with u[0] + d * sum(u[1:]) == t (R, G)."""
        n = self.geom.window - 1
        u0 = self.umin + np.mod(t - self.umin, abs(d))
        s = (t - u0) // d - n * self.umin
        u = np.empty(t.shape + (n + 1,), dtype=np.int64)
        u[..., 0] = u0
        if n:
            q, r = np.divmod(s, n)
            u[..., 1:] = self.umin + q[..., None] + (np.arange(n) < r[..., None])
        return u

    def _inputs(self, u):
        """Input codes (R, Cin, H, W) (or (R, K)) holding window values u (R, G, window) at the site."""
        g = self.geom
        h, w, r0, c0, _, _ = g.site()
        cg, (kh, kw) = g.cin // g.groups, g.kernel
        x = np.full((u.shape[0], g.cin, h, w), self.x_zp, dtype=np.int64)
        win = (u + self.x_zp).reshape(u.shape[0], g.groups * cg, kh, kw)
        x[:, :, r0:r0 + kh, c0:c0 + kw] = win
        return x if g.spatial else x.reshape(u.shape[0], g.cin)

    def codes(self, acc):
        """The runtime's codes (M, C) for runtime accumulators acc (M, C), each within `reach`."""
        g = self.geom
        gs, cg = g.groups, g.cout // g.groups
        m = acc.shape[0]
        t = acc.reshape(m, gs, cg).transpose(2, 0, 1).reshape(cg * m, gs)    # row (j, k): channel j of each group
        out = np.zeros_like(t)
        done = np.zeros(t.shape, dtype=bool)
        for d, (lo, hi) in zip(self.bigs, self.reaches):
            use = ~done & (t >= lo) & (t <= hi)
            rows = use.any(axis=1)
            if not rows.any():
                continue
            u = self._decompose(np.where(use[rows], t[rows], 0), d)
            y = np.asarray(self.run(self._weights(d), self._inputs(u)), dtype=np.int64)
            y = y.reshape(-1, gs, cg)                                  # (rows, group, channel in group)
            j = np.repeat(np.arange(cg), m)[rows]
            picked = y[np.arange(len(j)), :, j]                        # channel j of each group
            out[rows] = np.where(use[rows], picked, out[rows])
            done |= use
        if not done.all():
            raise QuantError(f"accumulator {t[~done][0]} is outside the probe's reach {self.reach}")
        return out.reshape(cg, m, gs).transpose(1, 2, 0).reshape(m, g.cout)

    def extremes(self):
        """(lo, hi, codes at lo, codes at hi) per channel: the layer's least and greatest accumulators
        (every input at its bound, by the sign of the real weight) and the runtime's codes there."""
        g = self.geom
        gs, cg = g.groups, g.cout // g.groups
        wd = self.w_dev
        hi = np.maximum(wd * self.umin, wd * self.umax).sum(axis=1)
        lo = np.minimum(wd * self.umin, wd * self.umax).sum(axis=1)
        codes = []
        for sign in (-1, 1):
            u = np.zeros((g.cout, gs, g.window), dtype=np.int64)
            grp = np.arange(g.cout) // cg
            u[np.arange(g.cout), grp] = np.where(sign * wd > 0, self.umax, self.umin)
            y = np.asarray(self.run(self.w_raw.reshape(self.shape), self._inputs(u)), dtype=np.int64)
            codes.append(y[np.arange(g.cout), np.arange(g.cout)])
        return lo, hi, codes[0], codes[1]


class PoolProbe:
    """Makes a runtime's average pool compute chosen window sums of codes (one per channel and row).

    run(x) -> codes: the runtime's pool on input codes x (B, C, H, W) (the layer's real input size:
    kernels choose their path by size) answering (B, C) at output (0, 0), whose window is the
    top-left kh x kw corner. Any sum in [n*cmin, n*cmax] is reachable, so the whole range is probed. Each sum is
    tried with `votes` different windows (evenly spread, then random); an integer kernel answers
    the same for all, a float one (dequantize -> average -> quantize) may not near ties: then the
    majority is taken and `varies` records it (the stage is not exact by construction).
    """

    def __init__(self, run, kernel, channels: int, x_range, in_hw=None, votes: int = 5):
        self.run, self.kernel, self.channels = run, tuple(kernel), channels
        self.in_hw = tuple(in_hw or kernel)
        self.cmin, self.cmax = x_range
        n = kernel[0] * kernel[1]
        self.reach = (n * self.cmin, n * self.cmax)
        self.votes, self.varies = votes, 0

    def _window(self, sums, vote):
        """Codes of n elements summing to `sums`: evenly spread (vote 0), else pseudo-random but a
        fixed function of (sum, vote), so the probe answers the same every time it is asked."""
        n = self.kernel[0] * self.kernel[1]
        if vote == 0:
            q, r = np.divmod(sums - n * self.cmin, n)
            return self.cmin + q[..., None] + (np.arange(n) < r[..., None])
        h = (sums[..., None] * 2654435761 + np.arange(n) * 40503 + vote * 97531) % 1000003
        x = self.cmin + h % (self.cmax - self.cmin + 1)
        diff = sums - x.sum(axis=-1)
        for room, sign in ((self.cmax - x, 1), (x - self.cmin, -1)):
            need = np.clip(sign * diff, 0, None)[..., None]
            cum = np.cumsum(room, axis=-1)
            take = np.clip(np.minimum(cum, need) - (cum - room), 0, None)
            x = x + sign * take
        return x

    def codes(self, sums):
        outs = []
        kh, kw = self.kernel
        for v in range(self.votes):
            x = np.full(sums.shape + self.in_hw, self.cmin, dtype=np.int64)
            x[..., :kh, :kw] = self._window(sums, v).reshape(sums.shape + self.kernel)
            outs.append(np.asarray(self.run(x), dtype=np.int64))
        outs = np.stack(outs)
        self.varies += int((outs != outs[0]).any(axis=0).sum())
        return np.median(outs, axis=0).astype(np.int64)
