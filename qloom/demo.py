"""`qloom demo`: train, compile, simulate the generated Verilog on the whole digits test split."""
from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
import torch

MODELS = [("digits-mlp-w1a1", 1, 1), ("digits-mlp-w2a2", 2, 2)]


def bar(prefix):
    """A one-line progress bar on stderr: fn(done, total, note='')."""
    def show(done, total, note=""):
        n = int(30 * done / max(total, 1))
        end = "\n" if done >= total else ""
        print(f"\r[qloom] {prefix:<28} [{'#' * n}{'.' * (30 - n)}] {done}/{total} {note}",
              end=end, file=sys.stderr, flush=True)
    return show


def weight_bits(graph) -> int:
    from qloom.compiler import ir
    return sum(n.weight.size * n.wtype.bits for n in graph.nodes if isinstance(n, ir.Dense))


def run_model(name, wbits, abits, out_root, simulator, target_ii, epochs):
    import qloom
    from qloom.examples import digits
    from qloom.sim import simulate

    xtr, ytr, xte, yte = digits.load()
    t0 = time.time()
    model = digits.train(digits.mlp(wbits, abits), xtr, ytr, epochs=epochs,
                         progress=lambda e, n, loss: bar(f"train {name}")(e, n, f"loss {loss:.3f}"))
    t_train = time.time() - t0
    acc = qloom.compile(model, xtr, name=name.replace("-", "_"), argmax=True, target_ii=target_ii)
    build = out_root / name
    manifest = acc.save(build, x_float=xte)
    print(f"[qloom] {name}: Verilog and vectors in {build}", file=sys.stderr)
    res = simulate(build, simulator=simulator, stall_prob=0.2,
                   progress=lambda msg: print(f"[qloom] {name}: {msg}", file=sys.stderr, flush=True))
    hw_labels = np.asarray(res["outputs"]).reshape(-1)          # what the Verilog produced
    torch_acc = digits.accuracy(model, xte, yte)
    with torch.no_grad():
        out = model(xte)
    torch_labels = (out.value if hasattr(out, "value") else out).argmax(1).numpy()
    y = yte.numpy()
    return {
        "name": name, "train_seconds": round(t_train, 1),
        "quant_torch_accuracy": torch_acc,
        "hardware_accuracy": float((hw_labels == y).mean()),
        "fidelity": float((hw_labels == torch_labels).mean()),
        "bit_exact": bool(res["bit_exact"]), "frames": int(res["frames"]),
        "weight_bits": weight_bits(acc.graph),
        "float32_weight_bits": 32 * sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")
                                        and p.dim() == 2),
        "mismatches": int(res["mismatches"]), "ii": res.get("ii_measured"), "ii_estimate": manifest["ii_estimate"],
        "latency_cycles": res.get("latency_cycles"), "resources_estimate": manifest["resources_estimate"],
        "stages": manifest["stages"], "build_dir": str(build), "confusion": confusion(y, hw_labels),
        "sim": {k: res[k] for k in ("simulator", "cycles", "sim_seconds") if k in res},
    }


def confusion(y, pred, n=10):
    m = np.zeros((n, n), dtype=int)
    for a, b in zip(y, pred):
        if 0 <= b < n:
            m[a, b] += 1
    return m.tolist()


def float_baseline(epochs):
    from qloom.examples import digits
    xtr, ytr, xte, yte = digits.load()
    torch.manual_seed(0)
    m = digits.train(digits.float_mlp(), xtr, ytr, epochs=epochs, progress=bar("train float baseline"))
    return m, digits.accuracy(m, xte, yte)


def ptq_rows(float_model, epochs, qat_rows):
    """The float MLP quantized post-training at 8/4/2 bits (min-max and MSE calibration) vs QAT.

    Every PTQ model is compiled and checked: torch eval == IR on the whole test split.
    """
    import qloom
    from qloom.compiler import ptq
    from qloom.examples import digits
    xtr, ytr, xte, yte = digits.load()
    qat_by_bits = {r["bits"]: r["quant_torch_accuracy"] for r in qat_rows}
    rows = []
    for bits in (8, 4, 2):
        row = {"bits": bits}
        for method in ("minmax", "mse"):
            qm = qloom.quantize(float_model, xtr[:512], bits, bits, calibration=method)
            row[method] = ptq.accuracy(qm, xte, yte)
            row[f"fidelity_{method}"] = qloom.compile(qm, xtr[:512]).fidelity(xte).fidelity
        if bits not in qat_by_bits:
            qat_by_bits[bits] = digits.accuracy(digits.build(bits, bits, epochs=epochs)[0], xte, yte)
        row["qat"] = qat_by_bits[bits]
        rows.append(row)
        bar("post-training quantization")(len(rows), 3)
    return rows


