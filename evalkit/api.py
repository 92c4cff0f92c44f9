"""The public entry points: :func:`evaluate` and :class:`EvalResult`.

The CLI is a thin layer over these: ``evalkit evaluate`` is ``evaluate(...)`` followed by
``EvalResult.write(out_dir)``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .config import EvalConfig, parse_groupings
from .engines.base import CLASS, DuplicateAcrossPartitions, EvalState, Grouping, Plan
from .errors import (
    EmptyInputError,
    InputError,
    JoinError,
    UsageError,
    missing_column,
    sample_rows,
)
from .io import (
    AtomicDir,
    RowWriter,
    Source,
    file_provenance,
    make_spool_dir,
    open_source,
    table_source,
    write_table,
    write_text,
)
from .join import LabelIndex
from .layout import Layout, LayoutSpec, detect_layout

DataLike = str | os.PathLike[str] | Sequence[str] | pd.DataFrame | pa.Table

PROGRESS = Callable[[int, int], None]
MAX_JSON_CONFUSION = 10_000


@dataclass
class EvalResult:
    """What an evaluation produced.

    Attributes
    ----------
    overall:
        Overall statistics (count, mean, std, min, p50, p90, p99, max, sum, clipped_low,
        clipped_high, accuracy).
    groups:
        Each grouping's name (``"class"``, ``"split"``, ``"split,region"``...) mapped to a
        DataFrame of per-group statistics: the key columns, then the statistics.
    confusion:
        Count and mean loss by (true class, predicted class).
    hardest:
        The highest-loss rows, ``"overall"`` and per ``"class"``.
    metadata:
        Run provenance (inputs, row counts, eps, layout, version, timestamps).
    """

    overall: pd.Series
    groups: dict[str, pd.DataFrame]
    confusion: pd.DataFrame
    hardest: dict[str, pd.DataFrame]
    metadata: dict[str, Any]
    layout: Layout
    groupings: tuple[Grouping, ...]
    _rows_table: pa.Table | None = field(default=None, repr=False)
    _rows_path: Path | None = field(default=None, repr=False)
    _rows_index: pd.Index | None = field(default=None, repr=False)
    _rows_df: pd.DataFrame | None = field(default=None, repr=False)
    _class_hist: dict[str, Any] | None = field(default=None, repr=False)
    gate_failures: list[Any] = field(default_factory=list)
    """Quality gates that failed (config key ``gates``); also in ``metadata["gates"]``."""
    plots: bool = True

    @property
    def rows(self) -> pd.DataFrame:
        """Per-row results (``row``, keys, group columns, ``label``, ``predicted``, ``p_true``,
        ``loss``, ``clipped_low``, ``clipped_high``, ``correct``), aligned to the input rows: for a DataFrame input
        the index is the input's index. Loaded lazily when the run streamed from files."""
        if self._rows_df is None:
            if self._rows_table is not None:
                table = self._rows_table
            elif self._rows_path is not None:
                table = pq.read_table(self._rows_path)
            else:
                raise UsageError("per-row results were not kept (write_rows=False)")
            df = table.to_pandas()
            if self._rows_index is not None:
                df.index = self._rows_index[df["row"].to_numpy()]
            self._rows_df = df
        return self._rows_df

    @property
    def mean(self) -> float:
        """Overall mean loss."""
        return float(self.overall["mean"])

    def table(self, name: str) -> pd.DataFrame:
        """Statistics of one grouping by name (``"overall"`` gives a one-row frame)."""
        if name == "overall":
            return self.overall.to_frame().T.reset_index(drop=True).infer_objects()
        if name not in self.groups:
            raise UsageError(f"no grouping {name!r}; groupings are: {', '.join(self.groups)}")
        return self.groups[name]

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON-serialisable data (what ``summary.json`` holds)."""
        from .report import frame_records

        return {
            "metadata": self.metadata,
            "overall": frame_records(self.table("overall"))[0],
            "groups": {name: frame_records(df) for name, df in self.groups.items()},
            # 1000 classes can give a million cells: keep the JSON readable (the full table
            # is in confusion.parquet).
            "confusion": frame_records(self.confusion.nlargest(MAX_JSON_CONFUSION, "count")
                                       if len(self.confusion) > MAX_JSON_CONFUSION else self.confusion),
            "confusion_cells": len(self.confusion),
            "hardest": {k: frame_records(v) for k, v in self.hardest.items()},
        }

    def to_markdown(self, plots: Sequence[tuple[str, str]] | None = None) -> str:
        """The human report (what ``report.md`` holds); ``plots`` are (title, file) to embed."""
        from .report import render_markdown

        return render_markdown(self, plots)

    def write(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write every output into ``out_dir`` atomically; return its path.

        Files: ``rows.parquet`` (if kept), ``overall.parquet``, one ``by_*.parquet`` per
        grouping, ``confusion.parquet``, ``hardest.parquet``, ``report.md``, ``summary.json``.
        """
        import json

        from .report import to_json_default

        atomic = AtomicDir(out_dir, overwrite=overwrite)
        with atomic as tmp:
            self._write_rows(tmp / "rows.parquet")
            write_table(_arrow(self.table("overall")), tmp / "overall.parquet")
            for g in self.groupings:
                if g.columns:
                    write_table(_arrow(self.groups[g.name]), tmp / f"{g.file_stem}.parquet")
            write_table(_arrow(self.confusion), tmp / "confusion.parquet")
            hardest = [df.assign(scope=name) for name, df in self.hardest.items()]
            if hardest:
                write_table(_arrow(pd.concat(hardest, ignore_index=True)), tmp / "hardest.parquet")
            plots: list[tuple[str, str]] | None = None
            if self.plots:
                from .plots import plots_available, write_plots

                plots = write_plots(self, tmp, self._class_hist) if plots_available() else []
            write_text(self.to_markdown(plots), tmp / "report.md")
            write_text(json.dumps(self.to_dict(), indent=2, default=to_json_default) + "\n",
                       tmp / "summary.json")
            return atomic.commit()

    def _write_rows(self, dest: Path) -> None:
        if self._rows_table is not None:
            write_table(self._rows_table, dest)
        elif self._rows_path is not None and self._rows_path.is_dir():  # dask: rows/part-*
            shutil.copytree(self._rows_path, dest.with_name("rows"), copy_function=_link_or_copy)
        elif self._rows_path is not None and self._rows_path.exists():
            try:
                os.link(self._rows_path, dest)
            except OSError:
                shutil.copyfile(self._rows_path, dest)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)


