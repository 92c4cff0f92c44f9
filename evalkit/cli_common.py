"""What every ``evalkit`` command shares: click context settings, the exit-code epilog, error
handling (library errors to messages and exit codes) and machine-readable output.

The bottom of the CLI layer: :mod:`evalkit.cli` and :mod:`evalkit.cli_compare` both import
it, and it imports neither.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import io
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import click

from .errors import (
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT,
    EvalkitError,
    EvalkitWarning,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
# Only the group sets the prefix: subcommands then read EVALKIT_<COMMAND>_<OPTION>.
GROUP_CONTEXT = {**CONTEXT, "auto_envvar_prefix": "EVALKIT"}

EXIT_CODES_HELP = """\b
Exit codes:
  0  success            2  usage / config error     4  output error
  1  internal error     3  input / data error       5  a quality gate failed
  6  Dask cluster failed  130 interrupted (no partial report is left)"""

#: `inspect` writes nothing and checks no gate: only these codes can come back.
INSPECT_EXIT_CODES_HELP = """\b
Exit codes:
  0  success            2  usage error              130 interrupted
  1  internal error     3  input / data error"""


def _err(msg: str) -> None:
    """A message on stderr; data inside it (file, column, class names) cannot drive the
    terminal: control characters and escape sequences are shown escaped, line by line."""
    from .escape import terminal

    # No stderr (2>&-), or a full / closed one: nobody can be told; the exit code still says it.
    with contextlib.suppress(OSError, ValueError):
        click.echo("\n".join(terminal(line) for line in str(msg).split("\n")), err=True)


def terminal_write_failure(exc: BaseException) -> str | None:
    """``"standard output"`` or ``"standard error"`` when ``exc`` (an ``OSError`` other than a
    closed pipe: a full disk behind ``> file``, ``/dev/full``, an I/O error) was raised writing
    a command's output to that stream (``click.echo``, or the final flush); None for any
    other error. Such a failure is an output error (exit 4), not a bug in evalkit."""
    if not isinstance(exc, OSError) or isinstance(exc, BrokenPipeError):
        return None
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "echo" and "click" in code.co_filename:
            return "standard error" if tb.tb_frame.f_locals.get("err") else "standard output"
        if code.co_name == "flush_stdout" and code.co_filename == __file__:
            return "standard output"
        tb = tb.tb_next
    return None


_OUTPUT_FAILED = "evalkit.output_failed"


@contextlib.contextmanager
def printing() -> Iterator[None]:
    """Around a command's stdout output: a reader that closes the pipe early
    (``evalkit ... | head -1``) silences the rest of stdout only, and the command goes on to
    its stderr lines and its exit code (5 for a failed gate: a CI step piping the tables
    into ``head`` must not pass a failed night). Before, the closed pipe ended the command
    with exit 0 and without its ``gate failed:`` lines."""
    try:
        yield
        flush_stdout()  # what is buffered may only meet the closed pipe here
    except BrokenPipeError:
        silence_stdout()
    except OSError as exc:
        # stdout that cannot be written (a full disk behind `> file`): said now, and the
        # command still goes on to its gate lines; it ends with exit 4 unless a gate failed
        # (5: the outcome a pipeline gates on; handle_errors applies the 4).
        if terminal_write_failure(exc) != "standard output":
            raise
        stdout_failed("standard output", exc)
        silence_stdout()
        click.get_current_context().meta[_OUTPUT_FAILED] = True


def silence_stdout() -> None:
    """Point stdout at the null device: what is left in its buffer (already lost) is never
    flushed again, and later output goes nowhere."""
    with contextlib.suppress(OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


class _WholeWrites(io.RawIOBase):
    """A file descriptor whose ``write`` writes all it is given or raises. CPython's
    buffered writer (3.11) loses the rest of a large write the system took only in part
    (a disk filling up behind ``> file``) without an error: 20,480 of 42,318 bytes of
    ``--format json`` written, exit 0 (rt-main10 F1). Under the buffered writer this one
    never answers a partial write, so a full disk raises ``OSError`` (exit 4)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        total = len(view)
        while view:
            view = view[os.write(self._fd, view):]
        return total


