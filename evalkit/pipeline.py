"""The steps of one evaluation run, in the order :func:`evalkit.api.evaluate` runs them.

::

    resolve_config      EvalConfig + keyword overrides            -> EvalConfig
    resolve_inputs      predictions / labels arguments            -> Inputs (Source, LabelIndex)
    detect_input_layout the input's schema and first rows          -> Layout
    resolve_groupings   config + input columns                     -> (Grouping, ...)
    check_gated_groupings  every gated grouping exists             (raises ConfigError)
    build_plan          layout, groupings, join, settings          -> Plan (what a worker needs)
    open_spool          where per-row output goes                  -> RowSpool
    run_engine          local or Dask engine over the batches      -> EvalState (partial stats)
    check_run           unmatched labels, empty or all-invalid input
    finalise_stats      accumulators -> tables                     -> Tables
    build_metadata      provenance of the run                      -> dict

Each step is a plain function (or small object) with its inputs as arguments, so it can be
called and tested on its own; none reads global state. Errors are
:class:`~evalkit.errors.EvalkitError` subclasses. The result object itself
(:class:`~evalkit.api.EvalResult`) and the gate check are assembled by ``evaluate``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import warnings as _warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ._version import __version__
from .aggregate.calibration import BinRows
from .columns import CALIBRATION_TABLE_COLUMNS, CLASS, calibration_key_column, key_name_clash
from .config import EvalConfig, parse_groupings, relative_path_error
from .engines.base import IGNORED, DuplicateAcrossPartitions, EvalState, Grouping, Plan
from .errors import (
    ColumnTypeError,
    ConfigError,
    EmptyInputError,
    EvalkitWarning,
    InputError,
    JoinError,
    UsageError,
    missing_column,
    option,
    sample_rows,
)
from .io import (
    RowWriter,
    Source,
    check_columns_once,
    file_provenance,
    open_source,
    table_source,
)
from .join import LabelIndex, check_label_orders, infer_join_key
from .layout import LABEL_NAMES, Layout, LayoutSpec, detect_layout, label_sampler
from .normalize import check_key_type
from .outdir import make_spool_dir, remove_spool_dir, report_command
from .overall import Overall
from .validate import class_order_fit, class_order_warning, unit_interval_logits

PROGRESS = Callable[[int, int], None]


# -- resolve inputs ---------------------------------------------------------------------


def resolve_config(
    config: Any, options: Mapping[str, Any], *, eps: float | None = None,
    on: str | Sequence[str] | None = None, by: Any = (), labels: Any = None,
) -> EvalConfig:
    """The run's :class:`EvalConfig`: ``config`` (object, file or mapping) with the keyword
    arguments of ``evaluate`` applied on top (source ``"arguments"``).

    Raises :class:`~evalkit.errors.ConfigError` / ``UsageError`` for unknown or invalid values,
    and for ``on`` without ``labels``.
    """
    cfg = EvalConfig.coerce(config)
    overrides: dict[str, Any] = dict(options)
    if eps is not None:
        overrides["eps"] = eps
    if on is not None:
        overrides["on"] = [on] if isinstance(on, str) else list(on)
    if by:
        overrides["by"] = parse_groupings(by if isinstance(by, str) else list(by), "by")
    if isinstance(labels, str | os.PathLike):
        overrides["labels"] = os.fspath(labels)
    cfg.update(overrides, source="arguments")
    if cfg.on and labels is None and not cfg.labels:
        raise ConfigError(f"{option('on', meta='KEY')} needs {option('labels', meta='FILE')}: it names the "
                          "key column joining the predictions to a separate labels input")
    return cfg


def as_source(data: Any, label: str) -> tuple[Source, pd.Index | None, bool]:
    """A Source for a path / DataFrame / Table; the DataFrame index; whether in memory.

    Any other table that speaks the Arrow PyCapsule stream interface (``__arrow_c_stream__``:
    polars DataFrames, DuckDB relations, pyarrow readers) is read into an Arrow table as it is,
    with no conversion by the caller. Raises :class:`~evalkit.errors.UsageError` for any other type.
    """
    if isinstance(data, pd.DataFrame):
        check_columns_once(list(data.columns), f"<{label} DataFrame>")
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            # e.g. an object column mixing text and numbers: name the column and why.
            why = "; ".join(str(a) for a in exc.args[::-1]) if exc.args else type(exc).__name__
            raise ColumnTypeError(f"<{label} DataFrame>: a column cannot be read as one Arrow type "
                                  f"({why[:300]}); give each column values of one type") from None
        for name, arrow_type in zip(data.columns, table.schema.types, strict=True):
            mixed = mixed_object_kinds(data[name], arrow_type)
            if mixed is not None:
                what, mask, merged = mixed
                shown: list[object] = [None] * len(mask)
                for i in np.flatnonzero(mask):
                    v = data[name].iloc[i]
                    shown[i] = v.isoformat() if isinstance(v, _dt.date) else v
                raise ColumnTypeError(
                    f"<{label} DataFrame>: column {str(name)!r} mixes {what}: {sample_rows(mask, 0, shown)}; "
                    f"Arrow would read them as one type ({merged}): give the column values of one kind")
        return table_source(table, f"<{label} DataFrame>"), data.index, True
    if isinstance(data, pa.Table):
        return table_source(data, f"<{label} Table>"), None, True
    if isinstance(data, pa.RecordBatch):
        return table_source(pa.Table.from_batches([data]), f"<{label} RecordBatch>"), None, True
    kind = type(data).__name__
    if not hasattr(data, "__arrow_c_stream__") and callable(getattr(data, "collect", None)):
        data = _collected(data, label)
    if hasattr(data, "__arrow_c_stream__"):
        try:
            table = pa.table(data) if not isinstance(data, pa.RecordBatchReader) else data.read_all()
        except Exception as exc:  # noqa: BLE001 - the caller's query or stream failed: an input error
            raise InputError(f"{label} <{kind}>: reading the table failed: {_failure(exc)}") from exc
        return table_source(_without_views(table), f"<{label} {kind}>"), None, True
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and data and all(isinstance(d, str | os.PathLike) for d in data)
    ):
        _refuse_reports(data)
        return open_source(data), None, False  # type: ignore[arg-type]
    raise UsageError(
        f"{label}: expected a path, a list of paths, a pandas DataFrame, or a table with the Arrow "
        f"stream interface (pyarrow, polars, DuckDB...), got {type(data).__name__}"
    )


#: The kinds of Python object that pyarrow's conversion of an object column silently makes
#: one type: text and bytes (-> binary: 'a' = b'a'); dates, naive and zoned times (-> one
#: timestamp type, a naive time read as UTC, or dates, a time of day dropped).
_KIND_FAMILIES = {("text (str)", "bytes"): "b'a' and 'a' as one value",
                  ("dates", "times without a time zone", "times with a time zone"):
                      "a time without a zone as UTC, or a date's time of day dropped"}


def _object_kind(v: Any) -> str | None:
    if v is pd.NaT:  # a missing time (a datetime subclass without an offset)
        return None
    if isinstance(v, str):
        return "text (str)"
    if isinstance(v, bytes | bytearray):
        return "bytes"
    if isinstance(v, _dt.datetime):  # pandas Timestamp too
        return "times without a time zone" if v.utcoffset() is None else "times with a time zone"
    if isinstance(v, _dt.date):
        return "dates"
    if isinstance(v, np.datetime64):
        return "times without a time zone"
    return None


def _type_kind(t: type) -> str | None:
    """The family member a type's values are (``times``: naive or zoned, told apart later)."""
    if issubclass(t, str):
        return "text (str)"
    if issubclass(t, bytes | bytearray):
        return "bytes"
    if issubclass(t, _dt.datetime | np.datetime64):
        return "times"
    return "dates" if issubclass(t, _dt.date) else None