# -- evaluate --------------------------------------------------------------------------


def _as_source(data: Any, label: str) -> tuple[Source, pd.Index | None, bool]:
    """A Source for a path / DataFrame / Table; the DataFrame index; whether in memory."""
    if isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, preserve_index=False)
        return table_source(table, f"<{label} DataFrame>"), data.index, True
    if isinstance(data, pa.Table):
        return table_source(data, f"<{label} Table>"), None, True
    if isinstance(data, pa.RecordBatch):
        return table_source(pa.Table.from_batches([data]), f"<{label} RecordBatch>"), None, True
    if isinstance(data, str | os.PathLike) or (
        isinstance(data, Sequence) and data and all(isinstance(d, str | os.PathLike) for d in data)
    ):
        return open_source(data), None, False  # type: ignore[arg-type]
    raise UsageError(
        f"{label}: expected a path, a list of paths, a pandas DataFrame or a pyarrow Table, "
        f"got {type(data).__name__}"
    )


def _resolve_groupings(cfg: EvalConfig, names: Sequence[str]) -> tuple[Grouping, ...]:
    gs: list[Grouping] = [Grouping("overall", ())]
    if cfg.by_class:
        gs.append(Grouping(CLASS, (CLASS,)))
    user = [tuple(cols) for cols in cfg.by]
    if cfg.by_split and "split" in names and ("split",) not in user:
        gs.append(Grouping("split", ("split",)))
    for cols in user:
        if cols == (CLASS,) and cfg.by_class:
            continue
        gs.append(Grouping(",".join(cols), cols))
    return tuple(gs)


