"""Folding: PE/SIMD per layer, the pipeline of kernels, and cycle/resource estimates.

A Dense of K inputs and N outputs folded to PE | N lanes and SIMD | K lanes
takes (K/SIMD) * (N/PE) cycles per vector. The accelerator's II is the slowest
stage's. `fold` picks, for a target II, the cheapest folding of each foldable
layer that meets it; `plan` turns a folding into the pipeline of kernels (one
per stage, plumbing included) with the elements per beat on every stream;
`estimate` gives cycles, latency and LUT/FF/BRAM/DSP per stage for a device's
memory model. Everything operator-specific lives in the kernels (hdl/kernels/).
"""
from __future__ import annotations

from dataclasses import dataclass

from qloom.compiler import ir

from .kernels import BRAM18, FoldingError, Kernel, MemoryModel, WidthKernel, divisors, kernel_for

__all__ = ["fold", "plan", "estimate", "Pipeline", "FoldingError", "divisors", "foldable_layers"]


def _kernel_class(node):
    k = kernel_for(node)
    if k is None:
        raise FoldingError(f"{node.kind} '{node.name}' has no hardware stage yet")
    return k


def foldable_layers(graph: ir.Graph) -> list:
    """The nodes with PE/SIMD choices, in graph order."""
    return [n for n in graph.nodes if _kernel_class(n).foldable]


def fold(graph: ir.Graph, target_ii: int | None = None, manual: dict | None = None) -> dict:
    """{layer name: {"pe": p, "simd": s}} for every foldable layer (Dense, Conv2d).

    manual: {name: {"pe":..,"simd":..}} taken as given (checked); other layers are
    chosen as the cheapest folding with cycles <= target_ii (fully folded when
    target_ii is None). A layer that cannot meet target_ii gets its fastest folding.
    """
    manual = manual or {}
    types = graph.validate()
    layers = foldable_layers(graph)
    names = {n.name for n in layers}
    for name in manual:
        if name not in names:
            raise FoldingError(f"folding names layer '{name}', which is not a Dense or Conv2d layer of the "
                               f"graph; layers: {sorted(names)}")
    out = {}
    for node in layers:
        k = _kernel_class(node)
        if node.name in manual:
            f = manual[node.name]
            pe, simd = f.get("pe", 1), f.get("simd", 1)
            k.check(node, types, pe, simd)
            pe, simd = int(pe), int(simd)
        else:
            pe, simd = _cheapest(k, node, types, target_ii)
        out[node.name] = {"pe": pe, "simd": simd}
    return out


def _cheapest(k, node, types, target_ii):
    """The folding with the fewest lanes that meets target_ii (preferring SIMD, which shares the
    input, over PE at equal lanes); the fastest one if none meets it; fully folded without a target."""
    if target_ii is None:
        return 1, 1
    n, kk, _ = k.space(node, types)
    best = None
    for pe in divisors(n):
        for simd in divisors(kk):
            cyc = k.node_cycles(node, types, pe, simd)
            ok = cyc <= target_ii
            key = (not ok, pe * simd if ok else cyc, pe)
            if best is None or key < best[0]:
                best = (key, pe, simd)
    return best[1], best[2]


@dataclass
class Pipeline:
    """The stages of an accelerator in stream order. in_n / out_n: elements per beat at its ports."""
    graph: ir.Graph
    stages: list[Kernel]

    @property
    def in_n(self) -> int:
        return self.stages[0].in_n

    @property
    def out_n(self) -> int:
        return self.stages[-1].out_n

    def __iter__(self):
        return iter(self.stages)

    def __len__(self):
        return len(self.stages)

    def __getitem__(self, i):
        return self.stages[i]

    @property
    def ii(self) -> int:
        return max(s.cycles for s in self.stages if s.counts_for_ii)

    @property
    def latency(self) -> int:
        """Cycles from a frame's first input beat to its last output beat, with no stalls."""
        first, last = 0, self.stages[0].in_type.size // self.in_n - 1
        for s in self.stages:
            first, last = s.frame_times(first, last)
        return last + 1


def plan(graph: ir.Graph, folding: dict) -> Pipeline:
    """The pipeline of kernels for `folding`, with width converters where beat widths differ."""
    types = graph.validate()
    stages: list[Kernel] = []
    cur_n = None
    for node in graph.nodes:
        new = _kernel_class(node).stages(node, types, folding, cur_n)
        if not new:
            continue
        head = new[0]
        if cur_n is not None and cur_n != head.in_n:
            stages.append(WidthKernel(node.name + ":width", None, head.in_type, head.in_type, cur_n, head.in_n))
        stages += new
        cur_n = new[-1].out_n
    if not stages:
        raise FoldingError("the graph has no hardware stage (nothing to build)")
    return Pipeline(graph, stages)


def estimate(graph: ir.Graph, folding: dict, memory: MemoryModel = BRAM18) -> dict:
    """Cycles, II, latency and resources, per stage and in total (plain dict), with memories
    counted in `memory`'s blocks (BRAM18 by default; boards pass their own)."""
    pipe = plan(graph, folding)
    rows = [s.report(memory) for s in pipe]
    total = {k: sum(r[k] for r in rows) for k in ("luts", "ffs", "brams", "dsps")}
    return {"ii": pipe.ii, "latency": pipe.latency, "stages": rows, "memory": memory.name, **total}
