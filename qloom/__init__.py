"""qloom: quantized networks to bit-exact streaming dataflow accelerators.

`qloom.compile`, `qloom.Accelerator` and `qloom.nn` load torch on first use, so
commands that need no torch (`qloom sim`) start fast.
"""
__version__ = "0.1.0"
__all__ = ["compile", "Accelerator", "FidelityReport", "nn", "quantize", "finetune", "sensitivity",
           "allocate_bits"]


def __getattr__(name):
    if name in ("compile", "Accelerator", "FidelityReport"):
        from qloom import api
        return getattr(api, name)
    if name in ("quantize", "finetune", "sensitivity", "allocate_bits"):
        from qloom.compiler import ptq
        return getattr(ptq, name)
    if name == "nn":
        import importlib
        return importlib.import_module("qloom.nn")
    raise AttributeError(f"module 'qloom' has no attribute {name!r}")
