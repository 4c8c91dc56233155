"""What the QONNX importer's walk knows about each ONNX tensor (see qonnx_graph).

- `Const`: an initializer or anything computed from constants only (weights
  keep their integer codes and scales);
- `FloatIn`: the float graph input and the elementwise ops before its first
  quantizer (evaluated in software by `quantize_input`);
- `QAct`: integer codes in the IR (after a Quant/BipolarQuant/Trunc/MultiThreshold);
- `Tail`: an accumulator (MatMul/Gemm/Conv, or a pooled sum) with the float
  ops after it, evaluated with the executor's kernels on chosen accumulators.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..errors import QuantError
from .qonnx_quant import Quantizer, describe

SUPPORTED = ("Quant", "BipolarQuant", "Trunc", "MultiThreshold", "MatMul", "Gemm", "Conv", "Add", "Sub", "Mul",
             "Div", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten",
             "Reshape", "Transpose (of constants)", "Identity", "Dropout", "ops on constants only")
ELEMENTWISE = ("Add", "Sub", "Mul", "Div")
LAYOUT_OPS = ("Transpose", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze")   # keep weight codes
QUANTIZERS = ("Quant", "IntQuant", "BipolarQuant", "Trunc", "MultiThreshold")


def unsupported(node, why="is not supported"):
    return QuantError(f"{describe(node)} {why}; the QONNX importer supports {', '.join(SUPPORTED)}")


@dataclass
class Const:
    value: np.ndarray
    codes: np.ndarray | None = None      # integer weights (value = codes * scale), same shape as value
    scale: np.ndarray | None = None      # float32, broadcast to value's shape
    wtype: ir.ElemType | None = None


@dataclass
class FloatIn:
    """The float graph input and the software ops applied to it before quantization."""
    shape: tuple
    nodes: list = field(default_factory=list)     # (node, [inputs: None for the data, arrays for constants])


@dataclass
class QAct:
    tensor: str
    type: ir.TensorType
    quant: Quantizer
    perm: np.ndarray | None = None     # after a Flatten of a map: ONNX (C, H, W) index of each IR element

    @property
    def rank(self):
        return 4 if len(self.type.shape) == 3 else 2


@dataclass
class Tail:
    acc: str                           # IR accumulator tensor
    layer: ir.Node | None              # Dense, Conv2d or SumPool (None: codes of a QAct)
    in_type: ir.TensorType | None      # the layer's input type (for accumulator bounds)
    start: object                      # IR acc (M, C) int64 -> float32 (M, C): the first float value
    rank: int                          # ONNX rank of the float tensor (2 or 4)
    where: str
    nodes: list = field(default_factory=list)   # (node, inputs with None for the data)
    code_type: ir.TensorType | None = None      # for code tails: the codes' type (bounds)
    perm: np.ndarray | None = None
    maxpooled: bool = False
    params: dict = field(default_factory=dict)  # p, bias, offset per channel (argmax check, describe)
    start_rank: int = 0                         # rank of the first value (a Flatten may come later)

    def value(self, acc2d, runner) -> np.ndarray:
        """The float tensor (IR channel order, (M, C)) for IR accumulators (M, C)."""
        acc2d = np.asarray(acc2d, dtype=np.int64)
        if self.perm is not None:            # columns in ONNX order for the executor's constants
            acc2d = acc2d[:, np.argsort(self.perm)]
        return self.after_start(self.start(acc2d), runner)

    def after_start(self, v, runner) -> np.ndarray:
        """The tail's ops on first float values v (M, C) in ONNX channel order; result in IR order."""
        if (self.start_rank or self.rank) == 4:
            v = v.reshape(v.shape + (1, 1))
        for node, ins in self.nodes:
            v = runner.run(node, [v if x is None else x for x in ins])
        v = v.reshape(v.shape[0], -1)
        return v[:, self.perm] if self.perm is not None else v

    def bounds(self):
        if self.layer is not None:
            from .base import channel_bounds
            return channel_bounds(self.layer, self.in_type)
        t = self.code_type
        c = t.shape[-1]
        return np.full(c, t.dtype.min, dtype=np.int64), np.full(c, t.dtype.max, dtype=np.int64)


def to_ir_layout(v, rank, perm):
    """ONNX layout (NCHW maps, flattened maps in (C, H, W) order) -> the IR's (channels last)."""
    v = np.asarray(v)
    if rank == 4:
        v = v.transpose(0, 2, 3, 1)
    return v[:, perm] if perm is not None else v


def from_ir_layout(v, rank, perm):
    v = np.asarray(v)
    if perm is not None:
        v = v[:, np.argsort(perm)]
    return v.transpose(0, 3, 1, 2) if rank == 4 else v
