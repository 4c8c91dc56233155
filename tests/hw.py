# amaranth: UnusedElaboratable=no
"""Whole-accelerator simulation in amaranth.sim, for the hardware tests."""
import numpy as np

from qloom.hdl import folding as folding_mod
from qloom.compiler import reference
from qloom.hdl import streams
from qloom.hdl.accelerator import DataflowAccelerator


def simulate(graph, folding, x_int, stall_in=0.3, stall_out=0.3, seed=0, beat_times=None, idle_cycles=None,
             dut=None):
    """Run frames x_int through the accelerator; return outputs shaped like reference.run's.

    idle_cycles: raise streams.Deadlock (naming the stuck stages) when no stream moves for that long.
    dut: an accelerator built already (e.g. with a FIFO depth changed), else one is made."""
    dut = dut or DataflowAccelerator(graph, folding)
    x_int = reference.check_input(graph, x_int)
    beats = streams.to_beats(dut.in_type, x_int.reshape(-1), dut.in_n)
    out_shape = graph.validate()[graph.output].shape
    frame_out = int(np.prod(out_shape))
    n_out = x_int.shape[0] * frame_out // dut.out_n
    got = streams.run_stream(dut, dut.i, dut.o, beats, n_out, stall_in=stall_in, stall_out=stall_out,
                             seed=seed, max_cycles=50_000_000, beat_times=beat_times,
                             probes=lambda: dut.probes, idle_cycles=idle_cycles)
    flat = streams.from_beats(dut.out_type, got, dut.out_n)
    return np.array(flat, dtype=np.int64).reshape((x_int.shape[0],) + tuple(out_shape))


def measured_ii(graph, folding, x_int):
    """Cycles between consecutive output frames in steady state, with no stalls."""
    dut_out_n = folding_mod.plan(graph, folding).out_n
    times = []
    simulate(graph, folding, x_int, stall_in=0.0, stall_out=0.0, beat_times=times)
    per_frame = int(np.prod(graph.validate()[graph.output].shape)) // dut_out_n
    ends = times[per_frame - 1::per_frame]
    return ends[-1] - ends[-2], times


YOSYS_SYNTH = {"ice40": "synth_ice40 -dsp", "ecp5": "synth_ecp5"}


def yosys_luts(cells: dict) -> int:
    """LUT4 in a Yosys cell count, either family: a CCU2C or a DPR16X4 LUT-RAM counts two."""
    return (cells.get("SB_LUT4", 0) + cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
            + 2 * cells.get("TRELLIS_DPR16X4", 0))


def yosys_cells(component, family, workdir) -> dict:
    """Cell counts of `component` synthesised alone by real Yosys (YoWASP) for `family`."""
    import json
    import subprocess

    from amaranth.back import rtlil

    from qloom.boards.flow import tool_env
    (workdir / "top.il").write_text(rtlil.convert(component, name="top", emit_src=False))
    (workdir / "s.ys").write_text(f"read_rtlil top.il\n{YOSYS_SYNTH[family]} -top top\n"
                                  "tee -q -o stat.json stat -json\n")
    env = tool_env()
    subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "s.ys"], cwd=workdir, env=env, check=True,
                   capture_output=True)
    return json.loads((workdir / "stat.json").read_text())["design"]["num_cells_by_type"]
