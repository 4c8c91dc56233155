"""Quantization-aware layers: `QuantInput`, `QuantLinear`, `QuantConv2d`, `QuantAct`, `BinaryAct`, `QuantAdd`.

Defined in `qloom.compiler.nn` (the compiler lowers them); published here.
"""
from qloom.compiler.nn import (BinaryAct, QTensor, QuantAct, QuantError, QuantInput,  # noqa: F401
                               QuantAdd, QuantConv2d, QuantLinear, as_value)

__all__ = ["QuantInput", "QuantLinear", "QuantConv2d", "QuantAct", "BinaryAct", "QuantAdd", "QTensor", "QuantError",
           "as_value"]
