"""Fit estimates: a folding's resources in a board's own units, whether it fits, and the fastest that does.

The kernels' resource models (hdl/kernels) take the board's memory model, so EBR on
iCE40 and DP16KD on ECP5 are counted by the same code that counts them for BRAM18.
"""
from __future__ import annotations

import json

from .errors import SynthError
from .targets import BOARDS, CALIBRATION, FIT_MARGIN, UART_TOP_LUTS


def estimate_for(graph, folding: dict, board: str) -> dict:
    """The folding's resource estimate in the board's own units (LC, EBR, ... on iCE40)."""
    from qloom.hdl import folding as folding_mod
    info = BOARDS[board]
    est = folding_mod.estimate(graph, folding, memory=info["memory"])
    luts = (est["luts"] + UART_TOP_LUTS) * CALIBRATION["luts"]
    ffs = (est["ffs"] + UART_TOP_LUTS // 2) * CALIBRATION["ffs"]
    if info["family"] == "ice40":
        luts = max(luts, ffs)                      # one LC holds a LUT4 and a flip-flop
    return {"luts": int(luts), "ffs": int(ffs), "brams": int(est["brams"]), "dsps": int(est["dsps"]),
            "ii": est["ii"], "latency": est["latency"], "raw": {k: est[k] for k in ("luts", "ffs", "brams", "dsps")},
            "calibration": dict(CALIBRATION)}


def fits(est: dict, board: str, margin: float = FIT_MARGIN) -> dict:
    """{resource: (estimate, capacity)} of the resources the estimate says overflow (empty: fits)."""
    cap = BOARDS[board]["capacity"]
    return {k: (est[k], cap[k]) for k in ("luts", "ffs", "brams", "dsps") if est[k] > margin * cap[k]}


def fastest_fit(graph, board: str, margin: float = FIT_MARGIN):
    """(target_ii, folding, estimate) of the fastest folding the estimates say fits `board`, or None.

    Target II grows geometrically from 1 to the fully folded II, then bisects between the
    last target that overflows and the first that fits.
    """
    from qloom.hdl import folding as folding_mod
    if board not in BOARDS or board == "generic":
        raise SynthError(f"no capacity for board {board!r}; boards: icebreaker, ulx3s")
    cache = {}

    def at(ii):
        if ii not in cache:
            f = folding_mod.fold(graph, target_ii=ii)
            e = estimate_for(graph, f, board)
            cache[ii] = (f, e, not fits(e, board, margin))
        return cache[ii]

    full_ii = folding_mod.estimate(graph, folding_mod.fold(graph))["ii"]
    lo, hi, ii = 0, None, 1
    while ii < full_ii:
        if at(ii)[2]:
            hi = ii
            break
        lo = ii
        ii = max(ii + 1, int(ii * 1.5))
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


def suggest(graph, board) -> str:
    if graph is None:
        return ("recompile with `qloom compile SPEC --board " + board + "` (picks the fastest folding the "
                "estimates say fits) or a larger --target-ii")
    r = fastest_fit(graph, board)
    if r is None:
        return "even the fully folded design is estimated not to fit this device"
    ii, f, e = r
    return (f"a folding the estimates say fits: --target-ii {ii} (II {e['ii']} cycles; est. {e['luts']} LUT, "
            f"{e['brams']} BRAM, {e['dsps']} DSP), i.e. --fold " + json.dumps(f, separators=(",", ":")))
