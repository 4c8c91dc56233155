# amaranth: UnusedElaboratable=no
"""Graph-shaped pipelines in amaranth.sim: forks, joins and the FIFO-depth rule on reconvergent branches.

The rule (hdl/reconvergence.py, docs/hardware.md) gives each join input the depth that can never
deadlock; for an identity skip it is also the least: one beat less and the fork stalls for good,
which the deadlock watch reports by naming the stuck streams."""
import numpy as np
import pytest

from qloom.compiler import reference
from qloom.hdl import folding, reconvergence, streams
from qloom.hdl.accelerator import DataflowAccelerator

from graphs import depthwise_separable, frames, inception, residual
from hw import measured_ii, simulate



def join_fifo(dut, join, port):
    return next(s for s in dut.pipeline if s.name == f"{join}:fifo{port}")


def test_plan_inserts_a_fork_and_a_fifo_on_the_fast_branch():
    g = residual()
    p = folding.plan(g, folding.fold(g, target_ii=200))
    kinds = [(s.kind, s.name) for s in p]
    assert ("fork", "input:fork") in kinds
    assert ("fifo", "add:fifo1") in kinds and ("fifo", "add:fifo0") not in kinds    # the slow branch needs none
    fork = next(k for k, s in enumerate(p) if s.kind == "fork")
    assert [p.label(lk) for lk in p.links if lk.src == fork] == ["'input:fork'.o0 -> 'c0:fifo'.i",
                                                               "'input:fork'.o1 -> 'add:fifo1'.i"]
    add = next(s for s in p if s.kind == "add")
    assert add.extra["fifo_depths"]["deadlock"][0] == 0


@pytest.mark.parametrize("hw,c,convs,simd", [(6, 4, 2, 4), (6, 4, 1, 4), (5, 2, 2, 1), (7, 2, 1, 2)])
def test_deadlock_bound_closed_form(hw, c, convs, simd):
    """A 3x3 'same' conv's first output pixel waits for W + 2 input pixels, and so does every later one
    (W + 2 ahead of it), so each conv adds W + 1 pixels of lag: the skip must hold convs * (W + 1) pixels
    (the add takes one pixel of C channels a beat here; the fork's eager beat covers the + 1)."""
    g = residual(hw, c, convs)
    f = {n.name: {"pe": c, "simd": simd} for n in g.nodes if n.kind == "Conv2d"}
    p = folding.plan(g, f)
    join = next(k for k, s in enumerate(p) if s.kind == "add")
    assert p[join].in_ns == (c, c)
    assert reconvergence.join_depths(p, join) == [0, convs * (hw + 1)]


@pytest.mark.parametrize("make,target", [(residual, 200), (lambda: residual(shortcut=True), 150),
                                         (inception, 100), (lambda: residual(convs=1, hw=5), None)])
@pytest.mark.parametrize("stall", [0.0, 0.5, 0.9])
def test_bit_exact_with_random_stalls(make, target, stall):
    g = make()
    f = folding.fold(g, target_ii=target)
    x = frames(g, 3, seed=1)
    got = simulate(g, f, x, stall_in=stall, stall_out=0.9 - stall / 2, seed=3, idle_cycles=4000)
    assert np.array_equal(got, reference.run(g, x))


@pytest.mark.parametrize("make,targets", [(residual, [None, 300, 60]), (inception, [None, 50]),
                                          (depthwise_separable, [None, 100])])
def test_measured_ii_equals_estimate(make, targets):
    g = make()
    x = frames(g, 4, seed=2)
    for t in targets:
        f = folding.fold(g, target_ii=t)
        est = folding.estimate(g, f)
        ii, times = measured_ii(g, f, x)
        assert ii == est["ii"], f"target {t}: measured II {ii}, estimated {est['ii']}"
        lat = times[len(times) // 4 - 1] + 1
        assert abs(lat - est["latency"]) <= 0.05 * lat + 10, f"target {t}: latency {lat} vs {est['latency']}"


@pytest.mark.parametrize("make,join,port", [(residual, "add", 1), (lambda: residual(convs=1), "add", 1),
                                            (inception, "cat", 1)])
def test_depth_at_the_bound_works_and_one_less_deadlocks(make, join, port):
    g = make()
    f = folding.fold(g, target_ii=100)
    x = frames(g, 2, seed=4)
    want = reference.run(g, x)

    def run(offset):
        dut = DataflowAccelerator(g, f)
        k = next(s for s in dut.pipeline if s.name == join)
        bound = k.extra["fifo_depths"]["deadlock"][port]
        join_fifo(dut, join, port).extra["depth"] = bound + offset
        return bound, simulate(g, f, x, stall_in=0.0, stall_out=0.0, idle_cycles=3000, dut=dut)

    bound, got = run(0)
    assert bound >= 2 and np.array_equal(got, want)
    with pytest.raises(streams.Deadlock) as e:
        run(-1)
    msg = str(e.value)
    assert f"'{join}:fifo{port}'.o -> '{join}'.i{port} holds valid without ready" in msg
    assert "input holds valid without ready" in msg


def test_a_dead_node_is_refused():
    g = residual()
    g.output = "s"                       # 'act' now feeds nothing
    with pytest.raises(folding.FoldingError, match="MultiThreshold 'act': its output 'y' feeds nothing"):
        folding.plan(g, folding.fold(g))


@pytest.mark.parametrize("target", [3000, 700, 324])
def test_fold_meets_the_target_on_every_branch(target):
    """Each conv, on the long branch or the shortcut, gets the cheapest folding that meets the target
    (324 = 6 x 6 x 9 is as fast as a 3x3 window generator goes on a 6x6 map)."""
    g = residual(shortcut=True)
    f = folding.fold(g, target_ii=target)
    p = folding.plan(g, f)
    layers = {s.name: s.cycles for s in p if s.node is not None and s.name in f}
    assert set(layers) == {"c0", "c1", "short"}               # both branches folded
    assert max(layers.values()) <= target and p.ii <= target
    assert f["short"]["pe"] * f["short"]["simd"] < f["c0"]["pe"] * f["c0"]["simd"] or target == 3000


@pytest.mark.parametrize("make", [lambda: residual(hw=8, c=8, shortcut=True), lambda: depthwise_separable(hw=8)])
def test_board_fit_search_on_a_dag(make):
    """`qloom compile --board`'s search works on graph-shaped nets: a folding the estimates say fits,
    no faster than the 3x3 window generators go (8 x 8 x 9 cycles)."""
    from qloom.boards import fit
    g = make()
    _, f, est = fit.fastest_fit(g, "icebreaker")
    assert est["ii"] == folding.estimate(g, f)["ii"] >= 8 * 8 * 9
    assert fit.fits(est, "icebreaker") == {}                  # nothing overflows
