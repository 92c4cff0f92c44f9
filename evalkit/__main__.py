"""``python -m evalkit`` and the ``evalkit`` console script: the same command."""

from __future__ import annotations

import sys


def process_settings() -> None:
    """Settings of the command's own process (the library, imported elsewhere, never makes
    them): no transparent huge pages (Linux ``PR_SET_THP_DISABLE``; inherited by the plot
    helper). A run's buffers live for one batch; in huge pages every first touch of a fresh
    2 MiB page zeroed all of it: 6M x 10 wide took ~1.0 s of system time, 0.6 s without
    (paired, loaded machine), and less memory (-30 MiB). Anything else: nothing done."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE
    except (OSError, AttributeError):  # no libc symbol: leave the default
        pass


def run() -> None:
    """The process entry point: the ``evalkit`` command, owning the process (see
    :data:`evalkit.cli_common.PROCESS_ENTRY`). A Ctrl-C while the command is still being
    imported exits 130 with the usual line, not a traceback."""
    process_settings()
    try:
        from . import cli_common
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: no report was written (any previous report is intact)\n")
        raise SystemExit(130) from None
    cli_common.PROCESS_ENTRY = True
    main(prog_name="evalkit")


if __name__ == "__main__":
    run()
