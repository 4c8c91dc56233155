"""The design space of `qloom explore`: the space file, its strict validation, and its points.

A space is a JSON object of lists; the points are their cartesian product (docs/explore.md).
This module imports neither torch nor amaranth: the parent of a sweep stays light.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import pathlib
import re

from qloom.compiler.errors import BadInput

# the dimensions, in the order the points are enumerated (the last varies fastest)
DIMENSIONS = ("model", "bits", "finetune", "target_ii", "folding", "board", "seed")
BOARDS = ("icebreaker", "ulx3s")
BITS_KEYS = {"weight_bits", "act_bits", "calibration", "per_channel", "scale", "input_bits"}
CALIBRATIONS = ("minmax", "percentile", "mse")
ACCEPTED = {
    "model": "a list of specs: built-in example names, path/to/file.py:function, or .onnx files",
    "target_ii": "a list of target IIs: positive ints, null (fully folded), \"fit\" (the fastest folding the "
                 "estimates say fits the board), \"fit*N\" or \"fit/N\" (N a positive int)",
    "folding": "a list of foldings: {\"layer\": {\"pe\": P, \"simd\": S}} objects, or null (folded by target_ii)",
    "bits": "a list of {\"weight_bits\": B, \"act_bits\": B} objects (optional: calibration, per_channel, scale, "
            "input_bits; B an int, \"bipolar\", \"ternary\" or a {layer: bits} object), or null (the model as "
            "the spec gives it)",
    "finetune": "a list of QAT fine-tuning epochs after quantize: ints >= 0",
    "board": "a list of boards: " + ", ".join(f'"{b}"' for b in BOARDS),
    "seed": "a list of nextpnr seeds: ints >= 0 (used with synthesis; best and median Fmax over them)",
}
_FIT = re.compile(r"^fit(?:([*/])([1-9][0-9]*))?$")


def _bad(key, what):
    return BadInput(f"space: key '{key}': {what}; accepted: {ACCEPTED[key]}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_bits_value(key, i, name, v):
    ok = (_is_int(v) and 1 <= v <= 16) or v in ("bipolar", "ternary")
    if isinstance(v, dict):
        ok = bool(v) and all(isinstance(k, str) and ((_is_int(b) and 1 <= b <= 16) or b in ("bipolar", "ternary"))
                             for k, b in v.items())
    if not ok:
        raise _bad(key, f"entry {i}: {name} is {json.dumps(v)}")


def _check_entry(key, i, v):
    """Raise BadInput naming the key when entry i of the list under `key` is not accepted."""
    if key == "model":
        if not isinstance(v, str) or not v:
            raise _bad(key, f"entry {i} is {json.dumps(v)}")
    elif key == "target_ii":
        if not (v is None or (_is_int(v) and v >= 1) or (isinstance(v, str) and _FIT.match(v))):
            raise _bad(key, f"entry {i} is {json.dumps(v)}")
    elif key == "folding":
        if v is None:
            return
        if not isinstance(v, dict) or not v:
            raise _bad(key, f"entry {i} is {json.dumps(v)}")
        for layer, f in v.items():
            if not (isinstance(f, dict) and f and set(f) <= {"pe", "simd"}
                    and all(_is_int(x) and x >= 1 for x in f.values())):
                raise _bad(key, f"entry {i}: layer '{layer}' is {json.dumps(f)}")
    elif key == "bits":
        if v is None:
            return
        if not isinstance(v, dict) or not {"weight_bits", "act_bits"} <= set(v) or not set(v) <= BITS_KEYS:
            raise _bad(key, f"entry {i} is {json.dumps(v)}")
        _check_bits_value(key, i, "weight_bits", v["weight_bits"])
        _check_bits_value(key, i, "act_bits", v["act_bits"])
        if "calibration" in v and v["calibration"] not in CALIBRATIONS:
            raise _bad(key, f"entry {i}: calibration is {json.dumps(v['calibration'])} (one of {CALIBRATIONS})")
        if "per_channel" in v and not isinstance(v["per_channel"], bool):
            raise _bad(key, f"entry {i}: per_channel is {json.dumps(v['per_channel'])} (true or false)")
        if "scale" in v and v["scale"] not in ("float", "pow2"):
            raise _bad(key, f"entry {i}: scale is {json.dumps(v['scale'])} (\"float\" or \"pow2\")")
        if "input_bits" in v and not (_is_int(v["input_bits"]) and 1 <= v["input_bits"] <= 16):
            raise _bad(key, f"entry {i}: input_bits is {json.dumps(v['input_bits'])} (an int 1..16)")
    elif key == "finetune":
        if not (_is_int(v) and v >= 0):
            raise _bad(key, f"entry {i} is {json.dumps(v)}")
    elif key == "board":
        if v not in BOARDS:
            raise _bad(key, f"entry {i} is {json.dumps(v)}")
    elif key == "seed":
        if not (_is_int(v) and v >= 0):
            raise _bad(key, f"entry {i} is {json.dumps(v)}")


def load_space(space) -> dict:
    """A validated space (a dict of non-empty lists) from a dict or a path to a JSON file."""
    if isinstance(space, (str, pathlib.Path)):
        p = pathlib.Path(space)
        if not p.is_file():
            raise BadInput(f"space: file {p} not found")
        try:
            space = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise BadInput(f"space: {p} is not valid JSON: {e}") from None
    if not isinstance(space, dict):
        raise BadInput(f"space: must be a JSON object of lists, got {type(space).__name__}; accepted keys: "
                       f"{', '.join(DIMENSIONS)}")
    for key, values in space.items():
        if key not in ACCEPTED:
            raise BadInput(f"space: unknown key '{key}'; accepted keys: {', '.join(DIMENSIONS)}")
        if not isinstance(values, list) or not values:
            raise _bad(key, f"must be a non-empty list, got {json.dumps(values)}")
        for i, v in enumerate(values):
            _check_entry(key, i, v)
        dupes = {canonical(v) for v in values}
        if len(dupes) != len(values):
            raise _bad(key, "has repeated entries")
    if any(e for e in space.get("finetune", [])) and not any(space.get("bits", [None])):
        raise _bad("finetune", "fine-tuning needs a 'bits' dimension (it trains the quantize()d float model)")
    return {k: list(space[k]) for k in DIMENSIONS if k in space}


def canonical(v) -> str:
    """One JSON text per value (sorted keys, no spaces): what hashes and comparisons use."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def expand(space: dict, models: list[str], synth: bool) -> list[dict]:
    """The points: one dict per combination, keys in DIMENSIONS order.

    Without synthesis the seed dimension means nothing and is dropped (seed None)."""
    dims = {
        "model": models,
        "bits": space.get("bits", [None]),
        "finetune": space.get("finetune", [0]),
        "target_ii": space.get("target_ii", [None] if "folding" in space else ["fit"]),
        "folding": space.get("folding", [None]),
        "board": space.get("board", ["icebreaker"]),
        "seed": space.get("seed", [None]) if synth else [None],
    }
    return [dict(zip(DIMENSIONS, combo)) for combo in itertools.product(*(dims[k] for k in DIMENSIONS))]


