"""Model side of the qloom testbench: the build dir's ports, vectors and beat (un)packing.

All of it is qloom.compiler.builddir (numpy and the standard library only, so the
simulator's embedded Python imports it cheaply); this module only names it for
the testbench.
"""
from __future__ import annotations

from qloom.compiler.builddir import Port, open_build_dir, stimulus_seeds  # noqa: F401


class BuildDir:
    """manifest.json + inputs.npy + outputs.npy of one build dir, as the testbench uses them."""

    def __init__(self, path):
        bd = open_build_dir(path, vectors=True)
        m = bd.manifest
        self.path, self.manifest, self._bd = bd.path, m, bd
        self.top, self.clock, self.reset = m.top, m.clock, m.reset
        self.inp, self.out = m.input, m.output
        self.ii_estimate, self.latency_estimate = m.ii_estimate, m.latency_estimate

    def frames(self, n: int | None):
        """(x, y) for n frames: the stored vectors, repeated when n is more than there are."""
        return self._bd.frames(n)
