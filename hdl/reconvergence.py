"""FIFO depths on reconvergent branches: where a fork's streams meet again at a join (add, concat).

A fork hands every beat to all its branches and moves on only when all have taken
it; a join takes its inputs together. When one branch (a conv: it needs rows of its
input before its first output) lags another (a skip connection), the join waits for
the slow branch while the fast one's beats pile up. If they fill the fast branch, the
fork stalls, the slow branch starves, and nothing moves again: a deadlock. The FIFO
at the end of each branch must hold that pile.

The rule (docs/hardware.md, "FIFOs on reconvergent branches"): count in beats of the
fork's input T. Every kernel states its data dependencies (`Kernel.need`: input beats
needed before output beat j). Composed from the fork down each branch:
  r_b(j)   T-beats branch b needs before its beat j can reach the join;
  m_j      = max over inputs k of r_k(the beat of k that the join's output j needs):
           the T-beats the fork must deliver before the join can emit j;
  p_b(m)   = #{i : r_b(i) <= m}: beats branch b can deliver to the join from m T-beats;
  c_b(j)   beats of b the join has taken before output j.
While the join waits for its output j, the fork has handed m_j - 1 beats to branch b
(it may hand the last one to the slow branch first), so b's FIFO must hold
  depth_b = max_j  p_b(m_j - 1) - c_b(j).
That is sufficient whatever the stalls (the branches' own buffers only add room) and,
for a branch without buffers of its own (an identity skip), the least depth that never
deadlocks: one beat less and the fork stalls for good on some frame. Frames repeat, so
two are enough to see every case.
"""
from __future__ import annotations

import numpy as np

FRAMES = 2


def _up(stages, links, start: int) -> set:
    """Stage indices upstream of (and including) stage `start`."""
    seen, todo = set(), [start]
    while todo:
        s = todo.pop()
        if s is None or s in seen:
            continue
        seen.add(s)
        todo += [lk.src for lk in links if lk.dst == s]
    return seen


def _at(a: np.ndarray, i: np.ndarray, before):
    """a[i], and `before` where i < 0 (no beat of that input needed yet)."""
    return np.where(i >= 0, a[np.clip(i, 0, len(a) - 1)], before)


