# amaranth: UnusedElaboratable=no
"""Every bad input is one clear line and the right exit status; nothing bad is accepted silently (#17)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qloom
from qloom import checks
from qloom import nn as qnn
from qloom.cli import main as cli
from qloom.compiler import builddir
from qloom.compiler.errors import BadInput, QloomError, QuantError
from qloom.examples import tfc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small MLP's build dir (input 64 uint8, II 64)."""
    model, x = tfc.build(2, 2, n_in=64)
    acc = qloom.compile(model, x[:64], target_ii=64)
    d = tmp_path_factory.mktemp("err") / "mlp"
    acc.save(d, x_float=x[:8])
    return d, acc, x


def run(argv) -> int:
    """The CLI's exit status, whether main returns it or argparse exits with it."""
    try:
        return cli(argv)
    except SystemExit as e:
        return e.code


def one_line_error(capsys, *words):
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("[qloom] ")]
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


# ---------------------------------------------------------------- fold specs

def test_fold_spec_accepts_finn_spelling_and_refuses_the_rest():
    assert checks.folding_spec({"fc0": {"PE": 4, "SIMD": 8}, "Defaults": {}}) == {"fc0": {"pe": 4, "simd": 8}}
    assert checks.folding_spec({"fc0": {"Pe": "2"}}) == {"fc0": {"pe": 2}}
    for bad, why in [({"fc0": {"simd": 2.7}}, "positive integer, got 2.7"), ({"fc0": {"pe": 0}}, "got 0"),
                     ({"fc0": {"simd": -4}}, "got -4"), ({"fc0": {"pe": True}}, "got True"),
                     ({"fc0": {"lanes": 2}}, "unknown key 'lanes'"), ({"fc0": 3}, "must be an object"),
                     ([1, 2], "must be an object"), ({"fc0": {"pe": 2, "PE": 4}}, "given twice")]:
        with pytest.raises(BadInput, match=why):
            checks.folding_spec(bad)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                    max_leaves=8))
def test_fold_parser_on_junk_only_raises_bad_input(junk):
    try:
        out = checks.folding_spec(junk)
    except BadInput:
        return
    for f in out.values():                     # what it accepts is well formed
        assert set(f) <= {"pe", "simd"} and all(isinstance(v, int) and v >= 1 for v in f.values())


