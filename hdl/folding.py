"""Folding: PE/SIMD per layer, the pipeline of kernels, and cycle/resource estimates.

A Dense of K inputs and N outputs folded to PE | N lanes and SIMD | K lanes
takes (K/SIMD) * (N/PE) cycles per vector. The accelerator's II is the slowest
stage's. `fold` picks, for a target II, the cheapest folding of each foldable
layer that meets it (on every branch of a graph-shaped network alike); `plan`
turns a folding into the pipeline of kernels (one per stage, plumbing included)
with the elements per beat on every stream and the links between them: a chain,
or a DAG with forks where a tensor feeds several stages and FIFOs on the inputs
of joins (add, concat) sized by hdl/reconvergence.py; `estimate` gives cycles,
latency and LUT/FF/BRAM/DSP per stage for a device's memory model. Everything
operator-specific lives in the kernels (hdl/kernels/).
"""
from __future__ import annotations

from dataclasses import dataclass

from qloom.compiler import ir

from .kernels import (BRAM18, FIFOKernel, FoldingError, ForkKernel, Kernel, MemoryModel, WidthKernel, divisors,
                      kernel_for)
from .reconvergence import join_depths, rate_depths

__all__ = ["fold", "plan", "estimate", "Pipeline", "Link", "FoldingError", "divisors", "foldable_layers"]


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
        extra = {}
        if node.name in manual:
            f = manual[node.name]
            pe, simd = f.get("pe", 1), f.get("simd", 1)
            k.check(node, types, pe, simd)
            pe, simd = int(pe), int(simd)
            extra = {key: v for key, v in f.items() if key not in ("pe", "simd")}   # per-layer options
        else:
            pe, simd = _cheapest(k, node, types, target_ii)
        out[node.name] = {"pe": pe, "simd": simd, **extra}
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


@dataclass(frozen=True)
class Link:
    """A stream from stage `src`'s port `src_port` to stage `dst`'s port `dst_port` (indices into
    Pipeline.stages); src None is the accelerator's input, dst None its output."""
    src: int | None
    src_port: str
    dst: int | None
    dst_port: str


def chain_links(n: int) -> list[Link]:
    """The links of n stages in a row: input -> 0 -> 1 -> ... -> output."""
    return [Link(k - 1 if k else None, "o" if k else "i", k if k < n else None, "i" if k < n else "o")
            for k in range(n + 1)]


@dataclass
class Pipeline:
    """The stages of an accelerator in topological order and the streams between them.

    A chain links stage k to stage k+1; a graph-shaped network (residual adds,
    concatenation) has forks (several output ports) and joins (several input ports):
    `links` names every stream. in_n / out_n: elements per beat at the accelerator's ports."""
    graph: ir.Graph
    stages: list[Kernel]
    links: list[Link] = None

    def __post_init__(self):
        if self.links is None:
            self.links = chain_links(len(self.stages))

    @property
    def input_link(self) -> Link:
        return next(lk for lk in self.links if lk.src is None)

    @property
    def output_link(self) -> Link:
        return next(lk for lk in self.links if lk.dst is None)

    @property
    def in_n(self) -> int:
        lk = self.input_link
        s = self.stages[lk.dst]
        return s.in_ns[s.in_ports.index(lk.dst_port)]

    @property
    def out_n(self) -> int:
        return self.stages[self.output_link.src].out_n

    def inputs(self, k: int) -> list[Link]:
        """The links into stage k, in the order of its input ports."""
        ports = self.stages[k].in_ports
        return sorted((lk for lk in self.links if lk.dst == k), key=lambda lk: ports.index(lk.dst_port))

    def label(self, lk: Link) -> str:
        """'stage.port -> stage.port' for messages (deadlock reports name the stages)."""
        src = "input" if lk.src is None else f"'{self.stages[lk.src].name}'.{lk.src_port}"
        dst = "output" if lk.dst is None else f"'{self.stages[lk.dst].name}'.{lk.dst_port}"
        return f"{src} -> {dst}"

    def __iter__(self):
        return iter(self.stages)

    def __len__(self):
        return len(self.stages)

    def __getitem__(self, i):
        return self.stages[i]

    @property
    def ii(self) -> int:
        return max(s.cycles for s in self.stages if s.counts_for_ii)

    def frame_times(self) -> dict:
        """{stage index: (first, last)} output beat cycles of a frame whose first input beat is at cycle 0,
        with no stalls; a join waits for its latest input."""
        times = {None: (0, self.stages[self.input_link.dst].in_beats(0) - 1)}
        for k, s in enumerate(self.stages):
            ins = [times[lk.src] for lk in self.inputs(k)]
            times[k] = s.join_times([t[0] for t in ins], [t[1] for t in ins])
        return times

    @property
    def latency(self) -> int:
        """Cycles from a frame's first input beat to its last output beat, with no stalls."""
        return self.frame_times()[self.output_link.src][1] + 1


class _Builder:
    """Stages and links while planning: streams are (stage, port, beats width); stages are objects until
    the end, when they are numbered in topological order."""

    def __init__(self):
        self.stages: list[Kernel] = []
        self.links: list[list] = []          # [src stage | None, src port, dst stage | None, dst port]

    def link(self, src, src_port, dst, dst_port):
        self.links.append([src, src_port, dst, dst_port])

    def insert_before(self, stage, new):
        self.stages.insert(self.stages.index(stage), new)

    def pipeline(self, graph) -> Pipeline:
        idx = {id(s): k for k, s in enumerate(self.stages)}
        links = [Link(None if a is None else idx[id(a)], ap, None if b is None else idx[id(b)], bp)
                 for a, ap, b, bp in self.links]
        return Pipeline(graph, self.stages, links)


