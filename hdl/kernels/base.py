"""Kernels: one class per hardware operator, the one home of everything about it.

A kernel is built from its IR node, the tensor types around it and its
folding. It owns the folding constraints (`choices`, `check`), the cycles per
frame, the timing of a frame through it (`frame_times`), the resource model
(`resources`, given a device `MemoryModel`) and the construction of its Amaranth
component (`build`). The component's own parameters are the one source of its
latency and cycle counts: kernels ask the component class (its static
`timing`-style helpers), never restate them.

`fold`, `plan`, `estimate` (hdl/folding.py), the accelerator assembly
(hdl/accelerator.py) and the board-fit search (boards/fit.py) iterate over
kernels; nothing outside a kernel looks at what kind of operator it is.

Graph-shaped networks: a kernel names its component's stream ports (`in_ports`,
`out_ports`: a join such as the add has several inputs, a fork several outputs)
with a type and beat width per input (`in_types`, `in_ns`), and states its data
dependencies (`need`: input beats before each output beat), from which the FIFOs on
reconvergent branches are sized (hdl/reconvergence.py).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from qloom.compiler import ir
from qloom.compiler.errors import BadInput

from ..streams import divisors


class FoldingError(BadInput):
    """A folding that cannot be built; the message names the layer and the valid values."""


@dataclass(frozen=True)
class MemoryModel:
    """How a device builds memories: block RAMs of `block_bits` in the aspect ratios
    `configs` ((width, depth) of one block), LUT-RAM of `lutram_bits` bits per LUT.
    A memory goes to block RAM when it is at least `min_depth` deep (else LUTs)."""
    name: str
    block_bits: int
    configs: tuple
    lutram_bits: int = 16
    min_depth: int = 128
    family: str = "generic"     # the LUT/FF cost tables kernels use (hdl/kernels/costs.py): ice40, ecp5, generic

    def blocks(self, width: int, depth: int) -> int:
        """Block RAMs for a width x depth memory (best aspect ratio)."""
        if width <= 0 or depth <= 0:
            return 0
        return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in self.configs)

    def row_depth(self, width: int, depth: int) -> int:
        """The depth of one row of block RAMs of a width x depth memory: of the aspect ratios that take
        the fewest blocks, the shallowest (a bank of that depth then has one reading for Yosys)."""
        n = self.blocks(width, depth)
        return min(d for w, d in self.configs if math.ceil(width / w) * math.ceil(depth / d) == n)

    def place(self, width: int, depth: int) -> tuple[int, float]:
        """(block RAMs, LUTs) for a width x depth memory under the depth rule."""
        if depth >= self.min_depth:
            return self.blocks(width, depth), 0.0
        return 0, width * max(1, depth // self.lutram_bits)


# Xilinx RAMB18 / ECP5 DP16KD (18 Kbit), and iCE40 SB_RAM40_4K (4 Kbit EBR).
BRAM18 = MemoryModel("BRAM18", 18432, ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)))
EBR = MemoryModel("EBR", 4096, ((16, 256), (8, 512), (4, 1024), (2, 2048)), family="ice40")
DP16KD = MemoryModel("DP16KD", 18432, BRAM18.configs, family="ecp5")     # ECP5's 18-Kbit block RAM


@dataclass
class Resources:
    luts: float = 0
    ffs: float = 0
    brams: int = 0
    dsps: int = 0
    depth: int = 1          # pipeline registers through the stage (for reports)
    lone_ffs: float = 0     # flip-flops no LUT of their own feeds (an iCE40 logic cell each)
    pack_luts: float = 0    # LUT4 sites nextpnr's packing takes beyond Yosys' cells (ECP5: carries, LUT-RAM)

    def add(self, part: "Resources") -> "Resources":
        """Count a part (a memory, ...) into this stage: every resource but the depth."""
        self.luts += part.luts
        self.ffs += part.ffs
        self.brams += part.brams
        self.dsps += part.dsps
        self.lone_ffs += part.lone_ffs
        self.pack_luts += part.pack_luts
        return self

    def row(self) -> dict:
        return {"luts": int(round(self.luts)), "ffs": int(self.ffs), "brams": int(self.brams),
                "dsps": int(self.dsps), "depth": self.depth, "lone_ffs": int(round(self.lone_ffs)),
                "pack_luts": int(round(self.pack_luts))}


@dataclass(eq=False)
class Kernel:
    """One stage of the pipeline.

    name: the stage name (the IR node's, or node:role for plumbing); node: the IR
    node it computes (None for plumbing); in_type/out_type: the frame's tensor types;
    in_n/out_n: elements per beat on its input and output streams.
    """
    name: str
    node: ir.Node | None
    in_type: ir.TensorType
    out_type: ir.TensorType
    in_n: int
    out_n: int
    extra: dict = field(default_factory=dict)

    kind = "kernel"          # a label for reports and stage names, never dispatched on
    foldable = False         # True for kernels with PE/SIMD choices (fold() asks them)

    def __post_init__(self):
        pass

    # ------------------------------------------------------------ ports (a pipeline is a DAG of kernels)
    @property
    def in_ports(self) -> tuple:
        """The component's input stream names; a join (add, concat) has several."""
        return ("i",)

    @property
    def out_ports(self) -> tuple:
        """The component's output stream names; a fork has several."""
        return ("o",)

    @property
    def in_types(self) -> tuple:
        """The tensor type on each input port."""
        return tuple(self.extra.get("in_types", (self.in_type,) * len(self.in_ports)))

    @property
    def in_ns(self) -> tuple:
        """Elements per beat on each input port."""
        return tuple(self.extra.get("in_ns", (self.in_n,) * len(self.in_ports)))

    def in_beats(self, port: int = 0) -> int:
        return self.in_types[port].size // self.in_ns[port]

    @property
    def out_beats(self) -> int:
        return self.out_type.size // self.out_n

    # ------------------------------------------------------------ data dependencies (reconvergent FIFOs)
    @property
    def order_preserving(self) -> bool:
        """The output is the input's elements in the same order, only re-beaten. True for plumbing
        (FIFOs, width converters, forks: no IR node of their own) and elementwise kernels."""
        return self.node is None

    def need(self, j, port: int = 0) -> np.ndarray:
        """For output beats j of a frame (0-based, a numpy array): how many beats of that frame on input
        `port` must have come in before each can leave. Kernels that stream override it; the default
        (the whole input frame, else the order-preserving count) is never too small, so the FIFOs that
        hdl/reconvergence.py sizes with it are safe, only as small as it is exact."""
        j = np.asarray(j, dtype=np.int64)
        if self.order_preserving:
            return -(-(j + 1) * self.out_n // self.in_ns[port])        # ceil((j+1) * out_n / in_n)
        return np.full(j.shape, self.in_beats(port), dtype=np.int64)

    # ------------------------------------------------------------ timing
    @property
    def cycles(self) -> int:
        """Cycles per frame in steady state with no stalls."""
        raise NotImplementedError

    def frame_times(self, first: int, last: int) -> tuple[int, int]:
        """(first, last) output beat cycles of a frame whose input beats come at first..last."""
        lat = self.latency
        return first + lat, last + lat

    @cached_property
    def unit(self):
        """The component, made once to read its parameters (latency, cycles, depth)."""
        return self.build()

    @property
    def latency(self) -> int:
        return self.unit.latency

    @property
    def counts_for_ii(self) -> bool:
        """Whether this stage's cycles bound the II (a FIFO only buffers)."""
        return True

    def join_times(self, firsts, lasts) -> tuple[int, int]:
        """(first, last) output beat cycles of a frame whose beats reach the input ports at firsts[k]..lasts[k].
        A stage moves when all its inputs are there: the latest input decides."""
        return self.frame_times(max(firsts), max(lasts))

    # ------------------------------------------------------------ resources and hardware
    def resources(self, mem: MemoryModel) -> Resources:
        raise NotImplementedError

    def build(self):
        """The Amaranth component (streams `i` and `o`)."""
        raise NotImplementedError

    def report(self, mem: MemoryModel) -> dict:
        r = self.resources(mem)
        return {"stage": self.name, "kind": self.kind, "cycles": self.cycles, "pe": self.extra.get("pe"),
                "simd": self.extra.get("simd"), **r.row()}


class NodeKernel(Kernel):
    """A kernel that computes an IR node. Subclasses set `node_types` and implement `stages`."""
    node_types: tuple = ()

    @classmethod
    def stages(cls, node, types: dict, folding: dict | None, in_n: int | None) -> list[Kernel]:
        """The kernels (plumbing first) that compute `node`, given the incoming beat width
        `in_n` (None: this is the first stage; it chooses)."""
        raise NotImplementedError

    @classmethod
    def absorbs(cls, node, consumer, types: dict) -> bool:
        """Whether this node's stage also computes `consumer`, its only consumer (plan() then passes
        stages() `absorb=consumer` and gives the consumer no stage of its own). Default: never."""
        return False

    # foldable kernels override these three
    @classmethod
    def space(cls, node, types) -> tuple[int, int, str]:
        """(outputs N that PE divides, the size SIMD divides, what that size is called)."""
        raise NotImplementedError

    @classmethod
    def node_cycles(cls, node, types, pe: int, simd: int) -> int:
        raise NotImplementedError

    @classmethod
    def check(cls, node, types, pe, simd) -> None:
        n, k, what = cls.space(node, types)
        for name, f in (("PE", pe), ("SIMD", simd)):
            if isinstance(f, bool) or not isinstance(f, numbers.Integral) or f < 1:
                raise FoldingError(f"layer '{node.name}': {name} must be a positive integer, got {f!r}")
        if n % pe:
            raise FoldingError(f"layer '{node.name}': PE={pe} does not divide its {n} outputs; "
                               f"valid PE: {divisors(n)}")
        if k % simd:
            raise FoldingError(f"layer '{node.name}': SIMD={simd} does not divide its {k} {what}; "
                               f"valid SIMD: {divisors(k)}")


class ElementwiseKernel(NodeKernel):
    """A node applied element by element: it keeps the incoming beat width (1 element per beat
    when it comes first) and takes one beat per cycle."""
    lanes = "pe"            # what its beat width is called in reports
    order_preserving = True

    @classmethod
    def stages(cls, node, types, folding, in_n):
        n = in_n if in_n is not None else 1
        return [cls(node.name, node, types[node.inputs[0]], types[node.output], n, n, {cls.lanes: n})]

    @property
    def cycles(self) -> int:
        return self.in_type.size // self.in_n


REGISTRY: dict[type, type] = {}
SPECIALISED: list = []      # kernels for a subset of a node type's nodes (`accepts`), asked first


def register(*node_types, kind=None):
    """Class decorator, `@register(ir.Add, kind="add")`: the kernel computes those IR node types and
    is called `kind` in plans and reports. A kernel that defines `accepts(node)` takes only the nodes
    it accepts (e.g. depthwise convs) and is asked before the kernel registered for the whole type."""
    def decorate(cls):
        cls.node_types = node_types
        if kind is not None:
            cls.kind = kind
        if "accepts" in vars(cls):
            SPECIALISED.append(cls)
        else:
            for t in node_types:
                REGISTRY[t] = cls
        return cls
    return decorate


def kernel_for(node) -> type | None:
    """The kernel class of an IR node (None for nodes that need no hardware, e.g. Flatten)."""
    for cls in SPECIALISED:
        if isinstance(node, cls.node_types) and cls.accepts(node):
            return cls
    for t in type(node).__mro__:
        if t in REGISTRY:
            return REGISTRY[t]
    return None
