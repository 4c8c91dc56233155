"""Folding: PE/SIMD per layer, the stream plan, and cycle/resource estimates.

A Dense of K inputs and N outputs folded to PE | N lanes and SIMD | K lanes
takes (K/SIMD) * (N/PE) cycles per vector. The accelerator's II is the slowest
stage's. `fold` picks, for a target II, the cheapest folding of each layer that
meets it; `plan` turns a folding into the chain of hardware stages with the
number of elements per beat on every stream; `estimate` gives cycles, latency
and LUT/FF/BRAM/DSP per stage (a first-order model; `bench/synth.py` checks it
against Yosys/nextpnr).
"""
from __future__ import annotations

import math

from . import ir


class FoldingError(ValueError):
    """A folding that cannot be built; the message names the layer and the valid values."""


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def conv_matrix(node: ir.Conv2d, in_channels: int):
    """The conv's weights as an (OC, KH*KW*C) matrix in im2col order (kh, kw, c), groups expanded
    (zeros outside each group), which is what the sliding window + MVU compute."""
    import numpy as np
    oc, kh, kw, cg = node.weight.shape
    g = node.groups
    full = np.zeros((oc, kh, kw, in_channels), dtype=np.int64)
    for o in range(oc):
        gi = o // (oc // g)
        full[o, :, :, gi * cg:(gi + 1) * cg] = node.weight[o]
    return full.reshape(oc, -1)


