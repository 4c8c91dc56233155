"""The integer-only IR: a Graph of Nodes over TensorTypes.

Every tensor holds integers. Element types are `Int(bits, signed)` (two's
complement range) and `Bipolar` (the values -1 and +1; as a bit, 1 means +1).
Shapes are per frame (no batch axis); feature maps are channels-last (H, W, C).
Accumulator types are never declared: `Node.infer` derives them from the actual
weights and the input range, so overflow is impossible and no bit is wasted.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from .errors import BadInput


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
        self._need(ins, 1)
        (x,) = ins
        if len(x.shape) != 3:
            self._fail(f"expects a channels-last (H, W, C) input, got shape {x.shape}")
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
        self._need(ins, 1)
        (x,) = ins
        if len(x.shape) != 3:
            self._fail(f"expects a channels-last (H, W, C) input, got shape {x.shape}")
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


@dataclass
class Graph:
    """A DAG of nodes in topological order, one graph input and one graph output.

    A tensor may feed several nodes (a residual branch, a concatenation); `consumers`
    gives them. A graph where every tensor feeds at most one node is a chain."""
    input: str
    input_type: TensorType
    nodes: list[Node]
    output: str
    name: str = "qloom"
    meta: dict = field(default_factory=dict)

    def validate(self) -> dict[str, TensorType]:
        """Check every node and return the type of every tensor."""
        types = {self.input: self.input_type}
        seen = set()
        for node in self.nodes:
            if node.name in seen:
                raise IRError(f"duplicate node name '{node.name}'")
            seen.add(node.name)
            for t in node.inputs:
                if t not in types:
                    raise IRError(f"{node.kind} '{node.name}': input tensor '{t}' is not produced "
                                  f"by an earlier node (nodes must be in topological order)")
            if node.output in types:
                raise IRError(f"{node.kind} '{node.name}': tensor '{node.output}' is already defined")
            types[node.output] = node.infer([types[t] for t in node.inputs])
        if self.output not in types:
            raise IRError(f"graph output '{self.output}' is not produced by any node")
        return types

    @property
    def output_type(self) -> TensorType:
        return self.validate()[self.output]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None

    def consumers(self) -> dict[str, list[Node]]:
        """Every tensor's consuming nodes, in graph order (a node that reads a tensor twice is listed twice)."""
        out = {self.input: []}
        for n in self.nodes:
            out.setdefault(n.output, [])
            for t in n.inputs:
                out.setdefault(t, []).append(n)
        return out

    @property
    def is_chain(self) -> bool:
        """Every node reads the previous node's output (the graph input for the first)."""
        prev = self.input
        for n in self.nodes:
            if n.inputs != [prev]:
                return False
            prev = n.output
        return prev == self.output

    def hash(self) -> str:
        """A digest of everything that defines the computation."""
        h = hashlib.sha256()
        h.update(f"{self.input}:{self.input_type}->{self.output}".encode())
        for n in self.nodes:
            h.update(f"|{n.kind}:{n.name}:{n.inputs}:{n.output}".encode())
            for k, v in sorted(n.attrs().items()):
                h.update(k.encode())
                h.update(np.ascontiguousarray(v).tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        types = self.validate()
        lines = [f"graph {self.name}: input {self.input} {self.input_type}"]
        prev = self.input
        for n in self.nodes:
            extra = ""
            if isinstance(n, Dense):
                extra = f" W{n.weight.shape[0]}x{n.weight.shape[1]}:{n.wtype}"
            elif isinstance(n, Conv2d) and n.groups > 1:
                extra = f" groups={n.groups}"
            elif isinstance(n, MultiThreshold):
                extra = f" T{n.thresholds.shape[0]}x{n.thresholds.shape[1]}"
            elif isinstance(n, Add):
                extra = f" coeffs={n.coeffs}"
            # a DAG: name the inputs wherever a node does not just read the previous node's output
            src = "" if n.inputs == [prev] else f"({', '.join(n.inputs)}) "
            lines.append(f"  {n.kind:<15}{n.name:<16}{src}-> {n.output} {types[n.output]}{extra}")
            prev = n.output
        return "\n".join(lines)


# ---------------------------------------------------------------- saving graphs (no pickle)

NODE_KINDS = {cls.kind: cls for cls in (Dense, Conv2d, MultiThreshold, Requantize, MaxPool2d, SumPool,
                                        Flatten, ArgMax, Add, Concat)}


def parse_type(s: str) -> ElemType:
    """'int4' / 'uint8' / 'bipolar' -> the element type."""
    if s == "bipolar":
        return Bipolar
    if s.startswith("uint"):
        return Int(int(s[4:]), False)
    if s.startswith("int"):
        return Int(int(s[3:]), True)
    raise IRError(f"unknown element type {s!r}")


def save_graph(graph: Graph, path) -> None:
    """Write `graph` as one .npz: arrays as arrays, everything else as a JSON header."""
    import dataclasses
    import json
    arrays, nodes = {}, []
    for i, n in enumerate(graph.nodes):
        rec = {"kind": n.kind, "name": n.name, "inputs": list(n.inputs), "output": n.output, "fields": {}}
        for f in dataclasses.fields(n):
            if f.name in ("name", "inputs", "output"):
                continue
            v = getattr(n, f.name)
            if isinstance(v, np.ndarray):
                arrays[f"n{i}_{f.name}"] = v
                rec["fields"][f.name] = {"array": f"n{i}_{f.name}"}
            elif isinstance(v, (Int, BipolarType)):
                rec["fields"][f.name] = {"type": str(v)}
            else:
                rec["fields"][f.name] = {"value": list(v) if isinstance(v, tuple) else v}
        nodes.append(rec)
    header = {"name": graph.name, "input": graph.input, "output": graph.output,
              "input_type": {"shape": list(graph.input_type.shape), "dtype": str(graph.input_type.dtype)},
              "nodes": nodes, "hash": graph.hash()}
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


def load_graph(path) -> Graph:
    """Read a graph written by save_graph; checks that it hashes as it did when saved."""
    import json
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        nodes = []
        for rec in header["nodes"]:
            kw = {}
            for k, v in rec["fields"].items():
                kw[k] = z[v["array"]] if "array" in v else parse_type(v["type"]) if "type" in v else \
                    (tuple(v["value"]) if isinstance(v["value"], list) else v["value"])
            nodes.append(NODE_KINDS[rec["kind"]](rec["name"], rec["inputs"], rec["output"], **kw))
    it = header["input_type"]
    g = Graph(header["input"], TensorType(tuple(it["shape"]), parse_type(it["dtype"])), nodes, header["output"],
              name=header["name"])
    if g.hash() != header["hash"]:
        raise IRError(f"{path}: the graph read back hashes to {g.hash()}, not {header['hash']}")
    return g
