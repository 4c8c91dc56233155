"""Quantization error analysis: Accelerator.analyze and `qloom analyze`."""
import json
import math

import pytest
import torch
from torch import nn

import qloom
from qloom import cli
from qloom import nn as qnn
from qloom.compiler import analysis, ir
from qloom.examples import digits


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    xtr, ytr, xte, yte = digits.load()
    torch.manual_seed(0)
    fm = digits.train(digits.float_mlp(), xtr, ytr, epochs=8)
    return fm, xtr, xte


def test_quantizer_error_by_hand():
    y = torch.tensor([0.4, 1.6, 10.0, -2.0])
    r = analysis.quantizer_error(y, 1.0, 0, ir.Int(2, False), relu=True)       # codes 0..3
    assert r["clip_high"] == 0.25 and r["clip_low"] == 0.0                     # -2 is the ReLU, not clipping
    assert r["clipping_mse"] == pytest.approx((10 - 3) ** 2 / 4)
    assert r["rounding_mse"] == pytest.approx((0.4 ** 2 + 0.4 ** 2) / 4)
    s = analysis.quantizer_error(y, 1.0, 0, ir.Int(2, True), relu=False)       # codes -2..1
    assert s["clip_high"] == 0.5 and s["clip_low"] == 0.0                      # 1.6 -> 2 is past 1.5
    assert analysis.sqnr_db([1.0, 2.0], [1.0, 2.0]) == math.inf
    assert analysis.sqnr_db([1.0, 0.0], [0.9, 0.0]) == pytest.approx(20.0)


def test_analyze_ptq_against_float(trained, tmp_path):
    fm, xtr, xte = trained
    reports = {}
    for bits in (8, 2):
        qm = qloom.quantize(fm, xtr[:300], bits, bits)
        acc = qloom.compile(qm, xtr[:100])
        reports[bits] = rep = acc.analyze(xte, float_model=fm, out_dir=tmp_path / str(bits))
        types = acc.graph.validate()
        names = [r["name"] for r in rep.rows]
        assert names == ["input"] + [n.name for n in acc.graph.nodes]
        for n in acc.graph.nodes:
            r = rep.row(n.name)
            if isinstance(n, ir.Dense):
                assert r["acc_bits_used"] <= r["acc_bits"] == types[n.output].dtype.bits
                assert types[n.output].dtype.min <= r["acc_min"] <= r["acc_max"] <= types[n.output].dtype.max
                assert r["sqnr_db"] is not None and r["weight_sqnr_db"] is not None
            if isinstance(n, ir.MultiThreshold):
                assert 0 <= r["clip_high"] <= 1 and r["clip_low"] == 0
                assert r["rounding_mse"] >= 0 and r["clipping_mse"] >= 0
                assert r["codes_used"] <= r["codes_total"] == 2 ** bits
                assert r["sqnr_db"] is not None
        assert rep.output_sqnr_db == pytest.approx(rep.rows[-1]["sqnr_db"])
        pngs = sorted(p.name for p in (tmp_path / str(bits)).iterdir())
        assert len(pngs) == len(rep.plots) == 3 + 3       # 3 weight layers; input + 2 activations
        assert all((tmp_path / str(bits) / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
        assert "accumulator" in str(rep)
        json.loads(rep.to_json())
    assert reports[8].output_sqnr_db > reports[2].output_sqnr_db + 10
    assert reports[8].output_sqnr_db > 25
    assert reports[8].row("0")["weight_sqnr_db"] > 35


def test_analyze_qat_model_without_float_reference():
    """A QAT model (signed input, bipolar layer, ternary layer) and no float model: no SQNR but the rest."""
    torch.manual_seed(0)
    model = nn.Sequential(qnn.QuantInput(6, signed=True, scale=0.1), qnn.QuantLinear(8, 8, weight_bits="bipolar"),
                          nn.BatchNorm1d(8), qnn.BinaryAct(), qnn.QuantLinear(8, 6, weight_bits="ternary"),
                          nn.BatchNorm1d(6), qnn.QuantAct(3, signed=True, max_val=1.0), qnn.QuantLinear(6, 3))
    x = torch.randn(64, 8) * 2
    model.train()
    model(x)
    acc = qloom.compile(model.eval(), x)
    rep = acc.analyze(x)
    assert not rep.float_reference and rep.output_sqnr_db is None
    assert rep.row("0")["sqnr_db"] is not None                     # the input has its float reference: x
    assert rep.row("0")["clip_low"] > 0 or rep.row("0")["clip_high"] > 0
    assert rep.row("6")["sqnr_db"] is None and rep.row("6")["clip_low"] >= 0
    assert "clip_high" in rep.row("3")


def test_analyze_cnn(tmp_path):
    from test_ptq import float_cnn
    xtr, ytr, xte, _ = digits.load()
    img = xtr.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    fm = digits.train(float_cnn(), img[:400], ytr[:400], epochs=2, batch=128)
    qm = qloom.quantize(fm, img[:200], 4, 4, calibration="mse")
    rep = qloom.compile(qm, img[:64]).analyze(img[:100], float_model=fm, out_dir=tmp_path)
    assert rep.row("2")["sqnr_db"] is not None and rep.row("6")["sqnr_db"] is not None   # the ReLU quantizers
    assert rep.row("0")["acc_bits_used"] <= rep.row("0")["acc_bits"]
    assert len(rep.plots) == 6


def test_cli_analyze(tmp_path, capsys):
    spec = tmp_path / "spec.py"
    spec.write_text(
        "import torch\nimport qloom\nfrom torch import nn\n"
        "def net():\n"
        "    torch.manual_seed(0)\n"
        "    fm = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()\n"
        "    x = torch.rand(50, 6)\n"
        "    return qloom.quantize(fm, x, 4, 4), x, fm\n")
    out = tmp_path / "an"
    assert cli.main(["analyze", f"{spec}:net", "--out", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["float_reference"] and res["output_sqnr_db"] > 0
    assert (out / "analysis.json").is_file() and len(list(out.glob("*.png"))) == 4
    assert cli.main(["analyze", f"{spec}:net", "--no-plots"]) == 0
    assert "SQNR" in capsys.readouterr().out
    assert cli.main(["analyze", "nope-net"]) == 2