def _may_mix(values: np.ndarray) -> bool:
    """Whether present ``values`` may hold two kinds of one family (:data:`_KIND_FAMILIES`),
    by C-level passes (their types, then the time zones of times): a per-value Python call
    on a column of a million times costs seconds, twice the conversion itself."""
    from operator import attrgetter

    types = set(map(type, values))
    if not all(_type_kind(t) for t in types):  # missing values (None, NaN, NaT) or others
        values = values[~pd.isna(values)]
        types = set(map(type, values))
    kinds = {_type_kind(t) for t in types}
    if {"text (str)", "bytes"} <= kinds or {"dates", "times"} <= kinds:
        return True
    if "times" not in kinds:
        return False
    if not all(issubclass(t, _dt.datetime) for t in types):  # numpy datetime64s too: rare, in Python
        zoned = [isinstance(v, _dt.datetime) and v.tzinfo is not None for v in values]
        naive = [isinstance(v, np.datetime64) or isinstance(v, _dt.datetime) and v.tzinfo is None
                 for v in values]
        return any(zoned) and any(naive)
    zones = set(map(attrgetter("tzinfo"), values))
    return None in zones and len(zones) > 1


def mixed_object_kinds(col: pd.Series, arrow_type: pa.DataType) -> tuple[str, np.ndarray, str] | None:
    """For a DataFrame object column holding values of two kinds that pyarrow's conversion
    (to ``arrow_type``) merged without a word (:data:`_KIND_FAMILIES`; pandas keeps them
    apart): what they are, a mask of the first row of each kind and what the conversion made
    of them; None for any other column (int / str mixes are refused by pyarrow itself). Only
    a column converted to bytes or a time is looked at (text, the common object column,
    costs nothing), by C-level passes (:func:`_may_mix`) unless it mixes kinds."""
    t = arrow_type
    if col.dtype != object or not (pa.types.is_binary(t) or pa.types.is_large_binary(t)
                                   or pa.types.is_timestamp(t) or pa.types.is_date(t)):
        return None
    values = col.to_numpy()
    if not _may_mix(values):
        return None
    kinds = [_object_kind(v) for v in values]  # a mix: find a row of each kind
    for family, merged in _KIND_FAMILIES.items():
        first = {k: i for i, k in reversed(list(enumerate(kinds))) if k in family}
        if len(first) > 1:
            mask = np.zeros(len(kinds), dtype=bool)
            mask[list(first.values())] = True
            return " and ".join(k for k in family if k in first), mask, merged
    return None


def _refuse_reports(data: Any) -> None:
    """Refuse an evalkit report directory given as predictions (its tables are not a
    prediction input; reading them failed on ``evalkit-manifest.json: not a Parquet file``)."""

    for path in [data] if isinstance(data, str | os.PathLike) else data:
        made_by = report_command(path)
        if made_by is not None:
            use = ("give evaluate the predictions it read (its summary.json names them), or this "
                   "report to compare / history" if made_by == "evaluate" else
                   "give evaluate prediction input, and compare / history evaluate reports")
            raise InputError(f"{os.fspath(path)}: is an evalkit {made_by} report, not prediction input; {use}")


