"""The IR's operations: the Node base class and one dataclass per operator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .types import Bipolar, BipolarType, ElemType, Int, IRError, TensorType, int_type_for, values_in


def _array(name, a, ndim):
    a = np.asarray(a)
    if a.ndim != ndim:
        raise IRError(f"{name}: expected a {ndim}-d array, got shape {a.shape}")
    if a.dtype.kind not in "iub":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise IRError(f"{name}: values must be integers, got dtype {a.dtype}")
    return a.astype(np.int64)


@dataclass(eq=False)
class Node:
    """One operation: `inputs` and `output` are tensor names in the Graph."""
    name: str
    inputs: list[str]
    output: str

    kind = "node"

    def infer(self, ins: list[TensorType]) -> TensorType:  # pragma: no cover - abstract
        raise NotImplementedError

    def attrs(self) -> dict:
        """The node's attributes (for hashing, manifests and summaries)."""
        return {}

    def _need(self, ins, n):
        if len(ins) != n:
            raise IRError(f"{self.kind} '{self.name}': expects {n} input(s), got {len(ins)}")

    def _fail(self, msg):
        raise IRError(f"{self.kind} '{self.name}': {msg}")

    def _map_input(self, ins) -> TensorType:
        """The one input, checked to be a channels-last (H, W, C) feature map."""
        self._need(ins, 1)
        (x,) = ins
        if len(x.shape) != 3:
            self._fail(f"expects a channels-last (H, W, C) input, got shape {x.shape}")
        return x


@dataclass(eq=False)
class Dense(Node):
    """acc[n] = sum_k W[n, k] * x[k], exact. W is (N, K), of element type `wtype`."""
    weight: np.ndarray = None
    wtype: ElemType = None
    kind = "Dense"

    def __post_init__(self):
        self.weight = _array(f"Dense '{self.name}' weight", self.weight, 2)

    @property
    def shape(self):
        return self.weight.shape

    def acc_bounds(self, in_dtype: ElemType) -> tuple[np.ndarray, np.ndarray]:
        """Per output channel, the least and greatest accumulator value over all inputs."""
        w = self.weight
        hi = np.maximum(w * in_dtype.min, w * in_dtype.max).sum(axis=1)
        lo = np.minimum(w * in_dtype.min, w * in_dtype.max).sum(axis=1)
        return lo, hi

    def infer(self, ins):
        self._need(ins, 1)
        (x,) = ins
        n, k = self.weight.shape
        if x.shape != (k,):
            self._fail(f"input shape {x.shape} does not match weight shape {self.weight.shape} "
                       f"(expects ({k},))")
        if self.wtype is None:
            self._fail("weight element type (wtype) is not set")
        bad = ~values_in(self.wtype, self.weight)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            self._fail(f"weight[{r}, {c}] = {self.weight[r, c]} is out of range for {self.wtype} "
                       f"({self.wtype.min}..{self.wtype.max}{', no 0' if self.wtype is Bipolar else ''})")
        lo, hi = self.acc_bounds(x.dtype)
        return TensorType((n,), int_type_for(lo.min(initial=0), hi.max(initial=0)))

    def attrs(self):
        return {"weight": self.weight, "wtype": str(self.wtype)}


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


@dataclass(eq=False)
class Conv2d(Node):
    """Cross-correlation on a channels-last (H, W, C) map, exact.

    weight is (OC, KH, KW, C // groups); padding (ph, pw) adds `pad_value` (an
    integer of the input type) on each side; dilation 1. Output (OH, OW, OC).
    """
    weight: np.ndarray = None
    wtype: ElemType = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    pad_value: int = 0
    groups: int = 1
    kind = "Conv2d"

    def __post_init__(self):
        self.weight = _array(f"Conv2d '{self.name}' weight", self.weight, 4)
        self.stride, self.padding = _pair(self.stride), _pair(self.padding)
        self.pad_value, self.groups = int(self.pad_value), int(self.groups)

    @property
    def kernel(self):
        return self.weight.shape[1:3]

    def out_hw(self, h, w):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def acc_bounds(self, in_dtype):
        w = self.weight.reshape(self.weight.shape[0], -1)
        return (np.minimum(w * in_dtype.min, w * in_dtype.max).sum(axis=1),
                np.maximum(w * in_dtype.min, w * in_dtype.max).sum(axis=1))

    def infer(self, ins):
        x = self._map_input(ins)
        h, w, c = x.shape
        oc, kh, kw, cg = self.weight.shape
        g = self.groups
        if g < 1 or c % g or oc % g or cg != c // g:
            self._fail(f"weight shape {self.weight.shape} with groups={g} does not fit {c} input channels "
                       f"(needs (OC, KH, KW, {c} // groups) and groups dividing {c} and OC)")
        if min(self.stride) < 1 or min(self.padding) < 0:
            self._fail(f"stride {self.stride} must be >= 1 and padding {self.padding} >= 0")
        oh, ow = self.out_hw(h, w)
        if oh < 1 or ow < 1:
            self._fail(f"kernel {self.kernel} does not fit the {h}x{w} input with padding {self.padding}")
        if max(self.padding) > 0 and not values_in(x.dtype, np.array(self.pad_value)):
            self._fail(f"pad_value {self.pad_value} is not a value of the input type {x.dtype}")
        if self.wtype is None:
            self._fail("weight element type (wtype) is not set")
        bad = ~values_in(self.wtype, self.weight)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            self._fail(f"weight{list(idx)} = {self.weight[idx]} is out of range for {self.wtype}")
        lo, hi = self.acc_bounds(x.dtype)
        return TensorType((oh, ow, oc), int_type_for(lo.min(initial=0), hi.max(initial=0)))

    def attrs(self):
        return {"weight": self.weight, "wtype": str(self.wtype), "stride": self.stride,
                "padding": self.padding, "pad_value": self.pad_value, "groups": self.groups}


