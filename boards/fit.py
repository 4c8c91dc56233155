"""Fit estimates: a folding's resources in a board's own units, whether it fits, and the fastest that does.

The kernels' resource models (hdl/kernels, costs per device family in hdl/kernels/costs.py)
take the board's memory model, so EBR on iCE40 and DP16KD on ECP5 are counted by the same
code that builds them; no global correction factor. On iCE40 a logic cell holds one LUT4
and one flip-flop: LC = LUT4 + the flip-flops no LUT of their own feeds + any flip-flops
beyond the LUTs.

`board_folding` chooses, per layer, the folding options the device wants (where the
weights and input buffers go, the extra memory register on ECP5) and, among the foldings
with the fewest lanes that meet a target II, the one cheapest on that device (PE before
SIMD when that packs block RAMs better or keeps buffers narrow). `fastest_fit` searches
the target II.
"""
from __future__ import annotations

import json
import math

from .errors import SynthError
from .targets import BOARDS, FIT_MARGIN, LC_PACKING, top_resources

# LUT4 a block RAM is worth when choosing a layer's PE x SIMD shape (the device's LUT/BRAM ratio, halved)
BRAM_WORTH = {"ice40": 88, "ecp5": 200}
# block RAMs left unallocated: Yosys packs the ECP5's small memories (FIFOs, rings) a few blocks off the model
BRAM_SLACK = {"ice40": 0, "ecp5": 4}


def _totals(graph, folding, info) -> dict:
    from qloom.hdl import folding as folding_mod
    pipe = folding_mod.plan(graph, folding)
    mem = info["memory"]
    tot = {"luts": 0.0, "ffs": 0.0, "brams": 0, "dsps": 0, "lone_ffs": 0.0, "pack_luts": 0.0}
    rows = []
    for s in pipe:
        r = s.resources(mem)
        rows.append(s.report(mem))
        for k in tot:
            tot[k] += getattr(r, k)
    return tot, rows, pipe


def estimate_for(graph, folding: dict, board: str) -> dict:
    """The folding's resource estimate in the board's own units (LC, EBR, ... on iCE40), with the
    board top (UART link) included."""
    info = BOARDS[board]
    tot, rows, pipe = _totals(graph, folding, info)
    top = top_resources(board, pipe.stages[0].in_type.dtype.bits * pipe.in_n,
                        pipe.stages[-1].out_type.dtype.bits * pipe.out_n)
    luts = tot["luts"] + tot["pack_luts"] + top["luts"]      # pack_luts: ECP5 sites beyond the netlist
    ffs = tot["ffs"] + top["ffs"]
    lone = tot["lone_ffs"] + top["lone_ffs"]
    if info["family"] == "ice40":
        luts = LC_PACKING * (luts + lone + max(0.0, (ffs - lone) - luts))     # logic cells
    return {"luts": int(round(luts)), "ffs": int(round(ffs)), "brams": int(tot["brams"] + top["brams"]),
            "dsps": int(tot["dsps"]), "ii": pipe.ii, "latency": pipe.latency, "stages": rows,
            "accelerator": {k: int(round(v)) for k, v in tot.items()}, "top": top}


def fits(est: dict, board: str, margin: float | None = None) -> dict:
    """{resource: (estimate, capacity)} of the resources the estimate says overflow (empty: fits).
    LUTs/FFs get `margin` (the board's fit_margin by default: placement needs slack); block RAMs and
    DSPs are counted exactly."""
    cap = BOARDS[board]["capacity"]
    if margin is None:
        margin = BOARDS[board].get("fit_margin", FIT_MARGIN)
    out = {}
    for k in ("luts", "ffs", "brams", "dsps"):
        limit = margin * cap[k] if k in ("luts", "ffs") else cap[k]
        if est[k] > limit:
            out[k] = (est[k], cap[k])
    return out


