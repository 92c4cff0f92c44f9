"""The public entry points: :func:`evaluate` and :class:`EvalResult`.

The CLI is a thin layer over these: ``evalkit evaluate`` is ``evaluate(...)`` followed by
``EvalResult.write(out_dir)``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings as _warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import pipeline
from .aggregate import concat_frames
from .columns import CLASS, INPUT_PREFIX
from .config import EvalConfig
from .engines.base import Grouping
from .errors import ConfigError, EvalkitWarning, UsageError, option
from .grouped_file import GROUPED_FILE, write_grouped
from .io import FileQueue, write_batches, write_table, write_text
from .join import check_shared_columns
from .layout import (
    BINARY_LOGIT_NAMES,
    BINARY_NAMES,
    KEY_NAMES,
    LABEL_NAMES,
    LIST_LOGIT_NAMES,
    LIST_PROB_NAMES,
    LOGIT_PREFIXES,
    PROB_PREFIXES,
    SPLIT_NAMES,
    TARGET_PREFIXES,
    Layout,
)
from .outdir import AtomicDir, check_out_apart, local_out
from .overall import Overall
from .pipeline import PROGRESS

DataLike = str | os.PathLike[str] | Sequence[str] | pd.DataFrame | pa.Table | Any
"""A Parquet path (or several), a pandas DataFrame, or any table with ``__arrow_c_stream__``."""

MAX_JSON_CONFUSION = 10_000

#: The column of hardest.parquet saying which table a row is from (``overall``, ``class``).
HARDEST_SCOPE = "scope"


def _hand_out(df: pd.DataFrame) -> pd.DataFrame:
    """The caller's copy of a computed table: edits of it (a column added, a cell set, rows
    dropped in place) stay the caller's. Under pandas' copy-on-write (pandas 3, or 2.x with
    the option on) a shallow copy is enough (no data is copied until the caller writes);
    otherwise a deep copy."""
    return df.copy(deep=not _copy_on_write())


def _copy_on_write() -> bool:
    if int(pd.__version__.split(".", 1)[0]) >= 3:
        return True
    return pd.options.mode.copy_on_write is True


@dataclass(eq=False)
class EvalResult:
    """What an evaluation produced.

    Attributes
    ----------
    overall:
        The overall statistics as a typed record (:class:`~evalkit.overall.Overall`):
        ``count``, ``clipped_low``, ``clipped_high`` as ``int``; ``mean``, ``sem``,
        ``ci_low``, ``ci_high``, ``std``, ``min``, ``p50``, ``p90``, ``p99``, ``max``, ``sum``
        (losses in nats), ``accuracy``, ``ece``, ``mce``, ``brier``, ``entropy`` (and the
        weighted figures) as ``float``. ``result.overall["mean"]``, ``result.overall.mean``;
        ``.to_series()`` / ``.to_frame()`` for pandas.
    groups:
        Each grouping's name (``"class"``, ``"split"``, ``"split,region"``...) mapped to a
        DataFrame of per-group statistics: the key columns, then the statistics.
        ``groups``, ``confusion``, ``hardest`` and ``slices`` are the caller's copies: editing
        them never changes what :meth:`write` writes (the tables the run computed).
    confusion:
        Count and mean loss by (true class, predicted class).
    hardest:
        The highest-loss rows, ``"overall"`` and per ``"class"``.
    metadata:
        Run provenance (inputs, row counts, eps, layout, version, timestamps).
    """

    overall: Overall
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
    _calibration: pipeline.CalibrationTable | None = field(default=None, repr=False)
    _calibration_df: pd.DataFrame | None = field(default=None, repr=False)
    slices: pd.DataFrame | None = None
    """Every slice of the slice search (config ``slices``) with its test statistics."""
    disparity: list[dict[str, Any]] = field(default_factory=list)
    """Per grouping: worst and best group by mean loss, their gap and ratios to the overall
    mean (:func:`evalkit.disparity.disparity`)."""
    _overall_frame: pd.DataFrame | None = field(default=None, repr=False)
    gate_failures: list[Any] = field(default_factory=list)
    """Quality gates that failed (config key ``gates``); also in ``metadata["gates"]``."""
    gate_not_checked: list[Any] = field(default_factory=list)
    """Gates that could not be checked (a ``min_count`` that leaves no group of a grouping):
    noted, not failures, unless the gates say ``fail_unchecked: true`` (then in
    :attr:`gate_failures`); also in ``metadata["gates"]["not_checked"]``."""
    warnings: list[EvalkitWarning] = field(default_factory=list)
    """What the run computed but probably did not mean (:class:`~evalkit.errors.EvalkitWarning`,
    also issued with :func:`warnings.warn` and listed in ``metadata["warnings"]``)."""
    plots: bool = True
    _sources: tuple[tuple[str, Any], ...] = field(default=(), repr=False)
    """``(role, path)`` of every input the run read: ``write`` never writes onto one."""
    path: Path | None = None
    """The report directory last written (``evaluate(..., out=DIR)``, :func:`run`,
    :meth:`write`), None before any."""
    _rows_pending: pipeline.RowSpool | None = field(default=None, repr=False)
    """The spool whose per-row file is still being finished on the writer's thread (see
    :meth:`_rows_ready`); None once it is complete."""
    _rows_stamp: tuple[int, ...] | None = field(default=None, repr=False)
    """Identity of the report's per-row file when the run moved its rows there (``out=``):
    a later run writing into the same directory replaces the file, and reading that one as
    this run's rows is refused (:meth:`_check_rows_file`)."""
    _computed: tuple[Any, ...] = field(default=(), init=False, repr=False)
    """``(groups, hardest, confusion, slices)`` as the run computed them: what :meth:`write`
    writes whatever the caller did to the public copies."""

    def __post_init__(self) -> None:
        self._computed = (self.groups, self.hardest, self.confusion, self.slices)
        self._hand_out_tables()

    def _hand_out_tables(self) -> None:
        groups, hardest, confusion, slices = self._computed
        self.groups = {name: _hand_out(df) for name, df in groups.items()}
        self.hardest = {name: _hand_out(df) for name, df in hardest.items()}
        self.confusion = _hand_out(confusion)
        self.slices = None if slices is None else _hand_out(slices)

    def __eq__(self, other: object) -> bool:
        """Identity (two results of one input are two runs: compare their figures, or
        :func:`evalkit.compare` their reports)."""
        return self is other

    __hash__ = object.__hash__

    def _rows_ready(self) -> None:
        """Wait until the per-row file is complete (raises the writer's error, the spool then
        removed)."""
        spool, self._rows_pending = self._rows_pending, None
        if spool is not None:
            try:
                spool.wait()
            except BaseException:
                spool.discard()
                raise

    @property
    def rows(self) -> pd.DataFrame:
        """Per-row results (``row``, keys, group columns, ``label``, ``predicted``, ``p_true``,
        ``loss``, ``clipped_low``, ``clipped_high``, ``correct``), aligned to the input rows: for a DataFrame input
        the index is the input's index. Loaded lazily when the run streamed from files."""
        if self._rows_df is None:
            self._rows_ready()
            if self._rows_table is not None:
                table = self._rows_table
            elif self._rows_path is not None:
                table = self._read_rows()
            else:
                raise UsageError("per-row results were not kept (write_rows=False)")
            df = table.to_pandas()
            if self._rows_index is not None:
                df.index = self._rows_index[df["row"].to_numpy()]
            self._rows_df = df
        return self._rows_df

    def _read_rows(self) -> pa.Table:
        """The per-row file (the run's spool, or the report's rows.parquet) as a table."""
        from .errors import OutputError

        try:
            self._check_rows_file()
            return pq.read_table(self._rows_path)
        except FileNotFoundError:
            raise OutputError(
                f"{self._rows_path}: the per-row output of this run is gone (the run's temporary spool is "
                "removed with the result object that made it, at exit, or by another process); keep it with "
                f"{option('out', meta='DIR')} (the report's rows.parquet) or read result.rows while the result "
                "that evaluate() returned is alive") from None

    def _check_rows_file(self) -> None:
        """Refuse a per-row file that is no longer this run's (see :attr:`_rows_stamp`)."""
        if self._rows_stamp is None or self._rows_path is None:
            return
        if _file_stamp(Path(self._rows_path)) != self._rows_stamp:
            from .errors import OutputError

            raise OutputError(
                f"{self._rows_path}: this file is no longer the per-row output of this run (another run wrote "
                f"into {Path(self._rows_path).parent} since); this result's summary figures are its own, its rows "
                f"are gone: write each run to its own {option('out', meta='DIR')}, or read result.rows / "
                "write it elsewhere before the next run replaces the report")

    def _rows_in_report(self) -> bool:
        """Whether the per-row file is the written report's (it lasts), not the run's spool."""
        return (self._rows_path is not None and self.path is not None
                and Path(self._rows_path).parent == Path(self.path))

    def __getstate__(self) -> dict[str, Any]:
        """Pickling / copying (a result returned from a worker process, ``copy.deepcopy``)
        carries the per-row table itself when it lives in the run's temporary spool, which
        is removed with the original object: the copy keeps ``rows`` and can ``write``."""
        self._rows_ready()
        state = dict(self.__dict__)
        state["_rows_pending"] = None
        if state["_rows_table"] is None and self._rows_path is not None and not self._rows_in_report():
            state["_rows_table"], state["_rows_path"] = self._read_rows(), None
        return state

    @property
    def calibration(self) -> pd.DataFrame | None:
        """Reliability bins per group of every grouping: ``grouping``, ``group``, the typed key
        columns (:class:`evalkit.pipeline.CalibrationTable`), ``bin``, ``bin_low``,
        ``bin_high``, ``count``, ``mean_confidence``, ``accuracy`` (non-empty bins); None when calibration is off. Built on first access (a million groups have
        ten million bins; ``write`` streams them to calibration.parquet without it)."""
        if self._calibration_df is None and self._calibration is not None:
            self._calibration_df = self._calibration.to_pandas()
        return self._calibration_df

    @calibration.setter
    def calibration(self, value: pd.DataFrame | None) -> None:
        # A table set by the caller is what ``write`` writes (as when this was a field).
        self._calibration, self._calibration_df = None, value

    def __repr__(self) -> str:
        from .report import overall_line

        sizes = ", ".join(f"{name} ({len(df):,} groups)" for name, df in self.groups.items())
        meta = self.metadata
        return (f"EvalResult: {overall_line(self)}\n"
                f"  groupings: {sizes or 'overall only'}\n"
                f"  input: {meta.get('input')} ({meta.get('rows_read', 0):,} rows read, "
                f"{meta.get('rows_skipped', 0):,} skipped"
                + (f", {meta['rows_ignored']:,} ignored)" if meta.get("rows_ignored") else ")")
                + "".join(f"\n  warning: {w}" for w in self.warnings))

    def _repr_markdown_(self) -> str:
        """Jupyter: the overall line and the by-class table."""
        from .escape import md_text
        from .report import STAT_COLUMNS, definitions, markdown_table, overall_line

        out = [f"**{overall_line(self, md_text)}**", "", definitions(float(self.metadata["eps"])), ""]
        out += [f"⚠️ {md_text(str(w))}\n" for w in self.warnings]
        if "class" in self.groups:
            df = self.groups["class"]
            out.append(markdown_table(df, ["class"] + [c for c in STAT_COLUMNS if c in df.columns]))
        return "\n".join(out)

    def _repr_html_(self) -> str:
        """Jupyter: the overall line and the by-class table, as HTML."""
        from html import escape

        from .report import STAT_COLUMNS, fmt_number, overall_line

        parts = [f"<p><b>{escape(overall_line(self))}</b></p>"]
        parts += [f"<p>⚠️ {escape(str(w))}</p>" for w in self.warnings]
        if "class" in self.groups:
            df = self.groups["class"]
            cols = ["class"] + [c for c in STAT_COLUMNS if c in df.columns]
            head = "".join(f"<th>{escape(c)}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{escape(fmt_number(v, c))}</td>" for v, c in zip(rec, cols, strict=True))
                + "</tr>" for rec in df[cols].head(200).itertuples(index=False, name=None))
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return "\n".join(parts)

    @property
    def mean(self) -> float:
        """Overall mean loss."""
        return float(self.overall["mean"])

    def table(self, name: str) -> pd.DataFrame:
        """Statistics of one grouping by name (``"overall"`` gives a one-row frame)."""
        if name == "overall":
            if self._overall_frame is not None:
                return self._overall_frame.copy()
            return self.overall.to_frame()
        if name not in self.groups:
            raise UsageError(f"no grouping {name!r}; groupings are: {', '.join(self.groups)}")
        return self.groups[name]

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain JSON-serialisable data (what ``summary.json`` holds): NaN as
        None, an infinity (the t statistic of a zero-variance slice) as the string
        ``"Infinity"`` / ``"-Infinity"``, so ``json.dumps(..., allow_nan=False)`` accepts it."""
        import json

        from .report import _finite, to_json_default

        data = self._summary()
        try:  # the C encoder: only a non-finite float needs the walk
            json.dumps(data, default=to_json_default, allow_nan=False)
        except ValueError:
            data = _finite(data)
        return data

    def _summary(self) -> dict[str, Any]:
        """:meth:`to_dict` before infinities are spelled (``summary.json``'s writer spells them)."""
        from .display import MAX_JSON_GROUPS, MAX_JSON_ROWS, bounded_groups
        from .report import frame_records

        return {
            "metadata": self.metadata,
            "overall": frame_records(self.table("overall"))[0],
            # 200k users would make a 100 MB JSON: past MAX_JSON_GROUPS, the worst and best
            # by mean loss (every group is in the grouping's Parquet table).
            "groups": {name: frame_records(bounded_groups(df, MAX_JSON_GROUPS)[0])
                       for name, df in self.groups.items()},
            "group_counts": {name: len(df) for name, df in self.groups.items()},
            # 1000 classes can give a million cells: keep the JSON readable (the full table
            # is in confusion.parquet).
            "confusion": frame_records(self.confusion.nlargest(MAX_JSON_CONFUSION, "count")
                                       if len(self.confusion) > MAX_JSON_CONFUSION else self.confusion),
            "confusion_cells": len(self.confusion),
            "hardest": {k: frame_records(v.head(MAX_JSON_ROWS)) for k, v in self.hardest.items()},
            "hardest_counts": {k: len(v) for k, v in self.hardest.items()},
            "disparity": self.disparity,
            **({"slices": {**self.metadata.get("slices", {}),
                           "worst": frame_records(self.worst_slices())}}
               if self.slices is not None else {}),
        }

    def worst_slices(self, top: int = 10) -> pd.DataFrame:
        """The significantly worse slices (Benjamini-Hochberg), largest effect size first."""
        if self.slices is None:
            raise UsageError("no slice search in this run (pass slices=[...] / --slices)")
        from .aggregate.slices import worst_slices

        return worst_slices(self.slices, top)

    def to_markdown(self, plots: Sequence[tuple[str, str]] | None = None) -> str:
        """The human report (what ``report.md`` holds); ``plots`` are (title, file) to embed."""
        from .report import render_markdown

        return render_markdown(self, plots)

    def write(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
              plot_helper: Any = None) -> Path:
        """Write every output into ``out_dir`` atomically; return its path.

        Files: ``rows.parquet`` (if kept), ``overall.parquet``, one ``by_*.parquet`` per
        grouping, ``confusion.parquet``, ``hardest.parquet``, ``report.md``, ``summary.json``
        and the plots' PNGs, and ``evalkit-manifest.json`` (see :mod:`evalkit.outdir`).
        ``plot_helper`` (a :class:`evalkit.plot_process.PlotHelper`) draws the plots in other
        processes while the rest is written; without it, or if it cannot, they are drawn here.
        The files are the same either way. ``summary.json`` records the run id and the
        fingerprint of every table (``table_fingerprints``), so readers can check that the
        files they read belong together.

        Raises UsageError when ``out_dir`` is, holds or lies inside an input of the run;
        OutputExistsError for an existing report without ``overwrite``, or for a directory
        that is not an evalkit evaluate report holding only what evalkit wrote; OutputError
        when it cannot be written (the previous report, if any, is then intact).
        """
        if not isinstance(out_dir, str | os.PathLike):
            raise UsageError(f"write() needs a directory path (str or os.PathLike), not "
                             f"{type(out_dir).__name__}: result.write('report/')")
        yours = (self.groups, self.hardest, self.confusion, self.slices)
        self._hand_out_tables()  # the tables the run computed, not the caller's edits of them
        try:
            return self._write(out_dir, overwrite, plot_helper)
        finally:
            self.groups, self.hardest, self.confusion, self.slices = yours

    def _write(self, out_dir: str | os.PathLike[str], overwrite: bool, plot_helper: Any) -> Path:
        check_out_apart(out_dir, self._sources)
        atomic = AtomicDir(out_dir, overwrite=overwrite, command="evaluate", result=self)
        with atomic as tmp:
            # a plot not drawn is a run warning of report.md and summary.json, written after.
            # The Parquet tables are encoded on a second thread (FileQueue) while this one
            # converts the next table: 200k groups, 1.3M calibration rows, ~0.5 s of encoding
            # off the critical path; only summary.json's table fingerprints wait for them.
            kept: Any = contextlib.nullcontext()
            if self.plots:
                from .plots import plot_warnings_kept

                kept = plot_warnings_kept(self)
            files = FileQueue(threaded=_FILE_THREAD)
            try:
                with kept:
                    plots = self._write_files(tmp, files, plot_helper)
                write_text(self.to_markdown(plots), tmp / "report.md")
                atomic.write_summary(self._summary(), "summary.json", tables_written=files.finish)
            finally:
                files.close()
            self.path = atomic.commit()
            return self.path

    def _write_files(self, tmp: Path, files: FileQueue, plot_helper: Any) -> list[tuple[str, str]] | None:
        """Every file of the report but ``report.md`` and ``summary.json`` (the Parquet tables
        through ``files``; plots drawn by ``plot_helper`` meanwhile, when there is one); returns
        the plots for report.md."""
        plots: list[tuple[str, str]] | None = None
        drawing = False
        if self.plots and plot_helper is not None and plot_helper.available() is not None:
            from .plots import plot_plan

            plots = plot_plan(self) if plot_helper.available() else None  # None: try here
            drawing = bool(plots) and plot_helper.draw(self, tmp, self._class_hist,
                                                       [name for _, name in plots])
            if plots and not drawing:
                plots = None  # the helper is gone: draw here, below
        if self._calibration is not None:
            # The largest table first (1.3M rows for 200k users): it encodes while the rest is built.
            calibration, rows = self._calibration, pipeline.CALIBRATION_ROW_GROUP
            schema = calibration.schema()
            files.submit(lambda: write_batches(schema, calibration.batches(rows=rows),
                                               tmp / "calibration.parquet", row_group_size=rows,
                                               dictionary_floats=pipeline.CALIBRATION_BIN_BOUNDS))
        elif self._calibration_df is not None:
            calibration_table = _arrow(self._calibration_df)
            files.submit(lambda: write_table(calibration_table, tmp / "calibration.parquet",
                                             dictionary_floats=pipeline.CALIBRATION_BIN_BOUNDS))
        overall = _arrow(self.table("overall"))
        _submit_table(files, overall, tmp / "overall.parquet")
        grouped = [("overall", (), overall)]
        for g in self.groupings:
            if g.columns:
                grouped.append((g.name, tuple(g.columns), _arrow(self.groups[g.name])))
                _submit_table(files, grouped[-1][2], tmp / f"{g.file_stem}.parquet")
        # what history reads (one file, not one per grouping)
        files.submit(lambda: write_grouped(grouped, tmp / GROUPED_FILE))
        _submit_table(files, _arrow(self.confusion), tmp / "confusion.parquet")
        if self.slices is not None:
            _submit_table(files, _arrow(self.slices), tmp / "slices.parquet")
        # An input column named scope is kept as input:scope, as rows_column keeps input:loss.
        hardest = [df.rename(columns={HARDEST_SCOPE: INPUT_PREFIX + HARDEST_SCOPE}).assign(**{HARDEST_SCOPE: name})
                   for name, df in self.hardest.items()]
        if hardest:
            _submit_table(files, _arrow(concat_frames(hardest)), tmp / "hardest.parquet")
        if self.plots and plots is None:
            from .plots import plots_available, write_plots

            plots = write_plots(self, tmp, self._class_hist) if plots_available() else []
        if self.plots and plots == []:  # asked for, none drawn: say why (rt-final8 F12)
            from .plots import note_no_plots

            note_no_plots(self)
        # Last of the data files: the per-row file may still be finishing (see _rows_ready).
        self._rows_ready()
        self._write_rows(tmp / "rows.parquet")
        if drawing and plot_helper.finish() is not None:
            from .plots import write_plots

            write_plots(self, tmp, self._class_hist)  # the helper failed: draw here
        return plots

    def _write_rows(self, dest: Path) -> None:
        if self._rows_table is not None:
            write_table(self._rows_table, dest)
            return
        if self._rows_path is None:
            return
        from .errors import OutputError

        src = self._rows_path
        expected = int(self.metadata.get("rows_used", -1))
        try:
            self._check_rows_file()
            if src.name == "rows":  # dask: rows/part-*.parquet
                shutil.copytree(src, dest.with_name("rows"), copy_function=_link_or_copy)
                parts = sorted(dest.with_name("rows").glob("*.parquet"))
            else:
                _link_or_copy(os.fspath(src), os.fspath(dest))
                parts = [dest]
            written = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        except FileNotFoundError:
            raise OutputError(
                f"{src}: the per-row output of this run disappeared before the report was "
                "written (removed by another process?); no report was written, rerun") from None
        except (OSError, pa.ArrowException) as exc:
            raise OutputError(f"{src}: the per-row output of this run cannot be read back "
                              f"({exc}); no report was written, rerun") from None
        if expected >= 0 and written != expected:
            raise OutputError(
                f"{src}: the per-row output of this run holds {written} rows but {expected} "
                "were used (it was changed by another process?); no report was written, rerun")


def _file_stamp(path: Path) -> tuple[int, ...] | None:
    """A file's (or directory's) identity: device, inode, size, modification time; None when gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df, preserve_index=False)


#: Encode the report's Parquet tables on a second thread (:class:`evalkit.io.FileQueue`)?
#: Only with a second core to run it on.
_FILE_THREAD = (os.cpu_count() or 1) > 1


def _submit_table(files: FileQueue, table: pa.Table, path: Path) -> None:
    files.submit(lambda: write_table(table, path))


def _detectable(name: str) -> bool:
    """Whether a column of this name may be read by layout detection or the automatic
    groupings (a conventional label / key / prediction / split name or prefix)."""
    names = {*BINARY_LOGIT_NAMES, *BINARY_NAMES, *KEY_NAMES, *LABEL_NAMES, *LIST_LOGIT_NAMES,
             *LIST_PROB_NAMES, *SPLIT_NAMES}
    return name in names or name.startswith((*PROB_PREFIXES, *LOGIT_PREFIXES, *TARGET_PREFIXES))


def _named(cfg: EvalConfig) -> set[str]:
    """Every text a setting holds (column names among them; more is harmless), commas split."""
    out: set[str] = set()
    stack: list[Any] = [getattr(cfg, f) for f in ("on", "predictions", "prefix", "label", "targets",
                                                  "target_prefix", "keys", "by", "weight", "slices")]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.update([v, *v.split(",")])
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return out


def readable_frame(df: Any, cfg: EvalConfig) -> Any:
    """A pandas DataFrame without the columns the run can never read that Arrow cannot
    convert (rt-api9 F15): an object column mixing text and numbers (read from CSV / Excel),
    dicts, complex numbers, a duplicated name. Only the needed columns are read, so such a
    column is refused only when a setting names it or detection may read it (a conventional
    label / key / prediction / split name or prefix). Other inputs as they are."""
    if not isinstance(df, pd.DataFrame) or df.empty and not len(df.columns):
        return df
    keep = _named(cfg)
    names = [str(c) for c in df.columns]
    dup = {n for i, n in enumerate(names) if n in names[:i]}
    drop: list[int] = []
    for i, n in enumerate(names):
        if n in keep or _detectable(n) or n.startswith(cfg.prefix or "\0"):
            continue
        if n in dup:
            drop.append(i)
            continue
        col = df.iloc[:, i]
        if isinstance(col.dtype, np.dtype) and col.dtype.kind in "biufmMSU":
            continue
        try:
            converted = pa.Array.from_pandas(col)
        except (pa.ArrowException, TypeError, ValueError):
            drop.append(i)
            continue
        if pipeline.mixed_object_kinds(col, converted.type) is not None:  # Arrow merged its values
            drop.append(i)
    if not drop:
        return df
    return df.iloc[:, [i for i in range(len(names)) if i not in set(drop)]]


# -- evaluate --------------------------------------------------------------------------


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

    The run is the sequence of steps in :mod:`evalkit.pipeline`, read top to bottom below.

    Parameters
    ----------
    data:
        Predictions, one row per example: a Parquet path (file, directory with hive
        partitions, glob, list of paths), a pandas DataFrame, or any table with the Arrow
        stream interface (pyarrow Table, polars DataFrame, DuckDB relation), used as is.
        The layout (wide class columns, a list column, one binary column, logits) is
        detected from column names or declared with ``options``.
    labels, on:
        Optional separate labels input, joined on the key column(s) ``on``; without ``on``
        the one plausible key column both inputs share (e.g. ``id``) is used.
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
        ``unmatched``, ``quantiles``, ``top_k``, ``engine``, ... With ``out`` (keyword or
        config file) the report is also written there, as :func:`run` and the CLI write it
        (atomically; ``overwrite`` and ``plots`` honoured); ``result.path`` is that directory.

    Returns
    -------
    EvalResult
        ``overall`` (counts int, figures float), ``groups`` (one DataFrame per grouping,
        one row per group), per-row ``rows`` (one row per row used). Every loss is the
        clipped cross-entropy in nats of :func:`evalkit.cross_entropy` (its docstring gives
        the definition and sources); intervals are t-intervals of the mean (or a Poisson
        bootstrap, Hanley and MacGibbon 2006), calibration is ECE / MCE (Guo et al. 2017)
        and the Brier score (Brier 1950), as the README's statistics section says.

    Raises
    ------
    UsageError / ConfigError
        Unknown or invalid options (exit code 2 at the CLI).
    InputError and subclasses
        Unreadable input, undetectable layout, invalid probabilities or labels, join
        mismatches: each message names the file, the column and sample rows (exit code 3).
    OutputExistsError / OutputError
        With ``out``: an existing directory that is not a replaceable report, or one that
        cannot be written (exit code 4).

    Warns
    -----
    EvalkitWarning
        What the run computed but probably did not mean (also in ``result.warnings``).

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
    client = options.pop("client", None)  # a distributed.Client for engine="dask"
    _check_arguments(by=by, progress=progress, client=client, on=on)
    config = _checked_config(config)
    if options.get("gates") is not None:  # given to evaluate alone: only gates evaluate checks
        from .gates import gates_for

        gates_for("evaluate", options["gates"], shared=False, source="evaluate(gates=...)", warn=False)
    cfg = _resolve_config(config, options, eps=eps, on=on, by=by, labels=labels)
    if cfg.out:
        return _evaluate_and_write(data, labels, cfg, progress, client)[0]
    return _evaluate(data, labels, cfg, progress, spool_dir, client)


def _check_arguments(*, by: Any = (), progress: Any = None, client: Any = None, on: Any = None) -> None:
    """Arguments of :func:`evaluate` that are not config keys (and ``on``, read before the
    config is), checked before any work: only :class:`~evalkit.errors.EvalkitError` leaves the
    library (rt-main10 F4: on=5 was a TypeError; gates are checked by gates.gates_for)."""
    if on is not None and not (isinstance(on, str) or isinstance(on, Sequence) and on
                               and all(isinstance(c, str) for c in on)):
        raise UsageError(f"on must name the join key column(s): a str or a list of str, got "
                         f"{type(on).__name__} {on!r}")
    items = [by] if isinstance(by, str) else [] if by is None else by
    bad = by if not isinstance(items, Sequence) else next(
        (c for i in items for c in ([i] if isinstance(i, str) or not isinstance(i, Sequence) else i)
         if not isinstance(c, str)), None)
    if bad is not None:
        raise UsageError(f"by must name columns: a str (\"region\", \"split,region\"), a list of them, or a list "
                         f"of lists (a combination); got {type(bad).__name__} {bad!r} (a column named "
                         f"{bad!r} is by={str(bad)!r})")
    if progress is not None and not callable(progress):
        raise UsageError(f"progress must be a callable progress(done, total) (for example "
                         f"lambda done, total: print(done, total)), not {type(progress).__name__} {progress!r}")
    if client is not None and not callable(getattr(client, "submit", None)):
        raise UsageError(f"client must be a dask.distributed.Client (for engine='dask'), not "
                         f"{type(client).__name__} {client!r}; a scheduler address is scheduler='tcp://...'")


def _checked_config(config: Any) -> Any:
    """An :class:`EvalConfig` built directly (``EvalConfig(by="region")``) gets the checks a
    mapping or keyword arguments get (:meth:`EvalConfig.from_mapping`): a string where a list
    is expected is a list of names, never its characters; a wrong type is a ConfigError naming
    the key. Other config forms pass through."""
    import dataclasses

    if not isinstance(config, EvalConfig):
        if config is not None and not isinstance(config, str | os.PathLike | Mapping):
            raise UsageError(f"config must be an EvalConfig, a mapping of config keys or a config file path, "
                             f"not {type(config).__name__}")
        return config
    defaults = EvalConfig()
    changed: dict[str, Any] = {}
    for name in EvalConfig.field_names():
        value = getattr(config, name)
        try:
            same = bool(value == getattr(defaults, name))
        except Exception:  # noqa: BLE001 - an array-like value: not the default
            same = False
        if not same:
            changed[name] = value
    checked = EvalConfig.from_mapping(changed, source="EvalConfig(...)")
    for f in dataclasses.fields(EvalConfig):
        if f.name not in EvalConfig.field_names():  # source_file, gates_empty_in: as given
            setattr(checked, f.name, getattr(config, f.name))
    return checked


def _resolve_config(config: Any, options: Mapping[str, Any], **kw: Any) -> EvalConfig:
    """:func:`evalkit.pipeline.resolve_config`, with a config file that is not UTF-8 text
    refused as a ConfigError (not a UnicodeDecodeError)."""
    try:
        return pipeline.resolve_config(config, options, **kw)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{os.fspath(config) if isinstance(config, str | os.PathLike) else 'config'}: config "
                          f"file is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None


def _evaluate(data: DataLike, labels: DataLike | None, cfg: EvalConfig, progress: PROGRESS | None,
              spool_dir: str | os.PathLike[str] | None, client: Any,
              defer_rows: bool = False) -> EvalResult:
    """The run itself (see :func:`evaluate`), with its settings resolved: the pipeline's steps
    from the inputs to an :class:`EvalResult` (nothing written but the per-row spool).
    ``defer_rows``: the per-row file may still be finishing on the writer's thread when this
    returns (``result._rows_pending``; :meth:`EvalResult.write` waits for it last)."""
    started = time.time()
    t0 = time.perf_counter()
    gate_note = None
    if cfg.gates or cfg.gates_empty_in:  # a config's gates serve the three commands: say so when none is evaluate's
        from .gates import gates_for, gates_note

        if not gates_for("evaluate", cfg.gates, shared=True, warn=False):
            # a run warning: stderr, summary.json, report.md
            gate_note = gates_note("evaluate", cfg.gates, empty_in=cfg.gates_empty_in)
    inputs = pipeline.resolve_inputs(readable_frame(data, cfg), readable_frame(labels, cfg), cfg, progress)
    pipeline.match_column_names(cfg, [*inputs.names, *inputs.label_names])
    layout = pipeline.detect_input_layout(inputs, cfg)
    # a split column only the labels input holds is grouped by too, as one the predictions hold
    groupings = pipeline.resolve_groupings(cfg, [*inputs.names, *inputs.label_names], layout.label_columns)
    notes = [*cfg.notes, *([gate_note] if gate_note is not None else [])]
    if inputs.label_index is not None:
        named = [c for cols in cfg.by for c in cols] + list(cfg.slices) + [layout.weight or ""]
        automatic = [c for g in groupings for c in g.columns if c not in named]
        note = check_shared_columns([c for c in named if c and c != CLASS], [c for c in automatic if c != CLASS],
                                    inputs.names, inputs.label_names, cfg.on, inputs.source.label)
        notes += [note] if note is not None else []
    pipeline.check_gated_groupings(cfg, groupings)
    plan = pipeline.build_plan(cfg, inputs, layout, groupings)
    spool = pipeline.open_spool(cfg, inputs.in_memory, spool_dir)
    state = pipeline.run_engine(plan, inputs, cfg, spool, client=client, progress=progress,
                                finish_rows=False)
    try:
        result = _result(cfg, inputs, layout, groupings, plan, spool, state, started, t0, data, labels,
                         notes)
        if not defer_rows:
            spool.wait()
    except BaseException:
        spool.discard()
        raise
    if defer_rows:
        result._rows_pending = spool
    for w in result.warnings:
        _warnings.warn(w, stacklevel=_caller_level())
    _apply_gates(result, cfg)
    if spool.path is not None:
        weakref.finalize(result, pipeline.cleanup_spool, spool.path)
    return result


def _result(cfg: EvalConfig, inputs: pipeline.Inputs, layout: Layout, groupings: tuple[Grouping, ...],
            plan: Any, spool: pipeline.RowSpool, state: Any, started: float, t0: float,
            data: DataLike, labels: DataLike | None, notes: Sequence[str] = ()) -> EvalResult:
    """The steps of :func:`_evaluate` after the engine: checks, tables, metadata, the result
    (``notes``: run warnings found before the engine ran, e.g. a config's gates block that
    checks nothing for evaluate, a split column in both inputs)."""
    unmatched_labels = pipeline.check_run(state, inputs, cfg, spool)
    tables = pipeline.finalise_stats(state, layout, plots=cfg.plots, groupings=groupings,
                                     slice_min_count=cfg.slice_min_count, slice_fdr=cfg.slice_fdr,
                                     confidence=cfg.confidence)
    run_warnings = pipeline.run_warnings(layout, state, inputs.source, inputs.label_source)
    run_warnings += pipeline.check_weight_sums(tables, layout, inputs.source.label)
    run_warnings[:0] = [EvalkitWarning(n) for n in notes]
    metadata = pipeline.build_metadata(cfg, inputs.source, layout, state, plan, started,
                                       time.perf_counter() - t0, unmatched_labels, labels, run_warnings,
                                       inputs.label_source)
    if tables.slices_summary is not None:
        metadata["slices"] = tables.slices_summary
    result = EvalResult(
        overall=tables.overall,
        groups=tables.groups,
        confusion=tables.confusion,
        hardest=tables.hardest,
        metadata=metadata,
        layout=layout,
        groupings=groupings,
        _rows_table=spool.table(),
        _rows_path=spool.path,
        _rows_index=inputs.index,
        _class_hist=tables.class_hist,
        _overall_frame=tables.overall_frame,
        plots=cfg.plots,
        _sources=_sources_of(data, cfg, labels),
        _calibration=tables.calibration,
        slices=tables.slices,
        disparity=tables.disparity,
        warnings=run_warnings,
    )
    return result


def _caller_level() -> int:
    """``warnings.warn``'s stack level that names the first frame outside evalkit (the
    caller of ``evaluate`` / ``run``, however many evalkit frames lie between)."""
    import sys

    frame = sys._getframe(1)
    level = 1
    package = os.path.dirname(__file__)
    while frame is not None and os.path.dirname(frame.f_code.co_filename).startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _apply_gates(result: EvalResult, cfg: EvalConfig) -> None:
    """Check the config's quality gates; record failures on the result and in its metadata
    (``metadata["gates"]``: :func:`evalkit.gates.gates_record`, the shape of compare.json's
    and history.json's gates; a block that holds no gate evaluate checks records
    ``checked`` empty and the note; no block: the record of no gate, ``passed`` true, as
    compare.json and history.json always carry one)."""
    from .gates import gates_note, gates_record

    if not cfg.gates:  # (an empty gates: key: the record of no gate, with its note)
        result.metadata["gates"] = gates_record("evaluate", {}, gates_note("evaluate", {}, empty_in=cfg.gates_empty_in),
                                                [], [])
    else:
        from .gates import check_gates, gates_for

        checked = gates_for("evaluate", cfg.gates, shared=True, warn=False)
        strict = bool(checked.get("fail_unchecked", False))
        found = check_gates(result, checked, unchecked_failed=strict)
        result.gate_failures = [f for f in found if f.failed]
        result.gate_not_checked = [f for f in found if not f.failed]
        result.metadata["gates"] = gates_record("evaluate", checked, None if checked else gates_note("evaluate", cfg.gates),
                                                result.gate_failures, result.gate_not_checked)


def _sources_of(data: Any, cfg: EvalConfig, labels: Any = None) -> tuple[tuple[str, Any], ...]:
    """``(role, path)`` of every file input of a run (in-memory inputs are skipped)."""
    out: list[tuple[str, Any]] = [("input", data)]
    for lab in (labels, cfg.labels):
        if isinstance(lab, str | os.PathLike):
            out.append(("labels input", lab))
    if cfg.source_file:
        out.append(("config file", cfg.source_file))
    return tuple(out)


def run(config: EvalConfig | str | os.PathLike[str] | Mapping[str, Any], *,
        progress: PROGRESS | None = None) -> tuple[EvalResult, Path]:
    """Evaluate ``config.input`` and write the report to ``config.out`` (what the CLI does;
    ``config`` an :class:`EvalConfig`, a mapping of config keys or a config file path):
    :func:`evaluate` (losses in nats, see :func:`evalkit.cross_entropy` for the definition)
    followed by :meth:`EvalResult.write`. Returns the result and the report directory.

    Raises
    ------
    UsageError
        No input or no ``out``; ``out`` is an input, inside one or a parent of one (checked
        before any work).
    OutputExistsError
        ``out`` exists and is not a report this command may replace (exit code 4).
    EvalkitError subclasses
        Everything :func:`evaluate` and :meth:`EvalResult.write` raise."""
    _check_arguments(progress=progress)
    config = _resolve_config(_checked_config(config), {})  # an EvalConfig, a mapping or a file, as evaluate's
    if not config.input:
        raise UsageError("no input given")
    if not config.out:
        raise UsageError(f"no output directory given ({option('out')})")
    inputs: Any = config.input[0] if len(config.input) == 1 else config.input
    return _evaluate_and_write(inputs, None, config, progress, None)


def _evaluate_and_write(data: DataLike, labels: DataLike | None, config: EvalConfig,
                        progress: PROGRESS | None, client: Any) -> tuple[EvalResult, Path]:
    """:func:`_evaluate`, then :meth:`EvalResult.write` to ``config.out`` (``overwrite`` and
    ``plots`` as configured): ``out`` is checked before any work, the plots are drawn by a
    helper process forked before the run, and the per-row spool moves into the report.
    ``result.path`` is the report directory."""
    out = local_out(config.out)  # type: ignore[arg-type]
    check_out_apart(out, _sources_of(data, config, labels))
    spool_parent = AtomicDir(out, overwrite=config.overwrite, command="evaluate").prepare()
    # Forked before any reader thread exists: it imports matplotlib while the run computes.
    helper = None
    if config.plots:
        from .plot_process import start

        helper = start()
    try:
        result = _evaluate(data, labels, config, progress, spool_parent, client, defer_rows=True)
        try:
            path = result.write(out, overwrite=config.overwrite, plot_helper=helper)
        except BaseException:
            pending, result._rows_pending = result._rows_pending, None
            if pending is not None:
                pending.discard()  # waits for the writer's thread
            pipeline.cleanup_spool(result._rows_path)  # no report: drop the per-row spool now, not at exit
            raise
    finally:
        if helper is not None:
            helper.close()
    try:
        if result._rows_path is not None:
            # The report holds the per-row output now: read it from there, drop the spool.
            spool, result._rows_path = result._rows_path, path / result._rows_path.name
            result._rows_stamp = _file_stamp(result._rows_path)
            pipeline.cleanup_spool(spool)
    except KeyboardInterrupt:
        from .errors import ReportInterrupted

        raise ReportInterrupted(str(path), result) from None
    return result, path


__all__ = ["EvalResult", "evaluate", "run"]

