"""The MatrixVectorUnit's lane arithmetic and adder trees (hdl/mvu.py), with the value bounds
that size every node: which lanes the element types call for, the registered first level of a PE
(lane terms summed in pairs), and the registered 2-input adder tree over them."""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Mux

from qloom.compiler import ir

from . import streams


def shape_for(lo, hi):
    """The narrowest Amaranth shape that holds every integer in [lo, hi]."""
    return streams.elem_shape(ir.int_type_for(int(lo), int(hi)))


def _bit_length(v):
    """int.bit_length of each element of a non-negative int64 array (exact below 2**53)."""
    return np.where(v > 0, np.frexp(np.maximum(v, 1).astype(np.float64))[1], 0)


def widths(lo, hi):
    """shape_for(lo, hi).width per element of the arrays lo <= hi."""
    lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    unsigned = np.maximum(1, _bit_length(np.maximum(hi, 0)))
    signed = np.maximum(_bit_length(np.maximum(-lo - 1, 0)), _bit_length(np.maximum(hi, 0))) + 1
    return np.where(lo >= 0, unsigned, signed)


def lane_kind(wtype, in_type, weight) -> str:
    """The lane arithmetic for these element types and weights (see the module docstring)."""
    wvals = set(np.unique(weight).tolist())
    wbip = wvals <= {-1, 1}
    xbip = isinstance(in_type, ir.BipolarType)
    if wbip and xbip:
        return "xnor"
    if wbip:
        return "select_x"            # bipolar weights, integer inputs
    if xbip:
        return "select_w"            # integer weights, bipolar inputs
    if wvals <= {-1, 0, 1}:
        return "ternary"
    return "mul"


def lane_terms(kind, words, x_lo, x_hi):
    """Per weight word, the range of each lane's term of one PE: (lo, hi), arrays of (words, SIMD)."""
    if kind == "xnor":
        return np.zeros(words.shape, dtype=np.int64), np.ones(words.shape, dtype=np.int64)
    if kind == "select_x":
        b = (words > 0).astype(np.int64)
        return np.minimum(b * x_lo, 0), np.maximum(b * x_hi, 0)
    if kind == "select_w":
        return np.minimum(words, 0), np.maximum(words, 0)
    return np.minimum(words * x_lo, words * x_hi), np.maximum(words * x_lo, words * x_hi)


def lane_bounds(kind, words, x_lo, x_hi):
    """Per weight word, the range of each first-level value of one PE (lane terms summed in pairs,
    an odd lane alone): (lo, hi), arrays of (words, ceil(SIMD/2))."""
    t_lo, t_hi = lane_terms(kind, words, x_lo, x_hi)
    cut = list(range(0, words.shape[1], 2))
    return np.add.reduceat(t_lo, cut, axis=1), np.add.reduceat(t_hi, cut, axis=1)


CARRY_MIN_BITS = 5      # the narrowest sum Yosys' synth_ecp5 puts on a carry chain (measured, 0.70)


