"""The Python API: `qloom.compile(model, example_input) -> Accelerator`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from qloom.compiler import frontend, ir, reference
from qloom.compiler.nn import QTensor, QuantAct, QuantError


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
    """A compiled network: the IR graph plus the glue between floats and integers."""

    def __init__(self, model, lowered: frontend.Lowered, options: dict):
        self.model = model
        self.graph = lowered.graph
        self.input_quant = lowered.input_quant
        self.output_tail = lowered.output_tail
        self.output_quant = lowered.output_quant
        self.channels_last_input = lowered.channels_last_input
        self.options = options
        self.argmax = bool(options.get("argmax"))
        if self.argmax:
            self._append_argmax()

    # ------------------------------------------------------------ numerics
    def quantize_input(self, x_float) -> np.ndarray:
        """Integer input codes (int64) for float inputs, exactly as the model's QuantInput makes them."""
        with torch.no_grad():
            codes = self.input_quant.codes(torch.as_tensor(x_float))
        if self.channels_last_input:
            codes = codes.permute(0, 2, 3, 1)          # NCHW -> the IR's (H, W, C)
        return codes.numpy()

    def reference(self, x_int, return_all: bool = False):
        """Run the golden integer model on integer inputs (batch first)."""
        return reference.run(self.graph, x_int, return_all=return_all)

    def dequantize(self, y_int) -> np.ndarray:
        """The float values of the IR's outputs (labels are returned as they are)."""
        if self.argmax:
            return np.asarray(y_int)
        if self.output_tail is not None:
            return self.output_tail.float_out(torch.as_tensor(np.asarray(y_int))).numpy()
        if self.output_quant is not None:
            s = self.output_quant.scale() if isinstance(self.output_quant, QuantAct) else torch.ones(())
            return np.asarray(y_int, dtype=np.float32) * s.detach().to(torch.float32).numpy()
        return (np.asarray(y_int) - self.input_quant.zero_point) * float(self.input_quant.scale)

    def _torch_side(self, x_float):
        """What the torch eval model computes, in the IR's output terms: (values, lsb units)."""
        self.model.eval()
        with torch.no_grad():
            out = self.model(torch.as_tensor(x_float, dtype=torch.float32))
        nhwc = (lambda t: t.permute(0, 2, 3, 1) if t.dim() == 4 else t)  # noqa: E731
        if self.argmax:
            v = out.value if isinstance(out, QTensor) else out
            return v.flatten(1).argmax(dim=1).numpy()[:, None], None
        if isinstance(out, QTensor):
            return nhwc(out.code).numpy(), None
        acc = getattr(self.output_tail.layer, "last_acc", None)
        acc = None if acc is None else nhwc(acc).to(torch.int64).numpy()
        return nhwc(out).numpy(), acc

    def fidelity(self, x_float) -> FidelityReport:
        """Compare torch eval and the IR on the float inputs `x_float`, every output element."""
        want, want_acc = self._torch_side(x_float)
        got = self.reference(self.quantize_input(x_float))
        if self.output_tail is not None and not self.argmax:
            got_f = self.dequantize(got)
            diff = want != got_f
            t = self.output_tail
            lsb = np.ones_like(got) if want_acc is None else np.abs(want_acc - (got * t.sign + t.offset))
            compared = "accumulators"
        else:
            diff = want != got
            lsb = np.abs(want.astype(np.int64) - got)
            compared = "labels" if self.argmax else "codes"
        lsb = np.where(diff, np.maximum(lsb, 1), 0) if compared != "labels" else diff.astype(np.int64)
        vals, counts = np.unique(lsb[lsb > 0], return_counts=True)
        return FidelityReport(frames=got.shape[0], elements=int(got.size), mismatches=int(diff.sum()),
                              max_lsb=int(lsb.max(initial=0)),
                              lsb_histogram={int(v): int(c) for v, c in zip(vals, counts)},
                              compared=compared)

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
        from qloom.compiler import folding as folding_mod
        self.folding = folding_mod.fold(self.graph, target_ii=target_ii, manual=folding)
        return self.folding

    def estimate(self) -> dict:
        """Cycles, II, latency and LUT/FF/BRAM/DSP estimates for the current folding."""
        from qloom.compiler import folding as folding_mod
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

    def save(self, out_dir, x_float=None, x_int=None, name: str = "qloom_top") -> dict:
        """Write the build dir: accelerator.v, manifest.json and, given inputs, test vectors."""
        from qloom.hdl import emit
        if x_int is None and x_float is not None:
            x_int = self.quantize_input(x_float)
        return emit.write_build_dir(out_dir, self.graph, self._folding(), x_int, name)

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
        res["build_dir"] = None if tmp and not waves else str(out)
        return res

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
        if self.output_tail is not None:
            t = self.output_tail
            layer = t.layer
            scales = layer.quant_weight()[1].reshape(-1)
            same = bool((scales == scales[0]).all()) and (t.sign == 1).all()
            if t.modules or layer.bias is not None or not same or t.wide or (t.offset != 0).any():
                raise QuantError(
                    f"argmax=True: the model ends in '{t.layer_name}' whose float output is not the same "
                    f"increasing function of the accumulator for every class (it has a bias, batch norm, "
                    f"per-channel scales or an input zero point), so a hardware argmax over accumulators "
                    f"could pick another class than torch; end the model with a QuantAct, or drop those")
        node = ir.ArgMax("argmax", [g.output], "label")
        g.nodes.append(node)
        g.output = "label"
        g.validate()


def compile(model: torch.nn.Module, example_input, *, name: str = "qloom", requantize: bool = False,
            argmax: bool = False, check: bool = True, target_ii: int | None = None,
            folding: dict | None = None) -> Accelerator:
    """Lower a model of qloom.nn layers to an Accelerator.

    requantize: outputs of 5+ bits use a fixed-point Requantize instead of
        2**bits - 1 thresholds; its fidelity is measured (`acc.requantize_fidelity`).
    argmax: append an ArgMax (class label) to the graph.
    check: verify on `example_input` that the IR equals torch eval (always true for
        thresholds; a failure is a qloom bug and raises).
    target_ii, folding: how to fold the hardware (see Accelerator.fold).
    """
    example_input = torch.as_tensor(example_input, dtype=torch.float32)
    lowered = frontend.lower(model, example_input, name=name, requantize=requantize)
    acc = Accelerator(model, lowered, {"requantize": requantize, "argmax": argmax,
                                       "target_ii": target_ii, "folding": folding})
    if check:
        rep = acc.fidelity(example_input)
        if requantize:
            acc.requantize_fidelity = rep
        elif not rep.exact:
            raise QuantError(f"internal error: the IR differs from torch eval on the example input: {rep}")
    return acc