def _check_used(graph: ir.Graph):
    users = graph.consumers()
    for n in graph.nodes:
        if not users[n.output] and n.output != graph.output:
            raise FoldingError(f"{n.kind} '{n.name}': its output '{n.output}' feeds nothing and is not the graph's "
                               f"output; hardware would stall on it (remove the node)")


def plan(graph: ir.Graph, folding: dict) -> Pipeline:
    """The pipeline of kernels for `folding`: each node's stages, width converters where beat widths
    differ, a fork where a tensor feeds several stages, and a FIFO on every input of a join sized by
    hdl/reconvergence.py so that the branches never deadlock. A chain gets no fork or join FIFO."""
    types = graph.validate()
    _check_used(graph)
    b = _Builder()
    streams = {graph.input: [None, "i", None]}           # tensor -> [stage | None, port, beat width | None]
    users, absorbed = graph.consumers(), {}
    for node in graph.nodes:
        if node.name in absorbed:                       # computed inside its producer's stage (fused)
            streams[node.output] = streams[absorbed[node.name]]
            continue
        srcs = [streams[t] for t in node.inputs]
        multi = len(node.inputs) > 1
        in_n = tuple(s[2] for s in srcs) if multi else srcs[0][2]
        kcls, nxt = _kernel_class(node), users[node.output]
        if len(nxt) == 1 and node.output != graph.output and kcls.absorbs(node, nxt[0], types):
            absorbed[nxt[0].name] = node.output         # e.g. an MVU whose accumulator starts at -threshold
            new = kcls.stages(node, types, folding, in_n, absorb=nxt[0])
        else:
            new = kcls.stages(node, types, folding, in_n)
        if not new:                                     # no hardware (Flatten): same stream, new name
            streams[node.output] = srcs[0]
            continue
        head = new[0]
        for k, (src, port) in enumerate(zip(srcs, head.in_ports)):
            want = head.in_ns[k]
            if src[0] is None and src[2] is None:        # the graph input takes the first consumer's width
                src[2] = want
            if src[2] != want:
                t = head.in_types[k]
                w = WidthKernel(node.name + (f":width{k}" if multi else ":width"), None, t, t, src[2], want)
                b.stages.append(w)
                b.link(src[0], src[1], w, "i")
                b.link(w, "o", head, port)
            else:
                b.link(src[0], src[1], head, port)
        for a, c in zip(new, new[1:]):
            b.link(a, "o", c, "i")
        b.stages += new
        streams[node.output] = [new[-1], "o", new[-1].out_n]
    if not b.stages:
        raise FoldingError("the graph has no hardware stage (nothing to build)")
    out = streams[graph.output]
    b.link(out[0], out[1], None, "o")
    _insert_forks(b)
    _insert_join_fifos(b, graph)
    return b.pipeline(graph)


def _insert_forks(b: _Builder):
    """A fork after every stream with several consumers (plumbing: the IR has none)."""
    by_src = {}
    for lk in b.links:
        by_src.setdefault((id(lk[0]), lk[1]), []).append(lk)
    for group in by_src.values():
        if len(group) < 2:
            continue
        src, port = group[0][0], group[0][1]
        if src is None:
            first = group[0][2]
            t, n = first.in_types[first.in_ports.index(group[0][3])], first.in_ns[first.in_ports.index(group[0][3])]
            name, pos = "input:fork", 0
        else:
            t, n, name, pos = src.out_type, src.out_n, src.name + ":fork", b.stages.index(src) + 1
        fork = ForkKernel(name, None, t, t, n, n, {"outputs": len(group)})
        b.stages.insert(pos, fork)
        for k, lk in enumerate(group):
            lk[0], lk[1] = fork, f"o{k}"
        b.link(src, port, fork, "i")


def _insert_join_fifos(b: _Builder, graph):
    """A FIFO on each input of every join, as deep as hdl/reconvergence.py says (none where it needs none)."""
    joins = [s for s in b.stages if len(s.in_ports) > 1]
    for join in joins:
        pipe = b.pipeline(graph)
        k = pipe.stages.index(join)
        dead, rate = join_depths(pipe, k), rate_depths(pipe, k)
        depths = [max(d, r) for d, r in zip(dead, rate)]
        join.extra["fifo_depths"] = {"deadlock": dead, "rate": rate}      # for reports and tests
        for port, (lk, depth) in enumerate(zip(pipe.inputs(k), depths)):
            if depth <= 0:
                continue
            t, n = join.in_types[port], join.in_ns[port]
            fifo = FIFOKernel(f"{join.name}:fifo{port}", None, t, t, n, n, {"depth": max(2, depth)})
            b.insert_before(join, fifo)
            entry = next(e for e in b.links if e[2] is join and e[3] == lk.dst_port)
            b.link(fifo, "o", join, lk.dst_port)
            entry[2], entry[3] = fifo, "i"


def estimate(graph: ir.Graph, folding: dict, memory: MemoryModel = BRAM18) -> dict:
    """Cycles, II, latency and resources, per stage and in total (plain dict), with memories
    counted in `memory`'s blocks (BRAM18 by default; boards pass their own)."""
    pipe = plan(graph, folding)
    rows = [s.report(memory) for s in pipe]
    total = {k: sum(r[k] for r in rows) for k in ("luts", "ffs", "brams", "dsps")}
    return {"ii": pipe.ii, "latency": pipe.latency, "stages": rows, "memory": memory.name, **total}
