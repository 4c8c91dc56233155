# amaranth: UnusedElaboratable=no
"""Kernels: one class per operator; folding, planning, estimates and assembly only iterate over them."""
from dataclasses import dataclass

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qloom.compiler import ir, reference
from qloom.hdl import folding, streams
from qloom.hdl.kernels import BRAM18, EBR, ElementwiseKernel, REGISTRY, Resources, kernel_for
from qloom.hdl.kernels.base import register

from hw import simulate


def test_every_ir_node_kind_has_a_kernel():
    for kind, cls in ir.NODE_KINDS.items():
        assert kernel_for(cls.__new__(cls)) is not None, f"no kernel for {kind}"


@pytest.mark.parametrize("width,depth,ebr,bram", [(16, 256, 1, 1), (16, 512, 2, 1), (64, 128, 4, 2),
                                                  (1, 2048, 1, 1), (36, 512, 5, 1), (8, 4096, 8, 2)])
def test_memory_models_count_blocks(width, depth, ebr, bram):
    assert EBR.blocks(width, depth) == ebr
    assert BRAM18.blocks(width, depth) == bram
    assert EBR.place(width, 16) == (0, width * 1)          # shallow: LUT-RAM


def _mlp():
    rng = np.random.default_rng(0)
    w1 = rng.integers(-1, 2, size=(32, 64))
    t1 = np.sort(rng.integers(-40, 40, size=(32, 3)), axis=1)
    w2 = rng.integers(-1, 2, size=(10, 32))
    nodes = [ir.Dense("fc0", ["x"], "a0", weight=w1, wtype=ir.Int(2, True)),
             ir.MultiThreshold("t0", ["a0"], "y0", thresholds=t1, out_type=ir.Int(2, False)),
             ir.Dense("fc1", ["y0"], "a1", weight=w2, wtype=ir.Int(2, True))]
    return ir.Graph("x", ir.TensorType((64,), ir.Int(4, False)), nodes, "a1")


def test_estimate_counts_in_the_device_memory_model():
    g = _mlp()
    f = folding.fold(g)                                    # fully folded: deep ROMs
    e18, e4 = folding.estimate(g, f), folding.estimate(g, f, memory=EBR)
    assert e18["memory"] == "BRAM18" and e4["memory"] == "EBR"
    assert e4["brams"] >= e18["brams"] > 0
    assert e4["ii"] == e18["ii"] and e4["latency"] == e18["latency"]


def test_kernel_latency_is_the_components():
    g = _mlp()
    for f in (folding.fold(g), folding.fold(g, target_ii=16)):
        for stage in folding.plan(g, f):
            assert stage.latency == stage.build().latency


# ---------------------------------------------------------------- a new operator, added in its own files only

@dataclass(eq=False)
class Negate(ir.Node):
    """out = -x (a toy operator for this test)."""
    kind = "Negate"

    def infer(self, ins):
        self._need(ins, 1)
        d = ins[0].dtype
        return ir.TensorType(ins[0].shape, ir.int_type_for(-d.max, -d.min))


class NegateUnit(wiring.Component):
    LATENCY = 1

    def __init__(self, in_type, out_type, n):
        self.latency = self.LATENCY
        super().__init__({"i": In(streams.beat_signature(in_type, n)), "o": Out(streams.beat_signature(out_type, n))})

    def elaborate(self, platform):
        m = Module()
        n = len(self.i.payload)
        en = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(en)
        with m.If(en):
            m.d.sync += self.o.valid.eq(self.i.valid)
            m.d.sync += [self.o.payload[k].eq(-self.i.payload[k]) for k in range(n)]
        return m


def test_a_new_operator_needs_only_its_node_reference_kernel_and_component(monkeypatch):
    monkeypatch.setitem(reference.OPS, Negate, lambda node, x, t: -x)

    @register(Negate, kind="negate")
    class NegateKernel(ElementwiseKernel):
        def build(self):
            return NegateUnit(self.in_type.dtype, self.out_type.dtype, self.in_n)

        def resources(self, mem):
            return Resources(luts=self.in_n * self.out_type.dtype.bits, ffs=self.in_n * self.out_type.dtype.bits)

    try:
        g = _mlp()
        g.nodes.insert(2, Negate("neg", ["y0"], "n0"))
        g.nodes[3].inputs = ["n0"]
        f = folding.fold(g, target_ii=32)
        kinds = [s.kind for s in folding.plan(g, f)]
        assert "negate" in kinds
        x = np.random.default_rng(1).integers(0, 16, size=(20, 64))
        assert (simulate(g, f, x, seed=3) == reference.run(g, x)).all()
        assert folding.estimate(g, f)["stages"][kinds.index("negate")]["luts"] > 0
    finally:
        REGISTRY.pop(Negate)
