"""The Python API: `qloom.compile(model, example_input) -> Accelerator`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from qloom.compiler import ir, reference
from qloom.compiler.errors import QuantError
from qloom.compiler.frontends.base import Lowered


@dataclass
class FidelityReport:
    """How the IR's outputs compare with the torch eval model's on the same inputs."""
    frames: int
    elements: int
    mismatches: int
    max_lsb: int
    lsb_histogram: dict = field(default_factory=dict)   # |difference in LSBs| -> count (nonzero only)
    compared: str = "codes"                              # codes | labels | accumulators

    @property
    def exact(self) -> bool:
        return self.mismatches == 0

    @property
    def fidelity(self) -> float:
        return 1.0 - self.mismatches / max(self.elements, 1)

    def __str__(self):
        s = (f"fidelity {100 * self.fidelity:.4f}%: {self.mismatches} of {self.elements} output "
             f"{self.compared} differ over {self.frames} frames")
        if self.mismatches:
            s += f" (max {self.max_lsb} LSB; histogram {dict(sorted(self.lsb_histogram.items()))})"
        return s


class Accelerator:
    """A compiled network: the integer IR graph plus its front end's float glue (inputs, outputs, oracle)."""

    def __init__(self, lowered: Lowered, options: dict):
        self.graph = lowered.graph
        self.frontend = lowered.frontend
        self.options = options
        self.argmax = bool(options.get("argmax"))
        if self.argmax:
            self._append_argmax()

    @property
    def model(self):
        """The source model, where the front end holds one in memory (else None)."""
        return self.frontend.model

    # ------------------------------------------------------------ numerics
    def quantize_input(self, x_float) -> np.ndarray:
        """Integer input codes (int64, the IR's layout: CNN maps channels-last) for float inputs,
        computed with the source model's own input quantizer."""
        return np.asarray(self.frontend.quantize_input(x_float), dtype=np.int64)

    def reference(self, x_int, return_all: bool = False):
        """Run the golden integer model on integer inputs (batch first)."""
        return reference.run(self.graph, x_int, return_all=return_all)

    def dequantize(self, y_int) -> np.ndarray:
        """The float values of the IR's outputs, as the source model gives them (labels as they are)."""
        if self.argmax:
            return np.asarray(y_int)
        return self.frontend.dequantize(y_int)

    def predict(self, x_float) -> np.ndarray:
        """Float inputs in, the source model's outputs out (floats, or labels with argmax), computed
        by the integer reference model: what the hardware gives, dequantized."""
        return self.dequantize(self.reference(self.quantize_input(x_float)))

    def fidelity(self, x_float) -> FidelityReport:
        """Compare the source model and the IR on the float inputs `x_float`, every output element."""
        src = self.frontend.source_outputs(x_float, self.argmax)
        want = src.values
        got = self.reference(self.quantize_input(x_float))
        if src.compared == "floats":
            diff = want != self.dequantize(got)
            lsb = np.ones_like(got) if src.acc is None else np.abs(src.acc - got)
        else:
            diff = want != got
            lsb = np.abs(want.astype(np.int64) - got)
        lsb = np.where(diff, np.maximum(lsb, 1), 0) if src.compared != "labels" else diff.astype(np.int64)
        vals, counts = np.unique(lsb[lsb > 0], return_counts=True)
        return FidelityReport(frames=got.shape[0], elements=int(got.size), mismatches=int(diff.sum()),
                              max_lsb=int(lsb.max(initial=0)),
                              lsb_histogram={int(v): int(c) for v, c in zip(vals, counts)},
                              compared={"floats": "accumulators"}.get(src.compared, src.compared))

    def analyze(self, x_float, float_model=None, out_dir=None, plots: bool = True):
        """Quantization error analysis on float inputs (qloom.compiler.analysis): per layer SQNR
        against `float_model` (when given), clipped shares, rounding vs clipping error, the
        accumulators' used range vs their width, and (with out_dir) PNG histograms of weights and
        activations with the quantization grid. Returns an AnalysisReport (print it for a table)."""
        from qloom.compiler import analysis
        return analysis.analyze(self, x_float, float_model=float_model, out_dir=out_dir, plots=plots)

    # ------------------------------------------------------------ hardware
    def fold(self, target_ii: int | None = None, folding: dict | None = None) -> dict:
        """Choose PE/SIMD per layer (cheapest that meets target_ii; `folding` entries are taken as given)."""
        from qloom.hdl import folding as folding_mod
        self.folding = folding_mod.fold(self.graph, target_ii=target_ii, manual=folding)
        return self.folding

    def estimate(self) -> dict:
        """Cycles, II, latency and LUT/FF/BRAM/DSP estimates for the current folding."""
        from qloom.hdl import folding as folding_mod
        return folding_mod.estimate(self.graph, self._folding())

    def _folding(self):
        if getattr(self, "folding", None) is None:
            self.fold(self.options.get("target_ii"), self.options.get("folding"))
        return self.folding

    def hardware(self):
        """The Amaranth component (a DataflowAccelerator) for the current folding."""
        from qloom.hdl.accelerator import DataflowAccelerator
        return DataflowAccelerator(self.graph, self._folding())

    def verilog(self, name: str = "qloom_top") -> str:
        """Verilog text of the accelerator (RTLIL + Yosys proc, with a timescale)."""
        from qloom.hdl import emit
        return emit.verilog(self.hardware(), name)

    def save(self, out_dir, x_float=None, x_int=None, name: str = "qloom_top"):
        """Write the build dir atomically (accelerator.v, graph.npz, manifest.json and, given inputs,
        test vectors); an existing build dir there is replaced whole. Returns the builddir.Manifest
        (`m.ii_estimate`, or `m["ii_estimate"]` for the JSON view)."""
        from qloom.hdl import emit
        if x_int is None and x_float is not None:
            x_int = self.quantize_input(x_float)
        spec = self.frontend.io_spec() or {}
        spec = {**spec, "argmax": self.argmax}
        return emit.write_build_dir(out_dir, self.graph, self._folding(), x_int, name, frontend=spec)

    @classmethod
    def load(cls, build_dir) -> "Accelerator":
        """Reopen a build dir written by save() / `qloom compile`: its graph, folding and the float glue
        of its inputs and outputs (so reference(), predict(), simulate() and synthesize() work without
        the source model; fidelity() needs the model)."""
        from qloom.compiler import builddir
        from qloom.compiler.frontends.stored import StoredFrontend
        bd = builddir.open_build_dir(build_dir, need=("accelerator.v", "graph.npz"))
        graph = ir.load_graph(bd.file("graph.npz"))
        if graph.hash() != bd.manifest.graph_hash:
            raise builddir.BuildDirError(f"{bd.path}: graph.npz hashes to {graph.hash()}, the manifest says "
                                         f"{bd.manifest.graph_hash}")
        spec = dict(bd.manifest.frontend)
        acc = cls(Lowered(graph, StoredFrontend(spec, str(bd.path))),
                  {"argmax": False, "folding": bd.manifest.folding})
        acc.argmax = bool(spec.get("argmax"))          # the graph already ends in its ArgMax
        acc.folding = dict(bd.manifest.folding)
        acc.build_dir = bd.path
        return acc

    def simulate(self, x_int=None, simulator: str = "verilator", *, x_float=None, out_dir=None,
                 frames: int | None = None, stall_prob: float = 0.3, waves: bool = False, seed: int = 0,
                 driver: str = "harness", cache_dir=None) -> dict:
        """Save a build dir for the inputs and run its Verilog under cocotb (qloom.sim.simulate).

        x_int (or x_float, quantized first): the frames. out_dir: where to write the build
        dir (default: a temporary one, removed afterwards unless waves=True). Built simulators
        are cached by content hash in cache_dir (default $QLOOM_SIM_CACHE, else
        ~/.cache/qloom/sim when out_dir is temporary), so a second call with the same
        hardware does not rebuild. Returns simulate()'s dict: "outputs" (what the hardware
        produced), "bit_exact" (against self.reference), "ii_measured", "latency_cycles", ...
        """
        import os
        import pathlib
        import shutil
        import tempfile

        from qloom.sim import simulate as run_sim
        if x_int is None:
            if x_float is None:
                raise ValueError("simulate() needs x_int or x_float")
            x_int = self.quantize_input(x_float)
        tmp = out_dir is None
        out = pathlib.Path(tempfile.mkdtemp(prefix="qloom-sim-") if tmp else out_dir)
        if tmp and cache_dir is None and not os.environ.get("QLOOM_SIM_CACHE"):
            cache_dir = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "qloom" / "sim"
        try:
            self.save(out, x_int=np.asarray(x_int))
            res = run_sim(out, simulator=simulator, frames=frames, stall_prob=stall_prob, waves=waves,
                          seed=seed, driver=driver, cache_dir=cache_dir)
        finally:
            if tmp and not waves:
                shutil.rmtree(out, ignore_errors=True)
        return dataclasses.replace(res, build_dir=None if tmp and not waves else str(out))

    def synthesize(self, board: str = "icebreaker", out_dir=None, **kw) -> dict:
        """Synthesise, place and route for `board` (icebreaker, ulx3s, generic): qloom.boards.synthesize.

        out_dir: where the build dir and the tool files go (default: a new temporary dir).
        Returns utilisation, Fmax, the bitstream path, ...; raises boards.DoesNotFit when it overflows."""
        import tempfile

        from qloom import boards
        out = out_dir or tempfile.mkdtemp(prefix=f"qloom-synth-{board}-")
        return boards.synthesize(self, board=board, out_dir=out, folding=self._folding(), **kw)

    # ------------------------------------------------------------ graph edits
    def _append_argmax(self):
        g = self.graph
        why = self.frontend.argmax_refusal()
        if why:
            raise QuantError(f"argmax=True: {why}")
        node = ir.ArgMax("argmax", [g.output], "label")
        g.nodes.append(node)
        g.output = "label"
        g.validate()


