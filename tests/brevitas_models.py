"""A family of small Brevitas models (MLPs and CNNs on the 8x8 digits) for the QONNX importer's tests and bench.

`Spec` describes one model (widths, weight/activation bits per layer, float or
power-of-two scales, per-tensor or per-channel, bias kind, batch norm, output
kind, CNN padding and pooling, rounding mode, zero points); `build(spec)` makes
the module and trains it for a few epochs (QAT, seconds); `export(spec)` gives
the unmodified Brevitas QONNX export (and `cleaned(...)` qonnx's cleanup of
it). `random_spec(seed)` draws a configuration: the tests treat the fixed
set as a sample and sweep seeds for properties.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")

import brevitas.nn as qnn  # noqa: E402
from brevitas.inject.enum import FloatToIntImplType  # noqa: E402
from brevitas.quant import (Int8ActPerTensorFixedPoint, Int8ActPerTensorFloat, Int8WeightPerChannelFloat,  # noqa: E402
                            Int8WeightPerTensorFixedPoint, Int8WeightPerTensorFloat, Int32Bias,
                            ShiftedUint8ActPerTensorFloat, SignedBinaryActPerTensorConst,
                            SignedBinaryWeightPerTensorConst, SignedTernaryActPerTensorConst,
                            SignedTernaryWeightPerTensorConst, Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat)


class Int8WeightPerChannelFixedPoint(Int8WeightPerTensorFixedPoint):
    scaling_per_output_channel = True


class BinaryWeightScale1(SignedBinaryWeightPerTensorConst):
    scaling_const = 1.0        # Brevitas' default 0.1 is not a power of two


class TernaryWeightScale1(SignedTernaryWeightPerTensorConst):
    scaling_const = 1.0


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str = "mlp"              # mlp | cnn
    hidden: tuple = (32, 32)       # MLP hidden widths / CNN conv channels
    wbits: tuple = (4,)            # per layer (repeats its last entry): 1 binary, 0 ternary, 2..8
    abits: tuple = (4,)            # per hidden activation: 1 binary, 0 ternary, 2..8 (unsigned after ReLU)
    in_bits: int = 8
    scaling: str = "float"         # float | po2
    per_channel: bool = False
    bias: str = "none"             # none | float | int32
    bn: bool = True
    out: str = "linear"            # linear | bn (float BatchNorm tail) | quant (an output quantizer)
    padding: tuple = (1,)          # CNN: per conv (repeats its last entry)
    pool: str = "max"              # CNN: max (after conv 1) | avg (TruncAvgPool2d at the end) | gap | none
    rounding: str = "ROUND"        # hidden activations' rounding: ROUND | FLOOR | CEIL | ROUND_TO_ZERO
    zero_point: bool = False       # asymmetric (shifted uint) hidden activations
    signed_act: bool = False       # signed (QuantIdentity) instead of ReLU activations
    epochs: int = 3
    seed: int = 0

    def at(self, seq, i):
        return seq[min(i, len(seq) - 1)]


def _round(spec):
    return getattr(FloatToIntImplType, spec.rounding)


def weight_kw(spec, i, bias_ok=True):
    b = spec.at(spec.wbits, i)
    if b == 1:
        q = BinaryWeightScale1 if spec.scaling == "po2" else SignedBinaryWeightPerTensorConst
    elif b == 0:
        q = TernaryWeightScale1 if spec.scaling == "po2" else SignedTernaryWeightPerTensorConst
    elif spec.scaling == "po2":
        q = Int8WeightPerChannelFixedPoint if spec.per_channel else Int8WeightPerTensorFixedPoint
    else:
        q = Int8WeightPerChannelFloat if spec.per_channel else Int8WeightPerTensorFloat
    kw = {"weight_quant": q}
    if b > 1:
        kw["weight_bit_width"] = b
    kw["bias"] = spec.bias != "none" and bias_ok
    if spec.bias == "int32" and bias_ok:
        kw["bias_quant"] = Int32Bias
    return kw


def act(spec, i):
    b = spec.at(spec.abits, i)
    if b == 1:
        return qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst, return_quant_tensor=True)
    if b == 0:
        return qnn.QuantIdentity(act_quant=SignedTernaryActPerTensorConst, return_quant_tensor=True)
    kw = {"bit_width": b, "return_quant_tensor": True, "float_to_int_impl_type": _round(spec)}
    if spec.signed_act:
        q = Int8ActPerTensorFixedPoint if spec.scaling == "po2" else Int8ActPerTensorFloat
        return qnn.QuantIdentity(act_quant=q, **kw)
    if spec.zero_point and spec.scaling != "po2":
        return qnn.QuantIdentity(act_quant=ShiftedUint8ActPerTensorFloat, **kw)
    q = Uint8ActPerTensorFixedPoint if spec.scaling == "po2" else Uint8ActPerTensorFloat
    return qnn.QuantReLU(act_quant=q, **kw)


def input_quant(spec):
    q = Uint8ActPerTensorFixedPoint if spec.scaling == "po2" else Uint8ActPerTensorFloat
    return qnn.QuantIdentity(act_quant=q, bit_width=spec.in_bits, max_val=1.0, return_quant_tensor=True)


def mlp(spec):
    layers = [nn.Flatten(), input_quant(spec)]
    widths = (64,) + tuple(spec.hidden)
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(qnn.QuantLinear(a, b, **weight_kw(spec, i)))
        if spec.bn:
            layers.append(nn.BatchNorm1d(b))
        layers.append(act(spec, i))
    last = len(widths) - 1
    layers.append(qnn.QuantLinear(widths[-1], 10, **weight_kw(spec, last, bias_ok=spec.out != "bn")))
    if spec.out == "bn":
        layers.append(nn.BatchNorm1d(10))
    elif spec.out == "quant":
        layers.append(qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint if spec.scaling == "po2"
                                        else Int8ActPerTensorFloat, bit_width=8, return_quant_tensor=True))
    return nn.Sequential(*layers)


def cnn(spec):
    layers = [input_quant(spec)]
    c, size = 1, 8
    for i, ch in enumerate(spec.hidden):
        pad = spec.at(spec.padding, i)
        layers.append(qnn.QuantConv2d(c, ch, 3, padding=pad, **weight_kw(spec, i)))
        size = size + 2 * pad - 2
        if spec.bn:
            layers.append(nn.BatchNorm2d(ch))
        layers.append(act(spec, i))
        c = ch
        if spec.pool == "max" and i == 0 and size >= 4:
            layers.append(nn.MaxPool2d(2))
            size //= 2
    if spec.pool == "avg" and size >= 2:
        layers.append(qnn.TruncAvgPool2d(kernel_size=2, bit_width=spec.at(spec.abits, 0) if
                                         spec.at(spec.abits, 0) > 1 else 4, return_quant_tensor=True))
        size //= 2
    elif spec.pool == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), act(dataclasses.replace(spec, abits=(max(2, spec.at(spec.abits, 0)),)), 0)]
        size = 1
    layers.append(nn.Flatten())
    last = len(spec.hidden)
    layers.append(qnn.QuantLinear(c * size * size, 10, **weight_kw(spec, last, bias_ok=spec.out != "bn")))
    if spec.out == "bn":
        layers.append(nn.BatchNorm1d(10))
    return nn.Sequential(*layers)


_DATA = {}


def digits():
    """(x_train, y_train, x_test, y_test) as float32 in [0, 1], (N, 1, 8, 8); the project's fixed split."""
    if not _DATA:
        from qloom.examples.digits import load
        xtr, ytr, xte, yte = load()
        _DATA["d"] = (xtr.reshape(-1, 1, 8, 8) / 16, ytr, xte.reshape(-1, 1, 8, 8) / 16, yte)
    return _DATA["d"]


