"""qloom: quantized networks to bit-exact streaming dataflow accelerators.

`qloom.compile`, `qloom.Accelerator` and `qloom.nn` load torch on first use, so
commands that need no torch (`qloom sim`) start fast. The error classes
(`qloom.QloomError` and its subclasses, docs/errors.md) import nothing heavy.
"""
__version__ = "0.2.0"
_API = ("compile", "from_qonnx", "from_brevitas", "from_torch_quantized", "from_onnx", "Accelerator",
        "FidelityReport")
_PTQ = ("quantize", "finetune", "sensitivity", "allocate_bits")
_ERRORS = {"QloomError": "qloom.compiler.errors", "BadInput": "qloom.compiler.errors",
           "QuantError": "qloom.compiler.errors", "NotBitExact": "qloom.compiler.errors",
           "DoesNotFitError": "qloom.compiler.errors", "ToolFailure": "qloom.compiler.errors",
           "InternalError": "qloom.compiler.errors", "IRError": "qloom.compiler.ir",
           "FoldingError": "qloom.hdl.kernels.base", "BuildDirError": "qloom.compiler.builddir",
           "SimError": "qloom.sim.errors", "SynthError": "qloom.boards.errors", "DoesNotFit": "qloom.boards.errors"}
__all__ = list(_API) + ["nn", "explore"] + list(_PTQ) + list(_ERRORS)


def __getattr__(name):
    import importlib
    if name in _API:
        from qloom import api
        return getattr(api, name)
    if name in _PTQ:
        from qloom.compiler import ptq
        return getattr(ptq, name)
    if name in _ERRORS:
        return getattr(importlib.import_module(_ERRORS[name]), name)
    if name in ("nn", "explore"):
        return importlib.import_module(f"qloom.{name}")
    raise AttributeError(f"module 'qloom' has no attribute {name!r}")
