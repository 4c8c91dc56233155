"""FINN's CNV (32x32x3) in cocotb on Verilator: bit-exact over 20+ frames; II within 1% of the estimate.

Each case compiles the network (~30 s) and builds a Verilator model (~15-40 s): slow.
"""
import pytest

import qloom
from qloom.examples import build
from qloom.sim import simulate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name,target_ii,stall", [("cnv-w1a1", 100_000, 0.2), ("cnv-w1a1", 30_000, 0.0),
                                                  ("cnv-w2a2", 100_000, 0.2)])
def test_cnv_bit_exact_on_verilator(tmp_path, name, target_ii, stall):
    model, x = build(name)
    acc = qloom.compile(model, x, target_ii=target_ii)
    manifest = acc.save(tmp_path / name, x_float=x[:20])
    res = simulate(tmp_path / name, simulator="verilator", stall_prob=stall)
    assert res["frames"] == 20 and res["bit_exact"], res.get("verdict")
    assert res["mismatches"] == 0
    if stall == 0.0 or name == "cnv-w1a1":
        est = manifest["ii_estimate"]
        assert abs(res["ii_measured"] - est) <= est // 100, (res["ii_measured"], est)
