"""Errors evalkit raises, each with the CLI exit code it maps to.

The library raises these; only :mod:`evalkit.cli` turns them into exit codes and text.
Every message names what a user needs to act: the file, the column and a sample of
offending rows with their values.

Exit codes (documented in the README):

====  =========================================================
0     success
1     unexpected internal error (a bug: please report it)
2     usage or configuration error (flags, config file, eps)
3     input or data error (missing column, bad values, bad file)
4     output error (report exists, directory not writable)
5     a quality gate failed (report was written)
6     the Dask cluster failed (scheduler unreachable or lost, workers killed)
130   interrupted (Ctrl-C); no partial output is left
====  =========================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_GATE = 5
EXIT_CLUSTER = 6
EXIT_INTERRUPTED = 130


# -- naming a setting in a message ------------------------------------------------------
#
# A hint such as "pass --on KEY" is right at the command line and wrong from Python, where
# the same setting is the keyword ``on="KEY"``. Messages therefore name settings through
# option(), which leaves a marker; str(error) spells it for Python callers and
# EvalkitError.cli_text() for the command line. This is the one home of that wording.

_OPT_START, _OPT_END = "\x1e", "\x1f"
#: Boolean settings whose flags are not --name / --no-name.
_BOOL_FLAGS = {"logits": ("--logits", "--probs"), "write_rows": ("--rows", "--no-rows")}
#: Settings whose command-line flag is not the config key with dashes.
_FLAG_NAMES = {"keys": "--key"}
_NO_VALUE = object()


def option(name: str, value: Any = _NO_VALUE, *, meta: str | None = None) -> str:
    """Name the setting ``name`` (a config key) in an error message.

    ``value`` is a Python value (``True``, ``"id"``, ``["a", "b"]``) and ``meta`` a
    placeholder (``"KEY"``): ``option("on", meta="KEY")`` reads ``--on KEY`` at the command
    line and ``on="KEY"`` from Python; ``option("renormalize", True)`` reads
    ``--renormalize`` / ``renormalize=True``.
    """
    import json

    payload = json.dumps([name, None if value is _NO_VALUE else value, meta, value is _NO_VALUE])
    return f"{_OPT_START}{payload}{_OPT_END}"


def render_options(message: str, *, cli: bool | None) -> str:
    """Spell the settings named by :func:`option` in ``message`` for the CLI (``--on KEY``),
    for Python (``on="KEY"``), or, with ``cli=None``, as config-file keys (``on: KEY``) for
    files any caller reads (report.md, summary.json)."""
    if _OPT_START not in message:
        return message
    import json
    import re

    def spell(m: re.Match[str]) -> str:
        name, value, meta, bare = json.loads(m.group(1))
        if cli is None:
            if bare and meta is None:
                return name
            return f"{name}: {meta if meta is not None else json.dumps(value)}"
        if cli:
            flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
            on, off = _BOOL_FLAGS.get(name, (flag, "--no-" + name.replace("_", "-")))
            if value is True:
                return on
            if value is False:
                return off
            if bare and meta is None:
                return flag
            shown = meta if meta is not None else (
                ",".join(map(str, value)) if isinstance(value, list) else str(value))
            return f"{flag} {_shell_quote(shown)}" if meta is None else f"{flag} {shown}"
        if bare and meta is None:
            return f"{name}=..."
        return f"{name}={meta if meta is not None else repr(value)}"

    return re.sub(re.escape(_OPT_START) + "(.*?)" + re.escape(_OPT_END), spell, message)


def _shell_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


class _Message:
    """A message naming settings through :func:`option`, spelled for its reader:
    ``str()`` for Python callers, :meth:`cli_text` for the command line, :meth:`file_text`
    for files any caller reads. The one home of that behaviour for errors and warnings."""

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)  # type: ignore[call-arg]
        self.message = message

    def __str__(self) -> str:
        return render_options(self.message, cli=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def cli_text(self) -> str:
        """The message with settings spelled as flags (``--on KEY``), for the CLI."""
        return render_options(self.message, cli=True)

    def file_text(self) -> str:
        """The message with settings spelled as config keys (``on: KEY``)."""
        return render_options(self.message, cli=None)

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take one message argument; keep that so they pickle across Dask workers.
        return (self.__class__, (self.message,))


class EvalkitError(_Message, Exception):
    """Base class of every error evalkit raises on purpose.

    ``str(error)`` is the message for Python callers; :meth:`cli_text` the same message with
    settings spelled as command-line flags.
    """

    exit_code: int = EXIT_INPUT


class EvalkitWarning(_Message, UserWarning):
    """A result evalkit computed but that is probably not what was meant (for example
    probabilities read as logits). :func:`evalkit.evaluate` issues it with
    :func:`warnings.warn`, keeps it in ``EvalResult.warnings`` and in the report
    (``summary.json`` ``metadata.warnings``, a section at the top of report.md); the CLI
    prints it on stderr.

    ``str(warning)`` spells settings for Python, :meth:`cli_text` as flags and
    :meth:`file_text` as config keys, like :class:`EvalkitError`.
    """


# -- usage / configuration -------------------------------------------------------------


class UsageError(EvalkitError):
    """Invalid arguments or options."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config file that does not parse, or holds unknown keys or bad values."""


