"""What a sweep writes: the results table (JSON lines and CSV), the designs over seeds, the Pareto
fronts (table and PNG) and the best point's fold file.

Every table holds only what the point's inputs determine (no wall times, hosts or paths), so
the same sweep gives byte-identical tables on any backend; timings stay in DIR/points/*.json.
"""
from __future__ import annotations

import csv
import io
import json
import statistics

from .explore_space import DIMENSIONS, canonical, label

COLUMNS = ("index", "key", "model", "bits", "finetune", "target_ii", "folding_spec", "board", "seed", "status",
           "reason", "ii", "latency", "est_luts", "est_ffs", "est_brams", "est_dsps", "fps_est", "luts", "ffs",
           "brams", "dsps", "fmax_mhz", "fps", "accuracy", "sim_bit_exact", "sim_ii", "argmax", "folding", "graph_hash")
DESIGN_KEYS = tuple(k for k in DIMENSIONS if k != "seed")


def make_row(index: int, key: str, point: dict, result: dict) -> dict:
    """One table row: the point's options and the result's deterministic fields, in COLUMNS order."""
    src = {**{k: v for k, v in point.items() if k != "folding"}, "folding_spec": point["folding"],
           **result, "index": index, "key": key}
    return {c: src.get(c) for c in COLUMNS}


def rows_jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return canonical(v)
    return repr(v) if isinstance(v, float) else str(v)


def rows_csv(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_cell(r[c]) for c in COLUMNS])
    return buf.getvalue()


# ---------------------------------------------------------------- designs: one per point less its seed

def designs(rows) -> list[dict]:
    """Group the ok rows over seeds: one design per combination of the other dimensions, with the
    best and median Fmax (and frames/s) over its seeds. LUTs and frames/s come from synthesis where
    it ran, else from the estimates (LUTs in the board's units; frames/s at the board clock)."""
    groups = {}
    for r in rows:
        point = {k: r["folding_spec"] if k == "folding" else r[k] for k in DIMENSIONS}
        groups.setdefault(canonical({k: point[k] for k in DESIGN_KEYS}), []).append((point, r))
    out = []
    for members in groups.values():
        ok = [(p, r) for p, r in members if r["status"] == "ok"]
        if not ok:
            continue
        synth = ok[0][1]["fmax_mhz"] is not None
        best_p, best = max(ok, key=lambda pr: ((pr[1]["fmax_mhz"] or 0), -pr[1]["index"]))
        fmaxes = [r["fmax_mhz"] for _, r in ok if r["fmax_mhz"] is not None]
        fps = [r["fps"] for _, r in ok if r["fps"] is not None]
        out.append({
            **{k: best_p[k] for k in DESIGN_KEYS}, "label": label({**best_p, "seed": None}),
            "variant": label({**best_p, "seed": None}).split(" ii=")[0],
            "index": best["index"], "seeds": [p["seed"] for p, _ in ok], "seeds_tried": len(members),
            "ii": best["ii"], "source": "synth" if synth else "estimate",
            "luts": best["luts"] if synth else best["est_luts"],
            "brams": best["brams"] if synth else best["est_brams"],
            "dsps": best["dsps"] if synth else best["est_dsps"],
            "fmax_best": max(fmaxes) if fmaxes else None,
            "fmax_median": statistics.median(fmaxes) if fmaxes else None,
            "fps_best": max(fps) if fps else best["fps_est"],
            "fps_median": statistics.median(fps) if fps else best["fps_est"],
            "accuracy": best["accuracy"], "folding": best["folding"],
        })
    return sorted(out, key=lambda d: d["index"])


def pareto(items, y: str) -> list[dict]:
    """Per board (LUTs are in each board's own units), the designs that no other design of that board
    beats on both fewer LUTs and a higher `y`; designs lacking y are left out."""
    front = []
    for board in sorted({d["board"] for d in items}):
        pts = sorted((d for d in items if d["board"] == board and d.get(y) is not None),
                     key=lambda d: (d["luts"], -d[y], d["index"]))
        top = None
        for d in pts:
            if top is None or d[y] > top:
                front.append(d)
                top = d[y]
    return front


def best_designs(items, min_accuracy: float | None = None) -> dict:
    """{board: the design with the most frames/s that fits it} (ties: higher accuracy, fewer LUTs).
    min_accuracy: only designs whose measured accuracy reaches it count."""
    out = {}
    for board in sorted({d["board"] for d in items}):
        cands = [d for d in items if d["board"] == board and (min_accuracy is None or (
            d["accuracy"] is not None and d["accuracy"] >= min_accuracy))]
        if cands:
            out[board] = max(cands, key=lambda d: (d["fps_best"], d["accuracy"] if d["accuracy"] is not None
                                                   else -1.0, -d["luts"], -d["index"]))
    return out