def _collected(lazy: Any, label: str) -> Any:
    """A lazy table (a polars ``LazyFrame``, or anything whose ``collect()`` gives a table with
    ``__arrow_c_stream__``) run to a table, by the library's streaming engine where it has one
    (``collect(engine="streaming")``, older polars ``collect(streaming=True)``). A Spark
    DataFrame is refused: its ``collect()`` pulls Python rows to the driver. Raises
    :class:`~evalkit.errors.UsageError` when the result is no table, and
    :class:`~evalkit.errors.InputError` when the query fails."""
    kind = type(lazy).__name__
    if type(lazy).__module__.startswith("pyspark"):
        raise UsageError(f"{label}: a Spark {kind} is not read in memory: write it to Parquet "
                         f"(df.write.parquet(...)) and pass the path, or pass df.toArrow()")
    attempts: tuple[dict[str, Any], ...] = ({"engine": "streaming"}, {"streaming": True}, {})
    for i, kwargs in enumerate(attempts):
        try:
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore", DeprecationWarning)
                table = lazy.collect(**kwargs)
            break
        except (TypeError, ValueError) as exc:  # this library's collect() has no such option
            if i < len(attempts) - 1:
                continue
            raise InputError(f"{label}: collecting the {kind} failed: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - the caller's lazy query failed: an input error
            raise InputError(f"{label}: collecting the {kind} failed: {_failure(exc)}") from exc
    if not hasattr(table, "__arrow_c_stream__"):
        raise UsageError(f"{label}: {kind}.collect() gave a {type(table).__name__}, not a table with the "
                         f"Arrow stream interface (__arrow_c_stream__)")
    return table


def _failure(exc: BaseException) -> str:
    """What failed in the caller's query or stream, for a message: the exception's type and
    the first line of its text (a DuckDB error goes on with the query, an Arrow stream error
    with the producer's traceback; ``from exc`` keeps all of it)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if " Detail: Python exception: Traceback" in first:  # the producer's exception, last line
        first = f"{first.split(' Detail: ', 1)[0]} ({text[-1].strip()})"
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def _without_views(table: pa.Table) -> pa.Table:
    """String / binary *view* columns (what polars exports) as large strings / binaries,
    the types every later step reads."""
    views = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}
    if not any(f.type in views for f in table.schema):
        return table
    return table.cast(pa.schema([f.with_type(views.get(f.type, f.type)) for f in table.schema]))


def load_labels(labels: Any, cfg: EvalConfig, predictions: Source
                ) -> tuple[LabelIndex | None, pa.Schema | None, Source | None]:
    """The separate labels input (argument, else ``cfg.labels``) read into a join index, its
    schema and its :class:`~evalkit.io.Source`.

    Without join keys, ``cfg.on`` is set to the one plausible key column both inputs share
    (:func:`evalkit.join.infer_join_key`). Returns ``(None, None, None)`` without a labels input.
    Raises ``UsageError`` when no single key is plausible, ``MissingColumnError`` for a
    missing key column, ``EmptyInputError`` for no rows.
    """
    if labels is None and cfg.labels is not None:
        labels = cfg.labels
    if labels is None:
        return None, None, None
    src, _, _ = as_source(labels, "labels")
    schema = src.schema
    if not cfg.on:
        cfg.on = infer_join_key(predictions.schema, schema, predictions.label, src.label)
    for c in cfg.on:
        if c not in schema.names:
            raise missing_column(c, "join key", schema.names, src.label)
    table = src.to_table(key_columns=label_key_columns(cfg, schema))
    if table.num_rows == 0:
        raise EmptyInputError(f"{src.label}: the labels input has no rows")
    return LabelIndex(table, cfg.on, src.label), schema, src


def label_key_columns(cfg: EvalConfig, schema: pa.Schema) -> list[str]:
    """The columns of a separate labels input read as keys, not values (see
    :meth:`evalkit.io.Source.batches`): the join keys, group and slice columns, and the label
    column (``cfg.label``, else the conventional name the layout will find). Its files are
    read before the layout is known, so one-hot / soft target columns and the weight, being
    values, are never among them."""
    label = cfg.label or next((c for c in LABEL_NAMES if c in schema.names), None)
    cols = [*cfg.on, *(c for g in cfg.by for c in g), *cfg.slices, *([label] if label else [])]
    values = set(cfg.targets) | ({cfg.weight} if cfg.weight else set())
    return [c for c in dict.fromkeys(cols) if c in schema.names and c not in values]


@dataclass
class Inputs:
    """The opened inputs of a run."""

    source: Source
    """The predictions, scanned in batches."""
    index: pd.Index | None
    """A DataFrame input's index (per-row results are re-aligned to it)."""
    in_memory: bool
    """The predictions are an in-memory table (per-row output is kept in memory too)."""
    label_index: LabelIndex | None
    """The separate labels input, ready to join, or None."""
    label_schema: pa.Schema | None
    label_source: Source | None = None
    """The separate labels input as opened (its files, the spellings read once), or None."""

    @property
    def names(self) -> list[str]:
        """Columns of the prediction input."""
        return list(self.source.schema.names)

    @property
    def label_names(self) -> list[str]:
        """Columns of the labels input (empty without one)."""
        return list(self.label_schema.names) if self.label_schema is not None else []


def resolve_inputs(data: Any, labels: Any, cfg: EvalConfig,
                   progress: PROGRESS | None = None) -> Inputs:
    """Open the predictions and load the labels input; tell ``progress`` the row total.
    A relative path from a config file that names nothing is an error naming that file and
    the current directory."""
    try:
        source, index, in_memory = as_source(data, "predictions")
        label_index, label_schema, label_source = load_labels(labels, cfg, source)
    except EmptyInputError as exc:
        raise relative_path_error(exc, cfg) from None
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(source.count_rows())
    return Inputs(source, index, in_memory, label_index, label_schema, label_source)


# -- detect layout ----------------------------------------------------------------------


def peek(source: Source) -> pa.RecordBatch | None:
    """First rows, so a variable-length list column can reveal the number of classes."""
    list_cols = [f.name for f in source.schema
                 if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
    if not list_cols:
        return None
    table = source.head(1, list_cols)
    if table.num_rows and any(not (c[0].is_valid and len(c[0])) for c in table.columns):
        # A null or empty first row tells no class count: read on to the first one that does
        # (layout._list_size), so an empty list is the problem named, not the rows after it.
        table = source.head(PEEK_ROWS, list_cols)
    return table.to_batches()[0] if table.num_rows else None


#: Rows :func:`peek` reads when the first row of a list column is null or empty.
PEEK_ROWS = 4096


def detect_input_layout(inputs: Inputs, cfg: EvalConfig) -> Layout:
    """How predictions and labels sit in the input: declared in ``cfg`` or detected from the
    schema (and the first rows for list columns). Raises ``LayoutError`` and kin."""
    spec = LayoutSpec(
        predictions=cfg.predictions or None, prefix=cfg.prefix, logits=cfg.logits,
        label=cfg.label, targets=cfg.targets or None, target_prefix=cfg.target_prefix,
        classes=cfg.classes or None, keys=cfg.keys, weight=cfg.weight,
    )
    # A separate labels file is sampled through its own Source, not the join index (decoded
    # text): a dictionary label declares its class order there as in the predictions file.
    labels = inputs.label_source if inputs.label_source is not None else inputs.label_index
    head = labels.head if labels is not None else inputs.source.head
    layout = detect_layout(inputs.source.schema, spec, label_schema=inputs.label_schema,
                           source=inputs.source.label, first_batch=peek(inputs.source),
                           label_sample=label_sampler(head))
    if layout.declared_order and inputs.label_source is not None:  # its other files: the same order
        check_label_orders(inputs.label_source, layout.label_columns[0], layout.classes)
    return layout


# -- groupings and gates ----------------------------------------------------------------


def match_column_names(cfg: EvalConfig, names: Sequence[str]) -> None:
    """Point the column names of ``cfg`` (groupings, slices, keys, predictions, targets) at
    the input's columns ``names`` (predictions and labels input): a name is itself when the
    input has it, else the one column it equals once surrounding spaces are stripped
    (:func:`evalkit.columns.match_column`; names in a comma-separated list lose theirs). A
    name matching nothing is left for the usual missing-column error."""
    from .columns import match_column

    def fix(cols: Sequence[str]) -> list[str]:
        return [c if c == CLASS else match_column(c, names) or c for c in cols]

    cfg.by = [fix(cols) for cols in cfg.by]
    cfg.slices = fix(cfg.slices)
    for key in ("keys", "predictions", "targets"):
        if getattr(cfg, key):
            setattr(cfg, key, fix(getattr(cfg, key)))


def resolve_groupings(cfg: EvalConfig, names: Sequence[str],
                      label_columns: Sequence[str] = ()) -> tuple[Grouping, ...]:
    """overall, by class (unless off), by ``split`` when the input has one (unless off), then
    the user's groupings in order; ``names`` are the input's columns, ``label_columns`` those
    holding the labels.

    Raises UsageError for a grouping evalkit's own names would hide: one named ``overall``
    (the overall line), and an input column ``class`` that is not the label (``class`` in a
    grouping or slice is the true class), as for statistic names (:func:`key_name_clash`)."""
    gs: list[Grouping] = [Grouping("overall", ())]
    if ("overall",) in [tuple(c) for c in cfg.by]:
        raise UsageError("a grouping named 'overall' would be the overall line: rename the input "
                         "column 'overall' (e.g. with a SQL or DataFrame rename) to group by it")
    for cols in [tuple(c) for c in cfg.by] + [tuple(cfg.slices)]:
        if CLASS in cols and CLASS in names and CLASS not in label_columns:
            raise UsageError(f"the input column {CLASS!r} has the name groupings and slices give the "
                             f"true class, so {option('by')} {CLASS} would group by the true class, not "
                             "by that column: rename the input column (e.g. with a SQL or DataFrame "
                             "rename) to group by it")
    if cfg.by_class:
        gs.append(Grouping(CLASS, (CLASS,)))
    user = [tuple(cols) for cols in cfg.by]
    if cfg.by_split and "split" in names and ("split",) not in user:
        gs.append(Grouping("split", ("split",)))
    for cols in user:
        if cols == (CLASS,) and cfg.by_class:
            continue
        gs.append(Grouping(",".join(cols), cols))
    for kind, cols in [("group", c) for c in user] + [("slice", tuple(cfg.slices))]:
        for c in cols:
            if (clash := key_name_clash(c, kind)) is not None:
                raise UsageError(f"{clash}: it would overwrite that column; rename the {kind} column "
                                 "in the input (e.g. with a SQL or DataFrame rename) before evaluating")
    stems: dict[str, str] = {}
    for g in gs:  # file names come from the columns: two groupings must never share one
        other = stems.setdefault(g.file_stem, g.name)
        if other != g.name:
            raise UsageError(f"groupings {other!r} and {g.name!r} would both be written to "
                             f"{g.file_stem}.parquet; rename a column or drop one grouping")
    return tuple(gs)


def check_gated_groupings(cfg: EvalConfig, groupings: Sequence[Grouping]) -> None:
    """Raise :class:`~evalkit.errors.ConfigError` when a gate names a grouping the run lacks."""
    gated = (cfg.gates or {}).get("groups") or {}
    unknown = [g for g in gated if g not in {x.name for x in groupings}]
    if unknown:
        name = unknown[0]
        same = [g.name for g in groupings if sorted(g.name.split(",")) == sorted(str(name).split(","))]
        if same:  # the grouping is there, its columns named in another order (rt-eval8 F10 nit)
            hint = f"the run has it as {same[0]!r}: name it so under gates: groups:"
        elif name == "class" and not cfg.by_class:
            hint = f"drop {option('by_class', False)}"
        else:
            hint = f"add it with {option('by')}"
        raise ConfigError(
            f"gates: no grouping {name!r} in this run; groupings are "
            f"{', '.join(g.name for g in groupings)} ({hint})"
        )


# -- plan -------------------------------------------------------------------------------


def quantile_mode(cfg: EvalConfig, source: Source) -> str:
    """``auto`` resolved up front when the row count already decides it.

    Auto keeps exact values until more than ``exact_limit`` rows were used. When no row can
    be dropped (invalid rows and unmatched keys fail the run) and the Parquet metadata
    already counts more rows than that, the answer is known: use the sketch from the first
    batch instead of copying a million losses per grouping (and shipping them between Dask
    workers) only to drop them.
    """
    if cfg.quantiles != "auto" or cfg.on_invalid != "error" or cfg.unmatched != "error":
        return cfg.quantiles
    try:
        total = source.count_rows()
    except Exception:  # noqa: BLE001 - the scan will report an unreadable input properly
        return cfg.quantiles
    return "sketch" if total > cfg.exact_limit else cfg.quantiles


def build_plan(cfg: EvalConfig, inputs: Inputs, layout: Layout,
               groupings: tuple[Grouping, ...]) -> Plan:
    """Everything a worker needs: which columns come from the input and which from the label
    join, what is carried into the per-row output, and the numeric settings.

    Raises ``MissingColumnError`` for a group or join-key column in neither input, and
    ``SchemaDriftError`` when the input files disagree on a column the run reads.
    """
    names, label_side, source = inputs.names, inputs.label_names, inputs.source
    from_join: list[str] = []
    if inputs.label_index is not None:
        from_join.extend(layout.label_columns)
    for kind, cols in [("group", g.columns) for g in groupings] + [("slice", tuple(cfg.slices))]:
        for c in cols:
            if c == CLASS:
                continue
            if c not in names:
                if c in label_side:
                    from_join.append(c)
                    continue
                raise missing_column(c, kind, names + label_side, source.label)
    # rows.parquet holds every key the run groups or slices by (as by_*.parquet and
    # slices.parquet do), so any group or slice can be read back row by row.
    carry = list(dict.fromkeys(
        list(layout.keys) + [c for g in groupings for c in g.columns if c != CLASS]
        + [c for c in cfg.slices if c != CLASS]
        + ([layout.weight] if layout.weight else [])
    ))
    if inputs.label_index is not None:
        for c in cfg.on:
            if c not in names:
                raise missing_column(c, "join key", names, source.label)
            check_key_type(c, source.schema.field(c).type, "join key", source.label)
    label_schema = inputs.label_schema
    for role, c in [("group", c) for g in groupings for c in g.columns] + [("slice", c) for c in cfg.slices]:
        if c in names:
            check_key_type(c, source.schema.field(c).type, role, source.label)
        elif c != CLASS and label_schema is not None and c in label_schema.names:
            check_key_type(c, label_schema.field(c).type, role, "labels")
    for c in layout.keys:
        check_key_type(c, source.schema.field(c).type, "key", source.label)
    plan = Plan(
        layout=layout, groupings=groupings, eps=cfg.eps, sum_tol=cfg.sum_tol,
        renormalize=cfg.renormalize, on_invalid=cfg.on_invalid, unmatched=cfg.unmatched,
        quantile_mode=quantile_mode(cfg, source), exact_limit=cfg.exact_limit, top_k=cfg.top_k,
        carry=tuple(carry), label_columns_from_join=tuple(dict.fromkeys(from_join)),
        on=tuple(cfg.on), confidence=cfg.confidence, ci=cfg.ci,
        bootstrap_samples=cfg.bootstrap_samples, bootstrap_seed=cfg.bootstrap_seed,
        calibration_bins=cfg.calibration_bins, slices=tuple(cfg.slices),
        slice_depth=cfg.slice_depth, slice_limit=cfg.slice_limit,
        ignore_label=_ignore_label(cfg, layout),
    )
    source.check_drift([c for c in plan.input_columns if c in names])
    return plan


def _ignore_label(cfg: EvalConfig, layout: Layout) -> str | int | float | None:
    """The label value to ignore, checked against the label encoding."""
    value = cfg.ignore_label
    if value is None:
        return None
    if layout.label_kind not in ("index", "name"):
        raise UsageError(f"{option('ignore_label')} needs a label column of class indices or names; "
                         f"the labels here are {layout.label_kind} targets")
    if layout.label_kind == "index":
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"{option('ignore_label')}: the labels are numbers, got {value!r}") from None
        _refuse_class_as_ignore_label(value, _class_of_index(number, layout), layout)
        return number
    _refuse_class_as_ignore_label(value, layout.classes.index(str(value)) if str(value) in layout.classes
                                  else None, layout)
    return str(value)


def _class_of_index(value: float, layout: Layout) -> int | None:
    """The class a numeric label ``value`` names (by position 0..K-1, or by value for integer
    class names such as 3, 5, 7), None for a value outside the classes."""
    from .layout import _int_class_values

    if not value.is_integer():
        return None
    by_value = _int_class_values(layout.classes)
    if by_value is not None:
        return by_value.index(int(value)) if int(value) in by_value else None
    return int(value) if 0 <= value < layout.n_classes else None


def _refuse_class_as_ignore_label(value: object, index: int | None, layout: Layout) -> None:
    """An ignore label that is one of the classes would leave every row of that class out of
    every statistic, silently (tester T16): PyTorch's ``ignore_index`` (-100) and Keras'
    ``ignore_class`` are padding values outside the classes, so a class here is a mistake
    (a wrong value, or classes numbered from 1). Leaving a class out on purpose is filtering
    the input: that is said, not done."""
    if index is None:
        return
    name = layout.classes[index]
    where = (f", column {layout.pred_columns[index]}" if len(layout.pred_columns) == layout.n_classes
             else f", position {index} of the prediction lists" if layout.kind == "list" else "")
    raise UsageError(
        f"{option('ignore_label', value)}: the ignore label is class {name!r} of the predictions (class "
        f"{index}{where}), so every row of that class would be left out of every statistic; an "
        "ignore label is a padding value outside the classes (e.g. -100 or -1). To score without "
        "a class, leave its rows out of the input")


# -- spool ------------------------------------------------------------------------------


def cleanup_spool(path: Path | None) -> None:
    """Remove a spool directory (the parent of ``path``) made by :func:`open_spool`, and
    release its lock."""
    if path is not None:
        remove_spool_dir(path.parent)


@dataclass
class RowSpool:
    """Where the per-row output of a run goes while it runs.

    In memory (``kept`` batches) for in-memory inputs; otherwise a private spool directory
    (``path``): one Parquet file written by ``writer`` (local engine) or a ``rows/``
    directory the Dask workers write parts into. Nothing at all with ``write_rows`` off.
    """

    path: Path | None = None
    writer: RowWriter | None = None
    kept: list[pa.RecordBatch] | None = None

    def close(self, background: bool = False) -> None:
        """Finish the Parquet file (the run succeeded); ``background``: on the writer's thread,
        :meth:`wait` before the file is read (see :meth:`evalkit.io.RowWriter.close`)."""
        if self.writer is not None:
            self.writer.close(background=background)

    def wait(self) -> None:
        """The Parquet file is finished when this returns (raises the writer's error)."""
        if self.writer is not None:
            self.writer.wait()

    def discard(self) -> None:
        """Close quietly and remove the spool (the run failed; the original error matters)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        cleanup_spool(self.path)

    def table(self) -> pa.Table | None:
        """The kept in-memory rows as one table (None when not kept in memory or empty)."""
        if self.kept is None:
            return None
        return pa.Table.from_batches(self.kept) if self.kept else None


def open_spool(cfg: EvalConfig, in_memory: bool,
               spool_dir: str | os.PathLike[str] | None = None) -> RowSpool:
    """The :class:`RowSpool` for this run (a new directory under ``spool_dir`` if on disk)."""
    if not cfg.write_rows:
        return RowSpool()
    if in_memory:
        return RowSpool(kept=[])
    spool = make_spool_dir(spool_dir)
    if cfg.engine == "dask":  # the workers write rows/part-*.parquet
        return RowSpool(path=spool / "rows")
    path = spool / "rows.parquet"
    return RowSpool(path=path, writer=RowWriter(path))


# -- run --------------------------------------------------------------------------------


def run_engine(plan: Plan, inputs: Inputs, cfg: EvalConfig, spool: RowSpool, *,
               client: Any = None, progress: PROGRESS | None = None,
               finish_rows: bool = True) -> EvalState:
    """Stream every batch through the chosen engine (``cfg.engine``) into mergeable state.

    On any error the spool is removed; duplicate join keys across Dask partitions become a
    :class:`~evalkit.errors.JoinError` naming them. ``finish_rows=False`` leaves the per-row
    file to be finished on the writer's thread: the caller calls ``spool.wait()`` (and
    ``spool.discard()`` on an error) before the file is read.
    """
    label_index = inputs.label_index
    try:
        if cfg.engine == "dask":
            from .engines.dask import run_dask

            state = run_dask(plan, inputs.source, cfg, label_index=label_index,
                             writer_dir=spool.path, keep_batches=spool.kept, client=client,
                             progress=progress)
        else:
            from .engines.local import run_local

            state = run_local(plan, inputs.source, label_index=label_index, writer=spool.writer,
                              keep_batches=spool.kept, batch_size=cfg.batch_size,
                              progress=progress)
        spool.close(background=not finish_rows)
    except DuplicateAcrossPartitions as exc:
        assert label_index is not None
        cleanup_spool(spool.path)
        raise JoinError(f"{inputs.source.label}: duplicate keys on {', '.join(cfg.on)} in the "
                        f"predictions: {label_index.describe_unmatched(exc.mask)}") from None
    except BaseException:
        spool.discard()
        raise
    return state


def check_unmatched_labels(
    index: LabelIndex | None, state: EvalState, cfg: EvalConfig, source: Source
) -> int:
    """Label keys no prediction row matched: a ``JoinError`` unless ``unmatched="drop"``,
    then counted in ``state.skipped["unmatched_label_key"]``. Returns their number."""
    if index is None or state.seen is None:
        return 0
    unmatched = ~state.seen
    n = int(unmatched.sum())
    if n and cfg.unmatched != "drop":
        raise JoinError(
            f"{index.source}: label keys on {', '.join(cfg.on)} with no prediction row in "
            f"{source.label} (pass {option('unmatched', 'drop')} to ignore them): {sample_rows(unmatched, 0, index._key_values(unmatched))}"
        )
    if n:
        state.skipped["unmatched_label_key"] = n
    return n


def check_run(state: EvalState, inputs: Inputs, cfg: EvalConfig, spool: RowSpool) -> int:
    """After the engine: unmatched label keys, an empty input, every row skipped.

    Returns the number of unmatched label keys; on an error the spool is removed.
    """
    try:
        unmatched_labels = check_unmatched_labels(inputs.label_index, state, cfg, inputs.source)
        if state.rows_read == 0:
            raise EmptyInputError(f"{inputs.source.label}: the input has no rows")
        if state.rows_used == 0:
            raise InputError(f"{inputs.source.label}: every row was invalid and skipped: "
                             f"{state.skipped}")
    except BaseException:
        spool.discard()
        raise
    return unmatched_labels


def run_warnings(layout: Layout, state: EvalState, *sources: Source | None) -> list[EvalkitWarning]:
    """What the run computed but probably did not mean: files of an input (``sources``: the
    predictions, the labels) reached more than once (read once,
    :meth:`Source.duplicates_note`); a binary logit column whose every used value lies in
    [0, 1] (:func:`evalkit.validate.unit_interval_logits`); a binary column that reads better
    for the other class (:class:`evalkit.validate.ReversedBinary`); positional predictions
    that fit another class order far better (:func:`evalkit.validate.class_order_fit`)."""
    out = []
    notes = [n for src in sources if src is not None for n in src.notes()]
    out += [EvalkitWarning(note) for note in notes if note is not None]
    if state.reversal is not None:
        text = state.reversal.warning(layout.pred_columns[0], layout.classes)
        if text is not None:
            out.append(EvalkitWarning(text))
    if state.logit_range is not None:
        text = unit_interval_logits(layout.pred_columns[0], *state.logit_range, "in every row used")
        if text is not None:
            out.append(EvalkitWarning(text))
    counts = state.confusion.matrix() if layout.order_unverified else None
    if counts is not None:
        fit = class_order_fit(counts, layout.classes)
        if fit is not None:
            mean = float(state.confusion.loss_sum.sum()) / fit.n
            column = layout.pred_columns[0] if len(layout.pred_columns) == 1 else ", ".join(layout.pred_columns)
            out.append(EvalkitWarning(class_order_warning(fit, column, layout.classes, mean)))
    return out


def check_weight_sums(tables: Tables, layout: Layout, source: str) -> list[EvalkitWarning]:
    """A weighted run whose weights sum to 0: over every row scored an input error naming the
    column (nothing is weighted, as negative weights are refused); in some groups one
    warning saying how many, since their weighted mean, interval and ``n_eff`` are empty
    (null in the Parquet and JSON tables, blank in report.md) and a ``max_mean_loss`` gate
    cannot check them (:func:`evalkit.gates.check_gates`: not checked)."""
    if layout.weight is None:
        return []
    overall = tables.overall_frame
    if overall is not None and "weight_sum" in overall.columns and float(overall["weight_sum"].iloc[0]) == 0:
        raise InputError(f"{source}: column {layout.weight}: weights sum to 0: every one of the "
                         f"{int(overall['count'].iloc[0]):,} rows scored has weight 0, so there is no weighted "
                         f"mean (weights must be finite, >= 0 and not all 0)")
    from .disparity import group_label, key_columns

    found = []
    for name, df in tables.groups.items():
        if "weight_sum" not in df.columns:
            continue
        zero = df[(df["count"] > 0) & (df["weight_sum"] == 0)]
        if len(zero):
            cols = key_columns(df)
            shown = ", ".join(group_label(row, cols) for _, row in zero.head(3).iterrows())
            more = ", ..." if len(zero) > 3 else ""
            found.append((len(zero), f"by {name}: {len(zero):,} of {len(df):,} ({shown}{more})"))
    if not found:
        return []
    total = sum(n for n, _ in found)
    return [EvalkitWarning(
        f"column {layout.weight}: {total:,} group(s) have rows but weights summing to 0, so no weighted mean: "
        f"{'; '.join(text for _, text in found)}. Their weighted_mean, CI and n_eff are empty (null in the "
        f"Parquet and JSON tables, blank in report.md); a max_mean_loss gate on them is not checked")]


# -- finalise ---------------------------------------------------------------------------


def all_classes(df: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """List every class, in class order, even those with no rows (count 0)."""
    if len(df) == len(classes):
        return df
    full = df.set_index(CLASS).reindex(list(classes))
    for c in ("count", "clipped_low", "clipped_high"):
        if c in full.columns:
            full[c] = full[c].fillna(0).astype("int64")
    return full.reset_index()


@dataclass
class Tables:
    """The finalised statistics of a run (see :class:`~evalkit.api.EvalResult`)."""

    overall: Overall
    groups: dict[str, pd.DataFrame]
    confusion: pd.DataFrame
    hardest: dict[str, pd.DataFrame]
    class_hist: dict[str, Any] | None = None
    """Per-class loss histograms for the plots (None when plots are off)."""
    overall_frame: pd.DataFrame | None = None
    """The overall line as a one-row frame with each column's own dtype (counts int64)."""
    calibration: CalibrationTable | None = None
    """Reliability bins of every grouping (None when calibration is off)."""
    slices: pd.DataFrame | None = None
    slices_summary: dict[str, Any] | None = None
    disparity: list[dict[str, Any]] = field(default_factory=list)


