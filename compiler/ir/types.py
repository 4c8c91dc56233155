"""Element and tensor types of the IR: Int, Bipolar, TensorType, IRError and the helpers on them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BadInput


class IRError(BadInput):
    """A malformed graph; the message names the node and the offending value."""


@dataclass(frozen=True)
class Int:
    bits: int
    signed: bool = True

    def __post_init__(self):
        if not isinstance(self.bits, int) or self.bits < 1 or self.bits > 64:
            raise IRError(f"Int bits must be an integer in 1..64, got {self.bits!r}")

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def __str__(self):
        return f"{'int' if self.signed else 'uint'}{self.bits}"


@dataclass(frozen=True)
class BipolarType:
    """-1/+1 in one bit: bit 1 is +1, bit 0 is -1."""
    bits: int = 1
    min: int = -1
    max: int = 1

    def __str__(self):
        return "bipolar"


Bipolar = BipolarType()
ElemType = Int | BipolarType


def int_type_for(lo: int, hi: int) -> Int:
    """The narrowest Int that holds every integer in [lo, hi]."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise IRError(f"empty range [{lo}, {hi}]")
    if lo >= 0:
        return Int(max(1, hi.bit_length()), signed=False)
    bits = max((-lo - 1).bit_length(), hi.bit_length() if hi > 0 else 0) + 1
    return Int(bits, signed=True)


def values_in(dtype: ElemType, values: np.ndarray) -> np.ndarray:
    """Boolean mask of the elements of `values` that `dtype` can hold."""
    v = np.asarray(values)
    if isinstance(dtype, BipolarType):
        return (v == 1) | (v == -1)
    return (v >= dtype.min) & (v <= dtype.max)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: ElemType

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self):
        return f"{self.dtype}[{'x'.join(map(str, self.shape))}]"


def parse_type(s: str) -> ElemType:
    """'int4' / 'uint8' / 'bipolar' -> the element type."""
    if s == "bipolar":
        return Bipolar
    if s.startswith("uint"):
        return Int(int(s[4:]), False)
    if s.startswith("int"):
        return Int(int(s[3:]), True)
    raise IRError(f"unknown element type {s!r}")
