"""Kernels: one class per hardware operator (see base.py). Importing this package registers them all."""
from . import add, argmax, concat, mvu, pool, requantize, threshold, vvu  # noqa: F401  (registration)
from .base import (BRAM18, DP16KD, EBR, ElementwiseKernel, FoldingError, Kernel, MemoryModel, NodeKernel, REGISTRY,  # noqa: F401
                   Resources, divisors, kernel_for)
from .fork import ForkKernel  # noqa: F401
from .mvu import MVUKernel, conv_matrix  # noqa: F401
from .plumbing import FIFOKernel, WidthKernel  # noqa: F401
from .swg import SWGKernel  # noqa: F401