def _space(node, types):
    """(outputs N, SIMD must divide this, cycles(pe, simd)) of a compute layer."""
    if isinstance(node, ir.Dense):
        n, k = node.weight.shape
        return n, k, lambda pe, simd: (k // simd) * (n // pe)
    oh, ow, oc = types[node.output].shape
    c = types[node.inputs[0]].shape[-1]
    kk = node.kernel[0] * node.kernel[1]
    return oc, c, lambda pe, simd: oh * ow * (kk * c // simd) * (oc // pe)


def _mac_luts(wtype, xtype, acc_bits) -> float:
    """LUTs for one SIMD lane of one PE: its product and its share of the adder tree."""
    if isinstance(wtype, ir.BipolarType) and isinstance(xtype, ir.BipolarType):
        return 1.0                                  # XNOR + popcount
    if isinstance(wtype, ir.BipolarType) or isinstance(xtype, ir.BipolarType):
        return xtype.bits + 1 if isinstance(wtype, ir.BipolarType) else wtype.bits + 1  # add/sub
    return wtype.bits * xtype.bits + acc_bits / 2   # multiplier in LUTs + tree


def _check_choice(node, pe, simd, types):
    n, k, _ = _space(node, types)
    if n % pe:
        raise FoldingError(f"layer '{node.name}': PE={pe} does not divide its {n} outputs; "
                           f"valid PE: {divisors(n)}")
    if k % simd:
        what = "inputs" if isinstance(node, ir.Dense) else "input channels"
        raise FoldingError(f"layer '{node.name}': SIMD={simd} does not divide its {k} {what}; "
                           f"valid SIMD: {divisors(k)}")


def fold(graph: ir.Graph, target_ii: int | None = None, manual: dict | None = None) -> dict:
    """{layer name: {"pe": p, "simd": s}} for every Dense and Conv2d.

    manual: {name: {"pe":..,"simd":..}} taken as given (checked); other layers are
    chosen as the cheapest folding with cycles <= target_ii (fully folded when
    target_ii is None). A layer that cannot meet target_ii gets its fastest folding.
    """
    manual = manual or {}
    types = graph.validate()
    dense = [n for n in graph.nodes if isinstance(n, (ir.Dense, ir.Conv2d))]
    names = {n.name for n in dense}
    for name in manual:
        if name not in names:
            raise FoldingError(f"folding names layer '{name}', which is not a Dense or Conv2d layer of the "
                               f"graph; layers: {sorted(names)}")
    out = {}
    for node in dense:
        if node.name in manual:
            f = manual[node.name]
            pe, simd = int(f.get("pe", 1)), int(f.get("simd", 1))
            _check_choice(node, pe, simd, types)
        else:
            n, k, cycles = _space(node, types)
            best = None
            for pe in divisors(n):
                for simd in divisors(k):
                    cyc = cycles(pe, simd)
                    ok = target_ii is None or cyc <= target_ii
                    # cost: lanes first; prefer SIMD (shared input) over PE at equal lanes
                    key = (not ok, pe * simd if ok else cyc, pe)
                    if best is None or key < best[0]:
                        best = (key, pe, simd)
                    if target_ii is None:
                        break
                if target_ii is None:
                    break
            _, pe, simd = best
        out[node.name] = {"pe": pe, "simd": simd}
    return out


def plan(graph: ir.Graph, folding: dict) -> list[dict]:
    """The chain of hardware stages with their stream widths (elements per beat).

    Each stage: {"kind", "node", "in_n", "out_n", "in_type", "out_type", "frame_in",
    "frame_out", ...}. Kinds: mvu, threshold, requantize, argmax, and the
    plumbing inserted by the planner: width (a WidthConverter) and fifo.
    Flatten is free: the stream order (C fastest) does not change.
    """
    types = graph.validate()
    stages = []
    cur_n = None
    for node in graph.nodes:
        t_in = types[node.inputs[0]]
        t_out = types[node.output]
        if isinstance(node, ir.Flatten):
            continue
        if isinstance(node, (ir.Dense, ir.Conv2d)):
            f = folding.get(node.name)
            if f is None:
                raise FoldingError(f"no folding for layer '{node.name}'")
            _check_choice(node, f["pe"], f["simd"], types)
            need = f["simd"]
            kind, out_n = "mvu", f["pe"]
            n, k, cyc = _space(node, types)
            kk = 1 if isinstance(node, ir.Dense) else node.kernel[0] * node.kernel[1]
            extra = {"pe": f["pe"], "simd": f["simd"], "cycles": cyc(f["pe"], f["simd"]),
                     "rom_depth": (n // f["pe"]) * (kk * k // f["simd"])}
        elif isinstance(node, (ir.MaxPool2d, ir.SumPool)):
            need = cur_n if cur_n is not None else 1
            kind, out_n = ("sumpool" if isinstance(node, ir.SumPool) else "maxpool"), need
            extra = {"simd": need, "cycles": t_in.size // need}
        elif isinstance(node, (ir.MultiThreshold, ir.Requantize)):
            need = cur_n if cur_n is not None else 1
            kind, out_n = ("threshold" if isinstance(node, ir.MultiThreshold) else "requantize"), need
            extra = {"pe": need, "cycles": t_in.size // need}
        elif isinstance(node, ir.ArgMax):
            need = cur_n if cur_n is not None else 1
            kind, out_n = "argmax", 1
            extra = {"simd": need, "cycles": t_in.size // need}
        else:
            raise FoldingError(f"{node.kind} '{node.name}' has no hardware stage yet")
        if cur_n is None:
            cur_n = need                       # the accelerator's input beat width
            input_n = need
        elif cur_n != need:
            stages.append({"kind": "width", "node": node.name + ":width", "in_n": cur_n, "out_n": need,
                           "in_type": t_in, "out_type": t_in, "frame": t_in.size,
                           "cycles": t_in.size // min(cur_n, need)})
        if kind == "mvu" and isinstance(node, ir.Conv2d):
            # the window generator consumes its input row by row: a FIFO of two rows decouples it
            h, w, c = t_in.shape
            stages.append({"kind": "fifo", "node": node.name + ":fifo", "in_n": need, "out_n": need,
                           "in_type": t_in, "out_type": t_in, "depth": max(2, min(h, 2) * w * c // need),
                           "cycles": t_in.size // need})
            oh, ow, _ = t_out.shape
            kh, kw = node.kernel
            win = ir.TensorType((oh, ow, kh * kw * c), t_in.dtype)
            stages.append({"kind": "swg", "node": node.name + ":swg", "in_n": need, "out_n": need,
                           "in_type": t_in, "out_type": win,
                           "cycles": max(oh * ow * kh * kw, h * w) * c // need})
            t_in = win
        elif kind == "mvu":
            stages.append({"kind": "fifo", "node": node.name + ":fifo", "in_n": need, "out_n": need,
                           "in_type": t_in, "out_type": t_in, "depth": max(2, t_in.size // need),
                           "cycles": t_in.size // need})
        stages.append({"kind": kind, "node": node.name, "in_n": need, "out_n": out_n,
                       "in_type": t_in, "out_type": t_out, **extra})
        cur_n = out_n
    if cur_n is None:
        raise FoldingError("the graph has no hardware stage (nothing to build)")
    for s in stages:
        s.setdefault("frame_in", s["in_type"].size)
    stages[0]["input_n"] = input_n
    return stages


def _bram18(width: int, depth: int) -> int:
    """18-Kbit block RAMs for a width x depth ROM (best aspect ratio)."""
    configs = [(1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512)]
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in configs)


def _latency(stages, nodes) -> int:
    """Cycles from a frame's first input beat to its last output beat, with no stalls.

    Each stage maps the (first, last) beat times of its input frame to those of its
    output frame; a stage never emits a frame faster than its own cycles per frame.
    """
    first, last = 0, stages[0]["frame_in"] // stages[0]["in_n"] - 1
    for s in stages:
        kind, cyc = s["kind"], s["cycles"]
        if kind == "mvu" and s["in_type"].size == s["in_type"].shape[-1]:      # Dense: whole vector first
            sf = s["in_type"].size // s["simd"]
            first = last + 2
            last = first + (s["rom_depth"] // sf - 1) * sf
        elif kind == "mvu":                                                       # conv: one vector per pixel
            sf = s["in_type"].shape[-1] // s["simd"]
            first, last = first + sf + 1, max(last + 2 + (s["rom_depth"] // sf - 1) * sf, first + cyc)
        elif kind == "swg":
            h, w, c = s["in_type"].shape
            kh, kw = nodes[s["node"][:-4]].kernel
            ph, pw = nodes[s["node"][:-4]].padding
            fill = ((kh - 1 - ph) * w + kw - pw) / (h * w)
            first = first + int(fill * (last - first)) + 2
            last = max(last + 2, first + cyc - 1)
        elif kind in ("maxpool", "sumpool", "threshold", "requantize", "argmax", "width"):
            lat = {"threshold": 2, "requantize": 3}.get(kind, 1 if kind in ("width", "argmax") else 2)
            first, last = (last + lat if kind == "argmax" else first + lat), last + lat
        else:                                                                     # fifo
            first, last = first + 1, last + 1
    return last + 1


def estimate(graph: ir.Graph, folding: dict) -> dict:
    """Cycles, II, latency and resources, per stage and in total (plain dict)."""
    stages = plan(graph, folding)
    nodes = {n.name: n for n in graph.nodes}
    rows = []
    for s in stages:
        luts = ffs = brams = dsps = 0
        depth = 1
        ti, to = s["in_type"], s["out_type"]
        if s["kind"] == "mvu":
            node = nodes[s["node"]]
            pe, simd = s["pe"], s["simd"]
            acc = to.dtype.bits
            luts = pe * simd * _mac_luts(node.wtype, ti.dtype, acc) + pe * acc * 2 + 40
            ffs = pe * acc * 2 + simd * ti.dtype.bits * 2 + 32
            rom_depth = s["rom_depth"]
            width = simd * node.wtype.bits
            if rom_depth >= 128:
                brams = pe * _bram18(width, rom_depth)
            else:
                luts += pe * width * max(1, rom_depth // 16)
            ibuf = ti.shape[-1] // simd
            if ibuf >= 128:
                brams += _bram18(simd * ti.dtype.bits, ibuf)
            else:
                luts += simd * ti.dtype.bits * max(1, ibuf // 16)
            depth = 2                                   # registered partial sum + accumulator
        elif s["kind"] == "threshold":
            node = nodes[s["node"]]
            k = node.thresholds.shape[1]
            luts = s["pe"] * k * (ti.dtype.bits + 1) + s["pe"] * 8
            ffs = s["pe"] * to.dtype.bits + 8
            depth = 2
        elif s["kind"] == "requantize":
            node = nodes[s["node"]]
            mbits = max(int(abs(node.mult).max()).bit_length(), 1) + 1
            dsps = s["pe"]
            luts = s["pe"] * (mbits + ti.dtype.bits + to.dtype.bits)
            ffs = s["pe"] * (ti.dtype.bits + mbits) * 2
            depth = 3
        elif s["kind"] == "argmax":
            luts = s["simd"] * ti.dtype.bits * 2 + 16
            ffs = ti.dtype.bits + 16
            depth = 2
        elif s["kind"] == "swg":
            h, w, c = ti.shape
            buf = min(h, nodes[s["node"][:-4]].kernel[0] + 1) * w * c * ti.dtype.bits
            brams = _bram18(s["in_n"] * ti.dtype.bits, buf // (s["in_n"] * ti.dtype.bits)) if buf >= 4096 else 0
            luts = 60 + s["in_n"] * ti.dtype.bits * 2 + (buf // 16 if not brams else 0)
            ffs = 60 + s["in_n"] * ti.dtype.bits * 2
            depth = 2
        elif s["kind"] in ("maxpool", "sumpool"):
            h, w, c = ti.shape
            row = w * c * to.dtype.bits // nodes[s["node"]].kernel[1]
            brams = _bram18(s["simd"] * to.dtype.bits, max(1, row // (s["simd"] * to.dtype.bits))) if row >= 4096 else 0
            luts = s["simd"] * to.dtype.bits * 3 + 30 + (row // 16 if not brams else 0)
            ffs = s["simd"] * to.dtype.bits * 2 + 30
            depth = 2
        elif s["kind"] == "width":
            bits = ti.dtype.bits * max(s["in_n"], s["out_n"])
            luts, ffs = bits, 2 * bits
        elif s["kind"] == "fifo":
            bits = ti.dtype.bits * s["in_n"] * s["depth"]
            if s["depth"] >= 128:
                brams = _bram18(ti.dtype.bits * s["in_n"], s["depth"])
            else:
                luts = bits / 16 + 16
            ffs = ti.dtype.bits * s["in_n"] + 16
        rows.append({"stage": s["node"], "kind": s["kind"], "cycles": s["cycles"], "depth": depth,
                     "pe": s.get("pe"), "simd": s.get("simd"), "luts": int(round(luts)), "ffs": int(ffs),
                     "brams": int(brams), "dsps": int(dsps)})
    ii = max(r["cycles"] for r in rows if r["kind"] != "fifo")
    latency = _latency(stages, nodes)
    total = {k: sum(r[k] for r in rows) for k in ("luts", "ffs", "brams", "dsps")}
    return {"ii": ii, "latency": latency, "stages": rows, **total}
