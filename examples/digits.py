"""MLPs trained (QAT) on scikit-learn's 8x8 digits, which ship inside scikit-learn (no download).

Inputs are the raw pixel values 0..16, quantized exactly as 5-bit codes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from qloom import nn as qnn


def load(seed: int = 0):
    """(x_train, y_train, x_test, y_test): a fixed stratified 80/20 split of the 1,797 images."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: len(idx) // 5]] = True
    t = torch.from_numpy
    return t(x[~test]), t(y[~test]), t(x[test]), t(y[test])


def mlp(wbits, abits, hidden=(64, 64)):
    w = "bipolar" if wbits == 1 else wbits
    act = (lambda: qnn.BinaryAct()) if abits == 1 else (lambda: qnn.QuantAct(abits, max_val=2.0))
    layers = [qnn.QuantInput(5, signed=False, scale=1.0)]
    widths = [64, *hidden]
    for a, b in zip(widths, widths[1:]):
        layers += [qnn.QuantLinear(a, b, bias=False, weight_bits=w), nn.BatchNorm1d(b), act()]
    # last layer: no bias, per-tensor scale, so argmax over its accumulators is exact
    layers.append(qnn.QuantLinear(widths[-1], 10, bias=False, weight_bits=w))
    return nn.Sequential(*layers)


def float_mlp(hidden=(64, 64)):
    widths = [64, *hidden]
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], 10))
    return nn.Sequential(*layers)


def train(model, x, y, epochs=60, lr=1e-2, seed=0, progress=None, input_scale=1.0, batch=64):
    """Plain minibatch Adam on cross-entropy; deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = model(x[idx] * input_scale)
            out = out.value if isinstance(out, qnn.QTensor) else out
            loss = nn.functional.cross_entropy(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if progress:
            progress(ep + 1, epochs, float(loss))
    return model.eval()


def accuracy(model, x, y, input_scale=1.0) -> float:
    with torch.no_grad():
        out = model.eval()(x * input_scale)
    out = out.value if isinstance(out, qnn.QTensor) else out
    return float((out.argmax(1) == y).float().mean())


def build(wbits: int, abits: int, epochs: int = 60, seed: int = 0, progress=None):
    """(model, example_input): a QAT-trained digits MLP and its training images."""
    torch.manual_seed(seed)
    xtr, ytr, _, _ = load()
    model = train(mlp(wbits, abits), xtr, ytr, epochs=epochs, seed=seed, progress=progress)
    return model, xtr
