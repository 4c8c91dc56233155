"""PTQ conversion: the plan of a float model (layers, activations, batch norm) and `quantize`."""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..nn import (BATCH_NORMS, DROPOUTS, QuantAct, QuantConv2d, QuantError, QuantInput, QuantLinear,
                  as_value)
from .calibrate import CALIBRATIONS, _as_tensor, _mse_clip_weights, calibrate_range


_SUPPORTED = ("nn.Linear", "nn.Conv2d", "nn.BatchNorm1d", "nn.BatchNorm2d", "nn.ReLU", "nn.MaxPool2d",
              "nn.AvgPool2d", "nn.AdaptiveAvgPool2d(1)", "nn.Flatten", "nn.Dropout", "nn.Identity",
              "nested nn.Sequential")


def _leaves(model: nn.Module):
    """(path, module) of every leaf in execution order; containers must be nn.Sequential."""
    out = []
    for path, m in model.named_modules():
        children = list(m.children())
        if not children:
            out.append((path or type(m).__name__, m))
        elif not isinstance(m, nn.Sequential):
            raise QuantError(f"quantize: '{path or '<root>'}' ({type(m).__qualname__}) is a container other "
                             f"than nn.Sequential; PTQ follows the module order of nn.Sequential models only "
                             f"(supported: {', '.join(_SUPPORTED)})")
    return out


@dataclass
class _Step:
    kind: str                 # input | layer | bn | act | pool | flatten
    name: str                 # name in the quantized model (a sanitised float path)
    module: nn.Module | None  # the float module (None for inserted activations and the input)
    float_path: str | None    # float module whose output this step's output approximates
    signed: bool = False      # activations: signed (no ReLU in the float model) or unsigned
    producer: str | None = None   # activations: float path of the layer whose output they quantize
    relu: str | None = None       # activations: float path of the ReLU they implement


def _name(path: str) -> str:
    return path.replace(".", "_")


def plan(float_model: nn.Module) -> list[_Step]:
    """The quantized model's layers, derived from the float model's module order."""
    leaves = _leaves(float_model)
    steps = [_Step("input", "input", None, None)]
    state, layer = "quant", None
    consumed = set()

    def relu_ahead(i):
        """Index of a ReLU that follows leaves[i] through dropout/identity/maxpool/flatten, else None."""
        for j in range(i + 1, len(leaves)):
            m = leaves[j][1]
            if isinstance(m, nn.ReLU):
                return j
            if not isinstance(m, DROPOUTS + (nn.MaxPool2d, nn.Flatten)):
                return None
        return None

    def close(i, last_float_path):
        """Quantize the current accumulator before leaves[i] (a pool or flatten; None: the next layer).

        A ReLU further on (through pools, flattens, dropout) commutes with them: it becomes this
        unsigned quantizer. Otherwise the quantizer is signed.
        """
        nonlocal state
        j = relu_ahead(i - 1) if i is not None else None
        if j is not None:
            consumed.add(j)
            steps.append(_Step("act", _name(leaves[j][0]), None, None, signed=False, producer=layer,
                               relu=leaves[j][0]))
        else:
            steps.append(_Step("act", _name(layer) + "_act", None, last_float_path, signed=True, producer=layer))
        state = "quant"

    last_out = None
    for i, (path, m) in enumerate(leaves):
        if i in consumed:
            continue
        where = f"'{path}' ({type(m).__module__}.{type(m).__qualname__})"
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if state == "acc":
                close(None, last_out)
            if isinstance(m, nn.Conv2d):
                if m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
                    raise QuantError(f"quantize: Conv2d {where}: only dilation 1 and numeric zero padding are "
                                     f"supported")
            steps.append(_Step("layer", _name(path), m, path))
            state, layer, last_out = "acc", path, path
        elif isinstance(m, BATCH_NORMS):
            if state != "acc":
                raise QuantError(f"quantize: batch norm {where} acts on a quantized tensor (not directly after "
                                 f"a Linear/Conv2d); fold it into the layer after it first")
            steps.append(_Step("bn", _name(path), m, path))
            last_out = path
        elif isinstance(m, nn.ReLU):
            if state == "acc":
                steps.append(_Step("act", _name(path), None, path, signed=False, producer=layer, relu=path))
                state, last_out = "quant", path
            elif steps[-1].kind == "act" and steps[-1].signed:
                raise QuantError(f"quantize: ReLU {where} follows a signed activation; put the ReLU directly "
                                 f"after the layer (or its batch norm)")
            # a ReLU after an unsigned quantizer (or after max-pooling one) is the identity: dropped
        elif isinstance(m, (nn.MaxPool2d, nn.Flatten)):
            if state == "acc":
                close(i, last_out)
            if isinstance(m, nn.MaxPool2d):
                if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                    raise QuantError(f"quantize: MaxPool2d {where}: only padding 0, dilation 1 and "
                                     f"ceil_mode False are supported")
                steps.append(_Step("pool", _name(path), m, path))
            else:
                steps.append(_Step("flatten", _name(path), m, path))
            last_out = path
        elif isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            # an average of codes is not a code: the front end requantizes it, so a quantizer follows
            if state == "acc":
                close(i, last_out)
            prev = next(st for st in reversed(steps) if st.kind in ("act", "input"))
            steps.append(_Step("pool", _name(path), m, path))
            steps.append(_Step("act", _name(path) + "_act", None, path, signed=prev.signed if prev.kind == "act"
                               else None, producer=path))           # None: signed like the input
            last_out = path
        elif isinstance(m, DROPOUTS):
            continue
        else:
            raise QuantError(f"quantize: unsupported module {where}; supported: {', '.join(_SUPPORTED)}")
    if not any(s.kind == "layer" for s in steps):
        raise QuantError("quantize: the model has no nn.Linear or nn.Conv2d")
    return steps