def finalise_stats(state: EvalState, layout: Layout, *, plots: bool = False,
                   groupings: Sequence[Grouping] = (), slice_min_count: int = 30,
                   slice_fdr: float = 0.05, confidence: float = 0.95) -> Tables:
    """Turn the merged accumulators into tables: the overall line as a typed record (counts
    ``int``, figures ``float``: :class:`~evalkit.overall.Overall`) and a one-row frame (counts int64), one frame per grouping (every class listed),
    confusion cells, hardest rows, the reliability bins of ``groupings``, the slice tests (``slice_min_count``, FDR level
    ``slice_fdr``), the disparity of every grouping, and with ``plots`` the per-class
    histograms the plots are drawn from."""
    stats = {name: acc.finalize() for name, acc in state.stats.items()}
    overall_df = stats.pop("overall")
    overall = Overall.from_frame(overall_df)
    if CLASS in stats:
        stats[CLASS] = all_classes(stats[CLASS], layout.classes)
    class_hist = None
    if plots and CLASS in state.stats:
        from .plots import class_histograms

        class_hist = class_histograms(state.stats[CLASS])
    slices = summary = None
    if state.slices is not None:
        from .aggregate.slices import assess_slices

        slices, summary = assess_slices(state.slices, min_count=slice_min_count, q=slice_fdr,
                                        confidence=confidence)
        summary["weight"] = layout.weight
    from .disparity import disparity

    return Tables(overall=overall, groups=stats, confusion=state.confusion.finalize(),
                  hardest={k: v.finalize() for k, v in state.top.items()}, class_hist=class_hist,
                  calibration=calibration_table(state, groupings), slices=slices,
                  slices_summary=summary,
                  disparity=disparity(stats, float(overall.get("weighted_mean", overall["mean"])),
                                      slice_min_count),
                  overall_frame=overall_df.reset_index(drop=True))


