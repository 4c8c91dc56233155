"""A differential fuzzer through the public API only: random qloom.nn networks, checked end to end.

`random_case(seed)` draws a network over every supported feature (input bits, signedness, zero
point, bipolar input, weight kinds, per-channel and power-of-two scales, bias, batch norm with
negative and zero gammas, ReLU before/after batch norm, activation widths and signedness, convs
with stride/padding/groups, max/avg/global pooling, argmax, requantize, random folding) and
adversarial inputs (all-min, all-max, exact half-step ties, out-of-range floats). `check_case`
compiles it with `qloom.compile` and checks torch eval = IR on every element; `check_rtl`
simulates it on Verilator (random stalls: every element; no stalls: II measured == estimated,
latency within the documented bound). Outcomes are data: "ok", "refused" (a QloomError that
names the cause: unsupported by design), or "FAIL: ..." (a mismatch, a crash, a wrong II).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import qloom
from qloom import nn as qnn
from qloom.compiler import ir
from qloom.compiler.errors import QloomError

LATENCY_BOUND = (0.05, 10)          # documented: |measured - estimated| <= 5% of measured + 10 cycles


@dataclass
class Case:
    seed: int
    model: nn.Module
    x: torch.Tensor                         # float inputs incl. adversarial ones
    features: list = field(default_factory=list)
    options: dict = field(default_factory=dict)


def _input_quant(r: random.Random, feats):
    kind = r.choice(["u8", "u4", "s4", "zp", "bipolar", "u2"])
    feats.append(f"input:{kind}")
    if kind == "bipolar":
        return qnn.QuantInput(1, bipolar=True), (-1.0, 1.0)
    bits = {"u8": 8, "u4": 4, "s4": 4, "zp": 8, "u2": 2}[kind]
    signed = kind == "s4"
    pow2 = r.random() < 0.5
    scale = 2.0 ** -r.randint(2, 6) if pow2 else r.uniform(0.01, 0.2)
    zp = r.randint(1, 40) if kind == "zp" else 0
    q = qnn.QuantInput(bits, signed=signed, scale=scale, zero_point=zp)
    lo = (q.qtype.min - zp) * scale
    hi = (q.qtype.max - zp) * scale
    return q, (lo, hi)


def _act(r: random.Random, feats):
    bits = r.choice([1, 2, 3, 4, 5, 8])
    if bits == 1:
        feats.append("act:binary")
        return qnn.BinaryAct()
    signed = r.random() < 0.3 and bits >= 2
    feats.append(f"act:{'s' if signed else 'u'}{bits}")
    return qnn.QuantAct(bits, signed=signed, max_val=r.uniform(0.5, 4.0), learnable=False)


def _wkw(r: random.Random, feats):
    w = r.choice(["bipolar", "ternary", 2, 3, 4, 8])
    pc = r.random() < 0.5
    pow2 = r.random() < 0.3
    feats += [f"w:{w}"] + (["per_channel"] if pc else []) + (["w_pow2"] if pow2 else [])
    return {"weight_bits": w, "per_channel": pc, "scale": "pow2" if pow2 else "float"}


def _bn(r, feats, n, dims):
    b = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(n)
    with torch.no_grad():
        g = torch.randn(n)
        g[torch.rand(n) < 0.15] = 0.0                    # zero gamma: constant channels
        b.weight.copy_(g)                                 # negative gammas too
        b.bias.copy_(torch.randn(n) * 0.5)
        b.running_mean.copy_(torch.randn(n) * 0.5)
        b.running_var.copy_(torch.rand(n) * 2 + 0.05)
    feats.append("bn")
    return b


def _tail(r, feats, n, dims):
    """What sits between a quantized layer and its quantizer: BN, ReLU, both in either order."""
    choice = r.choice(["none", "bn", "relu", "bn_relu", "relu_bn"])
    feats.append(f"tail:{choice}")
    out = []
    for part in choice.split("_"):
        if part == "bn":
            out.append(_bn(r, feats, n, dims))
        elif part == "relu":
            out.append(nn.ReLU())
    return out


def random_case(seed: int, kind: str | None = None) -> Case:
    r = random.Random(seed)
    torch.manual_seed(seed)
    feats: list = []
    kind = kind or r.choice(["mlp", "mlp", "cnn"])
    feats.append(kind)
    inq, (lo, hi) = _input_quant(r, feats)
    layers = [inq]
    bipolar = inq.qtype is ir.Bipolar
    if kind == "mlp":
        widths = [r.randint(1, 40)] + [r.randint(1, 24) for _ in range(r.randint(1, 3))]
        shape = (widths[0],)
        for i in range(len(widths) - 1):
            layers.append(qnn.QuantLinear(widths[i], widths[i + 1], bias=r.random() < 0.5, **_wkw(r, feats)))
            last = i == len(widths) - 2
            if not last or r.random() < 0.6:
                layers += _tail(r, feats, widths[i + 1], 1)
                act = _act(r, feats)
                layers.append(act)
                bipolar = isinstance(act, qnn.BinaryAct)
            elif r.random() < 0.5:
                layers += [_bn(r, feats, widths[-1], 1)] if r.random() < 0.3 else []
    else:
        c, h = r.choice([1, 2, 3, 4]), r.randint(4, 9)
        shape = (c, h, h)
        for i in range(r.randint(1, 2)):
            oc = r.choice([2, 4, 6, 8])
            k = r.choice([1, 2, 3]) if h >= 3 else 1
            stride = r.choice([1, 1, 2])
            pad = r.choice([0, 0, 1]) if k > 1 else 0
            groups = r.choice([g for g in (1, 2, c) if c % g == 0 and oc % g == 0])
            pad_value = (-1 if r.random() < 0.5 else 1) if (pad and bipolar) else None
            feats += [f"conv:k{k}s{stride}p{pad}"] + (["groups"] if groups > 1 else [])
            layers.append(qnn.QuantConv2d(c, oc, k, stride=stride, padding=pad, groups=groups, pad_value=pad_value,
                                          bias=r.random() < 0.3, **_wkw(r, feats)))
            h = (h + 2 * pad - k) // stride + 1
            c = oc
            layers += _tail(r, feats, c, 2)
            act = _act(r, feats)
            layers.append(act)
            bipolar = isinstance(act, qnn.BinaryAct)
            if h >= 2 and r.random() < 0.4:
                pool = r.choice(["max", "avg"])
                feats.append(f"pool:{pool}")
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                h //= 2
                if pool == "avg":
                    layers.append(_act(r, feats))
                    bipolar = False
        if r.random() < 0.3:
            feats.append("pool:global")
            layers += [nn.AdaptiveAvgPool2d(1), _act(r, feats)]
            h = 1
        layers += [nn.Flatten(), qnn.QuantLinear(c * h * h, r.randint(2, 10), bias=False, **_wkw(r, feats))]
        if r.random() < 0.5:
            layers.append(_act(r, feats))
    model = nn.Sequential(*layers)
    options = {}
    if r.random() < 0.2:
        options["argmax"] = True
        feats.append("argmax")
    if r.random() < 0.25:
        options["requantize"] = True
        feats.append("requantize")
    options["target_ii"] = r.choice([None, 1, 4, 16, 64, 256])
    feats.append(f"fold:{options['target_ii']}")
    x = _inputs(r, shape, lo, hi, inq)
    _calibrate(model, x)
    return Case(seed, model, x, feats, options)


def _inputs(r, shape, lo, hi, inq, n=48):
    """Random values, every extreme, exact half-step ties, and out-of-range floats (they clamp)."""
    g = torch.Generator().manual_seed(r.randint(0, 1 << 30))
    u = torch.rand((n,) + shape, generator=g) * (hi - lo) + lo
    parts = [u, torch.full((2,) + shape, lo), torch.full((2,) + shape, hi),
             torch.full((1,) + shape, lo - 1.0), torch.full((1,) + shape, hi + 1.0)]
    if inq.qtype.bits > 1:
        s = float(inq.scale)
        codes = torch.randint(int(inq.qtype.min), int(inq.qtype.max), (8,) + shape, generator=g)
        parts.append((codes - inq.zero_point + 0.5) * s)           # exact half-step ties
    else:
        parts.append(torch.zeros((2,) + shape))                    # the sign's tie: 0 -> +1
    return torch.cat(parts).float()


def _calibrate(model, x):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.momentum = None
        if isinstance(m, qnn.QuantAct):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def check_case(case: Case):
    """(outcome, acc or None). torch eval = IR on every element of every input."""
    try:
        acc = qloom.compile(case.model, case.x, **case.options)
    except QloomError as e:
        msg = str(e)
        if "internal error" in msg or type(e).__name__ == "InternalError":
            return f"FAIL: {type(e).__name__}: {msg[:200]}", None
        return "refused", None
    except Exception as e:  # noqa: BLE001 - anything else is a qloom bug
        return f"FAIL: crash {type(e).__name__}: {str(e)[:200]}", None
    rep = acc.fidelity(case.x)
    if not rep.exact:
        return f"FAIL: torch != IR: {rep}", acc
    return "ok", acc


def check_rtl(case: Case, acc, stall_prob: float, cache_dir=None) -> str:
    """IR = RTL on Verilator with stalls on every element; then no stalls: II and latency as estimated."""
    x_int = acc.quantize_input(case.x)
    r = acc.simulate(x_int, stall_prob=stall_prob, seed=case.seed, cache_dir=cache_dir)
    if not r.bit_exact:
        return f"FAIL: IR != RTL ({r.mismatches} elements; {r.verdict.splitlines()[0] if r.verdict else ''})"
    r0 = acc.simulate(np.repeat(x_int[:1], 8, axis=0), stall_prob=0.0, seed=case.seed, cache_dir=cache_dir)
    est = acc.estimate()
    if r0.ii_measured != est["ii"]:
        return f"FAIL: II measured {r0.ii_measured} != estimated {est['ii']}"
    lat = r0.latency_cycles
    if lat is not None and abs(lat - est["latency"]) > LATENCY_BOUND[0] * lat + LATENCY_BOUND[1]:
        return f"FAIL: latency measured {lat}, estimated {est['latency']}"
    return "ok"
