"""Front ends: each lowers one kind of source model to the integer IR (base.py holds the contract).

| module          | source                                                    | entry            |
|-----------------|-----------------------------------------------------------|------------------|
| torch_nn        | a torch model of qloom.nn layers (torch.fx)               | qloom.compile    |
| qonnx_import    | QONNX (Brevitas export: Quant, BipolarQuant, Trunc, ...)  | qloom.from_qonnx |
| torch_int8      | PyTorch quantization API (eager, FX, PT2E)                | from_torch_quantized |
| onnx_int8       | ONNX Runtime QDQ and QOperator models                     | qloom.from_onnx  |

`detect(source)` names the front end for a source; `lower(...)` runs it. Each
front-end module exposes `lower(source, example_input=None, name=..., **options)
-> Lowered` and is imported only when used (onnx, qonnx and brevitas are optional).
"""
from __future__ import annotations

import importlib
import pathlib

from .base import QuantError

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "qonnx", "finn")
QONNX_OPS = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold", "IntQuant", "FloatQuant")
ONNX_INT8_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
                 "QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool", "MatMulInteger",
                 "ConvInteger", "DynamicQuantizeLinear")
MODULES = {"qloom.nn": "torch_nn", "qonnx": "qonnx_import", "torch-int8": "torch_int8",
           "onnx-int8": "onnx_int8"}


def load_onnx(source):
    """An onnx.ModelProto from a path, a ModelProto, or a qonnx ModelWrapper."""
    try:
        import onnx
    except ImportError as e:
        raise QuantError("importing ONNX models needs the onnx package: pip install 'qloom[onnx]'") from e
    if isinstance(source, onnx.ModelProto):
        return source
    if hasattr(source, "model") and isinstance(getattr(source, "model"), onnx.ModelProto):
        return source.model                                 # qonnx ModelWrapper
    p = pathlib.Path(source)
    if not p.is_file():
        raise QuantError(f"ONNX model {str(source)!r}: no such file")
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise QuantError(f"ONNX model {str(source)!r} could not be read: {type(e).__name__}: {e}") from None


def detect_onnx(model) -> str:
    """'qonnx' or 'onnx-int8' from the ops an ONNX model holds."""
    ops = {(n.domain or "", n.op_type) for n in model.graph.node}
    if any(op in QONNX_OPS or d.startswith(QONNX_DOMAINS) for d, op in ops):
        return "qonnx"
    if any(op in ONNX_INT8_OPS for _, op in ops):
        return "onnx-int8"
    found = ", ".join(sorted({op for _, op in ops})[:12]) or "no nodes"
    raise QuantError(f"the ONNX model holds no quantization ops ({found}); qloom imports QONNX "
                     f"(Quant/BipolarQuant/MultiThreshold, e.g. Brevitas exports) and ONNX Runtime QDQ/QOperator "
                     f"models ({', '.join(ONNX_INT8_OPS[:5])}, ...); a float ONNX model must be quantized first")


def detect(source) -> str:
    """The front end for `source`: 'qloom.nn', 'torch-int8', 'qonnx' or 'onnx-int8'."""
    import torch
    if isinstance(source, torch.nn.Module):
        if _is_torch_quantized(source):
            return "torch-int8"
        return "qloom.nn"
    if isinstance(source, (str, pathlib.PurePath)) or type(source).__name__ in ("ModelProto", "ModelWrapper"):
        return detect_onnx(load_onnx(source))
    raise QuantError(f"cannot compile a {type(source).__module__}.{type(source).__qualname__}: give a torch "
                     f"module (qloom.nn layers or a model converted by PyTorch's quantization API), or an "
                     f"ONNX model (a .onnx path, onnx.ModelProto or qonnx ModelWrapper)")


def _is_torch_quantized(model) -> bool:
    """True for a model converted by PyTorch's quantization API (eager, FX or PT2E)."""
    import torch
    for m in model.modules():
        mod = type(m).__module__
        if mod.startswith(("torch.ao.nn.quantized", "torch.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
            return True
    if isinstance(model, torch.fx.GraphModule):
        for n in model.graph.nodes:
            t = n.target
            name = getattr(t, "__name__", str(t))
            if "quantize_per_tensor" in name or "quantize_per_channel" in name or "dequantize" in name:
                return True
    return False


def lower(source, example_input=None, *, frontend: str | None = None, **options):
    """Lower `source` with the front end `frontend` (default: detect(source))."""
    kind = frontend or detect(source)
    if kind not in MODULES:
        raise QuantError(f"unknown front end {kind!r}; known: {', '.join(MODULES)}")
    mod = importlib.import_module(f"{__name__}.{MODULES[kind]}")
    return mod.lower(source, example_input, **options)
