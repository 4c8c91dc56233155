"""qloom's error classes: one base, one class per way a run can end badly (docs/errors.md).

The CLI prints one line per error and exits with the class's `exit_code`.
Parts raise the most specific subclass they have (IRError, QuantError,
FoldingError, SimError, SynthError, ...); every one derives from one of these.
"""
from __future__ import annotations


class QloomError(Exception):
    """Base of every error qloom raises on purpose."""
    exit_code = 2


class BadInput(QloomError, ValueError):
    """The user's model, option, file or data cannot be used; the message says what would be accepted."""
    exit_code = 2


class QuantError(BadInput):
    """A model that qloom cannot quantize, import or lower; the message names the layer or node."""


class NotBitExact(QloomError):
    """The hardware (or an importer's IR) differs from its reference on some output."""
    exit_code = 1


class DoesNotFitError(QloomError):
    """The design does not fit the device."""
    exit_code = 3


class ToolFailure(QloomError, RuntimeError):
    """An external tool (Verilator, Icarus, Yosys, nextpnr) or a testbench failed or is missing."""
    exit_code = 4


class InternalError(QloomError, RuntimeError):
    """A qloom bug: an invariant that should hold did not."""
    exit_code = 70


class Interrupted(QloomError):
    """Ctrl-C or a termination signal."""
    exit_code = 130