# ---------------------------------------------------------------- terminal tables

def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def format_designs(items, best=None, title="Pareto front: frames/s vs LUT") -> str:
    """A table of designs (the Pareto front, or any list); `best` ({board: design}) is starred."""
    starred = {d["index"] for d in (best or {}).values()}
    if not items:
        return f"{title}: no point succeeded"
    lines = [title,
             f"{'design':<40}{'II':>8}{'LUT':>7}{'BRAM':>6}{'DSP':>5}{'Fmax best/med MHz':>19}{'frames/s':>11}"
             f"{'acc':>7}{'seeds':>7}  src"]
    for d in items:
        fm = f"{_f(d['fmax_best'], '.1f')}/{_f(d['fmax_median'], '.1f')}" if d["fmax_best"] else "-"
        mark = " *" if d["index"] in starred else ""
        acc = f"{100 * d['accuracy']:.1f}%" if d["accuracy"] is not None else "-"
        lines.append(f"{d['label'][:39]:<40}{d['ii']:>8}{d['luts']:>7}{d['brams']:>6}{d['dsps']:>5}{fm:>19}"
                     f"{d['fps_best']:>11.0f}{acc:>7}{len(d['seeds']):>4}/{d['seeds_tried']:<2} {d['source']}{mark}")
    return "\n".join(lines)


def format_summary(rows) -> str:
    """Counts per status, then each distinct failure reason once with the points it hit."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "does_not_fit", "failed")}
    out = [f"{len(rows)} points: {counts['ok']} ok, {counts['does_not_fit']} do not fit, {counts['failed']} failed"]
    reasons = {}
    for r in rows:
        if r["status"] != "ok":
            reasons.setdefault((r["status"], r["reason"]), []).append(f"#{r['index']}")
    for (status, reason), idx in reasons.items():
        shown = ", ".join(idx[:8]) + (f", ... ({len(idx)} points)" if len(idx) > 8 else "")
        out.append(f"  {status} {shown}: {reason}")
    return "\n".join(out)


# ---------------------------------------------------------------- the plot

def plot_pareto(items, path, best=None, title="qloom explore") -> None:
    """PNG, one row per board: frames/s vs LUT and (when measured) accuracy vs LUT; every design a
    dot coloured by model, the Pareto front as a dashed staircase, the best design a star."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    boards = sorted({d["board"] for d in items})
    with_acc = any(d["accuracy"] is not None for d in items)
    ncol = 2 if with_acc else 1
    fig, axes = plt.subplots(len(boards), ncol, figsize=(6.8 * ncol, 5.0 * len(boards)), squeeze=False)
    variants = sorted({d["variant"] for d in items})       # model + bits + fine-tuning: one colour each
    colors = {v: plt.cm.tab10(i % 10) for i, v in enumerate(variants)}
    panels = [("fps_best", "frames/s (best seed; board clock where not synthesised)", True)]
    if with_acc:
        panels.append(("accuracy", "accuracy on the data", False))
    for row, board in zip(axes, boards):
        mine = [d for d in items if d["board"] == board]
        star = (best or {}).get(board)
        for ax, (y, ylabel, log) in zip(row, panels):
            _panel(ax, mine, y, variants, colors, star)
            src = {d["source"] for d in mine}
            ax.set_xlabel(f"{board}: LUTs (" + ("nextpnr" if src == {"synth"} else "estimated" if
                                                src == {"estimate"} else "nextpnr or estimated") + ")")
            ax.set_ylabel(ylabel)
            if log:
                ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panel(ax, items, y, variants, colors, star):
    for m in variants:
        pts = [d for d in items if d["variant"] == m and d.get(y) is not None]
        if pts:
            ax.scatter([d["luts"] for d in pts], [d[y] for d in pts], color=colors[m], label=m, s=30, alpha=0.8)
    front = pareto(items, y)
    if front:
        xs, ys = [front[0]["luts"]], [front[0][y]]
        for d in front[1:]:
            xs += [d["luts"], d["luts"]]
            ys += [ys[-1], d[y]]
        ax.plot(xs, ys, color="black", lw=1, ls="--", label="Pareto front")
        for d in front:
            ax.annotate(f"II {d['ii']}", (d["luts"], d[y]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if star is not None and star.get(y) is not None:
        ax.scatter([star["luts"]], [star[y]], marker="*", s=240, color="gold", edgecolor="black", zorder=5,
                   label="best: most frames/s that fits")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