def compile(model, example_input=None, *, name: str | None = None, requantize: bool = False,
            argmax: bool = False, check: bool = True, target_ii: int | None = None,
            folding: dict | None = None, frontend: str | None = None, **options) -> Accelerator:
    """Lower a quantized model to an Accelerator, picking the front end from what `model` is.

    model: a torch module of qloom.nn layers, a torch model converted by PyTorch's
        quantization API, or an ONNX model (a .onnx path, onnx.ModelProto or qonnx
        ModelWrapper) exported by Brevitas/QONNX or quantized by ONNX Runtime.
        `frontend` forces one ('qloom.nn', 'torch-int8', 'qonnx', 'onnx-int8').
    example_input: float inputs (batch first, the model's own layout). Needed for
        torch modules; for ONNX models optional (the importer makes inputs that
        cover the input codes when none are given).
    requantize: outputs of 5+ bits use a fixed-point Requantize instead of
        2**bits - 1 thresholds; its fidelity is measured (`acc.requantize_fidelity`).
    argmax: append an ArgMax (class label) to the graph.
    check: verify that the IR equals the source model on the example input
        (by construction for thresholds; a failure is a qloom bug and raises).
    target_ii, folding: how to fold the hardware (see Accelerator.fold).
    """
    from qloom.compiler import frontends
    kind = frontend or frontends.detect(model)
    if kind == "qloom.nn":
        if example_input is None:
            raise QuantError("compile(): a torch model needs example_input (a batch of float inputs)")
        example_input = torch.as_tensor(example_input, dtype=torch.float32)
    lowered = frontends.lower(model, example_input, frontend=kind, name=name or "qloom", requantize=requantize,
                              **options)
    acc = Accelerator(lowered, {"requantize": requantize, "argmax": argmax,
                                "target_ii": target_ii, "folding": folding})
    if check:
        x = example_input if example_input is not None else lowered.frontend.sample_inputs(256, seed=0)
        rep = acc.fidelity(x)
        acc.check_fidelity = rep
        if requantize:
            acc.requantize_fidelity = rep
        elif not rep.exact:
            raise QuantError(f"internal error: the IR differs from the source model ({kind}) on the example "
                             f"input: {rep}")
    return acc


def from_qonnx(model, example_input=None, **kw) -> Accelerator:
    """Import a QONNX model (a path, onnx.ModelProto or qonnx ModelWrapper; raw Brevitas export or
    cleaned with qonnx.util.cleanup): see qloom.compile for the options."""
    return compile(model, example_input, frontend="qonnx", **kw)


def from_brevitas(module, example_input, *, export_path=None, **kw) -> Accelerator:
    """Export a Brevitas module with `brevitas.export.export_qonnx` (see docs/importers.md for the
    exporter settings) and import the result; `export_path` keeps the .onnx file."""
    from qloom.compiler.frontends import qonnx_import
    return compile(qonnx_import.export_brevitas(module, example_input, export_path), example_input,
                   frontend="qonnx", **kw)


def from_torch_quantized(model, example_input, **kw) -> Accelerator:
    """Import a model converted by PyTorch's quantization API (eager, FX or PT2E)."""
    return compile(model, example_input, frontend="torch-int8", **kw)


def from_onnx(path, example_input=None, **kw) -> Accelerator:
    """Import an ONNX model: QONNX, or ONNX Runtime QDQ / QOperator (picked from its ops)."""
    return compile(path, example_input, **kw)