def sum_counts(t_lo, t_hi) -> dict:
    """What the registered first level and adder tree over lane terms with bounds t_lo, t_hi
    (words, SIMD; or (PEs, words, SIMD), summed over the PEs) keep after synthesis: a term that
    is 0 for every word (a weight that is 0 in every word) is a constant Yosys removes, an add
    with it is a wire. Bits of the registered values that remain ("first_bits", "adder_bits" for
    real adds, "pass_bits" for nodes that only pass a value on), the real adds ("adders"), the
    first level's add bits ("first_add_bits") and the bits of the tree's adds wide enough for a
    carry chain ("carry_bits"; "first_carry_bits" for the first level): synth_ecp5 maps a sum of
    5 bits or more to CCU2C, narrower ones to LUTs."""
    out = dict(first_bits=0, first_add_bits=0, adders=0, adder_bits=0, pass_bits=0, carry_bits=0,
               first_carry_bits=0)
    lo, hi = t_lo, t_hi                 # (..., words, SIMD): leading axes are PEs, counted together
    live = (lo != 0).any(axis=-2) | (hi != 0).any(axis=-2)
    for level in range(64):
        n = lo.shape[-1]
        if n < 2 and level > 0:
            break
        cut = np.arange(0, n, 2)
        lo, hi = np.add.reduceat(lo, cut, axis=-1), np.add.reduceat(hi, cut, axis=-1)
        both = np.zeros(live.shape[:-1] + (len(cut),), bool)
        both[..., :n // 2] = live[..., 0:n - 1:2] & live[..., 1:n:2]
        live = np.logical_or.reduceat(live, cut, axis=-1)
        bits = widths(lo.min(axis=-2), hi.max(axis=-2))
        kept, added = int(bits[live].sum()), int(bits[both].sum())
        out["first_carry_bits" if level == 0 else "carry_bits"] += int(bits[both & (bits >= CARRY_MIN_BITS)].sum())
        if level == 0:
            out["first_bits"] += kept
            out["first_add_bits"] += added
        else:
            out["adders"] += int(both.sum())
            out["adder_bits"] += added
            out["pass_bits"] += kept - added
    return out


def tree_bounds(lo, hi):
    """The adder tree over first-level values with bounds lo, hi (words, n): per level, the
    (lo, hi) range of each node over all words (an odd node out passes to the next level)."""
    levels = []
    groups = [(j, j + 1) for j in range(lo.shape[1])]
    while len(groups) > 1:
        nxt = [(groups[j][0], groups[j + 1][1]) for j in range(0, len(groups) - 1, 2)]
        if len(groups) % 2:
            nxt.append(groups[-1])
        levels.append([(int(lo[:, a:b].sum(1).min()), int(hi[:, a:b].sum(1).max())) for a, b in nxt])
        groups = nxt
    return levels


def lanes(stage, kind, wl, xl, words, x_lo, x_hi, psum, name):
    """The registered first level of one PE: lane terms summed in pairs. Returns (terms, lo, hi):
    lo, hi (words x terms) bound each term for each weight word."""
    SIMD = len(wl)
    lo, hi = lane_bounds(kind, words, x_lo, x_hi)
    shapes = [shape_for(lo[:, j].min(), hi[:, j].max()) for j in range(lo.shape[1])]
    if kind == "xnor":
        bits = [~(a ^ b) for a, b in zip(wl, xl)]
        vals = [bits[k] + bits[k + 1] for k in range(0, SIMD - 1, 2)]
    elif kind == "select_x":
        vals = []
        for j in range(SIMD // 2):
            a0, a1 = wl[2 * j], wl[2 * j + 1]
            vals.append(Mux(a0 & a1, psum[j], Mux(a0, xl[2 * j], Mux(a1, xl[2 * j + 1], 0))))
        bits = [Mux(a, b, 0) for a, b in zip(wl, xl)]
    else:
        if kind == "select_w":
            bits = [Mux(b, a, 0) for a, b in zip(wl, xl)]
        elif kind == "ternary":
            bits = [Mux(a == 0, 0, Mux(a < 0, -b, b)) for a, b in zip(wl, xl)]
        else:
            bits = [a * b for a, b in zip(wl, xl)]
        vals = [bits[k] + bits[k + 1] for k in range(0, SIMD - 1, 2)]
    if SIMD % 2:
        vals.append(bits[-1])
    terms = [stage(v, f"{name}_p{j}", shapes[j]) for j, v in enumerate(vals)]
    return terms, lo, hi


def tree(stage, terms, lo, hi, name):
    """Sum `terms` with one registered 2-input adder per level (an odd one out is registered
    as it is). lo, hi: (words, terms) bounds; every node is as wide as its range. Returns the sum
    and its (lo, hi) over all words."""
    for level, bounds in enumerate(tree_bounds(lo, hi)):
        nxt = [terms[j] + terms[j + 1] for j in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = [stage(v, f"{name}_l{level}_{j}", shape_for(a, b)) for j, (v, (a, b)) in enumerate(zip(nxt, bounds))]
    return terms[0], int(lo.sum(1).min()), int(hi.sum(1).max())