def _frames(kernel, j, port, frame_out: int) -> np.ndarray:
    """kernel.need over FRAMES frames: output beat j of frame f needs f whole input frames more."""
    return kernel.need(j % frame_out, port) + (j // frame_out) * kernel.in_beats(port)


def branch_fork(pipe, join: int) -> int | None:
    """The fork whose branches meet at stage `join`: the latest stage with several outputs upstream of two
    or more of the join's inputs (None: the inputs share no fork)."""
    ups = [_up(pipe.stages, pipe.links, lk.src) for lk in pipe.inputs(join)]
    forks = [s for s in range(join) if len(pipe.stages[s].out_ports) > 1 and sum(s in u for u in ups) >= 2]
    return max(forks) if forks else None


def dependency_counts(pipe, fork: int, join: int) -> dict:
    """{stage index: r(j)} for the stages between `fork` and `join`: for every output beat j of the stage
    (FRAMES frames), the T-beats (the fork's input) it needs."""
    stages, links = pipe.stages, pipe.links
    f = stages[fork]
    r = {fork: np.arange(1, FRAMES * f.in_beats() + 1, dtype=np.int64)}
    between = _up(stages, links, join)
    for s in range(fork + 1, join):
        if s not in between:
            continue
        k = stages[s]
        ob = k.out_beats
        j = np.arange(FRAMES * ob, dtype=np.int64)
        out = np.zeros(j.shape, dtype=np.int64)
        for lk in (lk for lk in links if lk.dst == s):
            port = k.in_ports.index(lk.dst_port)
            src = r.get(lk.src)
            if src is None:
                continue                      # not fed by the fork: no dependency on T
            out = np.maximum(out, _at(src, _frames(k, j, port, ob) - 1, 0))
        r[s] = np.maximum.accumulate(out)         # beats leave in order: none before the one ahead of it
    return r


def join_depths(pipe, join: int) -> list[int]:
    """The FIFO depth (beats) each input of stage `join` needs so that it never deadlocks its fork."""
    k, ins = pipe.stages[join], pipe.inputs(join)
    fork = branch_fork(pipe, join)
    if fork is None:
        return [0] * len(ins)
    r = dependency_counts(pipe, fork, join)
    ob = k.out_beats
    j = np.arange(FRAMES * ob, dtype=np.int64)
    want, taken = [], []
    for port, lk in enumerate(ins):
        rb = r.get(lk.src)
        idx = _frames(k, j, port, ob)                    # beats of input `port` output j needs
        want.append(np.zeros(j.shape, np.int64) if rb is None else _at(rb, idx - 1, 0))
        before = np.concatenate([[0], idx[:-1]])         # beats of it taken before output j
        taken.append(before)
    m = np.max(want, axis=0)                             # T-beats the fork must deliver for output j

    def depth(port, rb):
        produced = np.searchsorted(rb, m - 1, side="right")
        return produced - taken[port]
    return _depths(ins, r, depth)


def _depths(ins, r, waiting) -> list[int]:
    """Per input link: the most beats `waiting(port, rb)` says pile up (0 for inputs that do not
    come from the fork, r has no counts for them)."""
    depths = []
    for port, lk in enumerate(ins):
        rb = r.get(lk.src)
        depths.append(0 if rb is None else int(max(0, waiting(port, rb).max())))
    return depths


def _spread(first: float, last: float, n: int, ii: int, j: np.ndarray) -> np.ndarray:
    """Cycle of beat j (FRAMES frames, II apart) when a frame's n beats come evenly from first to last."""
    step = (last - first) / max(n - 1, 1)
    return first + (j % n) * step + (j // n) * ii


def rate_depths(pipe, join: int) -> list[int]:
    """The FIFO depth each input of stage `join` needs so that, in the no-stall timing model
    (Pipeline.frame_times, frames II apart, each frame's beats evenly spread between its first and
    last), the fast branches never stall the fork: while the join waits for the slow branch's beat,
    the fork keeps delivering at its own pace and the fast branches' beats pile up."""
    stages = pipe.stages
    k, ins = stages[join], pipe.inputs(join)
    fork = branch_fork(pipe, join)
    if fork is None:
        return [0] * len(ins)
    r = dependency_counts(pipe, fork, join)
    times, ii = pipe.frame_times(), pipe.ii
    f = stages[fork]
    nt = f.in_beats()
    t_fork = _spread(*times[fork], nt, ii, np.arange(FRAMES * nt))
    ob = k.out_beats
    j = np.arange(FRAMES * ob, dtype=np.int64)
    ready = np.zeros(j.shape)
    idxs, arrivals = [], []
    for port, lk in enumerate(ins):
        idx = _frames(k, j, port, ob)
        n = stages[lk.src].out_beats if lk.src != fork else nt
        t_in = _spread(*times[lk.src], n, ii, np.arange(FRAMES * n))      # when each beat of this input comes
        idxs.append(idx)
        arrivals.append(t_in)
        ready = np.maximum(ready, _at(t_in, idx - 1, -np.inf))
    delivered = np.searchsorted(t_fork, ready, side="right")       # T-beats the fork has sent by then

    def depth(port, rb):
        # beats of this input waiting at the join by then: those the timing model brings before that
        # cycle (the slow input's beat comes as it is taken), and no more than the T-beats delivered allow
        there = np.minimum(np.searchsorted(arrivals[port], ready, side="left"),
                           np.searchsorted(rb, delivered, side="right"))
        return there - np.concatenate([[0], idxs[port][:-1]])
    return _depths(ins, r, depth)
