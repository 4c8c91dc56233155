"""Quantization-aware layers (published as `qloom.nn`).

Training mode: fake quantization with straight-through estimators.
Eval mode (integer-exact): every quantized layer computes its accumulator from
the integer codes exactly, then applies scales, bias, batch norm and the next
activation quantizer in float. Every step of that tail is monotone in the
accumulator, so the front end can turn it into thresholds that reproduce it
bit for bit (see docs/numerics.md).

Quantized activations travel between layers as `QTensor`s: the float value
(which carries the gradient), the integer codes, the scale and the code type.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ir
from .errors import QuantError  # noqa: F401 (re-exported: qloom.nn.QuantError)

_EXACT_F32 = 1 << 24
_EXACT_F64 = 1 << 53


def _ste(exact: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """`exact` in the forward pass, the gradient of `surrogate` in the backward pass."""
    return surrogate + (exact - surrogate).detach()


class QTensor:
    """A quantized tensor: value = (code - zero_point) * scale.

    `code` is an int64 tensor in eval mode (None in training). Shape functions
    (flatten, view, reshape, dropout) act on value and code alike; any other
    torch function sees the float `value`, so a loss can consume a QTensor.
    """

    def __init__(self, value, code, scale, zero_point, qtype):
        self.value, self.code, self.scale = value, code, scale
        self.zero_point, self.qtype = int(zero_point), qtype

    def _map(self, fn):
        return QTensor(fn(self.value), None if self.code is None else fn(self.code),
                       self.scale, self.zero_point, self.qtype)

    # shape methods used by nn.Flatten and typical forward() code
    def flatten(self, start_dim=0, end_dim=-1):
        return self._map(lambda t: t.flatten(start_dim, end_dim))

    def view(self, *shape):
        return self._map(lambda t: t.reshape(*shape))

    reshape = view

    def size(self, dim=None):
        return self.value.size() if dim is None else self.value.size(dim)

    @property
    def shape(self):
        return self.value.shape

    def dim(self):
        return self.value.dim()

    def __add__(self, other):
        return quant_add(self, other)

    __radd__ = __add__

    def __repr__(self):
        scale = float(torch.as_tensor(self.scale).detach())
        return f"QTensor({self.qtype}, shape={tuple(self.shape)}, scale={scale:.6g})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.flatten, torch.reshape, torch.Tensor.flatten, torch.Tensor.view,
                    torch.Tensor.reshape):
            qt, *rest = args
            return qt._map(lambda t: func(t, *rest, **kwargs))
        if func is F.max_pool2d:            # max commutes with the increasing code -> value map
            qt, *rest = args
            return QTensor(func(qt.value, *rest, **kwargs),
                           None if qt.code is None else func(qt.code.double(), *rest, **kwargs).long(),
                           qt.scale, qt.zero_point, qt.qtype)
        if func in (F.avg_pool2d, F.adaptive_avg_pool2d) and args[0].code is not None:
            return _avg_pool_eval(func, *args, **kwargs)
        if func is torch.add and len(args) == 2 and not kwargs:
            return quant_add(*args)
        if func is torch.cat:
            return quant_cat(*args, **kwargs)
        if func in (F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout):
            qt = args[0]
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            if not training:
                return qt
            return QTensor(func(*((qt.value,) + tuple(args[1:])), **kwargs), None,
                           qt.scale, qt.zero_point, qt.qtype)
        unwrap = lambda a: a.value if isinstance(a, QTensor) else a  # noqa: E731
        args = tuple(unwrap(a) for a in args)
        kwargs = {k: unwrap(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


class PoolTail:
    """Average pooling of a QTensor in eval mode: the exact integer window sum, then one scale.

    avg = (sum(code) - n * zero_point) * (scale / n), rounded to float32 once, so the
    result is a function of the integer sum (the front end lowers it to SumPool).
    """

    def __init__(self, n: int):
        self.n = n

    def acc_to_float(self, acc, in_scale, wide=True):
        return (acc.to(torch.float64) * (in_scale.to(torch.float64) / self.n)).to(torch.float32)


def pool_geometry(func, x, args, kwargs):
    """(kernel, stride) of an avg_pool2d / adaptive_avg_pool2d(1) call on NCHW `x`."""
    h, w = x.shape[-2:]
    if func is F.adaptive_avg_pool2d:
        size = args[0] if args else kwargs.get("output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise QuantError(f"adaptive_avg_pool2d: only global pooling (output size 1) is supported, got {size}")
        return (h, w), (h, w)
    k = args[0] if args else kwargs["kernel_size"]
    k = (k, k) if isinstance(k, int) else tuple(k)
    st = args[1] if len(args) > 1 else kwargs.get("stride")
    st = k if st in (None, []) else ((st, st) if isinstance(st, int) else tuple(st))
    pad = args[2] if len(args) > 2 else kwargs.get("padding", 0)
    if pad not in (0, (0, 0)) or kwargs.get("ceil_mode") or kwargs.get("divisor_override"):
        raise QuantError("avg_pool2d: only padding 0, ceil_mode False and no divisor_override are supported")
    return k, st


def _avg_pool_eval(func, qt, *args, **kwargs):
    k, st = pool_geometry(func, qt.value, args, kwargs)
    code = (qt.code - qt.zero_point).to(torch.float64)
    acc = F.avg_pool2d(code, k, st, divisor_override=1)          # exact integer window sums
    return PoolTail(k[0] * k[1]).acc_to_float(acc, qt.scale)


def add_units(sa, sb, what: str = "add") -> tuple[torch.Tensor, int, int]:
    """(unit, ka, kb) with sa = ka * unit and sb = kb * unit exactly: the smaller scale and the two
    integer multipliers (powers of two) that put two quantized tensors in one unit.

    Refused (QuantError) unless the two per-tensor scales differ by a power of two: only then is
    the sum an integer multiple of one unit, which the hardware can add exactly."""
    fa, fb = float(torch.as_tensor(sa).detach()), float(torch.as_tensor(sb).detach())
    (ma, ea), (mb, eb) = math.frexp(fa), math.frexp(fb)
    if ma != mb or abs(ea - eb) > 24:
        raise QuantError(f"{what}: the two inputs have scales {fa:.8g} and {fb:.8g}, whose ratio {fa / fb:.8g} is "
                         f"not a power of two (up to 2**24), so their sum is no integer in one unit; quantize "
                         f"both branches with the same quantizer module, or give their quantizers "
                         f"scale='pow2' (QuantAct(..., scale='pow2'))")
    unit = torch.as_tensor(sa if ea <= eb else sb).detach().to(torch.float32)
    return unit, 1 << max(ea - eb, 0), 1 << max(eb - ea, 0)


def quant_add(a, b, what: str = "add"):
    """a + b for two QTensors (a residual add); a float tensor, like a layer's output.

    Eval mode: the exact integer sum S = ka * (code_a - zp_a) + kb * (code_b - zp_b) in the
    common unit (add_units), then S * unit rounded to float32 once, so the result is a
    function of S (the front end lowers it to an ir.Add and thresholds the float tail after
    it). Training: the sum of the fake-quantized values."""
    for k, t in enumerate((a, b)):
        if not isinstance(t, QTensor):
            raise QuantError(f"{what}: input {k} is an unquantized {type(t).__name__}; a residual add takes two "
                             f"quantized tensors (put a QuantAct or BinaryAct on that branch before the add)")
    if a.code is None or b.code is None:          # training (a quantizer shared by both branches may still move)
        return a.value + b.value
    unit, ka, kb = add_units(a.scale, b.scale, what)
    s = ka * (a.code - a.zero_point) + kb * (b.code - b.zero_point)
    return PoolTail(1).acc_to_float(s, unit)


def quant_cat(tensors, dim=0, **kwargs):
    """torch.cat of QTensors along the channel axis (dim 1): one scale and zero point required, so the
    codes keep their meaning; the result is a QTensor of the type that holds every input's codes."""
    ts = list(tensors)
    if not all(isinstance(t, QTensor) for t in ts):
        raise QuantError("torch.cat: concatenate only quantized tensors (all QTensors) or only floats")
    if dim % ts[0].dim() != 1:
        raise QuantError(f"torch.cat: only concatenation along the channel axis (dim=1) is supported, got dim={dim}")
    s0 = float(torch.as_tensor(ts[0].scale).detach())
    for k, t in enumerate(ts[1:] if all(t.code is not None for t in ts) else [], 1):   # eval: codes must agree
        s = float(torch.as_tensor(t.scale).detach())
        if s != s0 or t.zero_point != ts[0].zero_point:
            raise QuantError(f"torch.cat: input {k} has scale {s:.8g} and zero point {t.zero_point}, input 0 has "
                             f"{s0:.8g} and {ts[0].zero_point}; concatenated codes need one scale: quantize the "
                             f"branches with the same quantizer module")
    qtypes = {t.qtype for t in ts}
    qtype = ts[0].qtype if len(qtypes) == 1 else ir.int_type_for(min(q.min for q in qtypes),
                                                                   max(q.max for q in qtypes))
    codes = None if any(t.code is None for t in ts) else torch.cat([t.code for t in ts], dim, **kwargs)
    return QTensor(torch.cat([t.value for t in ts], dim, **kwargs), codes, ts[0].scale, ts[0].zero_point, qtype)