@dataclass(eq=False)
class MaxPool2d(Node):
    """Max over k x k windows of a (H, W, C) map, per channel; no padding, floor mode."""
    kernel: tuple = (2, 2)
    stride: tuple = None
    kind = "MaxPool2d"

    def __post_init__(self):
        self.kernel = _pair(self.kernel)
        self.stride = self.kernel if self.stride is None else _pair(self.stride)

    def infer(self, ins):
        x = self._map_input(ins)
        h, w, c = x.shape
        oh, ow = (h - self.kernel[0]) // self.stride[0] + 1, (w - self.kernel[1]) // self.stride[1] + 1
        if oh < 1 or ow < 1:
            self._fail(f"kernel {self.kernel} does not fit the {h}x{w} input")
        return TensorType((oh, ow, c), x.dtype)

    def attrs(self):
        return {"kernel": self.kernel, "stride": self.stride}


@dataclass(eq=False)
class SumPool(MaxPool2d):
    """Sum over k x k windows per channel (average pooling = SumPool, then thresholds or Requantize)."""
    kind = "SumPool"

    def infer(self, ins):
        t = super().infer(ins)
        n = self.kernel[0] * self.kernel[1]
        d = ins[0].dtype
        return TensorType(t.shape, int_type_for(n * d.min, n * d.max))


@dataclass(eq=False)
class MultiThreshold(Node):
    """out = base + #{k : acc >= T[c, k]} along the last (channel) axis.

    T is (C, K) sorted ascending per row, or (1, K) shared by all channels.
    With a Bipolar out_type, K == 1 and out = +1 where acc >= T[c, 0], else -1.
    """
    thresholds: np.ndarray = None
    out_type: ElemType = None
    base: int = 0
    kind = "MultiThreshold"

    def __post_init__(self):
        self.thresholds = _array(f"MultiThreshold '{self.name}' thresholds", self.thresholds, 2)
        self.base = int(self.base)

    def infer(self, ins):
        self._need(ins, 1)
        (x,) = ins
        t = self.thresholds
        if isinstance(x.dtype, BipolarType):
            self._fail("input is bipolar; thresholds apply to integer accumulators")
        c = x.shape[-1]
        if t.shape[0] not in (1, c):
            self._fail(f"thresholds have {t.shape[0]} rows but the input has {c} channels")
        if t.shape[1] > 0:
            d = np.diff(t, axis=1)
            if (d < 0).any():
                r, k = np.argwhere(d < 0)[0]
                self._fail(f"thresholds of channel {r} are not sorted: T[{r}, {k}] = {t[r, k]} "
                           f"> T[{r}, {k + 1}] = {t[r, k + 1]}")
        if isinstance(self.out_type, BipolarType):
            if t.shape[1] != 1 or self.base != -1:
                self._fail(f"a bipolar output needs exactly 1 threshold per channel and base -1, "
                           f"got {t.shape[1]} and base {self.base}")
        elif not isinstance(self.out_type, Int):
            self._fail(f"out_type must be Int or Bipolar, got {self.out_type!r}")
        elif self.base < self.out_type.min or self.base + t.shape[1] > self.out_type.max:
            self._fail(f"outputs {self.base}..{self.base + t.shape[1]} do not fit {self.out_type} "
                       f"({self.out_type.min}..{self.out_type.max})")
        return TensorType(x.shape, self.out_type)

    def attrs(self):
        return {"thresholds": self.thresholds, "out_type": str(self.out_type), "base": self.base}


ROUNDINGS = ("half_up", "half_even", "floor")


