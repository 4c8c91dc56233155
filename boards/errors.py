"""qloom.boards' errors (all QloomErrors: see compiler/errors.py for the exit codes)."""
from __future__ import annotations

from qloom.compiler import builddir
from qloom.compiler.errors import DoesNotFitError, ToolFailure


class SynthError(ToolFailure):
    """Synthesis could not run or failed (one-line message first)."""


class ToolsMissing(SynthError):
    """The YoWASP tools or amaranth-boards are not installed (the user's to fix: exit status 2)."""
    exit_code = 2


class SynthInputError(builddir.BuildDirError, SynthError):
    """synthesize() was given something it cannot synthesise (bad input, exit status 2)."""
    exit_code = 2


class DoesNotFit(DoesNotFitError, SynthError):
    """The design overflows the device: `overflow` {resource: (used, available)}, `suggestion`."""
    exit_code = 3

    def __init__(self, msg, overflow=None, suggestion=None, report=None):
        super().__init__(msg)
        self.overflow, self.suggestion, self.report = overflow or {}, suggestion, report
