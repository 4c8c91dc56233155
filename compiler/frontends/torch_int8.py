"""PyTorch int8 front end: models converted by PyTorch's quantization API, eager and FX modes
(fbgemm, qnnpack, x86, onednn engines); PT2E graphs go to torch_int8_pt2e.

The converted model is walked as an fx graph (eager models are traced; quantized modules are
leaves). Each quantized Linear/Conv2d becomes a Dense/Conv2d on the input codes, whose
requantization (scales, bias, zero points, fused ReLU, and any relu / dequantize->quantize
steps after it) is found by probing the module's own kernel on chosen accumulators
(int8_common). Quantized max pools are exact on codes; average pools are probed the same way.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.ao.nn.quantized as nnq
import torch.fx
from torch import nn

from . import int8_common as common
from .base import Frontend, Lowered, QuantError, SourceOutput
from .torch_int8_fx import (FxEval, engine, node_label, qrange, quantized, record, target_name,  # noqa: F401
                            trace)
from .torch_int8_walk import _Walk


class TorchInt8(Frontend):
    """The float side of a converted torch model: its own input quantizer, dequantize and forward."""
    kind = "torch-int8"

    def __init__(self, gm, walk: _Walk, api: str, engine_name: str, example_shape):
        self.model, self.gm, self.api, self.engine = gm, gm, api, engine_name
        self.walk = walk
        self.eval = FxEval(gm)
        self.placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
        self.example_shape = tuple(example_shape)
        self.in_like = walk.values[walk.input_node]
        self.out_like = walk.values[walk.codes_node]
        self.aliases = walk.chain.aliases
        self.report = walk.chain.report
        self.exact = not any(r.get("not_a_function_of_the_sum") for r in self.report)

    def _run(self, x_float, nodes):
        x = torch.as_tensor(np.asarray(x_float), dtype=torch.float32)
        with engine(self.engine), torch.no_grad():
            env = self.eval.run(nodes, {self.placeholder: x})
        return env

    @staticmethod
    def codes_of(t) -> np.ndarray:
        """A runtime tensor's integer codes."""
        return (t.int_repr() if t.is_quantized else t).numpy().astype(np.int64)

    @staticmethod
    def tensor_of(codes, like):
        """Codes as the runtime's tensor (like `like`)."""
        return quantized(codes, like)

    def quantize_input(self, x_float) -> np.ndarray:
        q = self._run(x_float, [self.walk.input_node])[self.walk.input_node]
        return common.to_ir_layout(self.codes_of(q), self.aliases[self.walk.input_node.name][1])

    def dequantize(self, y_int) -> np.ndarray:
        y = common.from_ir_layout(y_int, self._out_layout(), self.out_like.shape[1:])
        if not self.walk.tail:
            t = self.tensor_of(y, self.out_like)
            return (t.dequantize() if t.is_quantized else t).numpy()
        with engine(self.engine), torch.no_grad():
            env = self.eval.run(self.walk.tail, {self.walk.codes_node: self.tensor_of(y, self.out_like)})
        return env[self.walk.tail[-1]].numpy()

    def _out_layout(self):
        return self.aliases[self.walk.codes_node.name][1]

    def layer_codes(self, x_float) -> dict:
        """Runtime codes of every tensor the IR also holds, in the IR's layout: {IR tensor: codes}."""
        nodes = [n for n in self.gm.graph.nodes if n.name in self.aliases]
        env = self._run(x_float, nodes)
        return {self.aliases[n.name][0]: common.to_ir_layout(self.codes_of(env[n]), self.aliases[n.name][1])
                for n in nodes}

    def source_outputs(self, x_float, argmax: bool) -> SourceOutput:
        if argmax:
            out = self._run(x_float, [self.walk.output_node])[self.walk.output_node]
            out = out[0] if isinstance(out, (tuple, list)) else out
            out = out.dequantize() if out.is_quantized else out
            return SourceOutput("labels", out.flatten(1).argmax(dim=1).numpy()[:, None])
        q = self._run(x_float, [self.walk.codes_node])[self.walk.codes_node]
        return SourceOutput("codes", common.to_ir_layout(self.codes_of(q), self._out_layout()))

    def sample_inputs(self, n: int, seed: int = 0) -> np.ndarray:
        codes = common.sample_codes(n, self.in_like.shape[1:], *self.input_range(), seed=seed)
        x = self.dequantize_input(codes)
        if x.size // n != int(np.prod(self.example_shape[1:])):
            raise QuantError("the model transforms its input before quantizing it; give example_input")
        return x.reshape((n,) + self.example_shape[1:])

    def input_range(self):
        return qrange(self.in_like)

    def dequantize_input(self, codes):
        return quantized(codes, self.in_like).dequantize().numpy()

    def argmax_refusal(self) -> str | None:
        ok = ("softmax", "log_softmax", "_softmax", "_log_softmax", "flatten", "view", "reshape", "dequantize",
              "dequantize_per_tensor", "contiguous")
        for n in self.walk.tail:
            k = self.walk.kind(n)
            if not (isinstance(k, (nn.Softmax, nn.LogSoftmax, nn.Flatten, nnq.DeQuantize, nn.Identity)) or k in ok):
                return (f"the model ends in float operation {node_label(n, self.gm)} after its last quantized layer; "
                        f"an argmax over the codes could pick another class")
        return None

    def describe(self) -> dict:
        return {"frontend": self.kind, "api": self.api, "engine": self.engine,
                "requantization": common.describe_report(self.report), "layers": self.report}


def lower(model, example_input=None, name: str = "qloom", requantize: bool = False, method: str = "auto",
          **options) -> Lowered:
    """Lower a model converted by torch.ao.quantization (eager/FX) or torchao PT2E to the IR.

    method: 'auto' (a fixed-point Requantize where it is exact, else thresholds), 'thresholds' or
    'requantize' (an error where no exact Requantize exists). `requantize` is accepted for API
    symmetry: int8 requantization is always exact here.
    """
    if example_input is None:
        raise QuantError("from_torch_quantized needs example_input (a batch of float inputs)")
    if options:
        raise QuantError(f"unknown option(s) for the torch-int8 front end: {', '.join(sorted(options))}")
    gm = trace(model)
    is_pt2e = any(n.op == "call_function" and "quantized_decomposed" in str(n.target) or "torchao" in str(n.target)
                  for n in gm.graph.nodes)
    if is_pt2e:                          # exported graphs refuse .eval(); they are in eval form already
        from . import torch_int8_pt2e
        return torch_int8_pt2e.lower(gm, example_input, name=name, method=method)
    if not any(isinstance(gm.get_submodule(n.target), nnq.Quantize) if n.op == "call_module" else
               target_name(n) in ("quantize_per_tensor", "quantize_per_tensor_dynamic") for n in gm.graph.nodes
               if n.op in ("call_module", "call_function")):
        dynamic = any(".dynamic" in type(m).__module__ for m in gm.modules())
        raise QuantError("the model is dynamically quantized (quantize_dynamic); qloom imports statically quantized "
                         "models" if dynamic else "the model never quantizes its input (no QuantStub/quantize_per_"
                         "tensor): give a model converted by torch.ao.quantization (convert, convert_fx) or PT2E")
    model.eval()
    eng = torch.backends.quantized.engine
    with engine(eng):
        values = record(gm, example_input)
        walk = _Walk(gm, values, name, method)
        for node in gm.graph.nodes:
            walk.step(node)
        graph = walk.chain.finish()
    api = "fx" if isinstance(model, torch.fx.GraphModule) else "eager"
    return Lowered(graph, TorchInt8(gm, walk, api, eng, torch.as_tensor(example_input).shape))