CALIBRATION_ROW_GROUP = 1 << 20
"""Rows per chunk (and Parquet row group) of calibration.parquet: pyarrow's default row
group, so the file is the one ``pq.write_table`` of the whole table would write."""

CALIBRATION_BIN_BOUNDS = ("bin_low", "bin_high")
"""The float columns of calibration.parquet with few values (one per bin), written with a
Parquet dictionary (:func:`evalkit.io.dictionary_columns`)."""


@dataclass
class CalibrationTable:
    """The reliability bins of every grouping (``calibration.parquet``,
    :attr:`~evalkit.api.EvalResult.calibration`), kept compact.

    Per grouping: its name, the label of each group once (an Arrow string array, None for
    the overall line, labelled ``"all"``) and the bin columns as numpy arrays with
    ``group_index`` pointing into the labels. A million users have ten million bins: the
    long table (``grouping``, ``group``, one typed column per key column of any grouping,
    ``bin``, ``bin_low``, ``bin_high``, ``count``, ``mean_confidence``, ``accuracy``) is only
    built chunk by chunk, as Arrow record batches (:meth:`batches`, what the writer streams)
    or as pandas on request (:meth:`to_pandas`).

    The key columns tell groups apart whose ``group`` labels print alike (``a="x,", b="y"``
    and ``a="x", b=",y"`` both read ``x,,y``). They keep the by_*.parquet types (integers and
    booleans nullable); a key column is null on the rows of a grouping it is not part of
    (``grouping`` names the columns that are), and named ``input:<name>`` when it has the
    name of a column of this table (:func:`evalkit.columns.calibration_key_column`).
    ``keys`` holds, per part, its key columns (one value per group) by output name.
    """

    parts: list[tuple[str, pa.Array | None, BinRows]]
    n_bins: int
    keys: list[dict[str, pd.Series]] = field(default_factory=list)
    _arrow: dict[str, dict[str, pa.Array]] = field(default_factory=dict, repr=False)
    _schema: pa.Schema | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return sum(len(rows) for _, _, rows in self.parts)

    def _arrow_keys(self, name: str, fields: Sequence[pa.Field]) -> dict[str, pa.Array]:
        """The key columns of grouping ``name`` as Arrow arrays (one value per group),
        converted once and kept."""
        got = self._arrow.get(name)
        if got is None:
            mine = next((k for p, k in zip(self.parts, self.keys, strict=False) if p[0] == name), {})
            got = self._arrow[name] = {f.name: pa.Array.from_pandas(mine[f.name], type=f.type)
                                       for f in fields if f.name in mine}
        return got

    def schema(self) -> pa.Schema:
        """The Arrow schema (with the pandas metadata ``pa.Table.from_pandas`` gives), built
        once: every chunk uses it."""
        if self._schema is not None:
            return self._schema
        empty: dict[str, Any] = {"grouping": pd.Series([], dtype="str"), "group": pd.Series([], dtype="str")}
        for keys in self.keys:
            for name, col in keys.items():
                empty.setdefault(name, col.iloc[:0])
        empty.update({"bin": np.zeros(0, np.int64), "bin_low": np.zeros(0),
                      "bin_high": np.zeros(0), "count": np.zeros(0, np.int64),
                      "mean_confidence": np.zeros(0), "accuracy": np.zeros(0)})
        schema = pa.Schema.from_pandas(pd.DataFrame(empty), preserve_index=False)
        # An object column (decimals, dates, ...) has no type while empty: take its Arrow type
        # and its pandas metadata entry from the values (one per group), as from_pandas of the
        # whole table (and writing the by_*.parquet table) does.
        described: dict[str, dict[str, Any]] = {}
        for i, f in enumerate(schema):
            if pa.types.is_null(f.type):
                values = [k[f.name] for k in self.keys if f.name in k and k[f.name].notna().any()]
                if values:
                    known = values[0][values[0].notna()].reset_index(drop=True)
                    one = pa.Schema.from_pandas(pd.DataFrame({f.name: known}), preserve_index=False)
                    schema = schema.set(i, f.with_type(one.field(0).type))
                    described[f.name] = json.loads(one.metadata[b"pandas"])["columns"][0]
        if described:
            meta = json.loads(schema.metadata[b"pandas"])
            meta["columns"] = [described.get(c["name"], c) for c in meta["columns"]]
            schema = schema.with_metadata({**schema.metadata, b"pandas": json.dumps(meta).encode()})
        self._schema = schema
        return schema

    def batches(self, groupings: Sequence[str] | None = None,
                rows: int | None = None) -> Iterator[pa.Table]:
        """The long table of ``groupings`` (None: all) in consecutive chunks of ``rows``
        rows (default :data:`CALIBRATION_ROW_GROUP`; the last shorter), each built when it
        is reached."""
        step = max(int(rows or CALIBRATION_ROW_GROUP), 1)
        parts = [p for p in self.parts if groupings is None or p[0] in groupings]
        total = sum(len(rows) for _, _, rows in parts)
        for start in range(0, total, step):
            yield self.chunk(parts, start, min(start + step, total))

    def to_arrow(self, groupings: Sequence[str] | None = None) -> pa.Table:
        """The whole long table (or that of ``groupings``) as one Arrow table."""
        chunks = list(self.batches(groupings))
        return pa.concat_tables(chunks) if chunks else self.schema().empty_table()

    def to_pandas(self, groupings: Sequence[str] | None = None) -> pd.DataFrame:
        """The long table as a DataFrame (what ``EvalResult.calibration`` returns)."""
        return self.to_arrow(groupings).to_pandas()

    def chunk(self, parts: Sequence[tuple[str, pa.Array | None, BinRows]], start: int,
              stop: int) -> pa.Table:
        """Rows ``[start, stop)`` of the long table of ``parts``."""
        schema = self.schema()
        key_fields = [f for f in schema if f.name not in CALIBRATION_TABLE_COLUMNS]
        pieces = []
        offset = 0
        for name, labels, rows in parts:
            n = len(rows)
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            offset += n
            if lo >= hi:
                continue
            cols = rows.columns(lo, hi)
            b = cols["bin"]
            same = np.zeros(hi - lo, np.int32)
            mine = self._arrow_keys(name, key_fields)
            pieces.append(pa.table({
                "grouping": pa.array([name], pa.large_string()).take(same),
                "group": (pa.array(["all"], pa.large_string()).take(same) if labels is None
                          else labels.take(cols["group_index"])),
                **{f.name: (mine[f.name].take(cols["group_index"]) if f.name in mine
                            else pa.nulls(hi - lo, f.type)) for f in key_fields},
                "bin": b, "bin_low": b / self.n_bins, "bin_high": (b + 1) / self.n_bins,
                "count": cols["count"], "mean_confidence": cols["mean_confidence"],
                "accuracy": cols["accuracy"],
            }, schema=schema))
        return pa.concat_tables(pieces) if pieces else schema.empty_table()


