"""Post-training quantization (PTQ), QAT fine-tuning, sensitivity analysis and bit allocation.

`quantize(float_model, calibration_data, ...)` turns a float `nn.Sequential` of
nn.Linear / nn.Conv2d / nn.BatchNorm* / nn.ReLU / nn.MaxPool2d / nn.Flatten
(Dropout and Identity are dropped) into a model of qloom.nn layers that
`qloom.compile` lowers bit-exactly:

- a `QuantInput` first, its scale calibrated on the data (unsigned when the data
  is never negative);
- each Linear/Conv2d becomes a QuantLinear/QuantConv2d with the float weights and
  bias copied (per-channel or per-tensor, float or power-of-two scale);
- batch norm is kept as it is (the front end folds it into thresholds);
- each ReLU becomes an unsigned `QuantAct(learnable=False)` whose range is
  calibrated on the data (min-max, percentile or MSE), sequentially: each range
  is calibrated on what the already quantized layers before it produce;
- a layer whose output reaches the next layer without a ReLU gets a signed
  QuantAct; a MaxPool2d or Flatten between a layer and its ReLU is commuted
  with the ReLU (max and flatten commute with the increasing quantizer);
- the model's last layer stays a QuantLinear with no activation after it.

See docs/ptq.md for the choices (calibration methods, MSE weight clipping,
greedy bit allocation).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nn import QuantAct, QuantConv2d, QuantError, QuantInput, QuantLinear, as_value

CALIBRATIONS = ("minmax", "percentile", "mse")
_DROP = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_SUPPORTED = ("nn.Linear", "nn.Conv2d", "nn.BatchNorm1d", "nn.BatchNorm2d", "nn.ReLU", "nn.MaxPool2d",
              "nn.AvgPool2d", "nn.AdaptiveAvgPool2d(1)", "nn.Flatten", "nn.Dropout", "nn.Identity",
              "nested nn.Sequential")


# ---------------------------------------------------------------- the plan

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
            if not isinstance(m, _DROP + (nn.MaxPool2d, nn.Flatten)):
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
        elif isinstance(m, _BN):
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
        elif isinstance(m, _DROP):
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


# ---------------------------------------------------------------- calibration

def _pow2(s: float, up: bool) -> float:
    e = math.log2(s)
    return 2.0 ** (math.ceil(e) if up else round(e))


def calibrate_range(y: torch.Tensor, bits: int, signed: bool, method: str = "minmax", pow2: bool = False,
                    percentile: float = 99.99, max_samples: int = 200_000) -> float:
    """The range max_val (the largest representable |value|) for n-bit codes of the tensor y.

    Unsigned codes cover 0..max_val (negative values are the ReLU the quantizer implements);
    signed codes cover -max_val..max_val. minmax: the largest value; percentile: that
    percentile of the (clamped, absolute) values; mse: the range minimising the mean squared
    quantization error over a grid of candidate ranges. pow2: max_val / qmax is a power of two
    (rounded up for minmax and percentile, searched for mse).
    """
    if method not in CALIBRATIONS:
        raise QuantError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    v = torch.as_tensor(y).detach().flatten().to(torch.float64)
    if v.numel() > max_samples:
        v = v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(0))[:max_samples]]
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    qmin = -(1 << (bits - 1)) if signed else 0
    target = v if signed else v.clamp(min=0)
    a = target.abs()
    top = float(a.max()) if a.numel() else 0.0
    if top <= 0:
        return 1.0
    if method == "minmax":
        m = top
    elif method == "percentile":
        m = float(np.percentile(a.numpy(), percentile))
        m = m if m > 0 else top
    else:
        def err(s):
            q = torch.clamp(torch.round(target / s), qmin, qmax) * s
            return float(((q - target) ** 2).mean())
        if pow2:
            e_hi = math.ceil(math.log2(top / qmax))
            cands = [2.0 ** e for e in range(e_hi - 10, e_hi + 1)]
            return min(cands, key=err) * qmax
        cands = [top * f / qmax for f in np.linspace(0.05, 1.0, 96)]
        m = min(cands, key=err) * qmax
    if pow2:
        m = _pow2(m / qmax, up=True) * qmax
    return float(m)


def _mse_clip_weights(layer: nn.Module):
    """Clip an n-bit layer's float weights (per channel or tensor) where that lowers the MSE of its codes.

    The weight quantizer's scale is max|w| / qmax, so clipping w at c sets the scale to c / qmax.
    """
    if layer.weight_bits in ("bipolar", "ternary"):
        return
    qmax = (1 << (layer.weight_bits - 1)) - 1
    with torch.no_grad():
        w = layer.weight.detach().to(torch.float64)
        rows = w.flatten(1) if layer.per_channel else w.flatten()[None]
        amax = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-30)
        best_err = torch.full_like(amax, float("inf"))
        best_c = amax.clone()
        for f in np.linspace(0.2, 1.0, 81):
            c = amax * f
            wc = torch.maximum(torch.minimum(rows, c), -c)
            s = c / qmax
            if layer.scale_mode == "pow2":
                s = torch.exp2(torch.ceil(torch.log2(s)))
            e = ((torch.clamp(torch.round(wc / s), -qmax, qmax) * s - rows) ** 2).mean(dim=1, keepdim=True)
            better = e < best_err
            best_err = torch.where(better, e, best_err)
            best_c = torch.where(better, c, best_c)
        clipped = torch.maximum(torch.minimum(rows, best_c), -best_c).to(layer.weight.dtype)
        layer.weight.copy_(clipped.reshape(layer.weight.shape))


def _as_tensor(data):
    if isinstance(data, (tuple, list)):
        data = data[0]
    if isinstance(data, torch.utils.data.DataLoader):
        data = torch.cat([b[0] if isinstance(b, (tuple, list)) else b for b in data])
    return torch.as_tensor(data, dtype=torch.float32)


# ---------------------------------------------------------------- quantize

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


# ---------------------------------------------------------------- QAT fine-tuning

def _batches(data, batch_size, gen):
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(torch.as_tensor(data[0])):
        x, y = torch.as_tensor(data[0], dtype=torch.float32), torch.as_tensor(data[1])
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            yield x[idx], y[idx]
    else:
        for b in data:
            yield b[0], b[1]


def finetune(qmodel: nn.Module, data, epochs: int = 5, lr: float = 1e-3, batch_size: int = 64,
             loss_fn=None, seed: int = 0, freeze_bn: bool = True, progress=None) -> nn.Module:
    """Quantization-aware fine-tuning (straight-through estimators) of a qloom.nn model, e.g. from PTQ.

    data: (x, y) tensors or a DataLoader of (x, y). Calibrated activation ranges
    (QuantAct learnable=False) and batch-norm statistics stay frozen (freeze_bn) so the
    model keeps the calibration it starts from; weights, biases and batch-norm affine
    parameters train with Adam and a cosine schedule. Returns the model in eval mode.
    """
    loss_fn = loss_fn or F.cross_entropy
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    params = [p for p in qmodel.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    moms = {}
    for m in qmodel.modules():
        if isinstance(m, QuantAct) and not m.learnable:
            moms[m] = m.momentum
            m.momentum = 0.0
    try:
        for ep in range(epochs):
            qmodel.train()
            if freeze_bn:
                for m in qmodel.modules():
                    if isinstance(m, _BN):
                        m.eval()
            loss = None
            for xb, yb in _batches(data, batch_size, gen):
                out = as_value(qmodel(torch.as_tensor(xb, dtype=torch.float32)))
                loss = loss_fn(out, yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
            if progress:
                progress(ep + 1, epochs, float(loss) if loss is not None else float("nan"))
    finally:
        for m, mom in moms.items():
            m.momentum = mom
    return qmodel.eval()


# ---------------------------------------------------------------- metrics

def _outputs(model, x, batch=2048):
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(as_value(model(x[i:i + batch])).detach().to(torch.float64))
    return torch.cat(outs)


def sqnr_db(ref, test) -> float:
    """10 log10(|ref|^2 / |ref - test|^2) in dB (inf when equal)."""
    ref = torch.as_tensor(as_value(ref)).detach().to(torch.float64)
    test = torch.as_tensor(as_value(test)).detach().to(torch.float64)
    noise = float(((ref - test) ** 2).sum())
    sig = float((ref ** 2).sum())
    if noise == 0:
        return float("inf")
    if sig == 0:
        return float("-inf")
    return 10 * math.log10(sig / noise)


def accuracy(model, x, y) -> float:
    """Top-1 accuracy (argmax of the output values)."""
    return float((_outputs(model, torch.as_tensor(x, dtype=torch.float32)).argmax(1) == torch.as_tensor(y))
                 .double().mean())


def _split_eval(eval_data):
    if isinstance(eval_data, (tuple, list)):
        return torch.as_tensor(eval_data[0], dtype=torch.float32), torch.as_tensor(eval_data[1])
    return torch.as_tensor(eval_data, dtype=torch.float32), None


def _metric(metric, float_out, model, x, y):
    if metric == "accuracy":
        if y is None:
            raise QuantError("metric='accuracy' needs eval_data=(x, y)")
        return accuracy(model, x, y)
    if metric == "sqnr":
        return sqnr_db(float_out, _outputs(model, x))
    raise QuantError(f"metric must be 'accuracy' or 'sqnr', got {metric!r}")


def _n_weights(float_model):
    return {s.float_path: s.module.weight.numel() for s in plan(float_model) if s.kind == "layer"}


def _bits_num(b):
    return 1 if b in ("bipolar", 1) else 2 if b == "ternary" else int(b)


# ---------------------------------------------------------------- sensitivity

@dataclass
class Sensitivity:
    """Per layer and bit width: the metric with only that layer (weights or activation) lowered."""
    metric: str
    float_value: float
    base_value: float             # everything at base_bits
    base_bits: int
    rows: list = field(default_factory=list)   # dicts: site, what (weight|act), bits, value, drop

    def table(self, what=None) -> dict:
        """{site: {bits: value}} for weights or activations."""
        out = {}
        for r in self.rows:
            if what in (None, r["what"]):
                out.setdefault(r["site"], {})[r["bits"]] = r["value"]
        return out

    def __str__(self):
        unit = "%" if self.metric == "accuracy" else " dB"
        f = (lambda v: f"{100 * v:.1f}") if self.metric == "accuracy" else (lambda v: f"{v:.1f}")  # noqa: E731
        lines = [f"sensitivity ({self.metric}{unit}): float {f(self.float_value)}, all at {self.base_bits} bits "
                 f"{f(self.base_value)}; one layer lowered at a time"]
        bits = sorted({r["bits"] for r in self.rows}, key=lambda b: (_bits_num(b), str(b)), reverse=True)
        lines.append(f"{'layer':<20}{'what':<8}" + "".join(f"{b:>8}" for b in bits))
        for what in ("weight", "act"):
            for site, vals in self.table(what).items():
                lines.append(f"{site:<20}{what:<8}" + "".join(f"{f(vals[b]) if b in vals else '-':>8}"
                                                              for b in bits))
        return "\n".join(lines)


def sensitivity(float_model, calibration_data, eval_data, *, bits=(6, 4, 3, 2), base_bits: int = 8,
                what=("weight", "act"), metric: str = "accuracy", **qopts) -> Sensitivity:
    """How much the metric (accuracy, or output SQNR vs the float model in dB) drops when one
    layer's weights (or one activation) go to fewer bits while every other stays at base_bits."""
    x, y = _split_eval(eval_data)
    float_out = _outputs(float_model, x)
    fv = _metric(metric, float_out, float_model, x, y) if metric == "accuracy" else float("inf")
    base = _metric(metric, float_out, quantize(float_model, calibration_data, base_bits, base_bits, **qopts), x, y)
    rep = Sensitivity(metric, fv, base, base_bits)
    sites = {"weight": weight_sites(float_model), "act": act_sites(float_model)}
    for w in what:
        for site in sites[w]:
            for b in bits:
                if w == "act" and not isinstance(b, int):
                    continue
                wb = {site: b, "default": base_bits} if w == "weight" else base_bits
                ab = {site: b, "default": base_bits} if w == "act" else base_bits
                v = _metric(metric, float_out, quantize(float_model, calibration_data, wb, ab, **qopts), x, y)
                rep.rows.append({"site": site, "what": w, "bits": b, "value": v, "drop": base - v})
    return rep