def ptq_table(rows, float_acc) -> str:
    lines = ["Post-training quantization of the float MLP (weights and activations at the same width) vs QAT:",
             f"{'bits':>4}{'float':>8}{'PTQ minmax':>12}{'PTQ mse':>9}{'QAT':>8}{'fidelity':>10}"]
    for r in rows:
        fid = min(r["fidelity_minmax"], r["fidelity_mse"])
        lines.append(f"{r['bits']:>4}{100 * float_acc:>7.1f}%{100 * r['minmax']:>11.1f}%{100 * r['mse']:>8.1f}%"
                     f"{100 * r['qat']:>7.1f}%{100 * fid:>9.1f}%")
    return "\n".join(lines)


def table(rows, float_acc) -> str:
    lines = [f"{'model':<17}{'float':>7}{'torch-q':>9}{'hardware':>10}{'fidelity':>10}{'weights':>18}"
             f"{'II':>6}{'latency':>9}{'LUT':>7}{'FF':>7}{'BRAM':>6}{'DSP':>5}"]
    for r in rows:
        res = r["resources_estimate"]
        w = f"{r['weight_bits'] / 8192:.1f}/{r['float32_weight_bits'] / 8192:.0f} KiB"
        lines.append(f"{r['name']:<17}{100 * float_acc:>6.1f}%{100 * r['quant_torch_accuracy']:>8.1f}%"
                     f"{100 * r['hardware_accuracy']:>9.1f}%{100 * r['fidelity']:>9.1f}%{w:>18}"
                     f"{r['ii'] or r['ii_estimate']:>6}{r['latency_cycles'] or '-':>9}{res['luts']:>7}"
                     f"{res['ffs']:>7}{res['brams']:>6}{res['dsps']:>5}")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(rows), 3, figsize=(15, 4.2 * len(rows)), squeeze=False)
    for ax, r in zip(axes, rows):
        st = [s for s in r["stages"] if s["kind"] not in ("fifo",)]
        names = [f"{s['kind']}\n{s['stage']}" for s in st]
        ax[0].bar(names, [s["cycles"] for s in st], color="tab:blue")
        ax[0].set_title(f"{r['name']}: cycles per frame by stage (II {r['ii'] or r['ii_estimate']})")
        ax[0].tick_params(axis="x", labelsize=7, rotation=45)
        x = np.arange(len(st))
        for i, (k, c) in enumerate([("luts", "tab:orange"), ("ffs", "tab:green")]):
            ax[1].bar(x + 0.4 * i, [s[k] for s in st], width=0.4, label=k.upper(), color=c)
        ax[1].set_xticks(x + 0.2, names, fontsize=7, rotation=45)
        ax[1].set_title("estimated resources by stage")
        ax[1].legend()
        cm = np.array(r["confusion"])
        ax[2].imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax[2].text(j, i, v, ha="center", va="center", fontsize=7)
        ax[2].set_xlabel("hardware label")
        ax[2].set_ylabel("true label")
        ax[2].set_title(f"confusion (hardware accuracy {100 * r['hardware_accuracy']:.1f}%)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(out="build/demo", simulator="verilator", target_ii=64, epochs=60, as_json=False):
    out_root = pathlib.Path(out)
    out_root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    float_model, float_acc = float_baseline(epochs)
    rows = [run_model(n, w, a, out_root, simulator, target_ii, epochs) for n, w, a in MODELS]
    for r, (_, w, _a) in zip(rows, MODELS):
        r["bits"] = w
    ptq = ptq_rows(float_model, epochs, rows)
    png = out_root / "summary.png"
    plot(rows, png)
    (out_root / "summary.json").write_text(json.dumps({"float_accuracy": float_acc, "models": rows, "ptq": ptq},
                                                      indent=2))
    if as_json:
        print(json.dumps({"float_accuracy": float_acc, "ptq": ptq, "models": [{k: v for k, v in r.items()
                          if k not in ("stages", "confusion")} for r in rows]}, indent=2))
    else:
        print(f"\nDigits test split: {rows[0]['frames']} images, simulated on the generated Verilog "
              f"({simulator}), every output checked against the reference model.\n")
        print(table(rows, float_acc))
        print()
        print(ptq_table(ptq, float_acc))
        print(f"\nbuild dirs: {', '.join(r['build_dir'] for r in rows)}")
        print(f"summary: {png} and {out_root / 'summary.json'} ({time.time() - t0:.0f} s)")
    return rows