class ClassesError(UsageError):
    """The classes setting (``--classes``) contradicts the prediction columns: another
    number of classes than columns, or class names the columns' own names contradict."""


class MissingDependencyError(UsageError):
    """An optional feature was asked for without its extra installed."""


# -- input / data ----------------------------------------------------------------------


class InputError(EvalkitError):
    """Base class of errors caused by the input data."""

    exit_code = EXIT_INPUT


class EmptyInputError(InputError):
    """No rows, or a path / glob that matches no file."""


class CorruptFileError(InputError):
    """A file that is not Parquet, or a truncated / corrupt one."""


class SchemaDriftError(InputError):
    """Files of one dataset disagree on a column's presence or type."""


class PartitionConflictError(SchemaDriftError):
    """A file inside ``col=value/`` whose own ``col`` column holds other values."""


class MissingColumnError(InputError):
    """A named column does not exist."""


class ColumnTypeError(InputError):
    """A column has a type evalkit cannot use for its role."""


class InvalidProbabilityError(InputError):
    """NaN / inf / negative / > 1 probabilities or non-finite logits."""


class ProbabilitySumError(InputError):
    """Probability rows that do not sum to 1 within the tolerance."""


class ListLengthError(InputError):
    """List rows whose length differs between rows or from the number of classes."""


class LabelError(InputError):
    """Labels out of range, unknown names, nulls, fractional values."""


class TargetSumError(InputError):
    """One-hot / soft target rows that do not sum to 1."""


class JoinError(InputError):
    """Duplicate or unmatched keys when joining a separate labels input."""


class LayoutError(InputError):
    """The layout of predictions / labels cannot be detected or is inconsistent."""


class ReportError(InputError):
    """A directory that is not a readable ``evaluate`` report (missing or corrupt
    ``summary.json`` or grouped table, a compare report, ...)."""


class CompareError(InputError):
    """Two runs that cannot be compared (different eps, class sets, ...)."""


# -- execution cluster -------------------------------------------------------------------


class ClusterError(EvalkitError):
    """The Dask cluster failed: no scheduler at the address, the scheduler lost mid-run,
    workers killed repeatedly (``KilledWorker``). Nothing was written."""

    exit_code = EXIT_CLUSTER


# -- output ----------------------------------------------------------------------------


class OutputError(EvalkitError):
    """The report cannot be written where asked."""

    exit_code = EXIT_OUTPUT


class OutputExistsError(OutputError):
    """The output directory already holds a report and overwrite was not asked for."""