def calibration_table(state: EvalState, groupings: Sequence[Grouping]) -> CalibrationTable | None:
    """The reliability bins of every grouping (:class:`CalibrationTable`): ``grouping``,
    ``group`` (``"val,EU"``; ``"all"`` for the overall line), then the bin columns of
    :meth:`~evalkit.aggregate.GroupStats.calibration_table`. None when calibration is off."""
    from .escape import key_labels

    parts: list[tuple[str, pa.Array | None, BinRows]] = []
    part_keys: list[dict[str, pd.Series]] = []
    n_bins = 0
    for g in groupings:
        acc = state.stats[g.name]
        if acc.calibration is None:
            return None
        n_bins = acc.calibration.n_bins
        keys, rows = acc.calibration_parts()
        labels = None
        if g.columns:
            # One label per group (a million users: a million labels, not ten million).
            labels = key_labels([keys[c] for c in g.columns])
        parts.append((g.name, labels, rows))
        part_keys.append({calibration_key_column(c): _nullable(keys[c]) for c in g.columns})
    return CalibrationTable(parts, n_bins, part_keys) if parts else None


def _nullable(col: pd.Series) -> pd.Series:
    """A key column that stays integer / boolean where other groupings' rows make it null."""
    if pd.api.types.is_bool_dtype(col) and not isinstance(col.dtype, pd.BooleanDtype):
        return col.astype("boolean")
    if pd.api.types.is_integer_dtype(col) and isinstance(col.dtype, np.dtype):
        return col.astype(col.dtype.name.replace("u", "U").replace("i", "I", 1))
    return col


