"""Quantization error analysis of a compiled network (`Accelerator.analyze`, `qloom analyze`).

Per IR node, on a batch of float inputs:
- quantizers (the input's QuantInput, every QuantAct): SQNR of the quantized activation
  against the float model's (when a float reference model is given), the share of values
  clipped above the top code and below the bottom code, and the quantization error split
  into rounding (values inside the range) and clipping (values outside it). An unsigned
  quantizer implements a ReLU, so negative values count as neither clipped nor error there;
- quantized layers (Dense, Conv2d) and sum pools: the accumulator's used range (from the
  integer reference model, `reference.run(..., return_all=True)`) against its declared width
  (`graph.validate()`, proven worst-case bounds), weight SQNR, and the SQNR of the layer's
  float output against the float model's;
- PNG histograms of every quantized layer's weights and of every quantizer's input, in code
  units, with the quantization grid and the clipping bounds marked.

Float counterparts are matched by order: the k-th Linear/Conv2d of the float model is the
k-th QuantLinear/QuantConv2d of the quantized model, and the k-th quantizer after it is
compared with the float model's output after that layer's batch norm / ReLU (before any
pooling or flatten). This holds for PTQ models (`qloom.quantize`) and for QAT models
written layer for layer like their float twin.
"""
from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import ir
from .nn import (BATCH_NORMS, DROPOUTS, FLOAT_LAYERS, QUANT_LAYERS, BinaryAct, QuantAct, QuantInput, as_value,
                 capture)
from .ptq.metrics import sqnr_db

_FLOAT_TAIL = BATCH_NORMS + DROPOUTS + (nn.ReLU,)


def quantizer_error(y, scale, zero_point, qtype, relu: bool) -> dict:
    """Clipping shares and rounding/clipping mean squared error of quantizing the floats y.

    code = clamp(round(y / scale) + zero_point); the target is relu(y) when the quantizer
    implements a ReLU (unsigned activations), else y.
    """
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    s = float(scale)
    u = y / s + zero_point
    lo, hi = qtype.min, qtype.max
    target = y.clamp(min=0) if relu else y
    code = torch.clamp(torch.round(u), lo, hi)
    q = (code - zero_point) * s
    err2 = (q - target) ** 2
    above = u > hi + 0.5
    below = (u < lo - 0.5) & ~torch.as_tensor(relu)
    clipped = above | below
    n = max(y.numel(), 1)
    rnd = float(err2[~clipped].sum()) / n
    clp = float(err2[clipped].sum()) / n
    return {"clip_high": float(above.double().mean()) if y.numel() else 0.0,
            "clip_low": float(below.double().mean()) if y.numel() else 0.0,
            "rounding_mse": rnd, "clipping_mse": clp,
            "rounding_share": rnd / (rnd + clp) if rnd + clp > 0 else None,
            "quant_sqnr_db": sqnr_db(target, q)}