def whole_stdout_writes() -> None:
    """For the command's own process (:func:`evalkit.__main__.run`): stdout writes all of
    each write or fails (:class:`_WholeWrites`), same encoding, errors and line buffering.
    A stdout without a file descriptor (a test runner's) is left as it is."""
    out = sys.stdout
    try:
        fd = out.fileno()
        out.flush()
    except (AttributeError, OSError, ValueError):
        return
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(_WholeWrites(fd)), encoding=out.encoding,
                                  errors=out.errors, line_buffering=out.line_buffering)


def flush_stdout() -> None:
    """Flush stdout (a command's output is buffered: a failing stream may only say so
    here). No stdout (``>&-``): nothing to do."""
    if sys.stdout is not None:
        sys.stdout.flush()


def stdout_failed(stream: str, exc: OSError) -> None:
    """Say that ``stream`` could not be written (on stderr, if that works)."""
    reason = exc.strerror or str(exc)
    _err(f"error: could not write to {stream}: {reason} (the printed output is incomplete; "
         "a report, if one was written, is complete)")


def _interrupted(ctx: click.Context, exc: KeyboardInterrupt) -> None:
    """Say what an interrupt left on disk; a failed gate still exits 5 once its report is written."""
    from .escape import terminal

    path = getattr(exc, "path", None) or ctx.meta.get("evalkit.written")
    if path is None:
        _err("interrupted: no report was written (any previous report is intact)")
        ctx.exit(EXIT_INTERRUPTED)
    result = getattr(exc, "result", None) or ctx.meta.get("evalkit.result")
    failures = list(getattr(result, "gate_failures", None) or getattr(result, "failures", None) or [])
    for f in failures:
        _err(f"gate failed: {f}")
    _err(f"interrupted after the report was written: {terminal(path)} is complete")
    ctx.exit(EXIT_GATE if failures else EXIT_INTERRUPTED)


def record_written(path: Any, result: Any) -> None:
    """Remember a report that is complete on disk, so an interrupt from now on says so."""
    ctx = click.get_current_context()
    ctx.meta["evalkit.written"] = str(path)
    ctx.meta["evalkit.result"] = result


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into clean messages and documented exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or os.environ.get("EVALKIT_DEBUG") == "1"
        ctx = click.get_current_context()

        def _term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        # SIGTERM (kill, CI time-outs) and SIGHUP (a closed terminal) clean up like Ctrl-C.
        old: dict[int, Any] = {}
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            with contextlib.suppress(ValueError):  # not the main thread (some test runners)
                old[sig] = signal.signal(sig, _term)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", EvalkitWarning)
                warnings.showwarning = _show_warning(warnings.showwarning)
                out = fn(*args, **kwargs)
                _output_done(ctx)
                return out
        except EvalkitError as exc:
            if debug:
                import traceback

                traceback.print_exc()
            _err(f"error: {exc.cli_text()}")
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            _interrupted(ctx, exc)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # stdout closed early (`evalkit ... | head`) outside a command's printing(): not an
            # error worth a message.
            silence_stdout()
            ctx.exit(0)
        except OSError as exc:
            stream = terminal_write_failure(exc)
            if stream is None:
                ctx.exit(_internal_error(exc, debug))
            if stream == "standard output":
                stdout_failed(stream, exc)
                silence_stdout()  # what is left in the buffer is lost anyway
            ctx.exit(EXIT_OUTPUT)
        except MemoryError:
            _err("error: out of memory; try a smaller --batch-size")
            ctx.exit(EXIT_INTERNAL)
        except Exception as exc:  # noqa: BLE001 - last line of defence: no traceback for users
            ctx.exit(_internal_error(exc, debug))
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if PROCESS_ENTRY:
                _keep_outcome(_outcome_code(sys.exc_info()[1]))

    return wrapper


def _output_done(ctx: click.Context) -> None:
    """After a command: flush stdout (a buffered write that fails says so here, inside the
    command), and exit 4 when :func:`printing` found stdout unwritable (said there) and no
    gate failed (a failed gate has exited 5 already)."""
    flush_stdout()
    if ctx.meta.get(_OUTPUT_FAILED):
        ctx.exit(EXIT_OUTPUT)


def _internal_error(exc: Exception, debug: bool) -> int:
    """Say an unexpected error is a bug; return its exit code. In a process whose working
    directory no longer exists (a relative path met it where the library does not check),
    it is that usage error (exit 2), never "a bug in evalkit"."""
    from .io import current_dir_gone, cwd_gone_error

    if current_dir_gone() and not debug:
        err = cwd_gone_error()
        _err(f"error: {err.cli_text()}")
        return err.exit_code
    if debug:
        raise exc
    _err(f"internal error: {type(exc).__name__}: {exc}\n"
         "This is a bug in evalkit; rerun with --debug for the traceback and report it.")
    return EXIT_INTERNAL