class QuantAdd(nn.Module):
    """A residual add of two quantized tensors: `QuantAdd()(a, b)` is `a + b` (see quant_add).

    The scales of a and b must differ by a power of two (equal included): quantize both
    branches with scale='pow2' quantizers, or with the same quantizer module. The output is
    a float, like a layer's: batch norm / ReLU may follow, then a QuantAct or BinaryAct,
    whose thresholds the front end finds by evaluating that float tail on the exact sum."""

    def forward(self, a, b):
        return quant_add(a, b, what="QuantAdd")


def as_value(x):
    """The float value of a QTensor, or the tensor itself."""
    return x.value if isinstance(x, QTensor) else x


# ---------------------------------------------------------------- module roles (shared by the front end,
# PTQ and the analysis)

DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)   # identities in eval mode
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
FLOAT_LAYERS = (nn.Linear, nn.Conv2d)
QUANT_LAYERS: tuple = ()        # (QuantLinear, QuantConv2d): set below their definitions


def capture(model, x, types):
    """Run `model` once in eval mode: ({path: (input, output)} of its modules of `types`, model output).

    Outputs are copied where they are plain tensors (an in-place ReLU after a module would change them)."""
    seen, hooks = {}, []
    for p, m in model.named_modules():
        if isinstance(m, types):
            hooks.append(m.register_forward_hook(
                lambda mod, args, out, p=p: seen.__setitem__(p, (args[0] if args else None,
                                                                 out.clone() if torch.is_tensor(out) else out))))
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen, out


