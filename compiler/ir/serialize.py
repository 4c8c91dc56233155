"""Saving and loading graphs as one .npz (no pickle)."""
from __future__ import annotations

import numpy as np

from .graph import NODE_KINDS, Graph
from .types import BipolarType, Int, IRError, TensorType, parse_type


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