def _memories(kernel, family, first, lean=False) -> tuple[dict, list]:
    """A layer's fixed options and its memories' choices: ({option: value}, [(option, {style:
    (block RAMs, LUT4 + lone flip-flops)})]) for the weights and the input buffer."""
    from qloom.hdl.kernels import costs
    st = kernel.unit.structure()
    mem = BOARDS["icebreaker" if family == "ice40" else "ulx3s"]["memory"]
    fixed = {}
    u = kernel.unit
    banks = 1 if first and u.passes > 1 and u.slots > 1 else 2
    if banks == 1:
        fixed["banks"] = 1
    w, d = st["weights"]
    if family == "ecp5" or (d > 32 and not lean) or mem.blocks(w, d) > -(-w // 16):
        # ECP5: the block RAM's slow clock-to-out; iCE40: a weight memory deeper than one row of EBRs
        # reads through a bank-select mux, a LUT-ROM deeper than 32 words through a mux tree; a register
        # after the reads (and a LUT-ROM read in two levels) keeps them off the lane logic
        fixed["mem_reg"] = True

    def cost(r):
        return (r.brams, r.luts + r.lone_ffs + r.pack_luts)
    items = [("weights", {style: cost(costs.rom(mem, w, d, style, st["rom_pieces"], st["rom_live_bits"]))
                          for style in ("block", "logic")})]
    bw, bd = st["buffer"][0], (u.slots * banks if u.passes > 1 else st["buffer"][1])
    small = "distributed" if family == "ecp5" else "logic"
    items.append(("ibuf", {style: cost(costs.ram(mem, bw, bd, style)) for style in ("block", small)}))
    return fixed, items


def _allocate(items, budget: int) -> list:
    """Per item, the style that minimises the LUT cost with at most `budget` block RAMs in all
    (a knapsack over block RAM counts); items: [{style: (brams, luts)}]."""
    best = {0: (0.0, [])}                     # brams used -> (luts, choices)
    for opts in items:
        nxt = {}
        for used, (luts, choice) in best.items():
            for style, (b, c) in opts.items():
                u = used + b
                if u > budget:
                    continue
                if u not in nxt or luts + c < nxt[u][0]:
                    nxt[u] = (luts + c, choice + [style])
        best = nxt or {0: (float("inf"), [min(o, key=lambda k: o[k][0]) for o in items])}
    return min(best.values())[1]


def board_folding(graph, board: str, target_ii: int | None, lean: bool = False, bank_roms: bool = False) -> dict:
    """A folding for `board`: per foldable layer, among the (PE, SIMD) with the fewest lanes that meet
    target_ii (the fastest when none does), the one cheapest on the device (PE before SIMD when that
    packs block RAMs better or keeps buffers narrow); then where each weight memory and input buffer
    goes (block RAM, or LUTs / flip-flops / ECP5 LUT-RAM) so that the block RAMs left over are spent
    where they save the most LUTs. A Dense fed in bursts by the accelerator's input gets one buffer
    bank; ECP5 gets the register after the memory reads, iCE40 where a deep memory reads through a mux
    (with `lean`, fewer flip-flops for a design at the edge of the device, only a LUT-ROM deeper than
    32 words: its registered levels cost no logic cells). `bank_roms` (ECP5): a
    block-RAM weight memory deeper than one row of block RAMs reads each row into a register before
    the select (off by default: measured no faster where the input buffer's read sets the clock, and
    cnv-w1a1 routed far slower with it; see docs/boards.md)."""
    from qloom.compiler import ir
    from qloom.hdl import folding as folding_mod
    from qloom.hdl.kernels import divisors, kernel_for
    info = BOARDS[board]
    family, mem = info["family"], info["memory"]
    worth = BRAM_WORTH[family]
    types = graph.validate()
    users = graph.consumers()
    base = folding_mod.fold(graph, target_ii=target_ii)
    out, mems, chosen = {}, [], {}
    for node in folding_mod.foldable_layers(graph):
        k = kernel_for(node)
        if getattr(k, "options", None) is None:     # no memory options (the depthwise vector unit): fold's choice
            out[node.name] = base[node.name]
            continue
        n, kk, _ = k.space(node, types)
        lanes = base[node.name]["pe"] * base[node.name]["simd"]
        cyc = k.node_cycles(node, types, base[node.name]["pe"], base[node.name]["simd"])
        nxt = users[node.output]
        absorb = nxt[0] if len(nxt) == 1 and node.output != graph.output and k.absorbs(node, nxt[0], types) else None
        first = isinstance(node, ir.Dense) and node.inputs[0] == graph.input and len(users[graph.input]) == 1
        # an argmax compares a wide beat in a registered tree: feed it one value at a time where the II allows
        to_argmax = len(nxt) == 1 and isinstance(nxt[0], ir.ArgMax)
        shapes = [(pe, simd) for pe in divisors(n) for simd in divisors(kk)
                  if pe * simd == lanes and k.node_cycles(node, types, pe, simd) <= cyc]
        if to_argmax:
            one = [(1, simd) for simd in divisors(kk) if k.node_cycles(node, types, 1, simd) <= cyc]
            shapes = one[:1] or shapes
        best = None
        for pe, simd in shapes:
            f = {"pe": pe, "simd": simd}
            fixed, items = _memories(_mvu_stage(k, node, types, f, absorb), family, first, lean)
            f.update(fixed)
            # this layer alone: each memory where it costs least, block RAMs at `worth` LUTs
            f.update({name: min(o, key=lambda st: o[st][1] + worth * o[st][0]) for name, o in items})
            stage = _mvu_stage(k, node, types, f, absorb)
            r = stage.resources(mem)
            cost = r.luts + r.lone_ffs + r.pack_luts + worth * r.brams
            if best is None or cost < best[0]:
                best = (cost, f, items, stage)
        out[node.name] = best[1]
        mems += [(node.name, name, opts) for name, opts in best[2]]
        chosen[node.name] = best[3]
    # the block RAMs the rest of the design takes (width converters, window generators, ...)
    fixed_brams = sum(s.resources(mem).brams for s in folding_mod.plan(graph, out) if s.kind != "mvu")
    budget = info["capacity"]["brams"] - fixed_brams - BRAM_SLACK[family]
    choice = _allocate([o for _, _, o in mems], budget)
    for (layer, name, _), style in zip(mems, choice):
        out[layer][name] = style
    if lean:
        # a LUT-ROM deeper than 32 words keeps its registered levels even here: their flip-flops share
        # logic cells with the piece and select LUTs (tfc-w1a1 on the UP5K: 4,843 LC at 43.9 MHz with
        # them on its two 128-word ROMs, 4,967 LC at 40.0 MHz without)
        for layer, stage in chosen.items():
            if out[layer].get("weights") == "logic" and stage.unit.structure()["weights"][1] > 32:
                out[layer]["mem_reg"] = True
    if bank_roms and family == "ecp5":
        # a block-RAM weight memory of more than one row of DP16KDs: banks of one row, each read into
        # a register before the bank select (the select after the block RAM's clock-to-out was the
        # critical path)
        for layer, stage in chosen.items():
            f = out[layer]
            if f.get("weights") != "block" or not f.get("mem_reg"):
                continue
            st = stage.unit.structure()
            w, d = st["rom_live_bits"], st["weights"][1]
            if w and d > mem.row_depth(w, d):
                f["rom_bank"] = mem.row_depth(w, d)
    return out


def _mvu_stage(k, node, types, f, absorb):
    stages = k.stages(node, types, {node.name: f}, None, absorb=absorb) if absorb is not None else \
        k.stages(node, types, {node.name: f}, None)
    return stages[-1]


def widest_layer(folding: dict) -> int:
    """The most lanes (PE x SIMD) of any layer of a folding."""
    return max((v["pe"] * v.get("simd", 1) for v in folding.values()), default=0)


def widest_lane_bits(graph, folding: dict) -> int:
    """The most lane input bits (PE x SIMD x the layer's input element bits) of any layer of a folding:
    the input bits a layer's beat fans out to its PEs."""
    types = graph.validate()
    nodes = {n.name: n for n in graph.nodes}
    return max((v["pe"] * v.get("simd", 1) * types[nodes[k].inputs[0]].dtype.bits
                for k, v in folding.items() if k in nodes), default=0)


def fastest_fit(graph, board: str, margin: float | None = None, max_lanes: int | None = None,
                max_lane_bits: int | None = None):
    """(target_ii, folding, estimate) of the fastest folding the estimates say fits `board`, or None.

    Target II grows geometrically from 1 to the fully folded II, then bisects between the
    last target that overflows and the first that fits. `max_lanes` (default: the board's) caps
    PE x SIMD per layer (ECP5: wider layers take far longer to place and route), `max_lane_bits`
    (default: the board's) PE x SIMD x input bits per layer (ECP5: a wide multi-bit beat fanned out to
    many PEs did not route reliably).
    """
    from qloom.hdl import folding as folding_mod
    if board not in BOARDS or board == "generic":
        raise SynthError(f"no capacity for board {board!r}; boards: icebreaker, ulx3s")
    cache = {}

    if max_lanes is None:
        max_lanes = BOARDS[board].get("max_lanes")
    if max_lane_bits is None:
        max_lane_bits = BOARDS[board].get("max_lane_bits")

    def at(ii):
        if ii not in cache:
            for lean in (False, True):          # registers after every deep memory; else only where needed
                f = board_folding(graph, board, ii, lean)
                e = estimate_for(graph, f, board)
                routable = (max_lanes is None or widest_layer(f) <= max_lanes) and \
                    (max_lane_bits is None or widest_lane_bits(graph, f) <= max_lane_bits)
                cache[ii] = (f, e, routable and not fits(e, board, margin))
                if cache[ii][2]:
                    break
        return cache[ii]

    full_ii = folding_mod.estimate(graph, folding_mod.fold(graph))["ii"]
    lo, hi, ii = 0, None, 1
    while ii < full_ii:
        if at(ii)[2]:
            hi = ii
            break
        lo = ii
        ii = max(ii + 1, int(math.ceil(ii * 1.5)))
    if hi is None:
        if not at(full_ii)[2]:
            return None
        hi = full_ii
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid)[2]:
            hi = mid
        else:
            lo = mid
    f, e, _ = at(hi)
    return hi, f, e


