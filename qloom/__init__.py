"""qloom: quantized networks to bit-exact streaming dataflow accelerators."""
from qloom import nn  # noqa: F401
from qloom.api import Accelerator, FidelityReport, compile  # noqa: F401

__version__ = "0.1.0"
__all__ = ["compile", "Accelerator", "FidelityReport", "nn"]
