"""Validation at the boundaries, before any work starts: fold specs, example inputs, spec results, CLI values.

Every check raises a `BadInput` whose one line names the offending value and what would be
accepted (docs/errors.md). Nothing here imports torch at module level.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from qloom.compiler.errors import BadInput

FOLD_KEYS = {"pe": "pe", "simd": "simd"}          # lower-cased spellings (FINN writes PE / SIMD)
FINN_IGNORED = ("defaults",)                       # FINN folding files carry a "Defaults" entry


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (numbers.Integral, str)):
        raise BadInput(f"{what} must be a positive integer, got {v!r}")
    if isinstance(v, str):
        if not v.strip().isdigit():
            raise BadInput(f"{what} must be a positive integer, got {v!r}")
        v = int(v)
    if int(v) < 1:
        raise BadInput(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def _layer_options() -> dict:
    """Per-layer implementation options a folding entry may carry besides pe/simd (hdl/kernels/mvu.OPTIONS:
    where the weights and input buffer go, buffer banks, memory register), as `qloom compile --board` writes."""
    from qloom.hdl.kernels.mvu import OPTIONS
    return OPTIONS


def folding_spec(obj) -> dict:
    """{layer: {"pe": P, "simd": S}} from a user's folding (the --fold file or the folding= argument).

    Keys pe/simd in any case (FINN's PE/SIMD too); a FINN "Defaults" entry is ignored; anything
    else, and any value that is not a positive integer (2.7, "x", true, 0, -1), is refused."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BadInput(f"a folding must be an object {{\"layer\": {{\"pe\": P, \"simd\": S}}}}, "
                       f"got {type(obj).__name__}")
    out = {}
    for layer, f in obj.items():
        if str(layer).lower() in FINN_IGNORED:
            continue
        if not isinstance(f, dict):
            raise BadInput(f"folding of layer '{layer}' must be an object like {{\"pe\": 2, \"simd\": 4}}, got {f!r}")
        entry = {}
        for k, v in f.items():
            if str(k) in _layer_options():          # device options (weights, ibuf, ...): the kernel checks them
                entry[str(k)] = v
                continue
            key = FOLD_KEYS.get(str(k).lower())
            if key is None:
                raise BadInput(f"folding of layer '{layer}': unknown key '{k}'; accepted: pe, simd "
                               f"(any case, as FINN's PE/SIMD)")
            if key in entry:
                raise BadInput(f"folding of layer '{layer}': '{key}' given twice (keys are case-insensitive)")
            entry[key] = _positive_int(v, f"folding of layer '{layer}': {key}")
        out[str(layer)] = entry
    return out


def target_ii(v) -> int | None:
    if v is None:
        return None
    return _positive_int(v, "target II (cycles per frame)")


def float_batch(x, what: str = "example input") -> np.ndarray:
    """A batch of float inputs as float32: numeric, batch first, at least one frame, finite."""
    try:
        import torch
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:
        pass
    a = np.asarray(x)
    if a.dtype == object or a.dtype.kind not in "fiub":
        raise BadInput(f"{what} must be a numeric array or tensor (batch first), got dtype {a.dtype}")
    if a.ndim < 2 or a.shape[0] < 1:
        raise BadInput(f"{what} must be a batch (batch first, at least one frame), got shape {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise BadInput(f"{what} holds {bad} NaN or infinite values; quantizers need finite inputs")
    return a.astype(np.float32)


def spec_result(res, spec: str, func: str, allow_float: bool):
    """The (model, example_input[, float_model]) a spec function returned, checked."""
    import torch
    n = (2, 3) if allow_float else (2,)
    if not isinstance(res, tuple) or len(res) not in n:
        want = "(model, example_input) or (model, example_input, float_model)" if allow_float else \
            "(model, example_input)"
        got = f"a tuple of {len(res)}" if isinstance(res, tuple) else type(res).__name__
        raise BadInput(f"spec '{spec}': {func}() must return {want}, got {got}")
    model, x = res[0], res[1]
    if not isinstance(model, torch.nn.Module):
        raise BadInput(f"spec '{spec}': {func}() returned a {type(model).__name__} as the model; expected a "
                       f"torch.nn.Module")
    x = torch.as_tensor(float_batch(x, f"spec '{spec}': the example input"))
    if len(res) == 3 and not isinstance(res[2], torch.nn.Module):
        raise BadInput(f"spec '{spec}': the float model must be a torch.nn.Module, got {type(res[2]).__name__}")
    return (model, x) + tuple(res[2:])


# ---------------------------------------------------------------- argparse types

def arg_positive_int(s: str) -> int:
    import argparse
    try:
        return _positive_int(s, "value")
    except BadInput as e:
        raise argparse.ArgumentTypeError(str(e).replace("value must", "must")) from None


def arg_non_negative_int(s: str) -> int:
    import argparse
    if not s.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {s!r}")
    return int(s)


def arg_probability(s: str) -> float:
    import argparse
    try:
        p = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {s!r}") from None
    if not (0.0 <= p < 1.0) or math.isnan(p):
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (1 would stall forever), got {s}")
    return p


def arg_positive_float(s: str) -> float:
    import argparse
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {s}")
    return v