# nextpnr's cell types that the estimates' "luts" and "ffs" count (iCE40 logic cells hold both)
PLACED_AS = {"ICESTORM_LC": "luts", "TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs"}


def refit_margin(est: dict, overflow: dict, board: str) -> float | None:
    """The LUT/FF margin under which a design like this one would have been kept out, after nextpnr
    found it overflowing: estimates judged against margin x capacity must stay under capacity x
    estimate / used. `est`: this design's estimate; `overflow`: {nextpnr cell type: (used, available)}.
    None when no LUT or FF cell overflowed (block RAMs and DSPs are estimated exactly)."""
    ratios = [est[PLACED_AS[k]] / used for k, (used, _) in overflow.items() if k in PLACED_AS and used > 0]
    if not ratios:
        return None
    return 0.99 * min(BOARDS[board].get("fit_margin", FIT_MARGIN), *ratios)


def suggest(graph, board, overflow: dict | None = None, folding: dict | None = None) -> str:
    """A folding to try instead; after a real overflow of `folding`, the fastest that fits with the
    estimates scaled by how far off they were for it (refit_margin)."""
    if graph is None:
        return ("recompile with `qloom compile SPEC --board " + board + "` (picks the fastest folding the "
                "estimates say fits) or a larger --target-ii")
    margin = None
    if overflow and folding:
        margin = refit_margin(estimate_for(graph, folding, board), overflow, board)
    r = fastest_fit(graph, board, margin=margin)
    if r is None:
        return "even the fully folded design is estimated not to fit this device"
    ii, f, e = r
    scaled = f" with the estimates held to {100 * margin:.0f}% of the device" if margin else ""
    return (f"a folding the estimates say fits{scaled}: --target-ii {ii} (II {e['ii']} cycles; est. {e['luts']} "
            f"LUT, {e['brams']} BRAM, {e['dsps']} DSP), i.e. --fold " + json.dumps(f, separators=(",", ":")))
