"""Quantization-aware layers: `QuantInput`, `QuantLinear`, `QuantAct`, `BinaryAct`.

Defined in `qloom.compiler.nn` (the compiler lowers them); published here.
"""
from qloom.compiler.nn import (BinaryAct, QTensor, QuantAct, QuantError, QuantInput,  # noqa: F401
                               QuantConv2d, QuantLinear, as_value)

__all__ = ["QuantInput", "QuantLinear", "QuantConv2d", "QuantAct", "BinaryAct", "QTensor", "QuantError", "as_value"]
