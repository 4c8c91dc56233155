"""Quantized tensors between qloom.nn layers: `QTensor` and the exact arithmetic on it.

Average pooling (PoolTail), residual adds (add_units, quant_add) and concatenation (quant_cat) keep the
integer codes exact in eval mode, so the front end can lower them to SumPool, Add and Concat.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import ir
from .errors import QuantError


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


def as_value(x):
    """The float value of a QTensor, or the tensor itself."""
    return x.value if isinstance(x, QTensor) else x
