"""Progress reporting on stderr: a live bar on a terminal, periodic log lines otherwise.

Results go to stdout and logs to stderr, so ``evalkit evaluate ... --format json | jq`` works
with progress on. In cron (stderr not a TTY) a plain line is written every few seconds.
Progress never fails a run: without a stderr (``2>&-``) or when writing to it fails (a full
disk, a closed pipe), it goes silent.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO


class Progress:
    """Callable progress sink: ``progress(rows_done, batch_bytes)``."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float | None = None, delay: float = 0.5) -> None:
        self.stream = stream if stream is not None else sys.stderr  # None: no stderr (2>&-)
        if tty is None:
            tty = False
            with contextlib.suppress(AttributeError, OSError, ValueError):
                tty = bool(self.stream.isatty())
        self.tty = tty
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.delay = delay
        self.total: int | None = None
        self.start = time.monotonic()
        self.last = 0.0
        self.rows = 0
        self.bytes = 0
        self.shown = False

    def set_total(self, total: int | None) -> None:
        """Rows expected (from Parquet metadata), for percentage and ETA."""
        self.total = total

    def __call__(self, rows_done: int, batch_bytes: int) -> None:
        self.rows = rows_done
        self.bytes += batch_bytes
        now = time.monotonic()
        # Short runs print nothing: only show progress after `delay` seconds.
        if now - self.start < self.delay or now - self.last < self.interval:
            return
        self.last = now
        self._show(now)

    def _line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.rows / elapsed
        mib = self.bytes / 2**20
        parts = [f"{self.rows:,} rows", f"{mib:,.0f} MiB decoded", f"{rate:,.0f} rows/s"]
        if self.total:
            frac = min(1.0, self.rows / self.total)
            eta = (self.total - self.rows) / rate if rate > 0 else float("inf")
            parts.insert(0, f"{100 * frac:5.1f}%")
            parts.append(f"ETA {eta:,.0f} s" if eta != float("inf") else "ETA ?")
        return " · ".join(parts)

    def _show(self, now: float) -> None:
        line = self._line(now)
        if self.tty:
            bar = ""
            if self.total:
                width = 24
                filled = int(width * min(1.0, self.rows / self.total))
                bar = "[" + "#" * filled + "-" * (width - filled) + "] "
            self._write("\r\x1b[2K" + bar + line)
        else:
            self._write(f"evalkit: {line}\n")
        self.shown = True

    def _write(self, text: str) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr gone or full: progress goes silent
            self.stream = None

    def note(self, text: str) -> None:
        """One ``evalkit: ...`` line about how the run is done (e.g. a batch size cut to
        bound memory), on its own line even while a bar is drawn."""
        self._write(("\r\x1b[2K" if self.tty and self.shown else "") + f"evalkit: {text}\n")

    def close(self) -> None:
        """Finish the bar line (if one was drawn)."""
        if self.shown and self.tty:
            self._write("\n")


class NoProgress(Progress):
    """Progress that prints nothing (``--quiet``)."""

    def __call__(self, rows_done: int, batch_bytes: int) -> None:
        self.rows = rows_done

    def note(self, text: str) -> None:
        """Nothing is said under ``--quiet``."""

    def close(self) -> None:
        """Nothing to finish."""


def make_progress(quiet: bool = False, stream: TextIO | None = None) -> Progress:
    """The progress sink the CLI uses."""
    return NoProgress(stream) if quiet else Progress(stream)
