"""The integer-only IR: a Graph of Nodes over TensorTypes.

Every tensor holds integers. Element types are `Int(bits, signed)` (two's
complement range) and `Bipolar` (the values -1 and +1; as a bit, 1 means +1).
Shapes are per frame (no batch axis); feature maps are channels-last (H, W, C).
Accumulator types are never declared: `Node.infer` derives them from the actual
weights and the input range, so overflow is impossible and no bit is wasted.

Modules: `types` (element and tensor types), `nodes` (the operators), `graph`
(Graph, NODE_KINDS), `serialize` (save_graph, load_graph). Import them from here.
"""
from .graph import NODE_KINDS, Graph
from .nodes import (ROUNDINGS, Add, ArgMax, Concat, Conv2d, Dense, Flatten, MaxPool2d, MultiThreshold, Node,
                    Requantize, SumPool)
from .serialize import load_graph, save_graph
from .types import Bipolar, BipolarType, ElemType, Int, IRError, TensorType, int_type_for, parse_type, values_in

__all__ = ["IRError", "Int", "BipolarType", "Bipolar", "ElemType", "int_type_for", "values_in", "TensorType",
           "parse_type", "Node", "Dense", "Conv2d", "MaxPool2d", "SumPool", "MultiThreshold", "ROUNDINGS",
           "Requantize", "Flatten", "ArgMax", "Add", "Concat", "Graph", "NODE_KINDS", "save_graph", "load_graph"]
