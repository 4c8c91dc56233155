"""qloom.sim: bit-exact cocotb verification of a build dir on Verilator and Icarus.

    from qloom.sim import simulate
    r = simulate("build/tfc", simulator="verilator", stall_prob=0.3)
    assert r.bit_exact, r.verdict

See sim/run.py (host side), sim/service.py (the cached build-and-run service,
shared with the UART board simulation), sim/harness.py (the
Amaranth harness for fast runs) and sim/tb/ (the cocotb testbench: model,
driver/monitor, checker). Importing this package imports neither amaranth nor
cocotb; they load when a simulation needs them.
"""
from .errors import BuildDirError, SimError, SimulatorNotFound  # noqa: F401
from .run import DRIVERS, SimResult, load_build_dir, simulate  # noqa: F401
from .service import SIMULATORS, available, check_simulator  # noqa: F401

__all__ = ["simulate", "SimResult", "available", "check_simulator", "load_build_dir", "SimError", "BuildDirError",
           "SimulatorNotFound", "SIMULATORS", "DRIVERS"]