# -- metadata ---------------------------------------------------------------------------


def build_metadata(
    cfg: EvalConfig,
    source: Source,
    layout: Layout,
    state: EvalState,
    plan: Plan,
    started: float,
    duration: float,
    unmatched_labels: int,
    labels: Any,
    warnings: Sequence[EvalkitWarning] = (),
    label_source: Source | None = None,
) -> dict[str, Any]:
    """Provenance of the run (what ``summary.json["metadata"]`` holds): version, times
    (``started`` epoch seconds, ``duration`` s), inputs and their fingerprints, row counts,
    settings, layout, groupings, quantile method, config and its hash."""
    qmethod = next(iter(state.stats.values())).quantile_method
    return {
        "evalkit_version": __version__,
        "created": _dt.datetime.fromtimestamp(started, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # the same start time to the microsecond: orders runs started within one second
        "created_us": int(started * 1_000_000),
        "duration_s": round(duration, 3),
        "input": source.label,
        "input_files": len(source.files),
        "input_bytes": source.file_sizes(),
        "inputs": [file_provenance(f) for f in source.files[:1000]],
        "inputs_deduplicated": len(source.duplicates),
        "labels_deduplicated": len(label_source.duplicates) if label_source is not None else 0,
        "shared_columns": ([c for c in label_source.schema.names if c in source.schema.names
                            and c not in cfg.on and c not in layout.label_columns]
                           if label_source is not None else []),
        "keys": list(layout.keys),
        "labels": ((labels if isinstance(labels, str) else cfg.labels) if (labels is not None or cfg.labels) else None)
        or (label_source.label if label_source is not None else None),
        "on": list(cfg.on),
        "rows_read": state.rows_read,
        "rows_used": state.rows_used,
        "rows_skipped": int(sum(v for k, v in state.skipped.items()
                                if k not in ("unmatched_label_key", IGNORED))),
        "rows_ignored": int(state.skipped.get(IGNORED, 0)),
        "ignore_label": _typed_label(plan.ignore_label),
        "skipped": {k: v for k, v in state.skipped.items() if k != IGNORED},
        "eps": cfg.eps,
        "sum_tol": cfg.sum_tol,
        "renormalize": cfg.renormalize,
        "layout": layout.describe(),
        "warnings": [w.file_text() for w in warnings],
        "classes": list(layout.classes),
        "groupings": [g.name for g in plan.groupings],
        "quantiles": qmethod,
        "quantile_note": (
            "exact (linear interpolation)" if qmethod == "exact"
            else "log-histogram sketch of the linear-interpolation quantile, relative error <= 1e-3"
        ),
        "confidence": plan.confidence,
        "ci_method": ci_note(plan),
        "calibration_bins": plan.calibration_bins,
        "engine": cfg.engine,
        "config_file": cfg.source_file,
        "config_hash": cfg.digest(),
        "config": cfg.to_dict(),
    }


def _typed_label(value: Any) -> Any:
    """The ignore label as the labels hold it: a whole number as an int (-100, not '-100'
    or -100.0), other numbers as floats, class names as text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def ci_note(plan: Plan) -> str:
    """How the ``sem`` / ``ci_low`` / ``ci_high`` columns were computed, for the report."""
    level = f"{100 * plan.confidence:g}%"
    if plan.ci == "bootstrap":
        text = (f"{level} percentile interval of a streaming Poisson bootstrap "
                f"({plan.bootstrap_samples} replicates, seed {plan.bootstrap_seed}, weights "
                f"seeded by global row position)")
    else:
        text = f"{level} t-interval from the accumulated moments"
    if plan.layout.weight is not None:
        text += ("; of the weighted mean, with Kish's effective sample size "
                 "n_eff = (sum w)^2 / sum w^2 (column n_eff)")
    return text
