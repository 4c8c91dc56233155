"""Simulate the UART board top around a build dir's accelerator (cocotb on Verilator).

`simulate_uart(build_dir, frames=8)` writes the UART top's Verilog (an Instance
of the emitted accelerator module, exactly what goes to the FPGA tools), builds
it with Verilator through cocotb_tools.runner (qloom.sim.service, the same cached build-and-run service as `qloom sim`),
and runs boards/tb/qloom_uart_tb.py: a serial-line model on rx/tx, with the host
driver `Link` talking through it, every result compared with outputs.npy.
"""
from __future__ import annotations

import os
import pathlib
import time

from qloom.compiler import builddir
from qloom.sim import service
from qloom.sim.errors import BuildDirError

from .top import SIM_DIVISOR

TB_DIR = pathlib.Path(__file__).resolve().parent / "tb"
TOP = "qloom_uart"


def uart_top_verilog(manifest, divisor: int = SIM_DIVISOR, idle_timeout: int = 0) -> str:
    from qloom.hdl import emit

    from .top import UARTAccelTop
    return emit.verilog(UARTAccelTop(manifest["ports"], top=manifest.top, divisor=divisor,
                                     idle_timeout=idle_timeout), TOP)


def simulate_uart(build_dir, frames: int = 8, divisor: int = SIM_DIVISOR, window: int = 2, idle_timeout: int = 0,
                  partial_first: bool = False, cache_dir=None, progress=None) -> dict:
    """Run `frames` input vectors of the build dir through the UART top; returns the testbench's results dict
    (ok, mismatches, first_mismatches, bytes_sent, bytes_received, overrun, error, sim_cycles, seconds) plus
    build_seconds and wall_seconds. Raises qloom.sim.SimError when it cannot run."""
    t0 = time.perf_counter()
    bd = builddir.open_build_dir(build_dir, vectors=True, error=BuildDirError)
    bdir, manifest = bd.path.resolve(), bd.manifest
    if partial_first and idle_timeout <= 0:
        raise ValueError("partial_first needs an idle_timeout")
    sources = {"uart_top.v": uart_top_verilog(manifest, divisor, idle_timeout),
               "accelerator.v": (bdir / "accelerator.v").read_text()}
    root = cache_dir or os.environ.get("QLOOM_SIM_CACHE") or bdir / "sim_build"
    built = service.build(sources, TOP, "verilator", cache_root=root, tag="uart", progress=progress)
    pin = manifest.input
    frame_bytes = 1 + pin.beats_per_frame * ((pin.width + 7) // 8)
    run_dir = built.dir / "run"
    cfg = {"build_dir": str(bdir), "frames": int(frames), "divisor": int(divisor), "window": int(window),
           "idle_timeout": int(idle_timeout), "partial_first": bool(partial_first),
           "read_timeout_cycles": int(20 * divisor * (frame_bytes * (window + 1))
                                      + 20 * (manifest.latency_estimate or 0) + 10000),
           "got": str(run_dir / "got.npy")}
    res = service.run(built, tb_dir=TB_DIR, test_module="qloom_uart_tb", run_dir=run_dir, config=cfg,
                      config_var="QLOOM_UART_CONFIG")
    res.update(build_seconds=built.seconds, wall_seconds=time.perf_counter() - t0, sim_build=str(built.dir),
               log=str(run_dir / "sim.log"))
    return res