def round_pow2(s, up: bool):
    """s rounded to a power of two in the log domain (up: the next one); floats or tensors."""
    if torch.is_tensor(s):
        e = torch.log2(s)
        return torch.exp2(torch.ceil(e) if up else torch.round(e))
    e = math.log2(s)
    return 2.0 ** (math.ceil(e) if up else round(e))


# ---------------------------------------------------------------- input

class QuantInput(nn.Module):
    """Fixes how float inputs become integer codes.

    Int codes: code = clamp(round(x / scale) + zero_point) into `bits`
    (`signed` or not); value = (code - zero_point) * scale.
    `bipolar=True`: code = +1 where x >= 0 else -1 (scale 1).
    """

    def __init__(self, bits: int = 8, signed: bool = False, scale: float = 1 / 255,
                 zero_point: int = 0, bipolar: bool = False):
        super().__init__()
        if bipolar:
            self.qtype = ir.Bipolar
            scale, zero_point = 1.0, 0
        else:
            if not (isinstance(bits, int) and 1 <= bits <= 16):
                raise QuantError(f"QuantInput: bits must be an integer in 1..16, got {bits!r}")
            self.qtype = ir.Int(bits, signed)
            if not (self.qtype.min <= zero_point <= self.qtype.max):
                raise QuantError(f"QuantInput: zero_point {zero_point} is outside the code range "
                                 f"{self.qtype.min}..{self.qtype.max} of {self.qtype}")
        if not (scale > 0 and math.isfinite(scale)):
            raise QuantError(f"QuantInput: scale must be a positive finite float, got {scale!r}")
        self.zero_point = int(zero_point)
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float32))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.qtype is ir.Bipolar:
            return torch.where(x >= 0, 1, -1).to(torch.int64)
        q = torch.round(x / self.scale) + self.zero_point
        return q.clamp(self.qtype.min, self.qtype.max).to(torch.int64)

    def forward(self, x):
        code = self.codes(x)
        value = (code - self.zero_point).to(torch.float32) * self.scale
        return QTensor(value, code, self.scale, self.zero_point, self.qtype)

    def extra_repr(self):
        return f"{self.qtype}, scale={float(self.scale):.6g}, zero_point={self.zero_point}"


