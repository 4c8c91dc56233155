"""Per-layer sensitivity to bit width, and greedy bit allocation under an accuracy budget."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .convert import act_sites, quantize, weight_sites
from .metrics import _bits_num, _metric, _n_weights, _outputs, _split_eval


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