@dataclass(eq=False)
class Requantize(Node):
    """out = clamp(round((acc * mult[c] + offset[c]) / 2**shift)) into out_type."""
    mult: np.ndarray = None
    shift: int = 0
    offset: np.ndarray = None
    rounding: str = "half_even"
    out_type: Int = None
    kind = "Requantize"

    def __post_init__(self):
        self.mult = _array(f"Requantize '{self.name}' mult", np.atleast_1d(self.mult), 1)
        off = np.zeros_like(self.mult) if self.offset is None else np.atleast_1d(self.offset)
        self.offset = _array(f"Requantize '{self.name}' offset", off, 1)
        self.shift = int(self.shift)

    def infer(self, ins):
        self._need(ins, 1)
        (x,) = ins
        c = x.shape[-1]
        for what, a in (("mult", self.mult), ("offset", self.offset)):
            if a.shape[0] not in (1, c):
                self._fail(f"{what} has {a.shape[0]} entries but the input has {c} channels")
        if self.shift < 0 or self.shift > 62:
            self._fail(f"shift must be in 0..62, got {self.shift}")
        if self.rounding not in ROUNDINGS:
            self._fail(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if not isinstance(self.out_type, Int):
            self._fail(f"out_type must be an Int, got {self.out_type!r}")
        if isinstance(x.dtype, BipolarType):
            self._fail("input is bipolar; Requantize applies to integer accumulators")
        return TensorType(x.shape, self.out_type)

    def attrs(self):
        return {"mult": self.mult, "shift": self.shift, "offset": self.offset,
                "rounding": self.rounding, "out_type": str(self.out_type)}


@dataclass(eq=False)
class Flatten(Node):
    """(H, W, C) -> (H*W*C,), C fastest: the stream order does not change."""
    kind = "Flatten"

    def infer(self, ins):
        self._need(ins, 1)
        return TensorType((ins[0].size,), ins[0].dtype)


@dataclass(eq=False)
class ArgMax(Node):
    """Index of the greatest element of a vector; ties go to the lowest index."""
    kind = "ArgMax"

    def infer(self, ins):
        self._need(ins, 1)
        (x,) = ins
        if len(x.shape) != 1:
            self._fail(f"expects a vector, got shape {x.shape}")
        return TensorType((1,), int_type_for(0, max(x.shape[0] - 1, 0)))


@dataclass(eq=False)
class Add(Node):
    """out = coeffs[0] * a + coeffs[1] * b, element by element, exact (a residual add).

    The two inputs have the same shape; Bipolar inputs count as -1/+1. The integer
    coefficients put both inputs in one unit (the front end uses powers of two: the
    ratio of the two branches' scales); the output type holds every possible sum.
    """
    coeffs: tuple = (1, 1)
    kind = "Add"

    def __post_init__(self):
        c = tuple(self.coeffs)
        if len(c) != 2 or any(int(v) != v or int(v) == 0 for v in c):
            raise IRError(f"Add '{self.name}': coeffs must be two nonzero integers, got {self.coeffs!r}")
        self.coeffs = tuple(int(v) for v in c)

    def bounds(self, dtypes) -> tuple[int, int]:
        """The least and greatest sum over all inputs of the types `dtypes`."""
        ends = [sorted((k * d.min, k * d.max)) for k, d in zip(self.coeffs, dtypes)]
        return sum(e[0] for e in ends), sum(e[1] for e in ends)

    def infer(self, ins):
        self._need(ins, 2)
        a, b = ins
        if a.shape != b.shape:
            self._fail(f"inputs have shapes {a.shape} and {b.shape}; an elementwise add needs equal shapes")
        return TensorType(a.shape, int_type_for(*self.bounds([a.dtype, b.dtype])))

    def attrs(self):
        return {"coeffs": self.coeffs}


@dataclass(eq=False)
class Concat(Node):
    """Concatenation along the last (channel) axis of two or more tensors.

    The other axes must match. The output type is the inputs' type when they all
    share it, else the narrowest Int that holds every input value (Bipolar as -1/+1).
    """
    kind = "Concat"

    def infer(self, ins):
        if len(ins) < 2:
            self._fail(f"expects 2 or more inputs, got {len(ins)}")
        lead = ins[0].shape[:-1]
        for k, t in enumerate(ins):
            if len(t.shape) != len(ins[0].shape) or t.shape[:-1] != lead:
                self._fail(f"input {k} has shape {t.shape}, input 0 has {ins[0].shape}; all axes but the "
                           f"last (channels) must match")
        dtypes = {t.dtype for t in ins}
        dtype = ins[0].dtype if len(dtypes) == 1 else \
            int_type_for(min(d.min for d in dtypes), max(d.max for d in dtypes))
        return TensorType(lead + (sum(t.shape[-1] for t in ins),), dtype)