# ---------------------------------------------------------------- weights

WEIGHT_KINDS = ("bipolar", "ternary", 2, 3, 4, 5, 6, 7, 8)


def weight_qtype(weight_bits, narrow_range=True) -> ir.ElemType:
    if weight_bits in ("bipolar", 1):
        return ir.Bipolar
    if weight_bits == "ternary":
        return ir.Int(2, True)
    return ir.Int(int(weight_bits), True)


class _QuantWeightMixin:
    """Weight quantizer shared by QuantLinear and (later) QuantConv2d."""

    def _init_wq(self, weight_bits, per_channel, scale, narrow_range):
        if weight_bits == 1:
            weight_bits = "bipolar"
        if weight_bits not in WEIGHT_KINDS:
            raise QuantError(f"{type(self).__name__}: weight_bits must be one of {WEIGHT_KINDS}, "
                             f"got {weight_bits!r}")
        if scale not in ("float", "pow2"):
            raise QuantError(f"{type(self).__name__}: scale must be 'float' or 'pow2', got {scale!r}")
        self.weight_bits, self.per_channel, self.scale_mode = weight_bits, per_channel, scale
        self.narrow_range = narrow_range
        self.wtype = weight_qtype(weight_bits)

    def _reduce(self, t: torch.Tensor, fn):
        if self.per_channel:
            return fn(t.flatten(1), dim=1).reshape((-1,) + (1,) * (t.dim() - 1))
        return fn(t.flatten().unsqueeze(0), dim=1).reshape(())

    def quant_weight(self):
        """(codes, scale): integer codes as float tensors, scale per channel or per tensor.

        The codes are exact integers; the scale is float32 and always > 0.
        """
        w = self.weight.detach()
        absmean = lambda t, dim: t.abs().mean(dim=dim)  # noqa: E731
        if self.weight_bits == "bipolar":
            codes = torch.where(w >= 0, 1.0, -1.0)
            s = self._reduce(w, absmean)
        elif self.weight_bits == "ternary":
            delta = 0.7 * self._reduce(w, absmean)              # TWN's threshold
            codes = torch.where(w.abs() > delta, torch.sign(w), torch.zeros_like(w))
            nz = (codes != 0).float()
            s = self._reduce(w.abs() * nz, lambda t, dim: t.sum(dim)) / \
                self._reduce(nz, lambda t, dim: t.sum(dim)).clamp(min=1)
        else:
            qmax = (1 << (self.weight_bits - 1)) - 1
            qmin = -qmax if self.narrow_range else -qmax - 1
            s = self._reduce(w, lambda t, dim: t.abs().amax(dim=dim)) / qmax
            if self.scale_mode == "pow2":
                s = round_pow2(s.clamp(min=1e-30), up=True)
            codes = torch.round(w / s.clamp(min=1e-30)).clamp(qmin, qmax)
        if self.scale_mode == "pow2" and self.weight_bits in ("bipolar", "ternary"):
            s = round_pow2(s.clamp(min=1e-30), up=False)
        s = torch.where(s > 0, s, torch.ones_like(s)).to(torch.float32)
        return codes, s

    def int_weight(self) -> torch.Tensor:
        """The weight codes as int64."""
        return self.quant_weight()[0].to(torch.int64)

    def fake_quant_weight(self):
        codes, s = self.quant_weight()
        return _ste(codes * s, self.weight)

    def acc_is_wide(self, in_qtype, zero_point=0) -> bool:
        """True when |acc| can reach 2**24, so the float tail must run in float64."""
        w = self.int_weight().abs().flatten(1).sum(dim=1).max().item()
        xmax = max(abs(in_qtype.min - zero_point), abs(in_qtype.max - zero_point))
        return w * xmax >= _EXACT_F32

    def _check_input(self, x):
        if not isinstance(x, QTensor):
            raise QuantError(f"{type(self).__name__} received an unquantized float tensor; "
                             f"put a QuantInput, QuantAct or BinaryAct before it")

    def _exact_acc(self, x: QTensor, op) -> torch.Tensor:
        """The integer accumulator in float64 (exact while |acc| < 2**53), from the codes."""
        if x.code is None:
            raise QuantError(f"{type(self).__name__}: input codes missing in eval mode "
                             f"(was the producer in training mode? call model.eval())")
        xc = (x.code - x.zero_point).to(torch.float64)
        return op(xc, self.int_weight().to(torch.float64))

    def acc_to_float(self, acc: torch.Tensor, in_scale, wide: bool) -> torch.Tensor:
        """The layer's float output from its integer accumulator (channels on dim 1)."""
        shape = (1, -1) + (1,) * (acc.dim() - 2)
        mult = (self.quant_weight()[1].reshape(-1) * in_scale).to(torch.float32).reshape(shape)
        if wide:
            y = acc.to(torch.float64) * mult.to(torch.float64)
            if self.bias is not None:
                y = y + self.bias.detach().to(torch.float64).reshape(shape)
            return y.to(torch.float32)
        y = acc.to(torch.float32) * mult
        if self.bias is not None:
            y = y + self.bias.detach().reshape(shape)
        return y


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class QuantConv2d(_QuantWeightMixin, nn.Conv2d):
    """A Conv2d with quantized weights (same weight options as QuantLinear).

    Padding adds input *codes* equal to the input's zero point (value 0), or
    `pad_value` (a code) when given; a bipolar input has no zero, so padding it
    needs an explicit pad_value of +1 or -1. Dilation 1.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1, bias=True,
                 weight_bits=4, per_channel=False, scale="float", narrow_range=True, pad_value=None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, groups=groups,
                         bias=bias)
        self._init_wq(weight_bits, per_channel, scale, narrow_range)
        self.pad = _pair(padding)
        self.pad_value = pad_value

    def pad_code(self, x: QTensor) -> int:
        """The input code that padding adds."""
        if self.pad_value is not None:
            return int(self.pad_value)
        if x.qtype is ir.Bipolar and max(self.pad) > 0:
            raise QuantError(f"QuantConv2d({self.in_channels}, {self.out_channels}) pads a bipolar input, "
                             f"which has no zero; give pad_value=+1 or pad_value=-1")
        return x.zero_point

    def _padded(self, t, fill):
        ph, pw = self.pad
        return F.pad(t, (pw, pw, ph, ph), value=fill) if ph or pw else t

    def forward(self, x):
        self._check_input(x)
        pc = self.pad_code(x)
        if self.training:
            v = self._padded(x.value, float((pc - x.zero_point) * x.scale))
            return F.conv2d(v, self.fake_quant_weight(), self.bias, self.stride, 0, 1, self.groups)
        return self.acc_to_float(self.exact_acc(x), x.scale, self.acc_is_wide(x.qtype, x.zero_point))

    def exact_acc(self, x: QTensor) -> torch.Tensor:
        """The exact integer accumulator (float64) of the eval-mode layer for input x."""
        xq = QTensor(x.value, self._padded(x.code, self.pad_code(x)), x.scale, x.zero_point, x.qtype)
        return self._exact_acc(xq, lambda a, w: F.conv2d(a, w, None, self.stride, 0, 1, self.groups))


class QuantLinear(_QuantWeightMixin, nn.Linear):
    """A Linear layer with quantized weights.

    weight_bits: "bipolar" (or 1), "ternary", or 2..8; per_channel scales or
    one per tensor; scale "float" (free) or "pow2"; narrow_range keeps n-bit
    codes symmetric (-(2**(n-1)-1) .. 2**(n-1)-1).
    """

    def __init__(self, in_features, out_features, bias=True, weight_bits=4,
                 per_channel=False, scale="float", narrow_range=True):
        super().__init__(in_features, out_features, bias=bias)
        self._init_wq(weight_bits, per_channel, scale, narrow_range)

    def forward(self, x):
        self._check_input(x)
        if self.training:
            return F.linear(x.value, self.fake_quant_weight(), self.bias)
        return self.acc_to_float(self.exact_acc(x), x.scale, self.acc_is_wide(x.qtype, x.zero_point))

    def exact_acc(self, x: QTensor) -> torch.Tensor:
        """The exact integer accumulator (float64) of the eval-mode layer for input x."""
        return self._exact_acc(x, lambda a, w: a @ w.T)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
                f"weight={self.weight_bits}, per_channel={self.per_channel}, scale={self.scale_mode}")


QUANT_LAYERS = (QuantLinear, QuantConv2d)


# ---------------------------------------------------------------- activations

class QuantAct(nn.Module):
    """n-bit activation quantizer: code = clamp(round(y / s)), s = max_val / qmax.

    Unsigned codes are 0..2**bits-1; signed codes are -2**(bits-1)..2**(bits-1)-1.
    The range max_val is learned (LSQ-style, `learnable=True`) or calibrated
    from the running maximum of |y| during training (`learnable=False`).
    """

    def __init__(self, bits: int = 4, signed: bool = False, max_val: float = 4.0,
                 learnable: bool = True, momentum: float = 0.1, scale: str = "float"):
        super().__init__()
        if not (isinstance(bits, int) and 1 <= bits <= 16):
            raise QuantError(f"QuantAct: bits must be an integer in 1..16, got {bits!r}")
        if scale not in ("float", "pow2"):
            raise QuantError(f"QuantAct: scale must be 'float' or 'pow2', got {scale!r}")
        self.scale_mode = scale
        if signed and bits < 2:
            raise QuantError("QuantAct: a signed quantizer needs at least 2 bits (use BinaryAct for ±1)")
        self.qtype = ir.Int(bits, signed)
        self.qmax = self.qtype.max
        self.learnable, self.momentum = learnable, momentum
        init = torch.tensor(float(max_val))
        if learnable:
            self.max_val = nn.Parameter(init)
        else:
            self.register_buffer("max_val", init)

    def scale(self) -> torch.Tensor:
        s = (self.max_val.abs() + 1e-8) / self.qmax
        if getattr(self, "scale_mode", "float") == "pow2":      # a power of two (up: nothing clips more)
            s = _ste(round_pow2(s.detach(), up=True), s)
        return s

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        """Integer codes of the float tensor y (the exact eval-mode function)."""
        s = self.scale().detach().to(torch.float32)
        return torch.round(y / s).clamp(self.qtype.min, self.qtype.max).to(torch.int64)

    def forward(self, y):
        y = as_value(y)
        if self.training:
            if not self.learnable:
                with torch.no_grad():
                    m = y.detach().abs().max()
                    self.max_val.mul_(1 - self.momentum).add_(self.momentum * m)
            s = self.scale()
            q = torch.clamp(y / s, self.qtype.min, self.qtype.max)
            return QTensor(_ste(torch.round(q), q) * s, None, s.detach(), 0, self.qtype)
        code = self.codes(y)
        s = self.scale().detach().to(torch.float32)
        return QTensor(code.to(torch.float32) * s, code, s, 0, self.qtype)

    def extra_repr(self):
        pow2 = ", scale=pow2" if getattr(self, "scale_mode", "float") == "pow2" else ""
        return f"{self.qtype}, max_val={float(self.max_val.detach()):.4g}, learnable={self.learnable}{pow2}"


class BinaryAct(nn.Module):
    """Sign activation: code = +1 where y >= 0 else -1; straight-through (hardtanh) gradient."""
    qtype = ir.Bipolar

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(y >= 0, 1, -1).to(torch.int64)

    def forward(self, y):
        y = as_value(y)
        one = torch.ones((), dtype=torch.float32)
        if self.training:
            return QTensor(_ste(torch.where(y >= 0, 1.0, -1.0), y.clamp(-1, 1)), None, one, 0, ir.Bipolar)
        code = self.codes(y)
        return QTensor(code.to(torch.float32), code, one, 0, ir.Bipolar)
