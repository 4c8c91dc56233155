"""Metrics of quantized models: accuracy, output SQNR, weight counts."""
from __future__ import annotations

import math

import torch

from ..nn import QuantError, as_value
from .convert import plan


def _outputs(model, x, batch=2048):
    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(as_value(model(x[i:i + batch])).detach().to(torch.float64))
    return torch.cat(outs)


def sqnr_db(ref, test) -> float | None:
    """10 log10(|ref|^2 / |ref - test|^2) in dB (inf when equal; None without a reference or when the
    shapes differ). QTensors count by their float values."""
    if ref is None or test is None:
        return None
    ref = torch.as_tensor(as_value(ref)).detach().to(torch.float64)
    test = torch.as_tensor(as_value(test)).detach().to(torch.float64)
    if ref.shape != test.shape:
        return None
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