def test_cli_fold_in_finn_spelling_is_used(tmp_path, capsys):
    fold = tmp_path / "f.json"
    fold.write_text(json.dumps({"1": {"PE": 8, "SIMD": 16}}))
    assert cli(["compile", "tfc-w1a1", "--out", str(tmp_path / "o"), "--fold", str(fold), "--json",
                "--frames", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["folding"]["1"] == {"pe": 8, "simd": 16}


@pytest.mark.parametrize("args,words", [
    (["--target-ii", "0"], ["--target-ii", "positive integer"]),
    (["--target-ii", "-5"], ["--target-ii", "positive integer"]),
    (["--frames", "-1"], ["--frames", "positive integer"]),
    (["--out", ""], ["empty"]),
])
def test_cli_compile_options_checked(tmp_path, capsys, args, words):
    argv = ["compile", "tfc-w1a1", "--out", str(tmp_path / "o"), "--frames", "2"] + args
    assert run(argv) == 2
    one_line_error(capsys, *words)
    assert not (tmp_path / "o").exists()


def test_cli_sim_and_synth_options_checked(built, capsys):
    d, _, _ = built
    for argv, word in [(["sim", str(d), "--stall-prob", "1"], "--stall-prob"),
                       (["sim", str(d), "--frames", "0"], "--frames"),
                       (["synth", str(d), "--baud", "0"], "--baud")]:
        assert run(argv) == 2
        one_line_error(capsys, word)


# ---------------------------------------------------------------- inputs

def test_nan_and_non_numeric_inputs_refused(built):
    _, acc, x = built
    bad = x[:4].clone()
    bad[1, 3] = float("nan")
    with pytest.raises(BadInput, match="NaN"):
        acc.quantize_input(bad)
    with pytest.raises(BadInput, match="numeric"):
        acc.quantize_input(np.array([["a"] * 64]))
    with pytest.raises(BadInput, match="batch"):
        acc.quantize_input(np.zeros(64, dtype=np.float32))


def test_build_dir_vectors_checked_before_simulating(built, tmp_path, capsys):
    d, acc, x = built
    for name, mutate, words in [("half", lambda v: v + 0.5, ["not an integer"]),
                                ("range", lambda v: np.where(v == v.max(), 999, v), ["out of range", "uint8"])]:
        c = tmp_path / name
        acc.save(c, x_float=x[:4])
        v = np.load(c / "inputs.npy").astype(np.float64)
        np.save(c / "inputs.npy", mutate(v))
        builddir.rehash(c, "test: a hand-edited inputs.npy")
        assert cli(["sim", str(c)]) == 2
        one_line_error(capsys, *words)


def test_manifest_identifiers_validated(built, tmp_path):
    d, acc, x = built
    c = tmp_path / "m"
    acc.save(c)
    m = json.loads((c / "manifest.json").read_text())
    m["top"] = "qloom_top; rm -rf /"
    (c / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(builddir.BuildDirError, match="not a plain identifier"):
        builddir.open_build_dir(c)


# ---------------------------------------------------------------- models and specs

def test_unsupported_module_is_one_line_naming_it():
    model = nn.Sequential(qnn.QuantInput(8, False, 1 / 255), nn.LSTM(8, 4))
    with pytest.raises(QuantError, match=r"'1' \(torch\.nn\.modules\.rnn\.LSTM\).*supported|LSTM") as e:
        qloom.compile(model, torch.rand(4, 8))
    assert "\n" not in str(e.value)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = qnn.QuantInput(8, False, 1 / 255)
        self.fc = qnn.QuantLinear(8, 8, weight_bits=4)
        self.act = qnn.QuantAct(4)

    def forward(self, x):
        x = self.q(x)
        return x + self.act(self.fc(x))


def test_unsupported_pattern_is_a_quant_error_not_a_tensor_exception():
    try:
        qloom.compile(Residual().eval(), torch.rand(4, 8))
    except QloomError as e:
        assert "\n" not in str(e) and "Residual" not in type(e).__name__
    # (where residual adds are supported the compile simply succeeds)


def test_spec_results_checked_and_siblings_importable(tmp_path, capsys):
    (tmp_path / "helper_mod.py").write_text("N_IN = 64\n")
    (tmp_path / "spec.py").write_text(
        "import helper_mod\nfrom qloom.examples import tfc\n"
        "def good():\n    return tfc.build(2, 2, n_in=helper_mod.N_IN)\n"
        "def wrong_type():\n    return 'model', 'x'\n"
        "def wrong_len():\n    return (1,)\n"
        "def nan_input():\n    import torch\n    m, x = tfc.build(2, 2, n_in=64)\n"
        "    x[0, 0] = float('nan')\n    return m, x\n")
    assert cli(["compile", f"{tmp_path / 'spec.py'}:good", "--out", str(tmp_path / "g"), "--frames", "2"]) == 0
    capsys.readouterr()
    for func, words in [("wrong_type", ["torch.nn.Module"]), ("wrong_len", ["must return"]),
                        ("nan_input", ["NaN"])]:
        assert cli(["compile", f"{tmp_path / 'spec.py'}:{func}", "--out", str(tmp_path / func)]) == 2
        one_line_error(capsys, *words)


# ---------------------------------------------------------------- exit codes

def test_interrupt_and_internal_error_exit_codes(monkeypatch, capsys):
    import qloom.cli as c

    def interrupted(args):
        raise KeyboardInterrupt

    def bug(args):
        raise ZeroDivisionError("division by zero")
    monkeypatch.setattr(c, "cmd_examples", interrupted)
    assert cli(["examples"]) == 130
    one_line_error(capsys, "interrupted")
    monkeypatch.setattr(c, "cmd_examples", bug)
    assert cli(["examples"]) == 70
    one_line_error(capsys, "internal error", "ZeroDivisionError", "QLOOM_DEBUG=1")


def test_tool_failure_names_the_first_error_line(built, tmp_path, capsys):
    from qloom.sim import available
    if not available("verilator")[0]:
        pytest.skip("Verilator not available")
    d, acc, x = built
    c = tmp_path / "broken"
    acc.save(c, x_float=x[:2])
    v = (c / "accelerator.v").read_text()
    (c / "accelerator.v").write_text(v.replace("endmodule", "endmodule garbage(", 1))
    builddir.rehash(c, "test: a broken netlist")
    assert cli(["sim", str(c), "--driver", "cocotb"]) == 4
    line = one_line_error(capsys, "tool failure", "build failed")
    assert "%Error" in line and "log:" in line


def test_sigterm_ends_qloom_sim_and_its_children(built, tmp_path):
    """`kill` of a running `qloom sim` (here during a Verilator build): one line, exit 130, and no make,
    g++ or verilator left in its process group."""
    from qloom.sim import available
    if not available("verilator")[0]:
        pytest.skip("Verilator not available")
    d, acc, x = built
    c = tmp_path / "k"
    acc.save(c, x_float=x[:2])
    env = dict(os.environ, QLOOM_SIM_CACHE=str(tmp_path / "cache"))
    p = subprocess.Popen([sys.executable, "-m", "qloom", "sim", str(c)], stderr=subprocess.PIPE, env=env,
                         start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "cache").glob("*/build.log")):
        time.sleep(0.2)
    time.sleep(1.0)                                            # the build is running now
    os.kill(p.pid, signal.SIGTERM)
    rc = p.wait(timeout=60)
    err = p.stderr.read().decode().strip().splitlines()
    assert rc == 130 and err[-1] == "qloom sim: interrupted", (rc, err)
    left = []
    for _ in range(50):                                        # SIGTERM takes a moment to reach g++
        left = subprocess.run(["pgrep", "-a", "-g", str(p.pid)], capture_output=True, text=True).stdout
        if not left.strip():
            break
        time.sleep(0.2)
    assert not left.strip(), f"processes left in the group: {left}"


def test_truncated_graph_is_refused_before_tools_run(built, tmp_path, capsys):
    d, acc, x = built
    c = tmp_path / "t"
    acc.save(c)
    g = c / "graph.npz"
    g.write_bytes(g.read_bytes()[:100])
    assert cli(["synth", str(c), "--board", "generic"]) == 2
    one_line_error(capsys, "graph.npz changed after the manifest")
    with pytest.raises(builddir.BuildDirError, match="graph.npz"):
        qloom.Accelerator.load(c)
