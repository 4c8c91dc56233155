"""Simulate the UART board top around a build dir's accelerator (cocotb on Verilator).

`simulate_uart(build_dir, frames=8)` writes the UART top's Verilog (an Instance
of the emitted accelerator module, exactly what goes to the FPGA tools), builds
it with Verilator through cocotb_tools.runner (the helpers of qloom.sim.run),
and runs boards/tb/qloom_uart_tb.py: a serial-line model on rx/tx, with the host
driver `Link` talking through it, every result compared with outputs.npy.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import sys
import time

from qloom.sim import run as simrun

from .top import SIM_DIVISOR

TB_DIR = pathlib.Path(__file__).resolve().parent / "tb"
TOP = "qloom_uart"


def uart_top_verilog(manifest: dict, divisor: int = SIM_DIVISOR, idle_timeout: int = 0) -> str:
    from qloom.hdl import emit

    from .top import UARTAccelTop
    return emit.verilog(UARTAccelTop(manifest["ports"], top=manifest["top"], divisor=divisor,
                                     idle_timeout=idle_timeout), TOP)


def simulate_uart(build_dir, frames: int = 8, divisor: int = SIM_DIVISOR, window: int = 2, idle_timeout: int = 0,
                  partial_first: bool = False, cache_dir=None, progress=None) -> dict:
    """Run `frames` input vectors of the build dir through the UART top; returns the testbench's results dict
    (ok, mismatches, first_mismatches, bytes_sent, bytes_received, overrun, error, sim_cycles, seconds) plus
    build_seconds and wall_seconds. Raises qloom.sim.SimError when it cannot run."""
    t0 = time.perf_counter()
    bdir = pathlib.Path(build_dir).resolve()
    manifest = simrun.load_build_dir(bdir)
    simrun.check_simulator("verilator")
    if partial_first and idle_timeout <= 0:
        raise ValueError("partial_first needs an idle_timeout")
    top_v = uart_top_verilog(manifest, divisor, idle_timeout)
    acc_v = (bdir / "accelerator.v").read_text()
    h = hashlib.sha256((top_v + acc_v + json.dumps(simrun.VERILATOR_ARGS)).encode()).hexdigest()[:16]
    root = pathlib.Path(cache_dir or os.environ.get("QLOOM_SIM_CACHE") or bdir / "sim_build")
    sdir = (root / f"uart-verilator-{h}").resolve()
    sdir.mkdir(parents=True, exist_ok=True)
    from cocotb_tools.runner import VerilatorControlFile, get_runner
    runner = get_runner("verilator")
    sources = [sdir / "uart_top.v", sdir / "accelerator.v", VerilatorControlFile(sdir / "public.vlt")]
    tb0 = time.perf_counter()
    if not (sdir / "built.ok").exists():
        if progress:
            progress(f"building the Verilator model of the UART top in {sdir}")
        (sdir / "uart_top.v").write_text(top_v)
        (sdir / "accelerator.v").write_text(acc_v)
        (sdir / "public.vlt").write_text(simrun._public_vlt(TOP))
        env = {"MAKEFLAGS": (os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()}
        if shutil.which("ccache") and "OBJCACHE" not in os.environ:
            env["OBJCACHE"] = "ccache"
        with simrun._env(env):
            try:
                runner.build(sources=sources, hdl_toplevel=TOP, build_dir=sdir, timescale=("1ns", "1ps"),
                             build_args=list(simrun.VERILATOR_ARGS), always=True, log_file=sdir / "build.log")
            except (RuntimeError, SystemExit) as e:
                raise simrun.SimError(f"verilator build failed ({e}); log: {sdir / 'build.log'}"
                                      f"{simrun._tail(sdir / 'build.log')}") from None
        (sdir / "built.ok").write_text("ok\n")
    build_s = time.perf_counter() - tb0
    run_dir = sdir / "run"
    run_dir.mkdir(exist_ok=True)
    for f in ("results.json", "got.npy"):
        (run_dir / f).unlink(missing_ok=True)
    pin = manifest["ports"]["input"]
    frame_bytes = 1 + pin["beats_per_frame"] * ((pin["width"] + 7) // 8)
    cfg = {"build_dir": str(bdir), "frames": int(frames), "divisor": int(divisor), "window": int(window),
           "idle_timeout": int(idle_timeout), "partial_first": bool(partial_first),
           "read_timeout_cycles": int(20 * divisor * (frame_bytes * (window + 1)) + 20 * (manifest.get("latency_estimate") or 0) + 10000),
           "link_py": str(pathlib.Path(__file__).resolve().parent / "link.py"),
           "results": str(run_dir / "results.json"), "got": str(run_dir / "got.npy")}
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    d = str(TB_DIR)
    sys.path.insert(0, d)
    try:
        with simrun._env({"QLOOM_UART_CONFIG": str(run_dir / "config.json")}, drop=("PYTEST_CURRENT_TEST",)):
            try:
                runner.test(test_module="qloom_uart_tb", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                            build_dir=sdir, test_dir=run_dir, results_xml=str(run_dir / "results.xml"),
                            log_file=run_dir / "sim.log", timescale=("1ns", "1ps"))
            except (RuntimeError, SystemExit) as e:
                if not (run_dir / "results.json").exists():
                    raise simrun.SimError(f"UART simulation failed ({e}); log: {run_dir / 'sim.log'}"
                                          f"{simrun._tail(run_dir / 'sim.log')}") from None
    finally:
        sys.path.remove(d)
    if not (run_dir / "results.json").exists():
        raise simrun.SimError(f"UART simulation produced no results; log: {run_dir / 'sim.log'}"
                              f"{simrun._tail(run_dir / 'sim.log')}")
    res = json.loads((run_dir / "results.json").read_text())
    res.update(build_seconds=build_s, wall_seconds=time.perf_counter() - t0, sim_build=str(sdir),
               log=str(run_dir / "sim.log"))
    return res
