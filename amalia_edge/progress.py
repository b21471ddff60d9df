"""The one progress printer on stderr: tqdm on a terminal, plain lines when stderr is a file.

Two uses, one class:

* a counted bar, ``bar(done, total, name)`` per step, :meth:`Progress.close` prints the final
  line (``quantize``: tensors; ``imatrix``, ``quality``: chunks);
* a status line, :meth:`Progress.status` (``bench``: the test now running).

stdout is never written (results go there, so ``--json`` output pipes).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    """One updating line on stderr; see the module docstring."""

    def __init__(
        self,
        label: str = "",
        *,
        unit: str = "tensors",
        stream: IO[str] | None = None,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._total = 0
        self._bar: Any = None

    def _tqdm(self, **kw: Any) -> Any:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(file=self.stream, leave=False, dynamic_ncols=True, **kw)
        return self._bar

    def __call__(self, done: int, total: int, name: str = "") -> None:
        """Counted progress: ``done`` of ``total`` (0: unknown), now on ``name``."""
        if done >= total and total < self._total:
            done = total = self._total  # a final "done" (1/1) after counted steps reads n/n
        self._total = max(self._total, total)
        if not self.tty:
            return
        bar = self._tqdm(desc=self.label, unit=self.unit[:-1] or "it")
        bar.total = total or None
        bar.n = done
        bar.set_postfix_str(name[:40], refresh=False)
        bar.refresh()

    def status(self, msg: str) -> None:
        """Replace the status line with ``msg`` (a plain line each when not a terminal)."""
        if not self.enabled or not msg:
            return
        if self.tty:
            self._tqdm(bar_format="{desc}").set_description_str(msg)
        else:
            self.stream.write(msg + "\n")
            self.stream.flush()

    def clear(self) -> None:
        """Remove the live line (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    @property
    def total(self) -> int:
        """Steps seen so far (0: the bar was never advanced)."""
        return self._total

    def close(self, note: str = "", *, reused: bool = False) -> None:
        """Remove the live line and print ``label N unit, T s note`` (``label reused note``)."""
        self.clear()
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        note = f" {note}" if note else ""
        line = f"{self.label:<14} {self._total} {self.unit}, {elapsed:.1f} s{note}"
        if reused:
            line = f"{self.label:<14} reused{note}"
        self.stream.write(line + "\n")
        self.stream.flush()