# ---------------------------------------------------------------- bit allocation

@dataclass
class Allocation:
    """The result of allocate_bits: per-layer weight bits and how they compare with uniform widths."""
    weight_bits: dict
    act_bits: object
    metric: str
    float_value: float
    target: float
    value: float
    total_weight_bits: int
    n_weights: dict
    uniform: dict                 # bits -> (metric value, total weight bits)
    history: list = field(default_factory=list)
    evaluations: int = 0
    model: nn.Module | None = None

    def __str__(self):
        pct = self.metric == "accuracy"
        f = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.2f} dB")  # noqa: E731
        lines = [f"bit allocation ({self.metric}): float {f(self.float_value)}, target >= {f(self.target)}, "
                 f"activations {self.act_bits} bits, {self.evaluations} evaluations",
                 f"{'layer':<20}{'weights':>9}{'bits':>9}{'weight bits':>13}"]
        for site, n in self.n_weights.items():
            b = self.weight_bits[site]
            lines.append(f"{site:<20}{n:>9}{str(b):>9}{n * _bits_num(b):>13}")
        lines.append(f"{'allocated':<20}{sum(self.n_weights.values()):>9}{'':>9}{self.total_weight_bits:>13}"
                     f"   {f(self.value)}")
        for b, (v, tot) in sorted(self.uniform.items(), key=lambda kv: (_bits_num(kv[0]), str(kv[0])),
                                  reverse=True):
            ok = "meets" if v >= self.target else "misses"
            name = f"uniform {b}" + ("-bit" if isinstance(b, int) else "")
            lines.append(f"{name:<20}{'':>9}{'':>9}{tot:>13}   {f(v)} ({ok} the target)")
        return "\n".join(lines)


