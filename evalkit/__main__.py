"""``python -m evalkit`` and the ``evalkit`` console script: the same command."""

from __future__ import annotations

import sys


def run() -> None:
    """The process entry point: the ``evalkit`` command, owning the process (see
    :data:`evalkit.cli_common.PROCESS_ENTRY`). A Ctrl-C while the command is still being
    imported exits 130 with the usual line, not a traceback."""
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
