"""QAT fine-tuning of a PTQ model (straight-through estimators)."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..nn import BATCH_NORMS, QuantAct, as_value


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
                    if isinstance(m, BATCH_NORMS):
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
