# amaranth: UnusedElaboratable=no
"""The FIFO and window-generator stages' resource models against real Yosys (synth_ice40 -dsp /
synth_ecp5), per family.

The models (FIFOKernel.resources, SWGKernel.resources, costs.ram) were fitted to Yosys on FIFOs of
1-128 bits x 2-1100 beats and on 40 generators; here other shapes, so a change in the gateware or
in the tools that moves the counts shows up. Slow: one Yosys run per case.
"""
import numpy as np
import pytest
from hw import yosys_cells, yosys_luts

from qloom.boards.targets import BOARDS
from qloom.compiler import ir
from qloom.hdl.kernels.plumbing import FIFOKernel
from qloom.hdl.kernels.swg import SWGKernel

BOARD = {"ice40": "icebreaker", "ecp5": "ulx3s"}


def yosys_counts(component, family, d):
    c = yosys_cells(component, family, d)
    return yosys_luts(c), c.get("SB_RAM40_4K", 0) + c.get("DP16KD", 0)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize("bits,n,depth", [(1, 6, 3), (2, 16, 90), (1, 24, 300), (4, 2, 700), (8, 4, 2)])
def test_fifo_estimate_within_25_percent_of_yosys(tmp_path, family, bits, n, depth):
    t = ir.TensorType((n * 4,), ir.Int(bits, False))
    k = FIFOKernel("f", None, t, t, n, n, {"depth": depth})
    est = k.resources(BOARDS[BOARD[family]]["memory"])
    luts, brams = yosys_counts(k.build(), family, tmp_path)
    assert brams == est.brams, f"{family} {bits * n} bits x {depth}: {brams} block RAMs, estimated {est.brams}"
    assert abs(est.luts - luts) <= max(8, 0.25 * luts), f"{family} {bits * n} x {depth}: {luts} LUT4, est {est.luts}"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ice40", "ecp5"])
@pytest.mark.parametrize("hw,c,k,pad,simd,bits", [(24, 3, 3, 1, 3, 8), (10, 64, 3, 0, 16, 1), (7, 32, 2, 0, 8, 2),
                                                 (20, 8, 5, 2, 1, 4)])
def test_swg_estimate_within_25_percent_of_yosys(tmp_path, family, hw, c, k, pad, simd, bits):
    dt = ir.Bipolar if bits == 1 else ir.Int(bits, False)
    node = ir.Conv2d("conv", ["x"], "y", weight=np.ones((4, k, k, c), int), wtype=ir.Int(2, True),
                     padding=pad, pad_value=1 if bits == 1 else 0)
    t = ir.TensorType((hw, hw, c), dt)
    kern = SWGKernel("conv:swg", node, t, None, simd, simd)
    est = kern.resources(BOARDS[BOARD[family]]["memory"])
    luts, brams = yosys_counts(kern.build(), family, tmp_path)
    assert brams == est.brams, f"{family} {(hw, c, k, pad, simd, bits)}: {brams} block RAMs, estimated {est.brams}"
    assert abs(est.luts - luts) <= 0.25 * luts, f"{family} {(hw, c, k, pad, simd, bits)}: {luts} LUT4, est {est.luts}"
