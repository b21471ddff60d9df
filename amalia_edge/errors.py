"""One exception family for everything a person can fix.

Every error raised on purpose by amalia-edge is an :class:`AmaliaEdgeError`. Its message is
one line that says what is wrong and what to do about it; the CLI prints it as
``amalia-edge: error: <message>`` and exits non-zero, without a traceback. Anything else that
escapes is a bug: the CLI and the chat app print one line and save a crash report
(:func:`save_crash_report`, no user text in it) instead of a traceback.
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


# -- crash reports ---------------------------------------------------------------------------

CRASH_DIR_ENV = "AMALIA_EDGE_CRASH_DIR"


def crash_dir() -> str:
    """``$AMALIA_EDGE_CRASH_DIR``, else ``<user cache dir>/amalia-edge/crashes``."""
    import os

    override = os.environ.get(CRASH_DIR_ENV)
    if override:
        return override
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("amalia-edge", appauthor=False), "crashes")


def crash_report(exc: BaseException, command: str | None) -> str:
    """The text of a crash report: versions, the exception's type and where it was raised.

    Deliberately without the exception's message, the arguments or any local variable: those
    can hold the user's prompt, conversation or file contents. The frames (file, line,
    function, source line of amalia-edge or library code) are enough to find the bug.
    """
    import platform
    import sys
    import time
    import traceback

    from amalia_edge import __version__

    lines = [
        "amalia-edge crash report",
        f"time: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
        f"amalia-edge: {__version__}",
        f"python: {platform.python_version()} ({sys.platform}, {platform.machine()})",
        f"command: {command or '-'}",
        "",
    ]
    chain: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    for i, e in enumerate(reversed(chain)):
        if i:
            lines.append("\nwhich led to:\n")
        cls = type(e)
        lines.append(f"exception: {cls.__module__}.{cls.__qualname__}")
        for fr in traceback.extract_tb(e.__traceback__):
            lines.append(f'  File "{fr.filename}", line {fr.lineno}, in {fr.name}')
            if fr.line:
                lines.append(f"    {fr.line.strip()}")
    return "\n".join(lines) + "\n"


def save_crash_report(exc: BaseException, command: str | None) -> str | None:
    """Write :func:`crash_report` to a new file in :func:`crash_dir`; its path, or None."""
    import os
    import tempfile
    import time

    try:
        directory = crash_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(
            prefix=time.strftime("crash-%Y%m%d-%H%M%S-"), suffix=".txt", dir=directory
        )
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(crash_report(exc, command))
        return path
    except Exception:
        return None


def internal_error_line(exc: BaseException, report: str | None) -> str:
    """The one line shown for an unexpected exception (never its message: see crash_report)."""
    where = f"; a report was saved to {report}" if report else ""
    return (
        f"amalia-edge: internal error ({type(exc).__name__}){where}: this is a bug, please "
        "report it with that file"
    )