def resolve_target(target, fit_ii: int | None) -> int | None:
    """A target II from a space entry: ints and null as they are; 'fit', 'fit*N', 'fit/N' from fit_ii."""
    if not isinstance(target, str):
        return target
    m = _FIT.match(target)
    if m.group(1) is None:
        return fit_ii
    n = int(m.group(2))
    return fit_ii * n if m.group(1) == "*" else max(1, fit_ii // n)


def label(point: dict) -> str:
    """A short human name for a point: 'tfc-w1a1 w2a2 ii=fit icebreaker s1'."""
    parts = [model_name(point["model"])]
    if point["bits"]:
        b = point["bits"]
        parts.append(f"w{_short(b['weight_bits'])}a{_short(b['act_bits'])}")
    if point["finetune"]:
        parts.append(f"ft{point['finetune']}")
    parts.append("ii=" + ("full" if point["target_ii"] is None else str(point["target_ii"])))
    if point["folding"]:
        parts.append("fold#" + hashlib.sha256(canonical(point["folding"]).encode()).hexdigest()[:6])
    parts.append(point["board"])
    if point["seed"] is not None:
        parts.append(f"s{point['seed']}")
    return " ".join(parts)


def model_name(spec: str) -> str:
    """'tfc-w1a1' for a built-in, the function's name for path/file.py:function, the stem for a .onnx file."""
    if spec.lower().endswith(".onnx"):
        return pathlib.PurePath(spec).stem
    return spec.rsplit(":", 1)[1] if ":" in spec else spec


def _short(bits) -> str:
    return {"bipolar": "1", "ternary": "t"}.get(bits, "mix" if isinstance(bits, dict) else str(bits))