@dataclass
class AnalysisReport:
    """Per-node rows (dicts) and where the histograms went."""
    frames: int
    rows: list = field(default_factory=list)
    output_sqnr_db: float | None = None
    plots: list = field(default_factory=list)
    float_reference: bool = False

    def row(self, name):
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(name)

    def to_dict(self):
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return str(v)
            return v
        return {"frames": self.frames, "float_reference": self.float_reference,
                "output_sqnr_db": clean(self.output_sqnr_db), "plots": [str(p) for p in self.plots],
                "rows": [{k: clean(v) for k, v in r.items()} for r in self.rows]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def __str__(self):
        def db(v):
            return "-" if v is None else ("inf" if v == math.inf else f"{v:.1f}")

        def pct(v):
            return "-" if v is None else f"{100 * v:.2f}"

        def e(v):
            return "-" if v is None else f"{v:.2e}"
        head = (f"{'node':<16}{'kind':<15}{'type':<9}{'SQNR dB':>8}{'wSQNR':>7}{'clip hi%':>9}{'clip lo%':>9}"
                f"{'round MSE':>11}{'clip MSE':>10}  {'accumulator used / width':<28}")
        lines = [f"quantization error analysis on {self.frames} frames"
                 + ("" if self.float_reference else " (no float model: SQNR only for the input)"), head]
        for r in self.rows:
            acc = ""
            if r.get("acc_min") is not None:
                acc = (f"{r['acc_min']}..{r['acc_max']}: {r['acc_bits_used']}/{r['acc_bits']} bits "
                       f"({pct(r['acc_range_used'])}%)")
            elif r.get("codes_used") is not None:
                acc = f"{r['codes_used']}/{r['codes_total']} codes used"
            lines.append(f"{r['name'][:15]:<16}{r['kind']:<15}{r['type']:<9}{db(r.get('sqnr_db')):>8}"
                         f"{db(r.get('weight_sqnr_db')):>7}{pct(r.get('clip_high')):>9}{pct(r.get('clip_low')):>9}"
                         f"{e(r.get('rounding_mse')):>11}{e(r.get('clipping_mse')):>10}  {acc:<28}")
        if self.float_reference:
            lines.append(f"output SQNR vs the float model: {db(self.output_sqnr_db)} dB")
        if self.plots:
            lines.append(f"histograms: {len(self.plots)} PNG files in {pathlib.Path(self.plots[0]).parent}")
        return "\n".join(lines)


def _leaf_order(model):
    return [(p, m) for p, m in model.named_modules() if not list(m.children())]


def _float_counterparts(float_model, x):
    """(outputs of the float layers in order, their post-tail outputs, the model output)."""
    leaves = _leaf_order(float_model)
    seen, out = capture(float_model, x, FLOAT_LAYERS + _FLOAT_TAIL)
    layers, after = [], []
    for i, (p, m) in enumerate(leaves):
        if isinstance(m, FLOAT_LAYERS):
            layers.append(seen[p][1])
            last = p
            for q, mm in leaves[i + 1:]:
                if not isinstance(mm, _FLOAT_TAIL):
                    break
                last = q
            after.append(seen[last][1])
    return layers, after, out


def analyze(acc, x_float, float_model=None, out_dir=None, plots: bool = True, max_points: int = 200_000):
    """Error analysis of the compiled network `acc` (an Accelerator) on float inputs (see the module doc)."""
    x = torch.as_tensor(x_float, dtype=torch.float32)
    model = acc.model
    mods = dict(model.named_modules())
    seen, qout = capture(model, x, (QuantInput, QuantAct, BinaryAct) + QUANT_LAYERS)
    env = acc.reference(acc.quantize_input(x), return_all=True)
    types = acc.graph.validate()
    qlayers = [p for p, m in _leaf_order(model) if isinstance(m, QUANT_LAYERS)]

    f_layers = f_after = f_out = None
    if float_model is not None:
        f_layers, f_after, f_out = _float_counterparts(float_model, x)
        if len(f_layers) != len(qlayers):
            raise ValueError(f"analyze: the float model has {len(f_layers)} Linear/Conv2d layers, the quantized "
                             f"model {len(qlayers)} quantized layers; they must correspond one to one")
    f_weights = ([m.weight for m in float_model.modules() if isinstance(m, FLOAT_LAYERS)]
                 if float_model is not None else None)

    # the quantizer right after each quantized layer (by module order) gets that layer's float reference
    act_ref = {}
    order = _leaf_order(model)
    k = -1
    for p, m in order:
        if isinstance(m, QUANT_LAYERS):
            k = qlayers.index(p)
        elif isinstance(m, (QuantAct, BinaryAct)) and k >= 0 and f_after is not None and k not in act_ref.values():
            act_ref[p] = k

    report = AnalysisReport(frames=int(x.shape[0]), float_reference=float_model is not None)
    hist = []
    # the input quantizer
    iq = acc.frontend.input_quant
    ip = next((p for p, m in mods.items() if m is iq), "input")
    inp, out = seen.get(ip, (x, None))
    row = {"name": ip, "kind": "QuantInput", "type": str(iq.qtype), "sqnr_db": None}
    if iq.qtype is not ir.Bipolar:
        row.update(quantizer_error(x, iq.scale, iq.zero_point, iq.qtype, relu=False))
        row["sqnr_db"] = row["quant_sqnr_db"]
        hist.append(("act", ip, x, float(iq.scale), iq.zero_point, iq.qtype))
    row.update(_codes_used(env[acc.graph.input], iq.qtype))
    report.rows.append(row)

    for node in acc.graph.nodes:
        t = types[node.output]
        row = {"name": node.name, "kind": node.kind, "type": str(t.dtype), "sqnr_db": None}
        m = mods.get(node.name)
        val = env[node.output]
        if isinstance(node, (ir.Dense, ir.Conv2d, ir.SumPool)):
            lo, hi = int(val.min()), int(val.max())
            used = ir.int_type_for(min(lo, 0), max(hi, 0))
            width = t.dtype.bits
            span = (t.dtype.max - t.dtype.min) or 1
            row.update({"acc_min": lo, "acc_max": hi, "acc_bits_used": used.bits, "acc_bits": width,
                        "acc_range_used": (hi - lo) / span})
            if isinstance(node, (ir.Dense, ir.Conv2d)):
                row["weight_type"] = str(node.wtype)
            if isinstance(m, QUANT_LAYERS):
                k = qlayers.index(node.name)
                codes, s = m.quant_weight()
                wq = codes * s
                wf = f_weights[k] if f_weights is not None else m.weight
                row["weight_sqnr_db"] = sqnr_db(wf.detach(), wq)
                if f_layers is not None:
                    row["sqnr_db"] = sqnr_db(f_layers[k], as_value(seen[node.name][1]))
                hist.append(("weight", node.name, m))
        elif isinstance(node, (ir.MultiThreshold, ir.Requantize)):
            row.update(_codes_used(val, node.out_type))
            if isinstance(m, QuantAct):
                y = as_value(seen[node.name][0])
                s = float(m.scale().detach())
                row.update(quantizer_error(y, s, 0, m.qtype, relu=not m.qtype.signed))
                hist.append(("act", node.name, y, s, 0, m.qtype))
            elif isinstance(m, BinaryAct):
                y = as_value(seen[node.name][0])
                row["clip_high"] = float((y.abs() > 1).double().mean())   # |y| beyond the +-1 levels
            if node.name in act_ref:
                row["sqnr_db"] = sqnr_db(f_after[act_ref[node.name]], as_value(seen[node.name][1]))
        report.rows.append(row)
    if f_out is not None:
        report.output_sqnr_db = sqnr_db(f_out, as_value(qout))
    if plots and out_dir is not None:
        report.plots = _plot(hist, pathlib.Path(out_dir), max_points)
    return report


def _codes_used(codes, qtype) -> dict:
    if qtype is ir.Bipolar:
        total = 2
    else:
        total = qtype.max - qtype.min + 1
    return {"codes_used": int(np.unique(np.asarray(codes)).size), "codes_total": int(total)}


def _grid(ax, lo, hi):
    """Mark the integer code grid lo..hi (every code when few, else the ends) and the clip bounds."""
    if hi - lo <= 32:
        for c in range(lo, hi + 1):
            ax.axvline(c, color="0.6", lw=0.5, zorder=0)
    ax.axvline(lo - 0.5, color="red", lw=1, ls="--")
    ax.axvline(hi + 0.5, color="red", lw=1, ls="--")


def _plot(hist, out_dir: pathlib.Path, max_points):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(0)
    for item in hist:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        if item[0] == "weight":
            _, name, m = item
            codes, s = m.quant_weight()
            w = m.weight.detach()
            u = (w / s).flatten().numpy()            # per-channel scales: every weight in its own code units
            if m.wtype is ir.Bipolar:
                lo, hi = -1, 1
            else:
                lo, hi = m.wtype.min + (1 if m.narrow_range and m.weight_bits != "ternary" else 0), m.wtype.max
                if m.weight_bits == "ternary":
                    lo, hi = -1, 1
            title = f"{name}: weights / scale ({m.weight_bits}-bit{', per channel' if m.per_channel else ''})"
            fname = f"weights_{_safe(name)}.png"
        else:
            _, name, y, s, zp, qtype = item
            u = (torch.as_tensor(y, dtype=torch.float64).flatten() / s + zp).numpy()
            lo, hi = qtype.min, qtype.max
            title = f"{name}: input / scale ({qtype})"
            fname = f"act_{_safe(name)}.png"
        if u.size > max_points:
            u = rng.choice(u, max_points, replace=False)
        ax.hist(u, bins=min(200, max(20, 4 * (hi - lo + 1))), color="tab:blue", alpha=0.8)
        _grid(ax, lo, hi)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("code units (grey: quantization grid, red: clipping bounds)", fontsize=8)
        ax.set_yscale("log")
        fig.tight_layout()
        p = out_dir / fname
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
