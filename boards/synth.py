"""`synthesize(source, board=...)`: synthesis, place and route, and packing, with the fit check.

`source` is a build dir (manifest.json + accelerator.v), an `ir.Graph` (with a
folding) or a `qloom.Accelerator`. FPGA boards wrap the accelerator in the UART
board top (boards/top.py; the emitted Verilog is read into Yosys beside it as an
Instance) and run Yosys, nextpnr (with a timeout) and the packer (boards/flow.py);
the result has utilisation against the device's capacity and Fmax from nextpnr's
report. A design that does not fit raises `DoesNotFit` naming the resource, the
overflow, and a folding the estimates say fits (boards/fit.py). `board="generic"`
runs Yosys' generic `synth` on the accelerator alone and reports cell counts and a
CMOS transistor estimate (`stat -tech cmos`).
"""
from __future__ import annotations

import json
import os
import pathlib
import time

from qloom.compiler import builddir

from .errors import DoesNotFit, SynthError, SynthInputError, ToolsMissing  # noqa: F401 (re-exported)
from .fit import estimate_for, fastest_fit, fits  # noqa: F401 (re-exported)
from .flow import fpga_flow, generic_flow
from .report import format_report  # noqa: F401 (re-exported)
from .targets import BOARDS



def load_graph(build_dir):
    """The build dir's graph.npz (written by emit.write_build_dir) when present and its hash
    matches the manifest's, else None (then synth cannot suggest foldings)."""
    from qloom.compiler import ir
    try:
        bd = builddir.open_build_dir(build_dir, need=("graph.npz",))
        g = ir.load_graph(bd.file("graph.npz"))
        return g if g.hash() == bd.manifest.graph_hash else None
    except (ValueError, KeyError, OSError):  # an unreadable graph only loses the suggestion
        return None


def _resolve(source, out_dir, folding):
    """(build dir, manifest, graph or None, out dir) for a build dir, Graph or Accelerator."""
    from qloom.compiler import ir
    if isinstance(source, (str, os.PathLike)):
        bd = builddir.open_build_dir(source, need=("accelerator.v",), error=SynthInputError)
        out = pathlib.Path(out_dir) if out_dir else bd.path
        return bd.path, bd.manifest, load_graph(bd.path), out
    if out_dir is None:
        raise SynthInputError("synthesize(graph or accelerator) needs out_dir=")
    out = pathlib.Path(out_dir)
    bdir = out / "accel"
    if isinstance(source, ir.Graph):
        from qloom.hdl import emit
        from qloom.hdl import folding as folding_mod
        f = folding if folding is not None else folding_mod.fold(source)
        manifest = emit.write_build_dir(bdir, source, f)
        graph = source
    elif hasattr(source, "graph") and hasattr(source, "save"):
        if folding is not None:
            source.fold(folding=folding)
        manifest = source.save(bdir)
        graph = source.graph
    else:
        raise SynthInputError(f"synthesize(): give a build dir, an ir.Graph or an Accelerator, "
                              f"not {type(source).__name__}")
    return bdir, manifest, graph, out


def synthesize(source, board: str = "icebreaker", *, out_dir=None, folding: dict | None = None,
               timeout: float = 1800.0, baud: int | None = None, seed: int | None = None, seeds: int = 1,
               progress=None) -> dict:
    """Synthesise a build dir / Graph / Accelerator for `board` (icebreaker, ulx3s, generic).

    out_dir: where the tools run (default <build dir>/synth-<board>). timeout: seconds for
    the whole tool flow (P&R is killed past it). baud: the UART rate (default: the fastest the
    board's USB bridge takes, BOARDS[board]['baud']: 3 Mbaud on the iCEBreaker, 1 Mbaud on the ULX3S).
    seed: nextpnr's placement seed; seeds: place and route this many times (seed, seed+1, ...) and keep
    the fastest (the result's "seed" and a note list each run's Fmax).
    Returns a dict: device, luts, ffs, brams, dsps, io, capacity, fmax_mhz, clock_mhz,
    bitstream, utilization, seconds, notes, estimate, ii, frames_per_second (at Fmax) ...;
    generic: cells, cells_by_type, transistors, memory_bits, netlist.
    Raises DoesNotFit (with .overflow and .suggestion), ToolsMissing or SynthError.
    """
    from .top import DEFAULT_BAUD
    if board not in BOARDS:
        raise SynthInputError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise SynthInputError(f"seeds must be a whole number of place-and-route runs (1 or more), got {seeds!r}")
    bdir, manifest, graph, out = _resolve(source, out_dir, folding)
    if out_dir is None or out == bdir:
        out = bdir / f"synth-{board}"
    t0 = time.perf_counter()
    if board == "generic":
        res = generic_flow(bdir, manifest, out, timeout, progress)
    else:
        res = fpga_flow(bdir, manifest, graph, out, board, timeout, baud or BOARDS[board].get("baud", DEFAULT_BAUD),
                        seed, progress, seeds=seeds)
    ii = manifest.ii_estimate
    res.update(build_dir=str(bdir), ii=ii, latency=manifest.latency_estimate,
               estimate=manifest.resources_estimate, wall_seconds=time.perf_counter() - t0)
    if graph is not None and board != "generic":
        res["estimate_device"] = estimate_for(graph, manifest.folding, board)
    fm = res.get("fmax_mhz")
    res["frames_per_second"] = fm * 1e6 / ii if fm and ii else None
    (out / "synth.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res