#: Set by the process entry point (:func:`evalkit.__main__.run`): the command owns the process,
#: so a signal after its outcome is decided may end it with that outcome's code.
PROCESS_ENTRY = False


@contextlib.contextmanager
def imports_without_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a command imports what it runs on, then back
    on with every object so far frozen out of it (``gc.freeze``: modules, classes and
    functions live as long as the process, and later collections no longer scan them).

    Importing pandas, numpy and pyarrow allocates so many objects that the collector ran
    ~180 times (one full collection) before a run's first batch, freeing nothing worth it:
    0.06-0.13 s of the one busy core (6M x 10 --no-plots, loaded machine). Only in the
    ``evalkit`` process (:data:`PROCESS_ENTRY`), which owns the collector's settings; a
    collector already off stays off. A process forked meanwhile (the plot helper) must be
    forked after the block: it inherits the collector's state."""
    if not PROCESS_ENTRY or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _outcome_code(exc: BaseException | None) -> int:
    """The exit code the process is about to end with, from what leaves the command."""
    if exc is None:
        return 0
    if isinstance(exc, click.exceptions.Exit):
        return int(exc.exit_code or 0)
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if isinstance(exc, click.ClickException):
        return int(exc.exit_code)
    return EXIT_INTERRUPTED if isinstance(exc, click.Abort | KeyboardInterrupt) else EXIT_INTERNAL


