"""The Python API: `qloom.compile(model, example_input) -> Accelerator`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from qloom.compiler import ir, reference
from qloom.compiler.errors import InternalError, NotBitExact, QuantError
from qloom.compiler.frontends.base import Lowered


@dataclass
class FidelityReport:
    """How the IR's outputs compare with the source model's on the same inputs.

    compared: codes | labels | accumulators (float outputs, with the accumulator they came from) |
    floats (float outputs without an accumulator to count LSBs against). max_lsb is None where
    LSBs cannot be counted; max_rel is the largest |difference| relative to the frame's largest
    |output| (float outputs only)."""
    frames: int
    elements: int
    mismatches: int
    max_lsb: int | None
    lsb_histogram: dict = field(default_factory=dict)   # |difference in LSBs| -> count (nonzero only)
    compared: str = "codes"
    max_rel: float | None = None

    @property
    def exact(self) -> bool:
        return self.mismatches == 0

    @property
    def fidelity(self) -> float:
        return 1.0 - self.mismatches / max(self.elements, 1)

    def within(self, tolerance: dict) -> bool:
        """Whether the differences stay inside `tolerance`: {"max_lsb": int, "max_rel": float,
        "share": float (largest share of differing elements)}; absent keys do not limit."""
        if self.exact:
            return True
        if "share" in tolerance and self.mismatches / max(self.elements, 1) > tolerance["share"]:
            return False
        if "max_lsb" in tolerance and (self.max_lsb is None or self.max_lsb > tolerance["max_lsb"]):
            return False
        if "max_rel" in tolerance and (self.max_rel is None or self.max_rel > tolerance["max_rel"]):
            return False
        return bool(tolerance)

    def __str__(self):
        s = (f"fidelity {100 * self.fidelity:.4f}%: {self.mismatches} of {self.elements} output "
             f"{self.compared} differ over {self.frames} frames")
        if self.mismatches:
            if self.max_lsb is not None:
                s += f" (max {self.max_lsb} LSB; histogram {dict(sorted(self.lsb_histogram.items()))})"
            if self.max_rel is not None:
                s += f" (max relative difference {self.max_rel:.3g})"
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
        from qloom import checks
        return np.asarray(self.frontend.quantize_input(checks.float_batch(x_float, "float input")), dtype=np.int64)

    def reference(self, x_int, return_all: bool = False):
        """Run the golden integer model on integer inputs (batch first)."""
        return reference.run(self.graph, x_int, return_all=return_all)

    def dequantize(self, y_int) -> np.ndarray:
        """The float values of the IR's outputs, as the source model gives them (labels as they are)."""
        if self.argmax:
            return np.asarray(y_int)
        return self.frontend.dequantize(y_int)

    def predict(self, x_float) -> np.ndarray:
        """Float inputs in, the source model's outputs out (floats, or labels with argmax) in the source's
        layout (NCHW maps for a torch CNN), computed by the integer reference model: what the hardware
        gives, dequantized."""
        return self.to_source_layout(self.dequantize(self.reference(self.quantize_input(x_float))))

    def to_source_layout(self, y) -> np.ndarray:
        """IR outputs (maps channels-last: N, H, W, C) in the source model's layout (N, C, H, W for maps
        of an NCHW source); vectors and labels are unchanged. reference(), quantize_input() and
        simulate() speak the IR's layout."""
        y = np.asarray(y)
        if y.ndim == 4 and self.frontend.source_layout == "nchw":
            return y.transpose(0, 3, 1, 2)
        return y

    def fidelity(self, x_float) -> FidelityReport:
        """Compare the source model and the IR on the float inputs `x_float`, every output element."""
        src = self.frontend.source_outputs(x_float, self.argmax)
        want = src.values
        got = self.reference(self.quantize_input(x_float))
        max_rel = None
        if src.compared == "floats":
            got_f = self.dequantize(got)
            diff = want != got_f
            d = np.abs(want.astype(np.float64) - got_f).reshape(len(got), -1)
            scale = np.maximum(np.abs(want.astype(np.float64)).reshape(len(got), -1).max(axis=1, keepdims=True),
                               np.finfo(np.float32).tiny)
            max_rel = float((d / scale).max(initial=0.0))
            lsb = None if src.acc is None else np.where(diff, np.maximum(np.abs(src.acc - got), 1), 0)
            compared = "floats" if src.acc is None else "accumulators"
        else:
            diff = want != got
            lsb = diff.astype(np.int64) if src.compared == "labels" else np.abs(want.astype(np.int64) - got)
            compared = src.compared
        hist = {}
        if lsb is not None:
            vals, counts = np.unique(lsb[lsb > 0], return_counts=True)
            hist = {int(v): int(c) for v, c in zip(vals, counts)}
        return FidelityReport(frames=got.shape[0], elements=int(got.size), mismatches=int(diff.sum()),
                              max_lsb=None if lsb is None else int(lsb.max(initial=0)), lsb_histogram=hist,
                              compared=compared, max_rel=max_rel)

    def analyze(self, x_float, float_model=None, out_dir=None, plots: bool = True):
        """Quantization error analysis on float inputs (qloom.compiler.analysis): per layer SQNR
        against `float_model` (when given), clipped shares, rounding vs clipping error, the
        accumulators' used range vs their width, and (with out_dir) PNG histograms of weights and
        activations with the quantization grid. Returns an AnalysisReport (print it for a table)."""
        from qloom.compiler import analysis
        return analysis.analyze(self, x_float, float_model=float_model, out_dir=out_dir, plots=plots)

    # ------------------------------------------------------------ hardware
    def fold(self, target_ii: int | None = None, folding: dict | None = None) -> dict:
        """Choose PE/SIMD per layer (cheapest that meets target_ii; `folding` entries are taken as given:
        {"layer": {"pe": P, "simd": S}}, keys in any case as FINN's PE/SIMD)."""
        from qloom import checks
        from qloom.hdl import folding as folding_mod
        self.folding = folding_mod.fold(self.graph, target_ii=checks.target_ii(target_ii),
                                        manual=checks.folding_spec(folding))
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
        hardware does not rebuild. Returns a qloom.sim.SimResult: .outputs (what the hardware
        produced, the IR's layout), .bit_exact (against self.reference), .ii_measured,
        .latency_cycles, ... (.to_dict() is the JSON `qloom sim --json` prints).
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
        if len(g.output_type.shape) > 1:            # e.g. (1, 1, C) after a global pool: torch flattens too
            g.nodes.append(ir.Flatten("argmax:flatten", [g.output], "argmax:in"))
            g.output = "argmax:in"
        node = ir.ArgMax("argmax", [g.output], "label")
        g.nodes.append(node)
        g.output = "label"
        g.validate()


def compile(model, example_input=None, *, name: str | None = None, requantize: bool = False,
            argmax: bool = False, check: bool = True, target_ii: int | None = None,
            folding: dict | None = None, frontend: str | None = None, tolerance: dict | None = None,
            **options) -> Accelerator:
    """Lower a quantized model to an Accelerator, picking the front end from what `model` is.

    model: a torch module of qloom.nn layers, a torch model converted by PyTorch's
        quantization API, or an ONNX model (a .onnx path, onnx.ModelProto or qonnx
        ModelWrapper) exported by Brevitas/QONNX or quantized by ONNX Runtime.
        `frontend` forces one ('qloom.nn', 'torch-int8', 'qonnx', 'onnx-int8').
    example_input: float inputs (batch first, the model's own layout). Needed for
        torch modules; for ONNX models optional (the importer makes inputs that
        cover the input codes when none are given).
    requantize: a quantizer with 5+ bit outputs becomes a fixed-point Requantize instead of
        2**bits - 1 thresholds where one reproduces the thresholds exactly (found from them:
        exact by construction); elsewhere the thresholds stay. `acc.frontend.describe()["layers"]`
        says which each layer got.
    argmax: append an ArgMax (class label) to the graph.
    check: compare the IR with the source model on the example input (`acc.check_fidelity`).
        Where the front end is exact by construction a difference raises InternalError; else
        it is reported (a FidelityWarning), or raises NotBitExact beyond `tolerance`
        ({"max_lsb": n, "max_rel": r, "share": s}).
    target_ii, folding: how to fold the hardware (see Accelerator.fold).
    """
    from qloom import checks
    from qloom.compiler import frontends
    kind = frontend or frontends.detect(model)
    target_ii, folding = checks.target_ii(target_ii), checks.folding_spec(folding)
    if example_input is not None:
        example_input = torch.as_tensor(checks.float_batch(example_input))
    elif kind in ("qloom.nn", "torch-int8"):
        raise QuantError("compile(): a torch model needs example_input (a batch of float inputs)")
    lowered = frontends.lower(model, example_input, frontend=kind, name=name or "qloom", requantize=requantize,
                              **options)
    acc = Accelerator(lowered, {"requantize": requantize, "argmax": argmax,
                                "target_ii": target_ii, "folding": folding})
    acc.check_fidelity = None
    if check:
        x = example_input if example_input is not None else lowered.frontend.sample_inputs(256, seed=0)
        rep = acc.check_fidelity = acc.fidelity(x)
        if requantize:
            acc.requantize_fidelity = rep
        _judge_fidelity(rep, lowered.frontend, kind, tolerance)
    return acc


def _judge_fidelity(rep: FidelityReport, fe, kind: str, tolerance: dict | None) -> None:
    """Raise where the IR differs from the source beyond what is allowed; warn where it differs within it.

    A front end that is exact by construction (qloom.nn thresholds; QONNX with power-of-two scales;
    int8 runtimes whose arithmetic is reproduced) may not differ at all: a difference is a qloom bug.
    Others (float-scale QONNX, PT2E, some ORT kernels, docs/importers.md) are measured and reported."""
    if rep.exact:
        return
    if fe.exact_by_construction:
        raise InternalError(f"the IR differs from the source model ({kind}) on the example input, which "
                            f"cannot happen by construction: {rep}")
    if tolerance is not None and not rep.within(tolerance):
        raise NotBitExact(f"the IR differs from the source model ({kind}) beyond tolerance {tolerance}: {rep}")
    import warnings
    warnings.warn(f"{kind}: the source's arithmetic is not reproducible exactly here (docs/importers.md); "
                  f"measured on the check inputs: {rep}", FidelityWarning, stacklevel=3)


class FidelityWarning(UserWarning):
    """The IR is not bit-exact with its source where that is not possible by construction (measured)."""


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
