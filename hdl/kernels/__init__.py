"""Kernels: one class per hardware operator (see base.py). Importing this package registers them all."""
from . import argmax, mvu, pool, requantize, threshold  # noqa: F401  (registration)
from .base import (BRAM18, EBR, ElementwiseKernel, FoldingError, Kernel, MemoryModel, NodeKernel, REGISTRY,  # noqa: F401
                   Resources, divisors, kernel_for)
from .mvu import MVUKernel, conv_matrix  # noqa: F401
from .plumbing import FIFOKernel, WidthKernel  # noqa: F401
from .swg import SWGKernel  # noqa: F401
