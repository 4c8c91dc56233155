"""The Graph (a DAG of nodes with its checks, hash and summary) and NODE_KINDS, the node classes by kind."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from .nodes import Add, ArgMax, Concat, Conv2d, Dense, Flatten, MaxPool2d, MultiThreshold, Node, Requantize, SumPool
from .types import IRError, TensorType


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


NODE_KINDS = {cls.kind: cls for cls in (Dense, Conv2d, MultiThreshold, Requantize, MaxPool2d, SumPool,
                                        Flatten, ArgMax, Add, Concat)}
