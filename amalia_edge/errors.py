"""One exception family for everything a person can fix.

Every error raised on purpose by amalia-edge is an :class:`AmaliaEdgeError`. Its message is
one line that says what is wrong and what to do about it; the CLI prints it as
``amalia-edge: error: <message>`` and exits non-zero, without a traceback. Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class AmaliaEdgeError(Exception):
    """Base class: a problem with the user's input, files or machine, with the fix in the text."""

    exit_code: int = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.problem = message
        self.fix = fix
        super().__init__(f"{message}: {fix}" if fix else message)


class CheckpointError(AmaliaEdgeError):
    """A Hugging Face checkpoint is missing, malformed or unsupported."""


class UnsupportedArchitectureError(CheckpointError):
    """The checkpoint's architecture is not one amalia-edge converts."""


class ConversionError(AmaliaEdgeError):
    """Converting or quantizing failed for a reason the user can act on."""


class QuantTypeError(ConversionError):
    """An unknown quant type, or one that needs an importance matrix that was not given."""


class ImatrixError(ConversionError):
    """An importance matrix or its calibration text is unusable."""


class ArtifactError(AmaliaEdgeError):
    """An artifacts directory, manifest or model file is missing, stale or corrupt."""


class OutputError(AmaliaEdgeError):
    """An output location cannot be written (permissions, disk full)."""


class DeviceError(AmaliaEdgeError):
    """Probing or changing the device failed (power mode, clocks, permissions)."""


class BackendError(AmaliaEdgeError):
    """A backend is not installed, cannot run here, or failed to load or generate."""


class BackendUnavailableError(BackendError):
    """The requested backend cannot run on this machine; the message says how to get it."""


class SelectionError(AmaliaEdgeError):
    """No backend × artifact candidate can run here (nothing fits, nothing installed)."""


class ContextOverflowError(AmaliaEdgeError):
    """A prompt or conversation does not fit in the context window."""


class BenchError(AmaliaEdgeError):
    """A benchmark was asked for with bad parameters, or its output cannot be written."""