class ReportInterrupted(KeyboardInterrupt):
    """A signal (Ctrl-C, SIGTERM) arrived after the new report was complete in place.

    A KeyboardInterrupt, so code that stops on Ctrl-C still stops; ``path`` is the complete
    report on disk and ``result`` (set by the writer) the result it holds, so the CLI can say
    what is on disk and still exit 5 for a failed gate.
    """

    def __init__(self, path: str, result: Any = None) -> None:
        super().__init__(path)
        self.path = path
        self.result = result


# -- helpers to build messages ---------------------------------------------------------


def closest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` hint, or an empty string."""
    pool = list(choices)
    best = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
    if not best:
        lowered = {c.lower(): c for c in pool}
        if name.lower() in lowered:
            best = [lowered[name.lower()]]
    if not best:
        return ""
    return " (did you mean " + " or ".join(repr(b) for b in best) + "?)"


def missing_column(column: str, role: str, available: Sequence[str], source: str) -> MissingColumnError:
    """Build the error for a column that is not in the input."""
    from .columns import quoted_names

    shown = quoted_names(available)
    return MissingColumnError(
        f"{source}: {role} column {column!r} not found{closest(column, available)}; "
        f"columns are: {shown}"
    )


def sample_rows(
    mask: np.ndarray,
    row_offset: int | np.ndarray,
    values: Sequence[Any] | np.ndarray | None = None,
    keys: Sequence[Any] | np.ndarray | None = None,
    limit: int = 5,
) -> str:
    """Describe up to ``limit`` offending rows: their global position (or key) and value.
    ``row_offset`` is the first row's position, or an array of every row's position (rows
    left out before, e.g. by ``--ignore-label``, keep their numbers)."""
    import numpy as np  # lazily: `evalkit --help` should not pay for numpy

    idx = np.flatnonzero(mask)[:limit]
    total = int(np.count_nonzero(mask))
    parts = []
    for i in idx:
        at = row_offset[int(i)] if isinstance(row_offset, np.ndarray) else row_offset + int(i)
        where = f"row {int(at)}"
        if keys is not None:
            where += f" (key {_fmt_value(_get(keys, int(i)))})"
        if values is not None:
            parts.append(f"{where}: {_fmt_value(_get(values, int(i)))}")
        else:
            parts.append(where)
    more = f" ... and {total - len(idx)} more" if total > len(idx) else ""
    return f"{total} row(s), e.g. " + "; ".join(parts) + more


class _Unprintable:
    def __repr__(self) -> str:
        return "<unprintable value>"


def _get(seq: Any, i: int) -> Any:
    try:
        return seq[i]
    except (UnicodeDecodeError, ValueError, TypeError, IndexError):
        return _Unprintable()


def _fmt_value(v: Any) -> str:
    try:
        return _fmt_value_unsafe(v)
    except (UnicodeDecodeError, ValueError, TypeError, IndexError):
        # A message must never fail: e.g. invalid UTF-8 in a damaged string column.
        return "<unprintable value>"


def _fmt_value_unsafe(v: Any) -> str:
    import numpy as np

    if isinstance(v, np.ndarray):
        v = v.tolist()
    if v is None:
        return "null"  # a missing value (e.g. a null join key), as in the reports
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, list):
        shown = ", ".join(_fmt_value(x) for x in v[:12])
        return "[" + shown + (", ..." if len(v) > 12 else "") + "]"
    return repr(v.item() if isinstance(v, np.generic) else v)


def check_one_spelling(data: Mapping[str, Any], source: str, normal: Any = None) -> None:
    """Raise ConfigError when two keys of ``data`` are spellings of one key (``min-change-pct``
    and ``min_change_pct``; with ``normal``, a function giving a key's one spelling, also
    aliases such as ``key`` and ``keys``): which value held would depend on their order (a
    duplicate key of one spelling is refused by the YAML / TOML reader already)."""
    seen: dict[str, Any] = {}
    for raw in data:
        key = normal(raw) if normal is not None else str(raw).replace("-", "_")
        if key in seen:
            raise ConfigError(f"{source}: {seen[key]!r} and {raw!r} are one key in two spellings; give it once")
        seen[key] = raw