def build(spec: Spec):
    """The Brevitas module for `spec`, trained for spec.epochs epochs (QAT, Adam), in eval mode."""
    torch.manual_seed(spec.seed)
    model = cnn(spec) if spec.kind == "cnn" else mlp(spec)
    xtr, ytr, _, _ = digits()
    g = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(spec.epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            out = model(xtr[idx])
            out = getattr(out, "value", out)
            loss = nn.functional.cross_entropy(out, ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        out = model.eval()(torch.as_tensor(x))
    return float((getattr(out, "value", out).argmax(1) == torch.as_tensor(y)).float().mean())


def export(model, example):
    """The unmodified Brevitas QONNX export (onnx.ModelProto), as qloom.from_brevitas makes it."""
    from qloom.compiler.frontends.qonnx_import import export_brevitas
    return export_brevitas(model, example)


def cleaned(proto):
    """qonnx.util.cleanup.cleanup_model of an export (onnx.ModelProto)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model
    return cleanup_model(ModelWrapper(proto)).model


def test_inputs(n_random=700, seed=0):
    """The digits test split (360), random pixels and boundary images (all 0, all 1, single hot pixels,
    half-steps of the 8-bit input grid): >= 1,000 frames of shape (1, 8, 8)."""
    _, _, xte, _ = digits()
    rng = np.random.default_rng(seed)
    rand = rng.random((n_random, 1, 8, 8)).astype(np.float32)
    rand[: n_random // 4] = np.round(rand[: n_random // 4] * 255 - 0.5) / 255 + np.float32(0.5 / 255)  # ties
    edge = np.zeros((16, 1, 8, 8), np.float32)
    edge[1] = 1.0
    edge[2:] = (rng.random((14, 1, 8, 8)) < 0.2).astype(np.float32)
    return np.concatenate([xte.numpy(), rand, edge]).astype(np.float32)


FAMILY = [
    Spec("mlp-w1a1-bn", wbits=(1,), abits=(1,), out="bn", in_bits=8),
    Spec("mlp-ternary", wbits=(0,), abits=(0,)),
    Spec("mlp-w2a2", wbits=(2,), abits=(2,)),
    Spec("mlp-w4a4-po2-int32bias", wbits=(4,), abits=(4,), scaling="po2", bias="int32", bn=False),
    Spec("mlp-w8a8-perchannel", wbits=(8,), abits=(8,), per_channel=True, bias="float"),
    Spec("mlp-mixed-po2", hidden=(48, 24), wbits=(8, 4, 2), abits=(6, 3), scaling="po2", per_channel=True,
         out="quant"),
    Spec("mlp-w4a4-int32bias", wbits=(4,), abits=(4,), bias="int32"),
    Spec("cnn-valid-max", kind="cnn", hidden=(8, 16), padding=(0,), pool="max", wbits=(4,), abits=(4,)),
    Spec("cnn-padded-po2", kind="cnn", hidden=(8, 8), padding=(1,), pool="max", scaling="po2", wbits=(4,),
         abits=(4,), bias="float"),
    Spec("cnn-truncavg", kind="cnn", hidden=(8, 8), padding=(1, 0), pool="avg", scaling="po2", wbits=(4,),
         abits=(4,)),
    Spec("cnn-gap", kind="cnn", hidden=(8, 16), padding=(1,), pool="gap", wbits=(4,), abits=(4,),
         per_channel=True),
    Spec("cnn-binary", kind="cnn", hidden=(16, 16), padding=(0,), pool="max", wbits=(1,), abits=(1,)),
    Spec("mlp-w1a1-po2", wbits=(1,), abits=(1,), scaling="po2", out="bn"),
    Spec("mlp-w3a3-floor-zeropoint", wbits=(3,), abits=(3,), rounding="FLOOR", zero_point=True, bias="float"),
    Spec("cnn-signed-ceil-roundtozero", kind="cnn", hidden=(8, 8), padding=(1, 0), pool="max", scaling="po2",
         wbits=(4,), abits=(3,), signed_act=True, rounding="ROUND_TO_ZERO", bias="int32"),
    Spec("cnn-ceil", kind="cnn", hidden=(8,), padding=(0,), pool="avg", wbits=(3,), abits=(3,), rounding="CEIL",
         scaling="po2"),
]


def random_spec(seed: int) -> Spec:
    """A random MLP/CNN configuration (bits, scales, biases, BN, pooling, rounding, zero points)."""
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    kind = pick(["mlp", "mlp", "cnn"])
    n = int(rng.integers(1, 3))
    wb = tuple(int(pick([1, 0, 2, 3, 4, 6, 8])) for _ in range(n + 1))
    ab = tuple(int(pick([1, 0, 2, 3, 4, 5, 8])) for _ in range(n))
    hidden = tuple(int(pick([8, 16, 24] if kind == "cnn" else [16, 32, 48])) for _ in range(n))
    pad = tuple(0 if (i > 0 and ab[i - 1] == 1) else int(pick([0, 1])) for i in range(n))
    return Spec(f"random-{seed}", kind=kind, hidden=hidden, wbits=wb, abits=ab, in_bits=int(pick([4, 6, 8])),
                scaling=pick(["float", "po2"]), per_channel=bool(rng.integers(2)),
                bias=pick(["none", "float", "int32"]), bn=bool(rng.integers(2)),
                out=pick(["linear", "bn", "quant"]) if kind == "mlp" else pick(["linear", "bn"]),
                padding=pad, pool=pick(["max", "avg", "gap", "none"]),
                rounding=pick(["ROUND", "ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO"]),
                zero_point=bool(rng.random() < 0.25), signed_act=bool(rng.random() < 0.25), epochs=1, seed=seed)


def local_code_mismatches(graph, src_codes) -> tuple[int, int]:
    """(differing, total) codes when every layer runs on the executor's own input codes.

    Cumulative comparisons let one near-tie flip cascade through the layers after it; feeding each layer
    the executor's codes (src_codes: IR tensor -> codes, from QonnxFrontend.source_codes) measures each
    layer's own modelling error instead.
    """
    from qloom.compiler import reference
    types = graph.validate()
    env = {graph.input: src_codes[graph.input]}
    bad = total = 0
    for node in graph.nodes:
        ins = [src_codes.get(t, env[t]) for t in node.inputs]
        out = reference.OPS[type(node)](node, *ins, *(types[t] for t in node.inputs))
        env[node.output] = out.reshape((out.shape[0],) + types[node.output].shape)
        if node.output in src_codes:
            bad += int((env[node.output] != src_codes[node.output]).sum())
            total += env[node.output].size
    return bad, total


def explain_differences(low, x) -> dict:
    """Each layer on the executor's own input codes: how many codes differ, and how many of those the
    executor's float32 rounding can explain.

    A difference is *explained* when the executor's code lies between the codes of the tail evaluated at
    v - e and v + e, where v is qloom's model of the MatMul/Conv output (the exact value rounded once) and
    e bounds the float32 error of the executor's sum: (K + 4) * 2**-24 * sum |x_k w_k| + 2**-24 * |v|
    (dequantized products, K-term recursive summation, bias add). With power-of-two scales e is never
    needed: nothing may differ at all.
    """
    from qloom.compiler import ir, reference
    g, fe = low.graph, low.frontend
    src = fe.source_codes(x)
    types = g.validate()
    out = {"codes": 0, "differ": 0, "explained": 0}
    u = 2.0 ** -24
    for mt, tail, sign, codes_at in fe.thresholded:
        layer = tail.layer
        want = src[mt.output]
        if layer is None or layer.inputs[0] not in src or isinstance(layer, ir.SumPool):
            continue
        xin = src[layer.inputs[0]]
        in_t = types[layer.inputs[0]]
        acc = reference.OPS[type(layer)](layer, xin, in_t).reshape((len(x),) + types[layer.output].shape)
        acc = acc * sign                                   # the orientation the tail was evaluated in
        zp = fe.activations[[t for t, _, _ in fe.activations].index(layer.inputs[0])][2].quant.zp
        if isinstance(layer, ir.Dense):
            terms = np.abs(xin - zp).reshape(len(x), -1) @ np.abs(layer.weight).T
            k = layer.weight.shape[1]
        else:      # the same convolution of |weights| over |x - zp| (padding contributes 0)
            absw = ir.Conv2d("abs", ["x"], "y", weight=np.abs(layer.weight), wtype=ir.Int(16), stride=layer.stride,
                             padding=layer.padding, pad_value=0, groups=layer.groups)
            terms = reference.OPS[ir.Conv2d](absw, np.abs(xin - zp), ir.TensorType(in_t.shape, ir.Int(16)))
            k = int(np.prod(layer.weight.shape[1:]))
        c = acc.shape[-1]
        a2 = acc.reshape(-1, c)
        p = tail.params["p"]
        v = tail.start(a2).astype(np.float64)
        e = (k + 4) * u * terms.reshape(-1, c) * p + u * np.abs(v)
        lo = codes_at((v - e).astype(np.float32)).reshape(want.shape)
        hi = codes_at((v + e).astype(np.float32)).reshape(want.shape)
        mine = codes_at(v.astype(np.float32)).reshape(want.shape)
        d = mine != want
        ok = (want >= np.minimum(lo, hi)) & (want <= np.maximum(lo, hi))
        out["codes"] += want.size
        out["differ"] += int(d.sum())
        out["explained"] += int((d & ok).sum())
    return out
