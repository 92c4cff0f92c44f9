"""``python -m evalkit`` and the ``evalkit`` console script: the same command."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


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


class _NoParameters(dict):  # type: ignore[type-arg]
    """What ``pyarrow.compute`` reads of a parsed options docstring (``doc['Parameters']``),
    without parsing it: no parameters."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(Parameters=[])


def import_arrow_compute() -> None:
    """Import ``pyarrow.compute`` without parsing its options classes' docstrings.

    At import it writes a docstring for each of its ~290 functions, the options' parameters
    parsed from the options classes' numpydoc text (``pyarrow.vendored.docscrape``: ~110
    parses and their regular expressions): ~13 of its ~48 ms of CPU (fresh processes, min
    of 7), all before the first batch, while one core works. A command never shows those
    docstrings; they lack only the options' parameter lines (``help(pc.sum)`` in this
    process). The parser is put back at once; a pyarrow without it, or a module already
    imported: nothing done."""
    if "pyarrow.compute" in sys.modules:
        return
    try:
        from pyarrow.vendored import docscrape
    except ImportError:  # another pyarrow: its ordinary import, later
        return
    parser = getattr(docscrape, "NumpyDocString", None)
    if parser is None:
        return
    docscrape.NumpyDocString = _NoParameters
    try:
        import pyarrow.compute  # noqa: F401
    finally:
        docscrape.NumpyDocString = parser


def _term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interrupted() -> None:
    _say("interrupted: no report was written (any previous report is intact)\n")
    raise SystemExit(130) from None


def _say(text: str) -> None:
    """Write ``text`` on stderr if anyone can read it: with stderr closed (``2>&-``), full,
    or a pipe whose reader has gone, the message is lost but the exit code stays the
    command's own (never 1, the code of a bug)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.write(text)
        sys.stderr.flush()


def run() -> None:
    """The process entry point: the ``evalkit`` command, owning the process (see
    :data:`evalkit.cli_common.PROCESS_ENTRY`). An interrupt (Ctrl-C, SIGTERM, SIGHUP) at any
    moment before the command's own handling starts (imports, settings, option parsing)
    exits 130 with the usual line: never a traceback, click's "Aborted!" (exit 1) or a bare
    143."""
    import signal

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _term)
    try:
        process_settings()
        import_arrow_compute()
        import click

        from . import cli_common
        from .cli import main

        cli_common.whole_stdout_writes()
    except KeyboardInterrupt:
        _interrupted()
    cli_common.PROCESS_ENTRY = True
    # standalone_mode=False: click would turn an interrupt during option parsing into
    # "Aborted!" and exit 1 (the code of a bug); its other handling is done here as it does.
    try:
        code = main.main(prog_name="evalkit", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        _interrupted()
    except click.ClickException as exc:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            exc.show()  # a usage message nobody can read (stderr gone): the code still says it
        code = exc.exit_code
    except OSError as exc:  # writing --help / --version / a usage message (handle_errors has the rest)
        code = _output_failed(exc)
    except SystemExit as exc:  # sys.exit(code) in a command (a failed gate's 5)
        if exc.code is not None and not isinstance(exc.code, int):
            raise
        code = exc.code
    leave(code if isinstance(code, int) else 0)


def leave(code: int) -> NoReturn:
    """End the command's process with ``code`` once everything the interpreter's own exit
    would finish is finished: helper threads joined and ``atexit`` handlers run (reader
    threads stopped, spools removed, logging flushed), stdout and stderr flushed; then
    ``os._exit``, skipping the teardown of every module. That teardown (pandas, pyarrow,
    numpy: tens of thousands of objects freed one by one) took 0.15-0.19 s of one core
    after a 6M-row run, nearly a tenth of it, and did nothing a finished command needs.
    Where the interpreter's thread shutdown is not available: the usual exit."""
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        raise SystemExit(code)
    try:
        # What Py_FinalizeEx does first: concurrent.futures' exit hooks, then joining every
        # non-daemon thread; then the atexit handlers, as the interpreter would.
        shutdown()
        import atexit

        atexit._run_exitfuncs()
    except KeyboardInterrupt:
        _interrupted()
    from .cli_common import flush_stdout

    try:
        flush_stdout()
    except OSError as exc:  # a full disk behind `> file`: the output is incomplete
        if code == 0:
            code = _output_failed(exc)
    except ValueError:  # stdout closed by the command itself
        pass
    if sys.stderr is not None:  # no stderr (2>&-): nothing to flush
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
    os._exit(code)


def _output_failed(exc: OSError) -> int:
    """The exit code of a command whose output could not be written: 0 for a closed pipe
    (`evalkit ... | head`: as in cli_common.handle_errors), else 4 with a line on stderr."""
    from .cli_common import silence_stdout, stdout_failed
    from .errors import EXIT_OUTPUT

    silence_stdout()  # the rest of the buffer is lost: never retry it
    if isinstance(exc, BrokenPipeError):
        return 0
    stdout_failed("standard output", exc)
    return EXIT_OUTPUT


if __name__ == "__main__":
    run()
