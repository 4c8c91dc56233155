"""QONNX quantizer nodes (Quant, BipolarQuant, Trunc, MultiThreshold) as qloom sees them.

A `Quantizer` says, for one quantizer node, what integer type its codes have,
how the executor's float output maps back to those codes, and how codes map
forward to the executor's float value (`value = (code - zp) * scale`, computed
with the executor's own float32 steps). Codes are always recovered from the
node's actual output and checked to dequantize back to it bit for bit, so a
misread attribute becomes an error, never a silently different network.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import InternalError, QuantError

MAX_ACT_BITS = 12        # 2**12 - 1 thresholds per channel is already a lot of comparators


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def describe(node) -> str:
    return "the model input" if node is None else f"node '{node.name}' ({node.op_type})"


def const_scalar(node, what, value, integer=True):
    v = np.asarray(value)
    if v.size != 1:
        raise QuantError(f"{describe(node)}: {what} must be one value, got shape {v.shape}"
                         + ("; a per-channel zero point is not supported" if "zero" in what else ""))
    x = float(v.reshape(-1)[0])
    if integer and x != round(x):
        raise QuantError(f"{describe(node)}: {what} must be an integer constant, got {x}")
    return x


def int_range(signed: bool, narrow: bool, bits: int) -> tuple[int, int]:
    """qonnx's min_int/max_int."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


@dataclass
class Quantizer:
    node: object
    out_type: ir.ElemType      # the IR codes' type
    scale: np.ndarray          # float32, as the node broadcasts it (value = (code - zp) * scale)
    zp: float                  # integer-valued
    kind: str                  # "quant" | "bipolar" | "trunc" | "mt" | "input" (annotated integer input)
    mt: tuple = (1.0, 0.0, 0)  # MultiThreshold: out_scale, out_bias, base

    def codes(self, values) -> np.ndarray:
        """The integer codes behind the node's float output `values`, checked bit for bit."""
        v = np.asarray(values)
        if self.kind == "input":
            if not (np.all(v == np.round(v)) and ir.values_in(self.out_type, v).all()):
                raise QuantError(f"the model's input holds {self.out_type} codes (its datatype annotation); got "
                                 f"values outside them")
            return v.astype(np.int64)
        if self.kind == "mt":
            s, b, base = self.mt
            count = np.round((v.astype(np.float64) - b) / s)
            c = 2 * count - 1 if self.out_type is ir.Bipolar else count + base
        else:
            c = np.round(v.astype(np.float64) / self.scale.astype(np.float64)) + self.zp
        c = c.astype(np.int64)
        back = self.dequant(c)
        if not np.array_equal(back, v.astype(np.float32)):
            i = tuple(int(k) for k in np.argwhere(back != v.astype(np.float32))[0])
            raise InternalError(f"{describe(self.node)}: output {v[i]!r} at {i} is not code {c[i]} dequantized "
                                f"({back[i]!r}); the quantizer's attributes were misread")
        return c

    def dequant(self, codes) -> np.ndarray:
        """The executor's float32 output for integer codes (same shapes/broadcasting as the node)."""
        c = np.asarray(codes).astype(np.float32)
        if self.kind == "input":
            return c
        if self.kind == "mt":
            s, b, base = self.mt
            count = (c + 1) / 2 if self.out_type is ir.Bipolar else c - np.float32(base)
            return (s * count.astype(np.float32) + b).astype(np.float32)
        if self.kind == "bipolar":
            return (c * self.scale).astype(np.float32)
        return ((c - np.float32(self.zp)) * self.scale).astype(np.float32)

    @property
    def per_tensor_scale(self) -> float | None:
        s = np.asarray(self.scale).reshape(-1)
        return float(s[0]) if (s == s[0]).all() else None