def _keep_outcome(code: int) -> None:
    """From here to the process's end (click's exit, interpreter shutdown, helper threads
    and processes joined), SIGTERM / SIGHUP / SIGINT end the process with ``code``, the
    outcome already decided and reported (a report in place, a failed gate's 5), instead of
    the default 143 / a KeyboardInterrupt traceback a CI step would read as a crash."""

    def leave(signum: int, frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is None or signal.getsignal(sig) is signal.SIG_IGN:
            continue  # an ignored signal (nohup, a background job) stays ignored
        with contextlib.suppress(ValueError):
            signal.signal(sig, leave)


def _show_warning(default: Callable[..., Any]) -> Callable[..., Any]:
    """A ``warnings.showwarning`` printing an :class:`EvalkitWarning` as one ``warning:``
    line with settings spelled as flags (other warnings go to ``default``)."""

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if isinstance(message, EvalkitWarning):
            text = message.cli_text()
            # a gates note reads "note: ..." in the JSON and the report; one prefix on stderr
            _err(f"warning: {text.removeprefix('note: ')}")
        elif category.__module__.split(".")[0] == "evalkit":  # evalkit's other warnings (plots)
            _err(f"warning: {message}")
        else:
            default(message, category, *args, **kwargs)

    return show


def report_gates(failures: list[Any], checked: Any, quiet: bool, unchecked: list[Any] | None = None) -> None:
    """Print every failed gate on stderr and exit with code 5; else say that all passed
    (unless ``quiet``). Gates that could not be checked (``unchecked``) are listed even with
    ``quiet``: like warnings, a nightly log must show them."""
    from .escape import terminal

    # terminal() before _err, which keeps the lines of a multi-line message: a newline
    # inside a group value must not split one gate's line in a log.
    for f in unchecked or []:
        _err(f"gate not checked: {terminal(f)}")
    if failures:
        from .errors import EXIT_GATE

        for f in failures:
            _err(f"gate failed: {terminal(f)}")
        sys.exit(EXIT_GATE)
    if checked and not quiet:
        _err("all gates passed" if not unchecked else
             f"all checked gates passed; {len(unchecked)} could not be checked (not a failure: "
             "set fail_unchecked: true in the gates to make it one)")


def echo_machine_formats(result: Any, fmt: str) -> bool:
    """Print ``none`` / ``json`` / ``markdown`` output of a result; False for ``table``."""
    from .report import json_text

    if fmt == "json":
        click.echo(_written_json() or json_text(result.to_dict()), nl=False)
    elif fmt == "markdown":
        click.echo(result.to_markdown(), nl=False)
    return fmt != "table"


#: The JSON file of each kind of report (a report directory holds one of them).
REPORT_JSON = ("summary.json", "compare.json", "history.json")


def _written_json() -> str | None:
    """The JSON text of the report this command wrote (:func:`record_written`), or None: what
    ``--format json`` prints then, so stdout carries what only the written report has,
    ``metadata.run_id`` (the id runs.parquet and the manifest join on) and
    ``table_fingerprints`` (rt-final8 N1), byte for byte the report's."""
    ctx = click.get_current_context(silent=True)
    written = ctx.meta.get("evalkit.written") if ctx is not None else None
    if not written:
        return None
    for name in REPORT_JSON:
        with contextlib.suppress(OSError), open(os.path.join(written, name), encoding="utf-8") as fh:
            return fh.read()
    return None


def layout_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options that say how predictions and labels are laid out (evaluate, inspect, compare)."""
    opts = [
        click.option("--predictions", "-p", multiple=True,
                     help="Prediction column(s): several class columns, one list column, or one "
                          "binary P(class 1) column. Repeatable, or comma-separated: -p a,b,c."),
        click.option("--prefix", help="Prefix of wide prediction columns, e.g. prob_ (class names are the suffixes)."),
        click.option("--logits/--probs", "logits", default=None,
                     help="Predictions are raw logits / probabilities (default: detect from names)."),
        click.option("--label", help="Label column: class index, class name, or list of soft targets."),
        click.option("--targets", multiple=True, help="One-hot / soft target columns, one per class. Repeatable."),
        click.option("--target-prefix", help="Prefix of one-hot / soft target columns."),
        click.option("--classes", help='Comma-separated class names in class-index order (a name holding a '
                                        'comma in double quotes: \'"big cat, wild",dog\').'),
        click.option("--key", "--keys", "keys", multiple=True,
                     help="Row key column(s) kept in per-row output (default: id). Repeatable."),
        click.option("--weight", help="Sample-weight column (adds a weighted mean)."),
        click.option("--ignore-label", metavar="VALUE",
                     help="Leave rows with this label out of every statistic, counted apart "
                          "(PyTorch ignore_index / Keras ignore_class, e.g. -100)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def split_names(text: str) -> list[str]:
    """``--classes`` text as names: comma-separated, a name holding a comma or quote in double
    quotes (CSV: ``'"big cat, wild",dog'``); spaces around each name are dropped."""
    import csv

    return [c.strip() for row in csv.reader([text], skipinitialspace=True) for c in row if c.strip()]


def join_names(names: list[str]) -> str:
    """The ``--classes`` text :func:`split_names` reads back as ``names``."""
    return ",".join(f'"{n.replace(chr(34), chr(34) * 2)}"' if ("," in n or '"' in n) else n for n in names)


#: The settings :func:`layout_options` adds (their keyword names).
LAYOUT_KEYS = ("predictions", "prefix", "logits", "label", "targets", "target_prefix", "classes",
               "keys", "weight", "ignore_label")
_COMMA_LISTS = ("predictions", "targets", "keys", "on")


def config_from_flags(config_file: str | None, flags: dict[str, Any]) -> Any:
    from .config import EvalConfig

    cfg = EvalConfig.from_file(config_file) if config_file else EvalConfig()
    clean: dict[str, Any] = {}
    for k, v in flags.items():
        if v is None or v == () or v == []:
            continue
        clean[k] = list(v) if isinstance(v, tuple) else v
    for k in _COMMA_LISTS:
        # `-p a,b,c` works like `-p a -p b -p c`, as `predictions: a,b,c` does in a config file.
        if k in clean:
            clean[k] = [c.strip() for item in clean[k] for c in item.split(",") if c.strip()]
    if "classes" in clean:
        clean["classes"] = split_names(clean["classes"])
    cfg.notes += _env_overrides(cfg, clean)
    cfg.update(clean, source="command line")
    return cfg


def _env_overrides(cfg: Any, values: dict[str, Any]) -> list[str]:
    """A note for each setting an ``EVALKIT_<COMMAND>_<OPTION>`` environment variable gives
    that the config file sets to another value. Precedence: a flag, then the environment,
    then the config file (click's order); a stray exported variable in a nightly job whose
    settings live in a reviewed file must not win silently (tester T7)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not cfg.file_keys:
        return []
    from click.core import ParameterSource

    notes = []
    for k, v in values.items():
        if k not in cfg.file_keys or ctx.get_parameter_source(k) is not ParameterSource.ENVIRONMENT:
            continue
        param = next((p for p in ctx.command.params if p.name == k), None)
        var = getattr(param, "envvar", None) or f"{ctx.auto_envvar_prefix}_{k.upper()}"
        old = getattr(cfg, k)
        try:  # compared as read (``by: region`` is the variable's ``region``)
            new = getattr(type(cfg)().update({k: v}, source=var), k)
        except Exception:  # noqa: BLE001 - a bad value: the update below says so
            new = v
        if old == new:
            continue
        notes.append(f"the environment variable {var} ({os.environ.get(var, v)}) overrides {k}: {old!r} "
                     f"of {cfg.source_file} (a flag overrides the environment, which overrides the config file)")
    return notes


# -- options shared by the commands that read reports back (compare, history) ----------------


def report_command_options(out_help: str, config_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--out``, ``--overwrite`` and ``--config`` of ``compare`` and ``history``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed([
            click.option("--out", "-o", type=click.Path(file_okay=False), help=out_help),
            click.option("--overwrite", is_flag=True,
                         help="Replace an existing report of this command in --out."),
            click.option("--config", "-c", "config_file", type=click.Path(dir_okay=False), help=config_help),
        ]):
            fn = opt(fn)
        return fn

    return wrap


def gate_count_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--min-count`` and ``--require-ci-excludes-zero``: which groups a compare or history
    gate looks at (the gates' options of the same names)."""
    for opt in reversed([
        click.option("--require-ci-excludes-zero/--no-require-ci-excludes-zero", default=None,
                     help="Count a rise only when its confidence interval lies above zero."),
        click.option("--min-count", type=click.IntRange(min=0),
                     help="Groups with fewer rows (in either run compared) are reported but not gated."),
    ]):
        fn = opt(fn)
    return fn


def print_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--format``, ``--quiet`` and ``--debug`` of ``compare`` and ``history``."""
    for opt in reversed([
        click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json", "none"]),
                     default="table", show_default=True, help="What to print to stdout."),
        click.option("--quiet", "-q", is_flag=True,
                     help="Nothing on stderr but errors, failed gates, gates that could not be checked and "
                          "evalkit's own warnings (no log lines)."),
        click.option("--debug", is_flag=True, help="Show tracebacks of errors."),
    ]):
        fn = opt(fn)
    return fn


def limit_value(flag: str, value: str) -> float | str:
    """A ``X|X%`` limit flag (``--max-regression``, ``--max-drift``): a float, or the ``"X%"``
    text the gates read as a percentage. Raises :class:`UsageError` for anything else."""
    from .errors import UsageError

    if value.strip().endswith("%"):
        return value
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{flag}: expected a number or a percentage like 5%, got {value!r}") from None


def gates_from_flags(cfg_gates: Any, config_file: str | None, flags: dict[str, Any],
                     keys: tuple[str, ...], limits: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config's gates with the gate flags ``keys`` (popped from ``flags``) laid over them;
    ``limits`` are ``X|X%`` flags (:func:`limit_value`). Normalised and validated."""
    from .gates import normalize_gates, validate_gates

    given: dict[str, Any] = {}
    for key in keys:
        value = flags.pop(key)
        if value is None:
            continue
        given[key] = limit_value("--" + key.replace("_", "-"), value) if key in limits else value
    # Each source normalised on its own: a flag replaces the file's gate in either spelling
    # (--max-drift 10% over max_drift_pct: 200), two flags for one gate are refused.
    source = "gates" if not config_file else f"{config_file}: gates"
    gates = {**normalize_gates(cfg_gates, source), **normalize_gates(given)}
    validate_gates(gates, source)
    return gates


@contextlib.contextmanager
def quiet_warnings(quiet: bool) -> Any:
    """With ``quiet``, other libraries' warnings (e.g. matplotlib's missing-glyph warnings
    for labels in scripts its font lacks) and log records stay off stderr; evalkit's own
    warnings (:class:`~evalkit.errors.EvalkitWarning`: a skipped report, a copy counted once,
    ...) still reach it, as in ``evaluate``: a nightly log run with ``-q`` must show them."""
    if not quiet:
        yield
        return
    import logging

    loggers = [logging.getLogger(name) for name in ("matplotlib", "PIL", "fontTools")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", EvalkitWarning)
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