def weight_sites(float_model) -> list[str]:
    """Float paths of the Linear/Conv2d layers (the keys of a weight_bits dict)."""
    return [s.float_path for s in plan(float_model) if s.kind == "layer"]


def act_sites(float_model) -> list[str]:
    """Keys of an act_bits dict: the path of the layer whose output each activation quantizes
    (the ReLU's own path is accepted too)."""
    return [s.producer for s in plan(float_model) if s.kind == "act"]


def _lookup(bits, keys, default, what):
    if not isinstance(bits, dict):
        return bits
    for k in keys:
        if k is not None and k in bits:
            return bits[k]
    if "default" in bits:
        return bits["default"]
    return default


def quantize(float_model: nn.Module, calibration_data, weight_bits=8, act_bits=8, *, per_channel: bool = True,
             scale: str = "float", calibration: str = "minmax", input_bits: int = 8,
             input_scale: float | None = None, percentile: float = 99.99,
             clip_weights: bool | None = None) -> nn.Sequential:
    """Post-training quantization of a float nn.Sequential into qloom.nn layers (see the module doc).

    weight_bits: 2..8, "ternary" or "bipolar" (1), or a dict {float Linear/Conv2d path: bits,
        "default": bits} for mixed precision.
    act_bits: 1..16, or a dict keyed by the ReLU's path (or the producing layer's path).
    per_channel: per-output-channel weight scales. scale: "float" or "pow2" (weights and
        activations). calibration: "minmax", "percentile" (`percentile`) or "mse" for the
        activation ranges (and the input's); clip_weights (default: calibration == "mse") also
        clips each weight channel where that lowers the MSE of its codes.
    input_bits / input_scale: the QuantInput's codes (scale calibrated unless given).
    Returns the quantized model in eval mode; `model.qloom_ptq` records the bits and the
    float path behind each quantized layer.
    """
    if scale not in ("float", "pow2"):
        raise QuantError(f"quantize: scale must be 'float' or 'pow2', got {scale!r}")
    if calibration not in CALIBRATIONS:
        raise QuantError(f"quantize: calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    clip_weights = calibration == "mse" if clip_weights is None else clip_weights
    steps = plan(float_model)
    x = _as_tensor(calibration_data)
    pow2 = scale == "pow2"

    # input quantizer
    signed_in = bool((x < 0).any())
    if input_scale is None:
        qmax_in = (1 << (input_bits - 1)) - 1 if signed_in else (1 << input_bits) - 1
        input_scale = calibrate_range(x, input_bits, signed_in, calibration, pow2, percentile) / qmax_in
    layers = OrderedDict()
    info = {"float_paths": {}, "weight_bits": {}, "act_bits": {}, "calibration": calibration,
            "scale": scale, "per_channel": per_channel, "input_bits": input_bits}
    for s in steps:
        if s.kind == "input":
            layers[s.name] = QuantInput(input_bits, signed=signed_in, scale=float(input_scale))
        elif s.kind == "layer":
            m = s.module
            wb = _lookup(weight_bits, [s.float_path], 8, "weight")
            if isinstance(m, nn.Linear):
                q = QuantLinear(m.in_features, m.out_features, bias=m.bias is not None, weight_bits=wb,
                                per_channel=per_channel, scale=scale)
            else:
                q = QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                                padding=m.padding, groups=m.groups, bias=m.bias is not None, weight_bits=wb,
                                per_channel=per_channel, scale=scale)
            with torch.no_grad():
                q.weight.copy_(m.weight.detach())
                if m.bias is not None:
                    q.bias.copy_(m.bias.detach())
            if clip_weights:
                _mse_clip_weights(q)
            layers[s.name] = q
            info["weight_bits"][s.float_path] = q.weight_bits
        elif s.kind == "act":
            if s.signed is None:
                s.signed = signed_in
            ab = _lookup(act_bits, [s.relu, s.producer], 8, "act")
            if s.signed and isinstance(ab, int):
                ab = max(ab, 2)                  # a signed quantizer needs 2+ bits
            layers[s.name] = QuantAct(ab, signed=s.signed, max_val=1.0, learnable=False)
            info["act_bits"][s.producer] = ab
        else:
            layers[s.name] = copy.deepcopy(s.module)
        info["float_paths"][s.name] = s.float_path
    qmodel = nn.Sequential(layers)
    qmodel.qloom_ptq = info
    _calibrate_acts(qmodel, x, calibration, pow2, percentile)
    return qmodel.eval()


def _calibrate_acts(qmodel, x, method, pow2, percentile):
    """Set every QuantAct's range, in order, on what the quantized layers before it produce."""
    qmodel.eval()
    with torch.no_grad():
        h = x
        for m in qmodel.children():
            if isinstance(m, QuantAct) and not m.learnable:
                m.max_val.fill_(calibrate_range(as_value(h), m.qtype.bits, m.qtype.signed, method, pow2,
                                                percentile))
            h = m(h)