def quantizer(node, consts, codes_range=None) -> Quantizer:
    """The Quantizer for a Quant/IntQuant/BipolarQuant/Trunc/MultiThreshold node.

    consts: the node's constant inputs by position (None where not constant).
    codes_range: for Trunc v1 (no declared output type), a callable giving the
    least and greatest code the node can produce, evaluated on its input range.
    """
    op = node.op_type
    for i, c in enumerate(consts[1:], start=1):
        if c is None:
            raise QuantError(f"{describe(node)}: input {i} ('{node.input[i]}') must be a constant "
                             f"(scale, zero point and bit width are read at import)")
    if op in ("Quant", "IntQuant"):
        scale, zp, bits = consts[1], consts[2], consts[3]
        zp = const_scalar(node, "zero point", zp)
        b = const_scalar(node, "bit width", bits)
        b = int(b)
        signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
        mode = str(attr(node, "rounding_mode", "ROUND")).upper()
        if mode not in ("ROUND", "HALF_EVEN", "ROUND_TO_ZERO", "FLOOR", "CEIL", "DOWN", "UP", "HALF_UP",
                        "HALF_DOWN"):
            raise QuantError(f"{describe(node)}: rounding_mode {mode!r} is not supported (ROUND, ROUND_TO_ZERO, "
                             f"FLOOR, CEIL and qonnx's HALF_EVEN/UP/DOWN/HALF_UP/HALF_DOWN are)")
        if b < 1:
            raise QuantError(f"{describe(node)}: bit width {b} must be at least 1")
        if b == 1 and signed:
            if zp != 0:
                raise QuantError(f"{describe(node)}: a 1-bit signed Quant (bipolar) needs zero point 0, got {zp}")
            return Quantizer(node, ir.Bipolar, _f32(scale), 0.0, "bipolar")
        lo, hi = int_range(signed, narrow, b)
        if not lo <= zp <= hi:
            raise QuantError(f"{describe(node)}: zero point {zp:g} is outside the code range {lo}..{hi}")
        return Quantizer(node, ir.Int(b, signed), _f32(scale), zp, "quant")
    if op == "BipolarQuant":
        return Quantizer(node, ir.Bipolar, _f32(consts[1]), 0.0, "bipolar")
    if op == "Trunc":
        scale, zp, out_scale, out_bits = consts[1], consts[2], consts[4], consts[5] if len(consts) > 5 else None
        zp = const_scalar(node, "zero point", zp)
        if out_bits is not None:                 # Trunc v2: declared output type and scale
            b = int(const_scalar(node, "output bit width", out_bits))
            signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
            trunc_scale = 2.0 ** np.round(np.log2(_f32(out_scale) / _f32(scale)))
            out_zp = zp / float(np.asarray(trunc_scale).reshape(-1)[0])
            if out_zp != round(out_zp):
                raise QuantError(f"{describe(node)}: output zero point {out_zp} is not an integer")
            return Quantizer(node, ir.Int(b, signed), _f32(out_scale), out_zp, "trunc")
        lo, hi = codes_range()                    # Trunc v1: codes on the input's scale
        return Quantizer(node, ir.int_type_for(lo, hi), _f32(scale), zp, "trunc")
    if op == "MultiThreshold":
        layout = attr(node, "data_layout", "")
        if layout not in ("", "NCHW", "NC", "NCW"):
            raise QuantError(f"{describe(node)}: data_layout {layout!r} is not supported (the channel must be "
                             f"axis 1: NC or NCHW)")
        t = np.asarray(consts[1])
        s, b = float(attr(node, "out_scale", 1.0)), float(attr(node, "out_bias", 0.0))
        n = t.shape[-1]
        dt = str(attr(node, "out_dtype", ""))
        if dt == "BIPOLAR":
            if n != 1 or b != -s / 2:
                raise QuantError(f"{describe(node)}: a BIPOLAR MultiThreshold needs 1 threshold per channel and "
                                 f"out_bias = -out_scale/2, got {n} and out_scale={s}, out_bias={b}")
            return Quantizer(node, ir.Bipolar, np.float32(s / 2), 0.0, "mt", (s, b, 0))
        if s == 0 or b / s != round(b / s):
            raise QuantError(f"{describe(node)}: out_bias / out_scale = {b}/{s} must be an integer")
        base = int(round(b / s))
        return Quantizer(node, ir.int_type_for(base, base + n), np.float32(s), 0.0, "mt", (s, b, base))
    raise QuantError(f"{describe(node)}: not a quantizer")


def check_act_bits(q: Quantizer):
    if isinstance(q.out_type, ir.Int) and q.out_type.bits > MAX_ACT_BITS:
        raise QuantError(f"{describe(q.node)}: a {q.out_type.bits}-bit activation needs 2**{q.out_type.bits} - 1 "
                         f"thresholds per channel; qloom lowers activations of up to {MAX_ACT_BITS} bits")


def _f32(a):
    return np.asarray(a, dtype=np.float32)
