"""qloom.boards: FPGA boards (iCEBreaker, ULX3S) and a generic Verilog/ASIC target.

    from qloom import boards
    r = boards.synthesize("build/tfc", board="icebreaker")     # Yosys + nextpnr (YoWASP, from PyPI)
    print(r["luts"], r["brams"], r["fmax_mhz"], r["bitstream"])
    link = boards.Link.open("/dev/ttyUSB1", "build/tfc")       # host side of the UART top
    labels = link.infer(x_int)

boards/targets.py: the boards and their memory models; boards/fit.py: fit estimates and
the fastest folding that fits; boards/flow.py: the Yosys/nextpnr tool flows;
boards/synth.py: synthesize(); boards/report.py: terminal reports; boards/top.py: the
UART board top (framing in docs/boards.md); boards/uart.py: the UART; boards/link.py:
the host driver; boards/sim.py: cocotb test of the UART top.
Importing this package imports neither amaranth nor the tools.
"""
from .link import Link, LinkError  # noqa: F401
from .synth import (BOARDS, DoesNotFit, SynthError, ToolsMissing, estimate_for, fastest_fit, fits,  # noqa: F401
                    format_report, load_graph, synthesize)

TARGETS = tuple(BOARDS)

__all__ = ["synthesize", "Link", "LinkError", "BOARDS", "TARGETS", "DoesNotFit", "SynthError", "ToolsMissing",
           "fastest_fit", "estimate_for", "fits", "load_graph"]