def evaluate(
    data: DataLike,
    *,
    labels: DataLike | None = None,
    on: str | Sequence[str] | None = None,
    by: str | Sequence[str | Sequence[str]] = (),
    eps: float | None = None,
    config: EvalConfig | str | os.PathLike[str] | Mapping[str, Any] | None = None,
    progress: PROGRESS | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate predictions: clipped cross-entropy per row, grouped statistics.

    Parameters
    ----------
    data:
        Predictions: a Parquet path (file, directory with hive partitions, glob, list of
        paths), a pandas DataFrame or a pyarrow Table.
    labels, on:
        Optional separate labels input, joined on the key column(s) ``on``.
    by:
        Extra groupings: ``"region"``, ``["split", "region"]`` (two groupings) or
        ``[["split", "region"]]`` (their combination). The overall line, the grouping by
        true class and by a ``split`` column (when present) are always made.
    eps:
        Clip probabilities to ``[eps, 1 - eps]`` (default ``1e-7``).
    config:
        An :class:`EvalConfig`, a config file path or a mapping; keyword options override it.
    options:
        Any :class:`EvalConfig` field: ``predictions``, ``prefix``, ``logits``, ``label``,
        ``classes``, ``keys``, ``weight``, ``sum_tol``, ``renormalize``, ``on_invalid``,
        ``unmatched``, ``quantiles``, ``top_k``, ``engine``, ...

    Returns
    -------
    EvalResult

    Examples
    --------
    >>> import pandas as pd, evalkit
    >>> df = pd.DataFrame({"prob_a": [0.7, 0.1, 0.02], "prob_b": [0.1, 0.5, 0.9],
    ...                    "prob_c": [0.2, 0.4, 0.08], "label": ["a", "b", "b"]})
    >>> result = evalkit.evaluate(df)
    >>> round(result.mean, 12)
    0.385060880052
    >>> result.groups["class"][["class", "count"]].to_dict("list")
    {'class': ['a', 'b', 'c'], 'count': [1, 2, 0]}
    """
    started = time.time()
    t0 = time.perf_counter()
    cfg = EvalConfig.coerce(config)
    client = options.pop("client", None)  # a distributed.Client for engine="dask"
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

    source, index, in_memory = _as_source(data, "predictions")
    label_index, label_schema = _load_labels(labels, cfg)
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(source.count_rows())
    first = _peek(source)
    spec = LayoutSpec(
        predictions=cfg.predictions or None, prefix=cfg.prefix, logits=cfg.logits,
        label=cfg.label, targets=cfg.targets or None, target_prefix=cfg.target_prefix,
        classes=cfg.classes or None, keys=cfg.keys, weight=cfg.weight,
    )
    layout = detect_layout(source.schema, spec, label_schema=label_schema, source=source.label,
                           first_batch=first)
    names = list(source.schema.names)
    label_side = list(label_schema.names) if label_schema is not None else []
    groupings = _resolve_groupings(cfg, names)
    gated = (cfg.gates or {}).get("groups") or {}
    unknown = [g for g in gated if g not in {x.name for x in groupings}]
    if unknown:
        from .errors import ConfigError

        raise ConfigError(
            f"gates: no grouping {unknown[0]!r} in this run; groupings are "
            f"{', '.join(g.name for g in groupings)} (add it with --by / 'by:')"
        )
    from_join: list[str] = []
    if label_index is not None:
        for c in layout.label_columns:
            from_join.append(c)
    for g in groupings:
        for c in g.columns:
            if c == CLASS:
                continue
            if c not in names:
                if c in label_side:
                    from_join.append(c)
                    continue
                raise missing_column(c, "group", names + label_side, source.label)
    carry = [c for c in dict.fromkeys(
        list(layout.keys) + [c for g in groupings for c in g.columns if c != CLASS]
        + ([layout.weight] if layout.weight else [])
    )]
    if label_index is not None:
        for c in cfg.on:
            if c not in names:
                raise missing_column(c, "join key", names, source.label)
    plan = Plan(
        layout=layout, groupings=groupings, eps=cfg.eps, sum_tol=cfg.sum_tol,
        renormalize=cfg.renormalize, on_invalid=cfg.on_invalid, unmatched=cfg.unmatched,
        quantile_mode=_quantile_mode(cfg, source), exact_limit=cfg.exact_limit, top_k=cfg.top_k,
        carry=tuple(carry), label_columns_from_join=tuple(dict.fromkeys(from_join)),
        on=tuple(cfg.on),
    )
    source.check_drift([c for c in plan.input_columns if c in names])

    rows_table: pa.Table | None = None
    rows_path: Path | None = None
    writer: RowWriter | None = None
    kept: list[pa.RecordBatch] | None = None
    if cfg.write_rows:
        if in_memory:
            kept = []
        else:
            spool = make_spool_dir(spool_dir)
            if cfg.engine == "dask":  # the workers write rows/part-*.parquet
                rows_path = spool / "rows"
            else:
                rows_path = spool / "rows.parquet"
                writer = RowWriter(rows_path)
    try:
        if cfg.engine == "dask":
            from .engines.dask import run_dask

            state = run_dask(plan, source, cfg, label_index=label_index, writer_dir=rows_path,
                             keep_batches=kept, client=client, progress=progress)
        else:
            from .engines.local import run_local

            state = run_local(plan, source, label_index=label_index, writer=writer,
                              keep_batches=kept, batch_size=cfg.batch_size, progress=progress)
        if writer is not None:
            writer.close()
    except DuplicateAcrossPartitions as exc:
        assert label_index is not None
        _cleanup_spool(rows_path)
        raise JoinError(f"{source.label}: duplicate keys on {', '.join(cfg.on)} in the predictions: "
                        f"{label_index.describe_unmatched(exc.mask)}") from None
    except BaseException:
        if writer is not None:
            with contextlib.suppress(Exception):  # the original error matters more
                writer.close()
        _cleanup_spool(rows_path)
        raise

    try:
        unmatched_labels = _check_unmatched_labels(label_index, state, cfg, source)
        if state.rows_read == 0:
            raise EmptyInputError(f"{source.label}: the input has no rows")
        if state.rows_used == 0:
            raise InputError(f"{source.label}: every row was invalid and skipped: {state.skipped}")
    except BaseException:
        _cleanup_spool(rows_path)
        raise

    if kept is not None:
        rows_table = (pa.Table.from_batches(kept) if kept else None)
    stats = {name: acc.finalize() for name, acc in state.stats.items()}
    overall_df = stats.pop("overall")
    # Keep counts as ints (iloc on a mixed frame would upcast them to float).
    overall = pd.Series({c: overall_df[c].iloc[0].item() if hasattr(overall_df[c].iloc[0], "item")
                         else overall_df[c].iloc[0] for c in overall_df.columns}, dtype=object)
    if CLASS in stats:
        stats[CLASS] = _all_classes(stats[CLASS], layout.classes)
    metadata = _metadata(cfg, source, layout, state, plan, started, time.perf_counter() - t0,
                         unmatched_labels, labels)
    class_hist = None
    if cfg.plots and CLASS in state.stats:
        from .plots import class_histograms

        class_hist = class_histograms(state.stats[CLASS])
    result = EvalResult(
        overall=overall,
        groups=stats,
        confusion=state.confusion.finalize(),
        hardest={k: v.finalize() for k, v in state.top.items()},
        metadata=metadata,
        layout=layout,
        groupings=groupings,
        _rows_table=rows_table,
        _rows_path=rows_path,
        _rows_index=index,
        _class_hist=class_hist,
        plots=cfg.plots,
    )
    if cfg.gates:
        from .gates import check_gates

        result.gate_failures = check_gates(result, cfg.gates)
        result.metadata["gates"] = {
            "limits": cfg.gates,
            "passed": not result.gate_failures,
            "failures": [str(f) for f in result.gate_failures],
        }
    if rows_path is not None:
        weakref.finalize(result, _cleanup_spool, rows_path)
    return result


def _all_classes(df: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """List every class, in class order, even those with no rows (count 0)."""
    if len(df) == len(classes):
        return df
    full = df.set_index(CLASS).reindex(list(classes))
    for c in ("count", "clipped_low", "clipped_high"):
        if c in full.columns:
            full[c] = full[c].fillna(0).astype("int64")
    return full.reset_index()


def _quantile_mode(cfg: EvalConfig, source: Source) -> str:
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


def _cleanup_spool(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path.parent, ignore_errors=True)


def _peek(source: Source) -> pa.RecordBatch | None:
    """First rows, so a variable-length list column can reveal the number of classes."""
    list_cols = [f.name for f in source.schema
                 if pa.types.is_list(f.type) or pa.types.is_large_list(f.type)]
    if not list_cols:
        return None
    table = source.head(1, list_cols)
    return table.to_batches()[0] if table.num_rows else None


def _load_labels(labels: Any, cfg: EvalConfig) -> tuple[LabelIndex | None, pa.Schema | None]:
    if labels is None and cfg.labels is not None:
        labels = cfg.labels
    if labels is None:
        return None, None
    if not cfg.on:
        raise UsageError("a separate labels input needs the key column(s) to join on (--on)")
    src, _, _ = _as_source(labels, "labels")
    schema = src.schema
    for c in cfg.on:
        if c not in schema.names:
            raise missing_column(c, "join key", schema.names, src.label)
    table = src.to_table()
    if table.num_rows == 0:
        raise EmptyInputError(f"{src.label}: the labels input has no rows")
    return LabelIndex(table, cfg.on, src.label), schema


def _check_unmatched_labels(
    index: LabelIndex | None, state: EvalState, cfg: EvalConfig, source: Source
) -> int:
    if index is None or state.seen is None:
        return 0
    unmatched = ~state.seen
    n = int(unmatched.sum())
    if n and cfg.unmatched != "drop":
        raise JoinError(
            f"{index.source}: label keys on {', '.join(cfg.on)} with no prediction row in "
            f"{source.label} (pass --unmatched drop to ignore them): {sample_rows(unmatched, 0, index._key_values(unmatched))}"
        )
    if n:
        state.skipped["unmatched_label_key"] = n
    return n


def _metadata(
    cfg: EvalConfig,
    source: Source,
    layout: Layout,
    state: EvalState,
    plan: Plan,
    started: float,
    duration: float,
    unmatched_labels: int,
    labels: Any,
) -> dict[str, Any]:
    qmethod = next(iter(state.stats.values())).quantile_method
    return {
        "evalkit_version": __version__,
        "created": _dt.datetime.fromtimestamp(started, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(duration, 3),
        "input": source.label,
        "input_files": len(source.files),
        "input_bytes": source.file_sizes(),
        "inputs": [file_provenance(f) for f in source.files[:1000]],
        "keys": list(layout.keys),
        "labels": (labels if isinstance(labels, str) else cfg.labels) if (labels is not None or cfg.labels) else None,
        "on": list(cfg.on),
        "rows_read": state.rows_read,
        "rows_used": state.rows_used,
        "rows_skipped": int(sum(v for k, v in state.skipped.items() if k != "unmatched_label_key")),
        "skipped": dict(state.skipped),
        "eps": cfg.eps,
        "sum_tol": cfg.sum_tol,
        "renormalize": cfg.renormalize,
        "layout": layout.describe(),
        "classes": list(layout.classes),
        "groupings": [g.name for g in plan.groupings],
        "quantiles": qmethod,
        "quantile_note": (
            "exact (linear interpolation)" if qmethod == "exact"
            else "log-histogram sketch, relative error <= 1e-3 (rank floor(q*(n-1)))"
        ),
        "engine": cfg.engine,
        "config_file": cfg.source_file,
        "config_hash": cfg.digest(),
        "config": cfg.to_dict(),
    }


def run(config: EvalConfig, *, progress: PROGRESS | None = None) -> tuple[EvalResult, Path]:
    """Evaluate ``config.input`` and write the report to ``config.out`` (what the CLI does)."""
    if not config.input:
        raise UsageError("no input given")
    if not config.out:
        raise UsageError("no output directory given (--out)")
    out = Path(config.out)
    spool_parent = AtomicDir(out, overwrite=config.overwrite).prepare()
    inputs: Any = config.input[0] if len(config.input) == 1 else config.input
    result = evaluate(inputs, config=config, progress=progress, spool_dir=spool_parent)
    try:
        path = result.write(out, overwrite=config.overwrite)
    except BaseException:
        _cleanup_spool(result._rows_path)  # no report: drop the per-row spool now, not at exit
        raise
    return result, path


__all__ = ["EvalResult", "evaluate", "run"]