def allocate_bits(float_model, calibration_data, eval_data, *, budget: float = 0.01,
                  candidates=(8, 7, 6, 5, 4, 3, 2), act_bits=8, metric: str = "accuracy",
                  uniform=(8, 6, 4, 3, 2), progress=None, **qopts) -> Allocation:
    """Per-layer weight bits that keep the metric within budget with the fewest total weight bits.

    metric "accuracy": budget is the largest accuracy drop from the float model allowed
    (0.01 = one point); "sqnr": budget is the least output SQNR (dB) allowed.
    Greedy: start with every layer at max(candidates); at each step try lowering each
    layer by one candidate step, keep the moves that still meet the target, and take the
    one with the most weight bits saved per unit of metric lost. Stops when no move meets the
    target (at most len(layers) evaluations per step). Activations stay at act_bits.
    """
    x, y = _split_eval(eval_data)
    float_out = _outputs(float_model, x)
    if metric == "accuracy":
        fv = _metric(metric, float_out, float_model, x, y)
        target = fv - budget
    else:
        fv, target = float("inf"), float(budget)
    nw = _n_weights(float_model)
    cands = sorted({c for c in candidates}, key=_bits_num, reverse=True)
    evals = 0

    def evaluate(wb):
        nonlocal evals
        evals += 1
        qm = quantize(float_model, calibration_data, dict(wb), act_bits, **qopts)
        return _metric(metric, float_out, qm, x, y), qm

    def total(wb):
        return sum(nw[s] * _bits_num(b) for s, b in wb.items())

    cur = {s: cands[0] for s in nw}
    cur_v, cur_model = evaluate(cur)
    history = [(dict(cur), cur_v, total(cur))]
    while True:
        best = None
        for s in nw:
            i = cands.index(cur[s])
            if i + 1 >= len(cands):
                continue
            trial = dict(cur, **{s: cands[i + 1]})
            v, qm = evaluate(trial)
            if v < target:
                continue
            saved = total(cur) - total(trial)
            loss = max(cur_v - v, 0.0)
            score = saved / (loss + (1e-3 if metric == "accuracy" else 1e-2))
            if best is None or score > best[0]:
                best = (score, trial, v, qm)
        if best is None:
            break
        _, cur, cur_v, cur_model = best
        history.append((dict(cur), cur_v, total(cur)))
        if progress:
            progress(f"{cur} -> {cur_v:.4f}, {total(cur)} weight bits")
    uni = {}
    for b in uniform:
        v, _ = evaluate({s: b for s in nw})
        uni[b] = (v, sum(n * _bits_num(b) for n in nw.values()))
    return Allocation(cur, act_bits, metric, fv, target, cur_v, total(cur), nw, uni, history, evals, cur_model)
