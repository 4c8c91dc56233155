"""qloom.sim: bit-exact cocotb verification of a build dir on Verilator and Icarus.

    from qloom.sim import simulate
    r = simulate("build/tfc", simulator="verilator", stall_prob=0.3)
    assert r["bit_exact"], r["verdict"]

See sim/run.py (host side: builds, caching, the runner), sim/harness.py (the
Amaranth harness for fast runs) and sim/tb/ (the cocotb testbench: model,
driver/monitor, checker). Importing this package imports neither amaranth nor
cocotb; they load when a simulation needs them.
"""
from .run import (BuildDirError, DRIVERS, SIMULATORS, SimError, SimulatorNotFound, available,  # noqa: F401
                  check_simulator, load_build_dir, simulate)

__all__ = ["simulate", "available", "check_simulator", "load_build_dir", "SimError", "BuildDirError",
           "SimulatorNotFound", "SIMULATORS", "DRIVERS"]
