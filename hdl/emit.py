"""Verilog through RTLIL + Yosys `proc`, with a timescale.

Amaranth's default Verilog path (`proc -nomux`) leaves `always @*` blocks that
Icarus evaluates late at time zero (amaranth issue #594); the RTLIL + `proc`
route gives plain assigns and clocked always blocks that every simulator reads
the same way.
"""
from __future__ import annotations

from amaranth.back import rtlil

TIMESCALE = "`timescale 1ns/1ps\n"


def _yosys():
    # amaranth's own verilog backend finds Yosys the same way (a system yosys >= 0.40, else the wheel)
    from amaranth._toolchain.yosys import find_yosys
    return find_yosys(lambda ver: ver >= (0, 40))


def verilog(component, name: str) -> str:
    """Verilog text for an elaboratable `component`, top module `name`."""
    il = rtlil.convert(component, name=name, emit_src=False)
    script = f"read_rtlil <<rtlil\n{il}\nrtlil\nproc\nopt_clean\nwrite_verilog -norename -noattr\n"
    return TIMESCALE + _yosys().run(["-q", "-"], script)


def port_info(prefix: str, dtype, n: int, shape) -> dict:
    """How one stream port looks in Verilog, for the manifest."""
    from qloom.compiler import ir
    frame = 1
    for s in shape:
        frame *= s
    bipolar = isinstance(dtype, ir.BipolarType)
    return {
        "payload": f"{prefix}__payload", "valid": f"{prefix}__valid", "ready": f"{prefix}__ready",
        "width": dtype.bits * n, "elements_per_beat": n, "frame_shape": list(shape),
        "beats_per_frame": frame // n,
        "element": {"type": str(dtype), "bits": dtype.bits, "signed": bool(getattr(dtype, "signed", False)),
                    "bipolar": bipolar, "min": dtype.min, "max": dtype.max},
    }


def write_build_dir(out_dir, graph, folding: dict, x_int=None, name: str = "qloom_top") -> dict:
    """Write accelerator.v, manifest.json and test vectors (inputs.npy, outputs.npy) to out_dir."""
    import json
    import pathlib

    import numpy as np

    from qloom.compiler import folding as folding_mod
    from qloom.compiler import reference

    from .accelerator import DataflowAccelerator

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = DataflowAccelerator(graph, folding)
    (out / "accelerator.v").write_text(verilog(top, name))
    from qloom.compiler import ir
    ir.save_graph(graph, out / "graph.npz")        # so synth can re-fold without the model
    types = graph.validate()
    est = folding_mod.estimate(graph, folding)
    manifest = {
        "top": name, "graph": graph.name, "graph_hash": graph.hash(), "clock": "clk", "reset": "rst",
        "reset_kind": "synchronous, active high",
        "ports": {"input": port_info("i", top.in_type, top.in_n, graph.input_type.shape),
                  "output": port_info("o", top.out_type, top.out_n, types[graph.output].shape)},
        "folding": folding,
        "ii_estimate": est["ii"], "latency_estimate": est["latency"],
        "resources_estimate": {k: est[k] for k in ("luts", "ffs", "brams", "dsps")},
        "stages": est["stages"],
        "nodes": [{"name": n.name, "kind": n.kind, "output": n.output, "type": str(types[n.output])}
                  for n in graph.nodes],
    }
    if x_int is not None:
        x_int = reference.check_input(graph, x_int)
        np.save(out / "inputs.npy", x_int)
        np.save(out / "outputs.npy", reference.run(graph, x_int))
        manifest["vectors"] = {"inputs": "inputs.npy", "outputs": "outputs.npy", "frames": int(x_int.shape[0])}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
