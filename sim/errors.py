"""qloom.sim's errors (all QloomErrors: see compiler/errors.py for the exit codes)."""
from qloom.compiler import builddir
from qloom.compiler.errors import ToolFailure


class SimError(ToolFailure):
    """The simulation could not run (one-line message for the user)."""


class SimulatorNotFound(SimError):
    """The requested simulator (or cocotb) is not installed (the user's to fix: exit status 2)."""
    exit_code = 2


class BuildDirError(builddir.BuildDirError, SimError):
    """The build dir is missing, incomplete or inconsistent (bad input, exit status 2)."""
    exit_code = 2
