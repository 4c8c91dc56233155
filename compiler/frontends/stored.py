"""The float glue of a build dir without its source model (Accelerator.load).

`Frontend.io_spec()` writes, and `StoredFrontend` reads, a JSON object:

    {"kind": "<front end>",
     "input":  {"quantizer": "affine", "type": "uint8", "scale": s or [s_c], "zero_point": z,
                "rounding": "half_even" | "half_up" | "floor" | "ceil" | "to_zero",
                "layout": "nchw" | "flat"}
             | {"quantizer": "bipolar", "layout": ...},
     "output": {"kind": "codes", "scale": s or [s_c], "zero_point": z}
             | {"kind": "affine", "mult": [m_c], "offset": [o_c], "bias": [b_c] or null,
                "precision": "float32" | "float64", "relu": bool, "exact": bool}}

Affine input: code = clamp(round(float32(x) / float32(scale)) + zero_point) in float32, the
arithmetic of qloom.nn's QuantInput and of ONNX QuantizeLinear (half to even). An "affine"
output is y = (acc + offset) * mult + bias in `precision`, rounded to float32; `exact` says
whether that is the source's own tail (false where batch norm was folded in by probing).
"""
from __future__ import annotations

import numpy as np

from .. import ir
from .base import Frontend, QuantError

ROUND = {"half_even": np.round, "half_up": lambda v: np.floor(v + 0.5), "floor": np.floor, "ceil": np.ceil,
         "to_zero": np.trunc}


def quantize_affine(x, spec: dict) -> np.ndarray:
    """Float inputs -> codes with the stored input quantizer (the layout is handled by the caller)."""
    x = np.asarray(x, dtype=np.float32)
    if spec["quantizer"] == "bipolar":
        return np.where(x >= 0, 1, -1).astype(np.int64)
    t = ir.parse_type(spec["type"])
    scale = np.asarray(spec["scale"], dtype=np.float32)
    if scale.ndim == 1 and x.ndim == 4:
        scale = scale.reshape(1, -1, 1, 1)
    q = ROUND[spec.get("rounding", "half_even")](x / scale) + np.float32(spec.get("zero_point", 0))
    return np.clip(q, t.min, t.max).astype(np.int64)


def channels_last(codes: np.ndarray, layout: str) -> np.ndarray:
    return codes.transpose(0, 2, 3, 1) if layout == "nchw" and codes.ndim == 4 else codes


class StoredFrontend(Frontend):
    """quantize_input / dequantize from a stored io_spec; the source model itself is not here."""
    kind = "stored"

    def __init__(self, spec: dict | None, where: str = "the build dir"):
        self.spec, self.where = spec or {}, where

    def _need(self, part):
        if part not in self.spec:
            raise QuantError(f"{self.where} stores no float {part} conversion (its front end did not write "
                             f"one): give integer inputs (x_int) and read integer outputs")
        return self.spec[part]

    def quantize_input(self, x_float):
        spec = self._need("input")
        return channels_last(quantize_affine(x_float, spec), spec.get("layout", "flat"))

    def dequantize(self, y_int):
        spec = self._need("output")
        y = np.asarray(y_int)
        if spec["kind"] == "codes":
            s = np.asarray(spec["scale"], dtype=np.float32)
            return (y - np.int64(spec.get("zero_point", 0))).astype(np.float32) * s
        if spec["kind"] != "affine":
            raise QuantError(f"{self.where}: unknown output conversion {spec['kind']!r}")
        ft = np.float64 if spec.get("precision") == "float64" else np.float32
        v = (y + np.asarray(spec.get("offset", 0), dtype=np.int64)).astype(ft) * np.asarray(spec["mult"], dtype=ft)
        if spec.get("bias") is not None:
            v = v + np.asarray(spec["bias"], dtype=ft)
        if spec.get("relu"):
            v = np.maximum(v, 0)
        return v.astype(np.float32)

    def source_outputs(self, x_float, argmax):
        raise QuantError(f"{self.where} was loaded without its source model: fidelity needs the model "
                         f"(compile it again), but reference(), predict() and simulate() work")

    def sample_inputs(self, n, seed=0):
        raise QuantError(f"{self.where}: give the inputs (x_int or x_float)")

    def io_spec(self):
        return self.spec or None
