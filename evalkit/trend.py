"""Nightly history: how every group's mean loss moved over many ``evaluate`` runs, and when
it changed.

    >>> h = evalkit.history(["reports/runs/*/"], out="reports/history")   # doctest: +SKIP
    >>> h.changes                       # the groups whose mean loss shifted, with the night  # doctest: +SKIP
    >>> h.table("region")               # tidy: one row per (run, region)                     # doctest: +SKIP

Inputs are ``evaluate`` report directories (or globs of them), ordered by each run's
recorded start time (``metadata.created_us`` in ``summary.json``, microseconds; older
reports: ``metadata.created``, whole seconds; ties by path), never by name. Only ``summary.json`` (its metadata object, read without parsing the group records),
``overall.parquet`` and the ``by_*.parquet`` grouped tables are read, one grouping at a
time, so memory is bounded by one grouping's history (runs x groups), never by
``rows.parquet``.

Segments
    Runs whose ``eps``, class set or weight column differ compute different quantities (a
    weighted run reports the weighted mean, with an interval from Kish's effective size
    ``n_eff``): runs are put in *segments* of comparable runs (same eps, class set and
    weight), and trends and change detection use the latest run's segment only (other runs
    stay in the tables, with their segment number, and are listed in ``history.md``). A
    segment need not be contiguous: after a one-off night with another eps, the next run with
    the usual settings is compared with the earlier runs of its segment again (the odd night
    stepped over), so a standing regression keeps failing its gates. A grouping's series is
    the latest unbroken stretch of that segment's runs that hold the grouping; a run whose set
    of groupings differs from the previous run's is marked. Nothing is compared across
    segments.

Trend per group (latest segment, last ``window`` runs)
    ``latest`` mean loss, ``change_prev`` since the previous run, ``drift`` since
    ``lookback`` runs before the latest (with a normal-approximation interval from both
    runs' standard errors), and ``min`` / ``max`` over the window.

Change detection per group (:func:`detect_changes`)
    A scan for one shift in level over the window: for every candidate run ``k``, the runs
    from ``k`` on are compared with the window's runs before ``k`` by a pooled two-sample
    t statistic of the run means (Student 1908), whose variance is the pooled run-to-run
    variance, floored at the mean squared standard error of a run mean (a series of
    identical nights cannot make noise look significant). The candidate with the largest
    statistic is kept and its p-value multiplied by the number of candidates (Bonferroni
    bound of the maximum-t scan: Worsley 1979, "On the likelihood ratio test for a shift in
    location of normal populations", JASA 74:365-367; Hawkins 1977, JASA 72:180-186). Across
    the groups of a grouping the p-values are adjusted by Benjamini-Hochberg (1995, JRSS B
    57:289-300), and a group is flagged when its q-value is at most ``alpha`` and the shift
    is at least ``min_change_pct`` percent. The report then reads
    ``region=LATAM: mean loss up 18.0% since 2026-11-12 (run 14 of 30)``.

Gates (config ``gates``, see :mod:`evalkit.gates`): ``max_drift``, ``max_drift_pct`` and
``max_change_pct`` on every group, and the evaluate gates on the latest run; failures make
the CLI exit with code 5 after the report is written.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ._version import __version__
from .columns import history_key_column
from .errors import ConfigError, ReportError, UsageError
from .escape import md_code, md_link_target, md_text
from .gates import GateFailure
from .grouped_file import KeyChunks
from .inference import benjamini_hochberg, standard_error, t_quantile, t_sf2
from .reports import (
    REUSED_STATS,
    FileStamp,
    GroupedRuns,
    Reused,
    RunInfo,
    _file_stem,
    _grouping_columns,
    expand_reports,
    read_grouping,
    read_run_info,
)

#: Defaults of the ``history`` settings (config key ``history``, CLI flags of the same names).
DEFAULTS: dict[str, Any] = {
    "window": 30,  # runs examined by change detection and min / max
    "lookback": 7,  # "change since N runs ago" and the drift gates
    "alpha": 0.05,  # Benjamini-Hochberg level across the groups of a grouping
    "min_change_pct": 0.0,  # smallest shift (percent) worth flagging
    "min_before": 3,  # runs needed on the longer side of a candidate change point (1 on the other)
    "max_rows": 20,  # groups shown per grouping in history.md
    "confidence": 0.95,  # level of each run's t-interval (from its sem, or std / sqrt(count))
    "reuse": True,  # reuse the rows of the history already in ``out`` (with ``overwrite``)
}
SETTINGS = tuple(DEFAULTS)
MAX_CHANGE_LINES = 50  # lines of the "Changes" section of history.md
PLOT_GROUPS = 8  # groups drawn per history plot (besides the overall line)
PLOT_HELPERS = 2  # processes drawing the history plots while the tables are built
PLOT_POOL_MIN = 8  # groupings from which the plots are drawn by helper processes
#: How much lower the plot helpers run than the history process (``os.nice``): they draw
#: on the cores its threads leave idle instead of taking turns with its reading and writing
#: threads (which a cold history keeps waiting on each other).
PLOT_NICE = 10
OUT_MARKERS = ("history.md", "history.json")
_READ_THREADS = 4
WRITES_QUEUED = 16  # month files waiting for the writer thread (a grouping of a year: 13)
TIDY_CODEC = "lz4"  # the tidy tables are rewritten every night: lz4 encodes in half zstd's time
#: Columns of the tidy month files whose min / max the footer records (readers select runs
#: by them); the others' cost a fifth of the encoding time and serve no filter.
TIDY_STATISTICS = ("run_id", "created")
#: The layout of the tidy month files: a history written in another layout (an evalkit
#: before TIDY_STATISTICS: 1; before ``run_id`` was the report's recorded run id, not a
#: label from its path: 2; before an unweighted run's ``n_eff`` was null, not NaN: 3) is not
#: reused (its months would differ from tonight's).
TIDY_LAYOUT = b"4"


# -- change detection -------------------------------------------------------------------------


@dataclass
class ChangeScan:
    """What :func:`detect_changes` found for each of ``G`` series (arrays of length ``G``)."""

    k: np.ndarray  # window row where the new level starts (-1: no candidate)
    before: np.ndarray  # mean of the run means before k
    after: np.ndarray  # mean of the run means from k on
    t: np.ndarray  # pooled two-sample t statistic
    df: np.ndarray  # its degrees of freedom
    p: np.ndarray  # Bonferroni-adjusted two-sided p-value of the scan (NaN: no candidate)
    candidates: np.ndarray  # number of candidate change points scanned


def detect_changes(means: np.ndarray, sems: np.ndarray, min_before: int = 3) -> ChangeScan:
    """Scan each column of ``means`` (runs x series; NaN where a series is absent) for one
    shift in level.

    For each candidate row ``k`` with at least ``min_before`` present runs on one side of it
    and one on the other (before ``k`` and from ``k`` on: both ends of the window alike), ``t_k = (mean(after) - mean(before)) / (s * sqrt(1/n_a + 1/n_b))`` with
    ``s^2`` the pooled sample variance of the run means around their segment means
    (df ``n_a + n_b - 2``), floored at the mean of ``sems^2`` (the sampling variance of one
    run mean). The ``k`` with the smallest p-value is kept; that p-value times the number
    of candidates bounds the scan's false-alarm probability (Worsley 1979). Runs of
    candidates are compared through a normalising transform of t (Wallace 1959) so the
    exact p-value is computed once per series. Vectorised over series; O(runs x series).
    """
    x = np.asarray(means, dtype=np.float64)
    w, g = x.shape
    present = ~np.isnan(x)
    xc = np.where(present, x, 0.0)
    n_tot = present.sum(axis=0)
    center = np.divide(xc.sum(axis=0), n_tot, out=np.zeros(g), where=n_tot > 0)
    y = np.where(present, x - center, 0.0)  # centred: sums of squares without cancellation
    with np.errstate(invalid="ignore"):
        v = np.where(present, np.asarray(sems, dtype=np.float64) ** 2, np.nan)
        finite = np.isfinite(v)
        n_v = finite.sum(axis=0)  # a series with no finite sem (one-row groups): floor 0, no warning
        vbar = np.divide(np.where(finite, v, 0.0).sum(axis=0), n_v, out=np.zeros(g), where=n_v > 0)
    cn = np.cumsum(present, axis=0)[:-1]  # rows 0..k-1, for k = 1..w-1
    cs = np.cumsum(y, axis=0)[:-1]
    cq = np.cumsum(y * y, axis=0)[:-1]
    ts, tq = y.sum(axis=0), (y * y).sum(axis=0)
    nb, na = cn, n_tot - cn
    with np.errstate(invalid="ignore", divide="ignore"):
        mb, ma = cs / nb, (ts - cs) / na
        ss = (cq - cs * cs / nb) + ((tq - cq) - (ts - cs) ** 2 / na)
        dof = nb + na - 2
        s2 = np.maximum(ss / dof, vbar)
        t = (ma - mb) / np.sqrt(s2 * (1.0 / na + 1.0 / nb))
    # a candidate starts at a present run: otherwise k and the next present run are the same split.
    # Symmetric in time: a step one run after the window start (1 | 5) is as testable as one at
    # the latest run (5 | 1); the longer side needs min_before runs, the shorter one.
    longer, shorter = np.maximum(nb, na), np.minimum(nb, na)
    valid = (longer >= min_before) & (shorter >= 1) & (dof >= 1) & present[1:] & np.isfinite(t)
    if w < 2:
        valid = np.zeros((0, g), dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (8 * dof + 1) / (8 * dof + 3) * np.sqrt(dof * np.log1p(t * t / dof))
    z = np.where(valid, z, -np.inf)
    n_cand = valid.sum(axis=0)
    best = np.argmax(z, axis=0) if w >= 2 else np.zeros(g, dtype=np.int64)
    cols = np.arange(g)
    has = n_cand > 0
    pick = lambda a: np.where(has, a[best, cols], np.nan) if w >= 2 else np.full(g, np.nan)  # noqa: E731
    tb, db = pick(t), pick(dof)
    p = np.where(has, np.minimum(1.0, t_sf2(tb, db) * n_cand), np.nan)
    return ChangeScan(k=np.where(has, best + 1, -1), before=pick(mb) + center,
                      after=pick(ma) + center, t=tb, df=db, p=p, candidates=n_cand)


# -- the result -------------------------------------------------------------------------------


@dataclass
class HistoryResult:
    """What :func:`history` produced.

    Attributes
    ----------
    runs:
        One row per run, in order of recorded start time: ``run`` (1-based), ``run_id``
        (the report's own ``metadata.run_id``, as in its ``summary.json`` and manifest; a
        report written before run ids: ``summary:<fingerprint of its summary.json>``),
        ``run_label`` (a display name from its path: the directory name, or the path from the
        common parent when names repeat), ``path``, ``created`` (UTC), ``eps``, ``classes``
        (count), ``groupings``, ``segment`` and ``note`` (why a segment starts here, or a
        changed set of groupings).
    trends:
        Grouping name -> one row per group: the key columns, ``runs`` (present in the
        window), ``latest``, ``latest_count``, ``previous``, ``change_prev``,
        ``change_prev_pct``, ``reference`` (``lookback`` runs earlier), ``reference_count``,
        ``drift``, ``drift_pct``, ``drift_ci_low``, ``drift_ci_high``, ``min``, ``max``,
        and the change scan: ``changed``, ``direction`` (``up`` = worse), ``change_run``,
        ``change_created``, ``before``, ``after``, ``change_pct``, ``t``, ``p_value``,
        ``q_value``. Losses in nats; ``*_pct`` in percent.
    changes:
        The flagged groups of every grouping (``grouping``, ``group``, ``direction``,
        ``change_pct``, ``run``, ``created``, ``before``, ``after``, ``q_value``,
        ``message``), largest relative shift first.
    skipped:
        ``(path, reason)`` of report directories left out (``skip_bad``).
    duplicates:
        ``(path, kept path)`` of report directories holding a run already counted (the
        same ``run_id``: a copied report); each night counts once.
    failures:
        Failed gates (empty when all passed or none were given).
    unchecked:
        Gates that could not be checked (``GateFailure.failed`` False): too few runs for
        the lookback or the change scan, or a grouping absent from the latest run. They do
        not fail unless the gates set ``fail_unchecked: true``.
    reused_runs:
        Runs none of whose tables were read: all their rows were taken from the history
        already in ``out``.
    ignored:
        ``(path, why)`` of glob matches left out because they are not evaluate reports
        (files, compare / history reports).
    kept_files:
        Monthly files of the tidy tables kept as they were from the history already in
        ``out`` (linked, neither read nor rewritten): every month but the ones tonight's
        runs changed.
    notes:
        Key columns whose kind differs between runs (a number in some, text in others): their
        groups were matched on their text form, as ``compare`` does; also warned on stderr and
        noted in ``history.md``.
    gate_note:
        Why no gate was checked although a gates block was given (it holds no gate history
        checks: :func:`evalkit.gates.gates_note`), else None; also in ``history.json``
        (``gates.note``), ``history.md`` and warned on stderr.
    """

    runs: pd.DataFrame
    trends: dict[str, pd.DataFrame]
    changes: pd.DataFrame
    metadata: dict[str, Any]
    gates: dict[str, Any] = field(default_factory=dict)
    failures: list[GateFailure] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    unchecked: list[GateFailure] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    reused_runs: int = 0
    kept_files: int = 0
    notes: list[str] = field(default_factory=list)  # key columns whose kind differs between runs
    gate_note: str | None = None  # a gates block that holds no gate history checks (gates.gates_note)
    _tables: dict[str, pa.Table | Path] = field(default_factory=dict, repr=False)
    _plots: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _pending_plots: list[str] = field(default_factory=list, repr=False)  # drawn by helpers
    _font_noted: bool = field(default=False, repr=False)  # the plot font note issued (once per history)
    _sources: pa.Table | None = field(default=None, repr=False)
    _keys: dict[str, pa.Table] = field(default_factory=dict, repr=False)  # each trend's keys, typed
    # rows to plot and the groups picked (their trend rows), by grouping
    _windows: dict[str, tuple[pd.DataFrame, pd.DataFrame] | None] = field(default_factory=dict, repr=False)

    @property
    def groupings(self) -> list[str]:
        """Grouping names, ``overall`` first."""
        return list(self.trends)

    @property
    def passed(self) -> bool:
        """True when no gate failed."""
        return not self.failures

    def table(self, grouping: str) -> pd.DataFrame:
        """The tidy history of one grouping: one row per (run, group) with ``run``,
        ``run_id`` (the report's recorded run id, see :attr:`runs`), ``created``, ``segment``, the key columns, ``count``, ``mean``, ``sem``,
        ``ci_low``, ``ci_high`` (t-interval at ``confidence`` from the run's ``sem``, or its
        ``std``), ``clipped_low`` (``clipped`` in older reports) and ``accuracy``. Read back from
        the written report when the result was written with ``out`` (its directory of
        monthly files, ``run`` and ``segment`` taken from :attr:`runs` by ``run_id``)."""
        if grouping not in self._tables:
            raise UsageError(f"no grouping {grouping!r}; groupings are: {', '.join(self._tables)}")
        t = self._tables[grouping]
        if not isinstance(t, Path):
            return t.to_pandas()
        parts = [pq.read_table(f) for f in sorted(t.glob("*.parquet"))]
        df = pa.concat_tables(parts, promote_options="permissive").to_pandas() if parts else pd.DataFrame()
        if df.empty and not parts:
            return df
        run_of = dict(zip(self.runs["run_id"], self.runs["run"], strict=True))
        seg_of = dict(zip(self.runs["run_id"], self.runs["segment"], strict=True))
        ids = df["run_id"].astype(str)
        df.insert(0, "run", ids.map(run_of).astype(np.int64))
        df.insert(3, "segment", ids.map(seg_of).astype(np.int64))
        return df

    def gates_record(self) -> dict[str, Any]:
        """The gates as ``history.json`` holds them (:func:`evalkit.gates.gates_record`, the
        shape of compare.json and summary.json too)."""
        from .gates import gates_record

        return gates_record("history", self.gates, self.gate_note, self.failures, self.unchecked)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (what ``history.json`` holds)."""
        from .report import frame_records

        return {
            "metadata": self.metadata,
            "runs": frame_records(self.runs),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "duplicates": [{"path": p, "same_run_as": k, "same": _copy_reason(self, k)} for p, k in self.duplicates],
            "ignored": [{"path": p, "reason": r} for p, r in self.ignored],
            "gates": self.gates_record(),
            "changes": frame_records(self.changes),
            "groupings": {name: {"groups": int(len(df)), "changed": int(df["changed"].sum()),
                                 "runs": self.metadata["series_runs"].get(name, 0)}
                          for name, df in self.trends.items()},
            "overall": frame_records(self.trends["overall"])[0] if len(self.trends.get("overall", [])) else None,
        }

    def to_markdown(self) -> str:
        """The human report (what ``history.md`` holds)."""
        return render_markdown(self)

    def write(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
              plots: bool = True) -> Path:
        """Write ``history.md``, ``history.json``, ``runs.parquet``, ``trends.parquet``, one
        tidy table per grouping (``overall/``, ``by_<cols>/``: one Parquet file per calendar
        month of the runs, ``2026-11.parquet``) and (with matplotlib) one ``history_*.png``
        per grouping into ``out_dir``, atomically."""
        from .outdir import AtomicDir

        atomic = AtomicDir(out_dir, overwrite=overwrite, command="history", result=self)
        with atomic as tmp:
            self._write_into(tmp, plots=plots)
            path = atomic.commit()
        self._tables = {g: path / _tidy_dir(g) for g in self._tables}
        return path

    def _write_into(self, tmp: Path, *, plots: bool) -> None:
        self._plots = []
        for name, t in self._tables.items():
            if isinstance(t, Path):  # written before: the same files again
                for f in sorted(t.glob("*.parquet")):
                    _link(f, tmp / _tidy_dir(name) / f.name)
                _emit_grouping(self, name, None, tmp, plots, {})
                continue
            frame = _Tidy(t, np.empty(0, np.int64), pd.DataFrame(), pa.table({}),
                          t.column("run").to_numpy() - 1, np.empty(0), np.empty(0), np.empty(0))
            names, month_of = np.unique(_months_of(t.column("created")).astype(str), return_inverse=True)
            _emit_grouping(self, name, frame, tmp, plots, {m: [] for m in names}, (month_of, list(names)))
        _write_summary_files(self, tmp)


def _write_summary_files(res: HistoryResult, tmp: Path, sources: pa.Table | None = None) -> None:
    """``sources.parquet`` (what a later history reuses by), ``runs.parquet``,
    ``trends.parquet`` (:func:`_write_summary_tables`), ``history.md`` and ``history.json``
    (:func:`_write_summary_texts`)."""
    _write_summary_tables(res, tmp, sources)
    _write_summary_texts(res, tmp)


def _write_summary_tables(res: HistoryResult, tmp: Path, sources: pa.Table | None = None) -> None:
    """``sources.parquet``, ``runs.parquet`` and ``trends.parquet``: known once every grouping
    is built (written while the plot helpers finish; neither the gates nor the plots change them)."""
    from .io import write_table

    if sources is not None:
        res._sources = sources
    if res._sources is not None:
        write_table(res._sources, tmp / SOURCES)
    write_table(pa.Table.from_pandas(res.runs, preserve_index=False), tmp / "runs.parquet")
    write_table(_trends_table(res.trends, res._keys), tmp / "trends.parquet")


def _write_summary_texts(res: HistoryResult, tmp: Path) -> None:
    """``history.md`` (with the plots' titles) and ``history.json`` (with the gates and the
    run's duration)."""
    from .io import write_text
    from .report import json_text

    write_text(res.to_markdown(), tmp / "history.md")
    write_text(json_text(res.to_dict()), tmp / "history.json")


def _key_cols(grouping: str) -> list[str]:
    """The key columns of ``grouping`` as history's tables name them (``--by t``: ``input:t``,
    :func:`evalkit.columns.history_key_column`)."""
    return [history_key_column(c) for c in _grouping_columns(grouping)]


def _trends_table(trends: Mapping[str, pd.DataFrame], keys: Mapping[str, pa.Table]) -> pa.Table:
    """All groupings' trends in one tidy table: ``grouping``, then every grouping's key
    columns with their Arrow types (as in the ``by_*.parquet`` tables; null where a column
    is not part of the row's grouping, so a null key, the text ``"(null)"`` and the empty
    string stay distinct), then the trend columns."""
    key_cols: dict[str, pa.DataType] = {}
    for name in trends:
        for c in _key_cols(name):
            ty = keys[name].schema.field(c).type
            key_cols[c] = _common_type(key_cols[c], ty) if c in key_cols and key_cols[c] != ty else ty
    parts = []
    for name, df in trends.items():
        cols = _key_cols(name)
        body = pa.Table.from_pandas(df.drop(columns=cols).reset_index(drop=True), preserve_index=False)
        n = len(df)
        arrays: dict[str, Any] = {"grouping": pa.array([name] * n, pa.string())}
        for c, ty in key_cols.items():
            arrays[c] = _as_type(keys[name].column(c), ty) if c in cols else pa.nulls(n, ty)
        for c in body.column_names:
            arrays[c] = body.column(c)
        parts.append(pa.table(arrays))
    return pa.concat_tables(parts, promote_options="permissive")


def _common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    try:
        return pa.unify_schemas([pa.schema([("k", a)]), pa.schema([("k", b)])],
                                promote_options="permissive").field("k").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.large_string()


def _as_type(a: pa.ChunkedArray, ty: pa.DataType) -> pa.ChunkedArray:
    """A key column in the type the trends table gives that column name (text when two
    groupings typed it differently and no common type exists)."""
    if a.type == ty:
        return a
    try:
        return a.cast(ty)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.chunked_array([pa.array([None if v is None else str(v) for v in a.to_pylist()], ty)])


def _labels(df: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """Each group's label, keys shown by :func:`evalkit.report.fmt_key` (a null key as ∅,
    the empty string as ``""``), joined by commas."""
    from .report import fmt_key

    if not cols:
        return [""] * len(df)
    parts = [df[c].astype(object).map(fmt_key) for c in cols]
    return [",".join(vals) for vals in zip(*parts, strict=True)]


def _plot_picks(trend: pd.DataFrame, grouping: str) -> pd.DataFrame:
    """The groups drawn: flagged ones first (largest shift), then the highest latest means."""
    if grouping == "overall" or trend.empty:
        return trend.iloc[:0]
    order = _reading_order(trend)
    return trend.loc[order[:PLOT_GROUPS]]


def _reading_order(trend: pd.DataFrame) -> pd.Index:
    """Worse first, as a loss monitor reads: flagged shifts up (worse), by size; then the
    other rises over the lookback (``drift_pct`` > 0), by size; then flagged shifts down (an
    improvement never hides a rise: rt-hist7 F8); then the rest by their change over the
    lookback, drops by size; groups with no such change (too short a series) then by the
    highest latest mean; groups absent from the latest run last."""
    changed = trend["changed"].astype(bool)
    shift = trend["change_pct"].where(changed, 0.0).fillna(0.0)
    drift = trend["drift_pct"]
    absent = trend["latest"].isna()
    tier = np.select([changed & (shift > 0), ~changed & (drift > 0) & ~absent, changed], [0, 1, 2], 3)
    keys = [  # most significant first; none holds NaN
        tier,
        -shift.abs().to_numpy(dtype=np.float64),
        absent.to_numpy(),
        drift.isna().to_numpy(),
        ~(drift > 0).to_numpy(),
        -drift.abs().fillna(0.0).to_numpy(dtype=np.float64),
        -trend["latest"].fillna(-np.inf).to_numpy(dtype=np.float64),
    ]
    # one stable sort on all keys (np.lexsort sorts by the last key first: reversed)
    return trend.index[np.lexsort(keys[::-1])]


# -- computing one grouping -------------------------------------------------------------------


@dataclass
class _Runs:
    infos: list[RunInfo]
    labels: list[str]  # display names from the paths (_run_labels)
    segment: np.ndarray  # per run
    created: pd.DatetimeIndex

    @functools.cached_property
    def run_ids(self) -> list[str]:
        """Each run's recorded run id (:attr:`evalkit.reports.RunInfo.recorded_id`): what its
        rows carry as ``run_id``, whatever else the history reads."""
        return [r.recorded_id for r in self.infos]

    @functools.cached_property
    def months(self) -> list[str]:
        """Each run's calendar month (UTC), ``2026-11``: the file of the tidy tables it is in."""
        return [f"{c:%Y-%m}" for c in self.created]

    @functools.cached_property
    def month_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each run's month as a code into the list of distinct months (sorted)."""
        names, codes = np.unique(np.asarray(self.months, dtype=str), return_inverse=True)
        return codes.reshape(-1), [str(m) for m in names]

    @property
    def created_us(self) -> np.ndarray:
        """Start times as microseconds since the epoch (UTC)."""
        return self.created.as_unit("us").asi8


def _run_labels(paths: Sequence[Path]) -> list[str]:
    """Display names of the runs (``run_label``): directory names, or paths relative to the
    common parent when names repeat (so a label depends on the other reports read; rows
    carry the recorded ``run_id``)."""
    names = [p.name or p.absolute().name for p in paths]
    if len(set(names)) == len(names):
        return names
    absolute = [str(p.absolute()) for p in paths]
    base = os.path.commonpath(absolute)
    return [os.path.relpath(a, base) for a in absolute]


def _differences(a: RunInfo | _Settings, b: RunInfo | _Settings) -> list[str]:
    """What makes runs ``a`` and ``b`` compute different quantities (eps, weight column,
    class set); empty when they are comparable. An unrecorded eps or class set matches any."""
    why = []
    if a.eps is not None and b.eps is not None and not math.isclose(a.eps, b.eps, rel_tol=1e-12):
        why.append(f"eps {a.eps:g} -> {b.eps:g}")
    if a.weight != b.weight:
        why.append(f"weight {a.weight or '(none)'} -> {b.weight or '(none)'}")
    if a.classes is not None and b.classes is not None and set(a.classes) != set(b.classes):
        gone = sorted(set(a.classes) - set(b.classes))
        new = sorted(set(b.classes) - set(a.classes))
        why.append("class set changed" + (f": -{', -'.join(gone)}" if gone else "")
                   + ("; " if gone and new else ": " if new else "") + (f"+{', +'.join(new)}" if new else ""))
    return why


@dataclass
class _Settings:
    """What a segment's runs share: eps, class set (None while no run of it recorded one)
    and weight column."""

    eps: float | None
    classes: tuple[str, ...] | None
    weight: str | None

    def take(self, r: RunInfo) -> None:
        """Learn what run ``r`` (comparable with the segment) records and the segment did not."""
        self.eps = self.eps if self.eps is not None else r.eps
        self.classes = self.classes if self.classes is not None else r.classes


def _segments(infos: Sequence[RunInfo]) -> tuple[np.ndarray, list[str]]:
    """Segment number per run and a note per run. A segment is a set of comparable runs
    (same eps, class set and weight column; numbered by first appearance), not necessarily
    adjacent: runs whose settings match an earlier segment's again (after a one-off night
    with another eps) belong to it and are compared with its runs. A run joins a segment
    when it matches the settings any run of the segment recorded (an unrecorded eps or class
    set matches any, but once a run of the segment records one, every later member must
    match it: eps 1e-7 and 1e-6 runs never share a segment through an older run that
    recorded no eps)."""
    seg = np.zeros(len(infos), dtype=np.int64)
    notes = [""] * len(infos)
    firsts: list[int] = [0] if infos else []  # first run of each segment
    known = [_Settings(infos[0].eps, infos[0].classes, infos[0].weight)] if infos else []
    for i in range(1, len(infos)):
        a, b = infos[i - 1], infos[i]
        why = _differences(a, b)
        same = next((k for k, s in enumerate(known) if not _differences(s, b)), None)
        if same is None:
            firsts.append(i)
            known.append(_Settings(b.eps, b.classes, b.weight))
            same = len(firsts) - 1
        known[same].take(b)
        seg[i] = same
        parts = []
        if why and firsts[same] == i:
            parts.append(f"new segment ({'; '.join(why)})")
        elif why:
            parts.append(f"back to segment {same + 1} ({'; '.join(why)}): compared with its runs again")
        if set(a.groupings) != set(b.groupings):
            gone = [g for g in a.groupings if g not in b.groupings]
            new = [g for g in b.groupings if g not in a.groupings]
            parts.append("groupings changed: " + ", ".join([f"-{g}" for g in gone] + [f"+{g}" for g in new]))
        notes[i] = "; ".join(parts)
    return seg + 1, notes


@dataclass
class _Tidy:
    """One grouping's tidy table (Arrow, rows by run then key) and its arrays for the trend."""

    table: pa.Table
    codes: np.ndarray  # group code of each row, in key order
    group_keys: pd.DataFrame  # one row per group code: the key columns
    key_table: pa.Table  # the same, typed as in the tidy table
    run_pos: np.ndarray  # 0-based run of each row
    count: np.ndarray
    mean: np.ndarray
    sem: np.ndarray

    @property
    def n_groups(self) -> int:
        return len(self.group_keys)


def _group_codes(keys: Sequence[pa.Array]) -> np.ndarray:
    """Dense codes of the key tuples, numbered in sorted key order (nulls last), computed
    on Arrow dictionaries and integers (no Python objects per row)."""
    import pyarrow.compute as pc

    combined: np.ndarray | None = None
    for a in keys:
        enc = a.dictionary_encode()
        values = enc.dictionary
        idx = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        rank = np.arange(len(values) + 1, dtype=np.int64)  # the last slot: null
        # values that do not sort keep the order of first appearance
        with contextlib.suppress(pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
            rank[pc.array_sort_indices(values).to_numpy()] = np.arange(len(values))
        code = rank[idx]  # idx -1 (null) picks the last slot
        if combined is None:
            combined = code  # one column: dense already (every dictionary value occurs)
        else:
            combined = np.unique(combined * (len(values) + 1) + code, return_inverse=True)[1]
    assert combined is not None
    return np.asarray(combined, dtype=np.int64).reshape(-1)


def _groups_of_their_run(runs: _Runs, g: GroupedRuns, count: np.ndarray) -> np.ndarray:
    """The rows of a grouping's table that are groups of their run: not a class with no rows
    in a run, nor a group without weight in a weighted run (it has no weighted mean: evaluate
    writes none, nor an interval; its unweighted mean is another statistic)."""
    keep = count > 0
    weighed = np.array([r.weight is not None for r in runs.infos], dtype=bool)[g.run_pos] \
        if len(g.run_pos) else np.zeros(0, dtype=bool)
    if "weighted_mean" in g.stats and weighed.any():
        keep &= ~(weighed & np.isnan(g.stats["weighted_mean"]))
    return keep


def _grouping_frame(runs: _Runs, g: GroupedRuns, grouping: str, confidence: float) -> _Tidy:
    """The tidy table of one grouping, and the arrays the trend needs."""
    cols = _key_cols(grouping)
    st = g.stats
    nan = np.full(len(g.run_pos), np.nan)
    count = st.get("count", nan)
    keep = _groups_of_their_run(runs, g, count)
    ordered = bool(np.all(g.run_pos[1:] >= g.run_pos[:-1])) if len(g.run_pos) else True
    order: np.ndarray | None = None
    if not ordered or not keep.all():
        order = np.argsort(g.run_pos, kind="stable") if not ordered else np.arange(len(g.run_pos))
        order = order[keep[order]]

    def col(name: str) -> np.ndarray:
        a = st.get(name, nan)
        return a if order is None else a[order]

    pos = g.run_pos if order is None else g.run_pos[order]
    count, mean = col("count"), col("mean")
    # A weighted run reports the weighted mean, whose interval (sem, n_eff) its table holds:
    # its estimate is the weighted mean, with n_eff - 1 degrees of freedom.
    # (no run weighted, or none with a sem column: the whole arrays at once, not masked)
    wmean = col("weighted_mean") if "weighted_mean" in st else None
    weighted = ~np.isnan(wmean) if wmean is not None else None
    if weighted is not None and weighted.any():
        n_eff = np.where(weighted, col("n_eff"), np.nan)
        mean = np.where(weighted, wmean, mean)
        df = np.where(weighted, n_eff, count) - 1
    else:
        n_eff, df = np.full(len(pos), np.nan), count - 1
    if "sem" not in st:  # reports before the sem column: from std
        sem = standard_error(count, col("std"))
    else:
        sem = col("sem").copy()
        # (a weighted run's sem is its weighted mean's: none where n_eff < 2, never from std)
        no_sem = np.isnan(sem) if weighted is None else np.isnan(sem) & ~weighted
        if no_sem.any():
            sem[no_sem] = standard_error(count[no_sem], col("std")[no_sem])
    dfs, where = _distinct(df)
    with np.errstate(invalid="ignore"):
        half = np.asarray(t_quantile(0.5 + confidence / 2, dfs))[where] * sem
    lo, hi = mean - half, mean + half
    take = None if order is None else pa.array(order)
    keys = [k if take is None else k.take(take) for k in g.keys]

    def whole(a: np.ndarray) -> pa.Array:
        return pa.array(a.astype(np.int64)) if not np.isnan(a).any() else pa.array(a)

    columns: dict[str, Any] = {
        "run": pa.array(pos + 1),
        "run_id": pa.DictionaryArray.from_arrays(pa.array(pos.astype(np.int32)), pa.array(runs.run_ids)),
        "created": pa.array(runs.created_us[pos], pa.timestamp("us", tz="UTC")),
        "segment": pa.array(runs.segment[pos]),
        **dict(zip(cols, keys, strict=True)),
        # n_eff: null (empty, as the README says) where a run is unweighted or its weighted mean
        # is undefined, as evaluate's tables hold it; never NaN, which readers take for a value
        "count": whole(count), "mean": mean, "sem": sem, "n_eff": pa.array(n_eff, from_pandas=True),
        "ci_low": lo, "ci_high": hi,
        "clipped_low": whole(col("clipped_low")), "accuracy": col("accuracy"),
    }
    return _Tidy(pa.table(columns), np.empty(0, np.int64), pd.DataFrame(), pa.table({}), pos, count, mean, sem)


def _window_tidy(frame: _Tidy, window: Sequence[int], grouping: str) -> _Tidy:
    """The rows of ``frame`` in the runs of ``window`` with their group codes: the groups of
    a trend are those present in its window (whatever else the tidy table holds)."""
    cols = _key_cols(grouping)
    inw = np.zeros(int(frame.run_pos.max()) + 1 if len(frame.run_pos) else 0, dtype=bool)
    inw[[w for w in window if w < len(inw)]] = True
    rows = np.flatnonzero(inw[frame.run_pos]) if len(frame.run_pos) else np.empty(0, np.int64)
    whole = len(rows) == len(frame.run_pos)
    if whole:
        table = frame.table
    elif len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # one stretch: the usual case
        table = frame.table.slice(int(rows[0]), len(rows))
    else:
        table = frame.table.take(pa.array(rows))
    pick = (lambda a: a) if whole else (lambda a: a[rows])  # noqa: E731
    pos = pick(frame.run_pos)
    if cols and len(pos):
        keys = [table.column(c).combine_chunks() for c in cols]
        codes = _group_codes(keys)
        first = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes))[::-1]
        key_table = table.select(cols).take(pa.array(first))
    else:
        codes = np.zeros(len(pos), dtype=np.int64)
        key_table = table.select(cols).slice(0, int(len(pos) > 0)) if cols else pa.table({})
    # integer_object_nulls: an integer key with nulls keeps its ints (store=2, not 2.0)
    group_keys = (key_table.to_pandas(integer_object_nulls=True) if cols
                  else pd.DataFrame(index=range(int(len(pos) > 0))))
    return _Tidy(table, codes, group_keys, key_table, pos, pick(frame.count), pick(frame.mean), pick(frame.sem))


def _distinct(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, index)`` with ``values[index] == x``: one t quantile per distinct degrees of
    freedom (365 runs x 1,000 groups hold a few thousand counts). Whole numbers below 2**24
    (counts) are mapped in O(n) without sorting; anything else through ``np.unique``."""
    if len(x) and np.isfinite(x).all() and x.min() >= 0 and x.max() < 1 << 24 and (x == np.floor(x)).all():
        xi = x.astype(np.int64)
        seen = np.zeros(int(xi.max()) + 1, dtype=bool)
        seen[xi] = True
        values = np.flatnonzero(seen)
        rank = np.cumsum(seen) - 1
        return values.astype(np.float64), rank[xi]
    values, index = np.unique(x, return_inverse=True)
    return values, index.reshape(-1)


def _trend(tidy: _Tidy, grouping: str, series: Sequence[int], runs: _Runs,
           settings: Mapping[str, Any], in_latest: bool = True) -> pd.DataFrame:
    """Per-group trend and change scan over the window of ``series`` (run positions).

    A grouping absent from the latest run (``in_latest`` False) has no latest value: the
    latest, previous and reference values and the changes between them are missing (never
    the values of the last run that held it); min / max and the change scan still describe
    its window."""
    window = list(series[-int(settings["window"]):])
    w, g = len(window), tidy.n_groups
    pos = np.full(len(runs.infos), -1, dtype=np.int64)
    pos[window] = np.arange(w)
    row_w = pos[tidy.run_pos]
    inw = row_w >= 0
    codes = tidy.codes
    mean = np.full((w, g), np.nan)
    sem = np.full((w, g), np.nan)
    count = np.zeros((w, g), dtype=np.int64)
    mean[row_w[inw], codes[inw]] = tidy.mean[inw]
    sem[row_w[inw], codes[inw]] = tidy.sem[inw]
    count[row_w[inw], codes[inw]] = tidy.count[inw]
    last = w - 1
    lb = int(settings["lookback"])
    nan = np.full(g, np.nan)
    latest = mean[last] if w else nan
    prev = mean[last - 1] if w >= 2 else nan
    ref_row = last - lb
    ref = mean[ref_row] if ref_row >= 0 and w else nan
    cols: dict[str, Any] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        z = float(__import__("statistics").NormalDist().inv_cdf(0.5 + float(settings["confidence"]) / 2))
        se = np.sqrt((sem[last] if w else np.nan) ** 2 + (sem[ref_row] if ref_row >= 0 and w else np.nan) ** 2)
        runs_in = (~np.isnan(mean)).sum(axis=0)
        cols["runs"] = runs_in
        cols["latest"] = latest
        cols["latest_count"] = count[last] if w else np.zeros(g, dtype=np.int64)
        cols["previous"] = prev
        cols["change_prev"] = latest - prev
        cols["change_prev_pct"] = 100 * (latest - prev) / prev
        cols["reference"] = ref
        cols["reference_count"] = count[ref_row] if ref_row >= 0 and w else np.zeros(g, dtype=np.int64)
        cols["drift"] = latest - ref
        cols["drift_pct"] = 100 * (latest - ref) / ref
        cols["drift_ci_low"] = latest - ref - z * se
        cols["drift_ci_high"] = latest - ref + z * se
        lo = np.nanmin(np.where(np.isnan(mean), np.inf, mean), axis=0) if w else nan
        hi = np.nanmax(np.where(np.isnan(mean), -np.inf, mean), axis=0) if w else nan
    cols["min"] = np.where(runs_in == 0, np.nan, lo)
    cols["max"] = np.where(runs_in == 0, np.nan, hi)
    if not in_latest:
        for c in ("latest", "previous", "change_prev", "change_prev_pct", "reference", "drift", "drift_pct",
                  "drift_ci_low", "drift_ci_high"):
            cols[c] = nan
        cols["latest_count"] = cols["reference_count"] = np.zeros(g, dtype=np.int64)
    cols.update(_scan_columns(mean, sem, window, runs, settings))
    body = pd.DataFrame({k: (v.array if isinstance(v, pd.Series) else v) for k, v in cols.items()})
    keys = tidy.group_keys.reset_index(drop=True)
    return pd.concat([keys, body], axis=1) if len(keys.columns) else body


def _scan_columns(mean: np.ndarray, sem: np.ndarray, window: Sequence[int], runs: _Runs,
                  settings: Mapping[str, Any]) -> dict[str, Any]:
    """The change scan's trend columns (:func:`detect_changes`, Benjamini-Hochberg across
    the groups, the ``alpha`` and ``min_change_pct`` thresholds)."""
    scan = detect_changes(mean, sem, min_before=int(settings["min_before"]))
    q, _ = benjamini_hochberg(scan.p)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100 * (scan.after - scan.before) / scan.before
    changed = (q <= float(settings["alpha"])) & (np.abs(pct) >= float(settings["min_change_pct"]))
    k_run = np.where(scan.k >= 0, np.asarray([*window, 0])[np.maximum(scan.k, 0)] + 1, 0)
    return {"changed": changed, "direction": np.where(changed, np.where(pct > 0, "up", "down"), ""),
            "change_run": np.where(changed, k_run, 0).astype(np.int64),
            "change_created": pd.Series(runs.created[np.maximum(k_run - 1, 0)]).where(changed),
            "before": scan.before, "after": scan.after, "change_pct": pct, "t": scan.t,
            "p_value": scan.p, "q_value": q}


def _change_rows(name: str, trend: pd.DataFrame, n_runs: int) -> list[dict[str, Any]]:
    """One row per flagged group: its keys (typed, ``keys``), label and message."""
    from .report import fmt_key, is_missing

    flagged = trend[trend["changed"]]
    if flagged.empty:
        return []
    cols = list(_grouping_columns(name))
    labels = _labels(flagged, _key_cols(name))
    rows = []
    for label, rec in zip(labels, flagged.to_dict("records"), strict=True):
        keys = {c: None if is_missing(rec[h]) else rec[h] for c, h in zip(cols, _key_cols(name), strict=True)}
        where = ", ".join(f"{c}={fmt_key(v)}" for c, v in keys.items()) or "overall"
        created = pd.Timestamp(rec["change_created"])
        msg = (f"{where}: mean loss {rec['direction']} {abs(rec['change_pct']):.1f}% since "
               f"{created:%Y-%m-%d} (run {rec['change_run']} of {n_runs}): "
               f"{rec['before']:.4g} -> {rec['after']:.4g}, q = {rec['q_value']:.2g}")
        rows.append({"grouping": name, "group": label, "keys": keys, "direction": rec["direction"],
                     "change_pct": rec["change_pct"], "run": int(rec["change_run"]), "created": created,
                     "before": rec["before"], "after": rec["after"], "t": rec["t"],
                     "q_value": rec["q_value"], "message": msg})
    return rows


# -- entry point ------------------------------------------------------------------------------


def _settings(config: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The history settings: defaults, then the config's ``history`` section, then ``given``
    (flags / keywords), checked. A ``window`` too short for the default ``lookback`` (7)
    shortens the lookback to ``window - 1``; a lookback that was set explicitly and does not
    fit the window is a :class:`UsageError` saying where each value came from."""
    from_cfg = dict(getattr(config, "history", None) or {}) if config is not None else {}
    out = dict(DEFAULTS)
    origin = dict.fromkeys(DEFAULTS, "default")
    from .config import check_one_spelling

    check_one_spelling(from_cfg, "history")
    for src, where in ((from_cfg, "config file"), (given, "given")):
        for k, v in src.items():
            key = k.replace("-", "_")
            if key not in DEFAULTS:
                from .errors import closest

                raise UsageError(f"unknown history setting {k!r}{closest(key, DEFAULTS)}; "
                                 f"known: {', '.join(DEFAULTS)}")
            if v is not None:
                out[key], origin[key] = v, where
    for k in ("window", "lookback", "min_before", "max_rows"):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise UsageError(f"history setting {k!r} must be a whole number >= 1, got {v!r}")
    for k, lo_, hi_ in (("alpha", 0.0, 1.0), ("confidence", 0.0, 1.0)):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo_ < v < hi_:
            raise UsageError(f"history setting {k!r} must be in ({lo_:g}, {hi_:g}), got {v!r}")
    v = out["min_change_pct"]
    if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
        raise UsageError(f"history setting 'min_change_pct' must be a number >= 0, got {v!r}")
    if not isinstance(out["reuse"], bool):
        raise UsageError(f"history setting 'reuse' must be true or false, got {out['reuse']!r}")
    if out["window"] < 2:
        raise UsageError(f"history setting 'window' ({origin['window']}) must be at least 2 runs, got "
                         f"{out['window']}")
    if out["lookback"] >= out["window"]:
        if origin["lookback"] == "default":
            out["lookback"] = out["window"] - 1  # the window decides: compare within it
        else:
            raise UsageError(
                f"history setting 'lookback' = {out['lookback']} ({origin['lookback']}) must be smaller than "
                f"'window' = {out['window']} ({origin['window']}): \"change since N runs ago\" compares the "
                f"latest run with the run N before it, inside the window; use --lookback "
                f"{out['window'] - 1} or less, or a larger --window")
    return out


def history(
    reports: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    config: Any = None,
    gates: Mapping[str, Any] | None = None,
    skip_bad: bool = False,
    plots: bool = True,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> HistoryResult:
    """How every group's mean loss moved over a series of ``evaluate`` reports.

    Parameters
    ----------
    reports:
        Report directories and globs (``"reports/runs/*/"``), in any order: runs are
        ordered by their recorded start time (``metadata.created``), ties by path.
    out:
        Write the report there (atomically, see :meth:`HistoryResult.write`); the tidy
        tables are then written one grouping at a time and not kept in memory. ``out`` is
        never read as an input even when a glob matches it.
    config:
        An :class:`~evalkit.config.EvalConfig`, a config file or a mapping: its ``history``
        settings and (unless ``gates`` is given) its ``gates`` are used.
    gates:
        Gates to check (:func:`evalkit.gates.check_history_gates`).
    skip_bad:
        Leave out report directories that are corrupt or not evalkit reports (listed in
        ``result.skipped`` and the report) instead of raising :class:`ReportError`.
    plots:
        Draw ``history_*.png`` (needs matplotlib: ``evalkit[plot]``).
    settings:
        ``window`` (30), ``lookback`` (7), ``alpha`` (0.05), ``min_change_pct`` (0),
        ``min_before`` (3), ``max_rows`` (20), ``confidence`` (0.95); see the module docs.

    Raises
    ------
    ReportError
        A directory that is not a readable evaluate report (exit code 3).
    UsageError
        Bad settings, or no report left to read.
    """
    from .config import EvalConfig
    from .gates import gates_for, gates_note

    started = time.time()
    t0 = time.perf_counter()
    reports = _check_call(reports, out=out, overwrite=overwrite, config=config, gates=gates,
                skip_bad=skip_bad, plots=plots, progress=progress)
    if out is not None:
        from .outdir import local_out

        out = local_out(out)  # a URL is refused before any work; file:// is a local path
    cfg = EvalConfig.coerce(config) if config is not None else None
    opts = _settings(cfg, settings)
    reuse = bool(opts.pop("reuse"))
    empty_in = None  # where an empty gates: key was read: noted like a block of no history gate
    if gates is not None:  # given to history alone: only gates history checks
        given, source = gates, "history(gates=...)"
        gates = gates_for("history", given, shared=False, source=source)
    else:  # a config's gates serve the three commands
        given, source = (cfg.gates if cfg is not None else None), "gates"
        empty_in = cfg.gates_empty_in if cfg is not None else None
        gates = gates_for("history", given, shared=True, empty_in=empty_in)
    gate_note = None if gates else gates_note("history", given, source, empty_in=empty_in)
    say = progress or (lambda _msg: None)
    cache, rebuilt = _open_cache(out, overwrite and reuse)
    infos, skipped, copies, ignored = _open_runs(reports, out, skip_bad, cache.trusted if cache else None)
    _check_grouping_names(infos)
    _warn_inputs(skipped, copies, ignored, infos, _listed_in(out))
    segment, notes = _segments(infos)
    runs = _Runs(infos, _run_labels([r.path for r in infos]), segment,
                 pd.DatetimeIndex([r.created for r in infos]))
    unverified = sum(not r.verified for r in infos)
    say(f"history of {len(infos)} runs ({runs.created[0]:%Y-%m-%d} to {runs.created[-1]:%Y-%m-%d})"
        + (f", {len(skipped)} skipped" if skipped else "")
        + (f", {len(copies)} duplicate(s) counted once" if copies else "")
        + (f"; {unverified} report(s) written before manifests, read unverified" if unverified else ""))
    result = HistoryResult(runs=_runs_frame(runs, notes), trends={}, changes=pd.DataFrame(),
                           metadata={}, gates=gates, gate_note=gate_note, skipped=skipped, duplicates=copies, ignored=ignored)
    _build_history(result, runs, infos, opts, gates, cfg, out, overwrite, plots, skip_bad, cache,
                   say, started, t0, rebuilt)
    return result


def _build_history(result: HistoryResult, runs: _Runs, infos: list[RunInfo], opts: dict[str, Any],
                   gates: dict[str, Any], cfg: Any, out: Any, overwrite: bool, plots: bool, skip_bad: bool,
                   cache: _Cache | None, say: Callable[[str], None], started: float,
                   t0: float, rebuilt: str = "") -> None:
    """Every grouping of :func:`history`, its gates, and (with ``out``) the report written;
    ``rebuilt``: why the history in ``out`` is not reused (said once ``out`` may be replaced).

    The groupings are built in forked worker processes when that pays (:func:`_start_workers`),
    else here; the plots are drawn by forked helpers (:func:`_plot_pool`). Both are forked
    before any thread of the run exists, and ended (killed if still busy) however the run
    ends, before the report being built is removed."""
    atomic = None
    if out is not None:
        from .outdir import AtomicDir

        atomic = AtomicDir(out, overwrite=overwrite, command="history")
    with atomic if atomic is not None else contextlib.nullcontext() as tmp:
        if rebuilt:  # a slow night explained (after the check that out may be replaced)
            say(f"the history in {out} is not reused ({rebuilt}): rebuilt from the reports")
        build = _Build(result, runs, opts, bool(gates), tmp, atomic.target if atomic else None, plots, cache,
                       atomic)
        try:
            names = _grouping_names(infos)
            # the helpers first: their import of matplotlib overlaps the workers' set-up
            build.pool = _plot_pool(plots and out is not None, len(names))
            workers = _start_workers(build, infos, skip_bad, names)
            if workers:
                _run_workers(build, infos, skip_bad, workers)
            else:
                with contextlib.closing(_each_grouping(infos, runs, skip_bad, opts, cache)) as groupings:
                    for built in build.steps(groupings):
                        build.take(built)
            if atomic is not None:  # while the helpers draw the last plots
                _write_summary_tables(result, tmp, build.sources())
            build.finish_plots()
        finally:
            build.close()
        _warn_left_out(build.left_out, _listed_in(out))
        if cache is not None:
            say(f"reused the rows of {build.reused_runs} run(s) from the history in {out}; "
                f"read {len(infos) - build.reused_runs} report(s); kept {build.linked} monthly table "
                f"file(s), wrote {build.written}")
        _finish(result, build, cfg, gates, started, t0)
        if atomic is not None:
            _write_summary_texts(result, tmp)
            atomic.commit()


#: Worker processes building the groupings of a large cold history (:func:`_start_workers`).
HISTORY_WORKERS = 2
#: Tables (runs x groupings) to read from which the workers pay for their start (forking, each
#: opening and checking every report's grouped.parquet): about 0.1 s of work.
WORKERS_MIN_TABLES = 2_000
#: In a worker: groupings decoded ahead per report (:data:`evalkit.grouped_file.READ_AHEAD`)
#: and month files queued for its writer (:data:`WRITES_QUEUED`); lower than in one process
#: so that two workers together stay within the memory one process took (365 x 50 x 1,000:
#: about 0.45 GiB each with 4 and 16).
WORKER_READ_AHEAD = 2
WORKER_WRITES_QUEUED = 8
#: A worker that sends nothing and uses no CPU time for this long makes no progress (stopped
#: by SIGSTOP or a debugger, frozen by the system, deadlocked): it is ended and its groupings
#: are built here, as for a worker that died (:func:`_take_from_workers`). A grouping of a
#: year of nightly reports takes a worker a few seconds of CPU; waiting on a disk uses some too.
WORKER_STALL_S = 60.0
#: Where a worker's CPU time cannot be read (no ``/proc``): silence alone, this long.
WORKER_SILENT_S = 600.0
#: How often the history process looks at a worker it waits for.
WORKER_POLL_S = 1.0


def _start_workers(build: _Build, infos: Sequence[RunInfo], skip_bad: bool,
                   names: Sequence[str]) -> list[tuple[Any, list[str]]]:
    """Fork :data:`HISTORY_WORKERS` processes building the groupings ``names`` (contiguous
    shares, each read in file order) into the report being built, when that pays: a cold
    history (nothing reused) written to a directory, of at least :data:`WORKERS_MIN_TABLES`
    tables, on a machine with the cores and ``os.fork``. The history process is bound by its
    interpreter lock (reading, framing, trends and encoding are much Python glue), so threads
    do not spread the work over cores and processes do. Returns ``(worker, its groupings)``
    (empty: build here). Call before any thread of the run exists."""
    n = min(HISTORY_WORKERS, os.cpu_count() or 1, len(names))
    tables = sum(len(r.groupings) for r in infos)
    if build.tmp is None or build.cache is not None or n < 2 or tables < WORKERS_MIN_TABLES:
        return []
    from .plot_process import fork_worker

    # every report's file opened and checked once, here, for both workers (threads ended
    # before the fork)
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        list(pool.map(lambda g: g.open(), [r.grouped for r in infos if r.grouped is not None]))
    shares = _shares(names, [_cost(infos, name) for name in names], n)
    for share in shares:
        closes = [fd for w in build.workers for fd in w.fds()] + list(getattr(build.pool, "fds", tuple)())
        w = fork_worker(functools.partial(_work, build, infos, skip_bad, share), closes)
        if w is None:
            build.close_workers()
            return []
        build.workers.append(w)  # at once: ended by build.close() however the run ends
    return list(zip(build.workers, shares, strict=True))


#: The work of a grouping besides its rows, in rows: reading its table from every report
#: costs about as much as 300 rows more (365 x 50 x 1,000).
_GROUPING_COST_ROWS = 300


def _cost(infos: Sequence[RunInfo], name: str) -> float:
    """How much work building grouping ``name`` is, relatively: its rows in the latest report
    that holds it (from its open grouped.parquet's footer), plus :data:`_GROUPING_COST_ROWS`."""
    for r in reversed(infos):
        if name in r.groupings:
            rows = r.grouped.rows(name) if r.grouped is not None else None
            return float(rows if rows is not None else 1000) + _GROUPING_COST_ROWS
    return float(_GROUPING_COST_ROWS)


def _shares(names: Sequence[str], costs: Sequence[float], n: int) -> list[list[str]]:
    """``names`` cut into ``n`` contiguous non-empty shares of about equal total ``costs``
    (each worker then reads the groupings of its share in file order)."""
    total = sum(costs)
    cuts, acc, k = [0], 0.0, 1
    for i, c in enumerate(costs):
        # the share ends before this grouping when that is closer to its target than after it
        while k < n and i > cuts[-1] and len(names) - i >= n - k and \
                abs(acc - total * k / n) <= abs(acc + c - total * k / n):
            cuts.append(i)
            k += 1
        acc += c
    while k < n:  # too few names left to cut where the costs say: one each
        cuts.append(len(names) - (n - k))
        k += 1
    cuts.append(len(names))
    return [list(names[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]


def _work(build: _Build, infos: Sequence[RunInfo], skip_bad: bool, names: Sequence[str],
          send: Callable[[Any], None]) -> None:
    """A worker process (:func:`_start_workers`): build ``names``, writing their month files
    into the report being built; send each :class:`_Built` as soon as it is built, then
    ``("done", manifest entries of the files written, files written, warnings)``, or
    ``("error", exception)``."""
    import gc
    import warnings

    assert build.writer is not None and build.atomic is not None
    build.atomic.known.clear()  # this process's entries only, for the parent's manifest
    # two processes hold what one held: each keeps less waiting (decoded ahead, queued for
    # the writer); process-wide settings, and this process is the worker's alone
    global WRITES_QUEUED
    WRITES_QUEUED = WORKER_WRITES_QUEUED
    from . import grouped_file

    grouped_file.READ_AHEAD = WORKER_READ_AHEAD
    gc.freeze()  # what the parent built stays out of this process's collections (and unwritten)
    try:
        with warnings.catch_warnings(record=True) as caught:
            with contextlib.closing(_each_grouping(infos, build.runs, skip_bad, build.opts, None, names)) as groupings:
                for built in build.steps(groupings):
                    send(("built", built))
            build.writer.wait()
        seen = list(dict.fromkeys((str(w.message), w.category) for w in caught))
        send(("done", dict(build.atomic.known), build.written, seen))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        try:
            send(("error", exc))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


def _run_workers(build: _Build, infos: Sequence[RunInfo], skip_bad: bool, workers: Sequence[tuple[Any, list[str]]],
                 ) -> None:
    """Take every grouping the workers build, in order (their shares are contiguous), and
    their files' manifest entries. An error a worker raised is raised here. A worker gone
    without a word (killed) leaves nothing lost: its groupings are built here again (their
    files written anew over whatever it left)."""
    try:
        _take_from_workers(build, infos, skip_bad, workers)
    finally:
        for r in infos:  # opened here before the fork (:func:`_start_workers`)
            if r.grouped is not None:
                r.grouped.close()


class _Stalls:
    """When each worker was last seen making progress (a message, or CPU time used), and
    its CPU time then: a worker silent and idle for :data:`WORKER_STALL_S` is stalled."""

    def __init__(self, workers: Sequence[tuple[Any, list[str]]]) -> None:
        self.shares = {w: share for w, share in workers}
        self.last: dict[Any, tuple[float, int | None]] = {w: (time.monotonic(), w.cpu_ticks()) for w, _s in workers}

    def heard(self, w: Any) -> None:
        self.last[w] = (time.monotonic(), self.last[w][1])

    def stalled(self, w: Any) -> bool:
        """True (and warned) when ``w`` made no progress for :data:`WORKER_STALL_S`."""
        import warnings

        from .errors import EvalkitWarning

        now, ticks = time.monotonic(), w.cpu_ticks()
        since, before = self.last[w]
        if ticks is not None and ticks != before:
            self.last[w] = (now, ticks)
            return False
        if now - since < (WORKER_STALL_S if ticks is not None else WORKER_SILENT_S):
            return False
        warnings.warn(EvalkitWarning(
            f"a history worker process (pid {w.pid}, building {', '.join(self.shares[w])}) made no progress "
            f"for {now - since:.0f} s (stopped, e.g. by SIGSTOP or a debugger, or frozen): it is ended and its "
            "groupings are built in the history process"), stacklevel=4)
        return True


def _take_from_workers(build: _Build, infos: Sequence[RunInfo], skip_bad: bool,
                       workers: Sequence[tuple[Any, list[str]]]) -> None:
    import collections
    import queue
    import warnings

    from .plot_process import Worker

    sink: queue.Queue[Any] = queue.Queue()
    for w, _share in workers:
        w.listen(sink)
    waiting: dict[Any, collections.deque[Any]] = {w: collections.deque() for w, _s in workers}
    plotted: set[str] = set()
    stalls = _Stalls(workers)

    def next_from(w: Any) -> Any:
        """``w``'s next message; meanwhile every grouping any worker built has its plot
        queued at once (the helpers draw the later workers' plots while the first's
        groupings are taken). A worker that makes no progress (:meth:`_Stalls.stalled`) is
        taken for gone."""
        while not waiting[w]:
            try:
                src, msg = sink.get(timeout=WORKER_POLL_S)
            except queue.Empty:
                if stalls.stalled(w):
                    w.kill()  # before its groupings are built again here: it never writes again
                    waiting[w].append(Worker.GONE)
                continue
            stalls.heard(src)
            if msg is not Worker.GONE and msg[0] == "built" and build.plots and msg[1].window is not None:
                build.queue_plot(msg[1])
                plotted.add(msg[1].name)
            waiting[src].append(msg)
        msg = waiting[w].popleft()
        if msg is Worker.GONE:
            waiting[w].append(msg)
            raise EOFError("worker gone")
        if msg[0] == "error":
            raise msg[1]
        return msg

    for w, share in workers:
        taken: set[str] = set()
        try:
            for name in share:
                build.take(next_from(w)[1], plot=name not in plotted)
                taken.add(name)
            _kind, known, written, seen = next_from(w)
        except EOFError:
            w.close()
            with contextlib.closing(_each_grouping(infos, build.runs, skip_bad, build.opts, None, share)) as groupings:
                for built in build.steps(groupings):
                    if built.name not in taken:
                        build.take(built, plot=built.name not in plotted)
            continue
        assert build.atomic is not None
        build.atomic.known.update(known)
        build.written += written
        for message, category in seen:
            warnings.warn(message, category, stacklevel=2)


def _plot_pool(wanted: bool, figures: int) -> Any:
    """Two forked helpers drawing the history plots beside the run (None: draw in-process),
    when the plot extra is installed and there are enough ``figures`` to pay for starting
    them (each imports matplotlib: about a second). Forked before the run starts any thread."""
    if not wanted or figures < PLOT_POOL_MIN:
        return None
    from .plot_process import start_pool

    return start_pool(PLOT_HELPERS, nice=PLOT_NICE)


#: Input problems of one kind (skipped reports, copies counted once, glob matches that are
#: not reports, tables left out) warned one per line before the rest are counted in one line:
#: a night over 3,000 broken report directories logs a few lines, not 3,000 (every one is
#: listed in history.md / history.json, :func:`_listed_in`).
WARN_NAMED = 5


def _listed_in(out: Any) -> Callable[[str], str]:
    """Where the full list of a kind (its key in history.json) is that the warnings name only
    the first few of."""
    if out is not None:
        where = os.path.join(os.fspath(out), "history.json")
        return lambda key: f'{where} ("{key}") and history.md'
    return lambda key: f'the JSON output ("{key}": --format json; in Python, the HistoryResult)'


def _warn_bounded(lines: Sequence[str], what: str, key: str, listed_in: Callable[[str], str]) -> None:
    """Warn the first :data:`WARN_NAMED` of ``lines``, then one line counting the rest:
    ``... and 395 more report directories skipped; all 400 are listed in
    reports/history/history.json ("skipped") and history.md``."""
    import warnings

    from .errors import EvalkitWarning

    for line in lines[:WARN_NAMED]:
        warnings.warn(EvalkitWarning(line), stacklevel=4)
    if len(lines) > WARN_NAMED:
        warnings.warn(EvalkitWarning(f"... and {len(lines) - WARN_NAMED:,} more {what}; all {len(lines):,} are "
                                     f"listed in {listed_in(key)}"), stacklevel=4)


def _warn_inputs(skipped: Sequence[tuple[str, str]], copies: Sequence[tuple[str, str]],
                 ignored: Sequence[tuple[str, str]], infos: Sequence[RunInfo],
                 listed_in: Callable[[str], str]) -> None:
    """:class:`~evalkit.errors.EvalkitWarning` s for what about the inputs a nightly log must
    show (the CLI prints them even with ``-q``): skipped reports, copies counted once, glob
    matches that are not reports, reports read without a manifest; of each kind the first
    :data:`WARN_NAMED` by name, then how many more (:func:`_warn_bounded`)."""
    import warnings

    from .errors import EvalkitWarning

    _warn_bounded([f"skipped {p}: {why}" for p, why in skipped], "report directories skipped", "skipped",
                  listed_in)
    _warn_bounded([f"{copy} holds the same run as {kept} (same {_same_what(kept, infos)}): counted once, "
                   f"from {kept} (of copies of a run, the first by start time, then path, is read)"
                   for copy, kept in copies], "copies of a run counted once", "duplicates", listed_in)
    _warn_bounded([f"left out {p}: {why}" for p, why in ignored], "glob matches left out (not evaluate reports)",
                  "ignored", listed_in)
    old = [str(r.path) for r in infos if not r.verified]
    if old:
        warnings.warn(EvalkitWarning(
            f"{len(old)} report(s) written before manifests read without checking their files "
            f"({', '.join(old[:3])}{' ...' if len(old) > 3 else ''})"), stacklevel=3)


def _warn_left_out(bad: Sequence[tuple[str, str, str]], listed_in: Callable[[str], str]) -> None:
    """The grouped tables left out when read (``(path, why, grouping)``, skip_bad), warned once
    the groupings are built: one line per report and reason naming its groupings left out (a
    damaged grouped.parquet fails every grouping of its run alike: named once, not once per
    grouping), bounded as :func:`_warn_bounded`."""
    by_report: dict[tuple[str, str], list[str]] = {}
    for path, why, grouping in bad:
        by_report.setdefault((path, why), []).append(grouping)
    lines = [f"skipped {path}: {why} (grouping{'s' if len(names) > 1 else ''} {', '.join(names)} left out "
             "for this run)" for (path, why), names in by_report.items()]
    _warn_bounded(lines, "reports whose tables were left out", "skipped", listed_in)  # one entry per table


#: Columns of history's own tables (tidy months, trends.parquet, runs.parquet): a grouping
#: column of the same name would overwrite one of them (rt-hist8 F11).
def _check_grouping_names(infos: Sequence[RunInfo]) -> None:
    """UsageError (exit 2) for groupings history cannot keep apart, instead of a crash or a
    silently overwritten column: two groupings (from different runs) whose tables share one
    file name (``split,region`` and ``split_region``, rt-hist8 F12). (A key column named like
    a column of history's tables, rt-hist8 F11, is kept as ``input:<name>``: :func:`_key_cols`.)"""
    from .errors import option

    seen: dict[str, str] = {}
    for r in infos:
        for g in r.groupings:
            if g == "overall":
                continue
            other = seen.setdefault(_file_stem(g), g)
            if other != g:
                raise UsageError(f"{r.path}: groupings {other!r} and {g!r} (of different reports) would both be "
                                 f"written to {_file_stem(g)}/ (and {option('out')}'s plot of that name); rename one of "
                                 "their columns and rerun evaluate, or give history the reports of one of them only")


def _same_what(kept: str, infos: Sequence[RunInfo]) -> str:
    """What makes a copy the run kept at path ``kept``: its run id, or (a report written
    before run ids) its summary.json."""
    info = next((r for r in infos if str(r.path) == kept), None)
    if info is not None and info.run_uid:
        return f"run id {info.run_uid}"
    return "run id" if info is None else "summary.json"


def _copy_reason(res: HistoryResult, kept: str) -> str:
    """What a copy shares with the run read from ``kept`` (rt-hist8 F6): ``run id`` (the
    report records one), or ``summary.json`` (a report written before run ids: its run id
    is ``summary:<fingerprint>``), as the warning of :func:`_warn_inputs` says."""
    ids = res.runs["run_id"][res.runs["path"] == kept] if "path" in res.runs else []
    return "summary.json" if len(ids) and str(ids.iloc[0]).startswith("summary:") else "run id"


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike) and not isinstance(value, bytes)


def _check_call(reports: Any, *, out: Any, overwrite: Any, config: Any, gates: Any, skip_bad: Any,
                plots: Any, progress: Any) -> list[Any]:
    """The report paths as a list, or ConfigError (exit 2) for an argument of :func:`history` of the wrong type: the flags
    must be booleans (``"no"`` is not false: :func:`evalkit.config.strict_bool`, as for
    ``evaluate``), paths must be ``str`` / ``os.PathLike``, never a bare TypeError."""
    from .config import EvalConfig, strict_bool

    for key, value in (("overwrite", overwrite), ("skip_bad", skip_bad), ("plots", plots)):
        strict_bool(key, value, "history()")
    if not _is_path(reports) and (isinstance(reports, bytes | Mapping) or not isinstance(reports, Iterable)):
        raise ConfigError(f"history(): reports must be a path, a glob or a list of them, "
                          f"got {type(reports).__name__}")
    given = [reports] if _is_path(reports) else list(reports)
    for item in given:
        if not _is_path(item):
            raise ConfigError(f"history(): each report must be a path or a glob, got {item!r}")
    if out is not None and not _is_path(out):
        raise ConfigError(f"history(): out must be a path, got {type(out).__name__}")
    if config is not None and not (_is_path(config) or isinstance(config, EvalConfig | Mapping)):
        raise ConfigError(f"history(): config must be an EvalConfig, a mapping or a file path, "
                          f"got {type(config).__name__}")
    if gates is not None and not isinstance(gates, Mapping):
        raise ConfigError(f"history(): gates must be a mapping, got {type(gates).__name__}")
    if progress is not None and not callable(progress):
        raise ConfigError(f"history(): progress must be callable, got {type(progress).__name__}")
    return given


def _finish(result: HistoryResult, build: _Build, cfg: Any, gates: Mapping[str, Any], started: float,
            t0: float) -> None:
    """Changes, metadata and gates of a built history."""
    from .gates import check_history_gates

    result.changes = _changes_frame(build.change_rows)
    result.metadata = _metadata(result, build.runs, build.opts, cfg, gates, build.series_runs, started,
                                result.skipped)
    result.metadata["absent_from_latest"] = dict(build.absent)
    result.metadata["unverified_reports"] = int(sum(not r.verified for r in build.runs.infos))
    result.metadata["duplicates"] = len(result.duplicates)
    if gates:
        checked = check_history_gates(result, gates, build.latest_view)
        result.failures = [f for f in checked if f.failed]
        result.unchecked = [f for f in checked if not f.failed]
    result.metadata["duration_s"] = round(time.perf_counter() - t0, 3)
    result.reused_runs = build.reused_runs
    result.kept_files = build.linked


def _open_runs(reports: Any, out: Any, skip_bad: bool, trusted: Mapping[tuple[str, str], FileStamp] | None = None,
               ) -> tuple[list[RunInfo], list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """The report directories (never ``out``), checked (``trusted``: files an earlier history
    checked, see :func:`evalkit.reports.read_run_info`) and ordered by start time, then path;
    the directories skipped (``skip_bad``), the copies left out (:func:`_dedupe`) and the
    glob matches that are not evaluate reports (:func:`evalkit.reports.expand_reports`).

    ``out`` may never be a report named as an input, nor lie inside / hold one
    (:func:`evalkit.outdir.check_out_apart`, UsageError). A glob that also matches ``out``
    (``reports/*`` with ``out=reports/history``) leaves it out, unless ``out`` is an evaluate
    report, i.e. one of the inputs: UsageError (exit 2)."""
    from .errors import option

    if out is not None:
        from .outdir import check_out_apart

        given = [reports] if isinstance(reports, str | os.PathLike) else list(reports)
        named = [r for r in given if not any(ch in os.fspath(r) for ch in "*?[")]
        # the working directory is checked below, once a glob's reports are known (their reason first)
        check_out_apart(out, [("report", r) for r in named], cwd=False)
    found = expand_reports(reports, exclude=[out] if out is not None else [])
    for path, spec in found.excluded:
        if (Path(path) / "summary.json").exists():
            raise UsageError(f"{option('out')} {out} is the report directory {path}, which {spec} "
                             "matches: an input of this history; choose an output directory outside "
                             "the inputs")
    paths = found.paths
    if out is not None:
        from .outdir import check_out_apart

        check_out_apart(out, [("report", p) for p in paths])
    infos: list[RunInfo] = []
    skipped: list[tuple[str, str]] = []
    keys = KeyChunks()  # the same groups night after night: their keys decoded once
    for p in paths:
        try:
            infos.append(read_run_info(p, trusted, keys))
        except ReportError as exc:
            if not skip_bad:
                raise ReportError(f"{exc} ({option('skip_bad', True)} leaves such a directory out)") from None
            skipped.append((str(p), str(exc)))
    if not infos:
        raise ReportError("no readable evaluate report among the inputs"
                          + (f" ({len(skipped)} skipped)" if skipped else "")
                          + (f" ({len(found.ignored)} glob match(es) not reports: "
                             f"{', '.join(p for p, _w in found.ignored[:3])})" if found.ignored else ""))
    infos.sort(key=lambda r: (r.created, str(r.path)))
    infos, copies = _dedupe(infos)
    return infos, skipped, copies, found.ignored


def _dedupe(infos: list[RunInfo]) -> tuple[list[RunInfo], list[tuple[str, str]]]:
    """One run per recorded run id (or, before run ids, per ``summary.json`` fingerprint or
    metadata): a copied report directory is the same night, counted once. The first
    directory in start-time-then-path order is kept; ``(path, kept path)`` of the others
    is returned."""
    kept: dict[str, RunInfo] = {}
    copies: list[tuple[str, str]] = []
    for r in infos:
        first = kept.setdefault(r.identity, r)
        if first is not r:
            copies.append((str(r.path), str(first.path)))
    return list(kept.values()), copies


def _grouping_names(infos: Sequence[RunInfo]) -> list[str]:
    """Every grouping of the runs, ``overall`` first, then in order of first appearance."""
    names = list(dict.fromkeys(g for r in infos for g in r.groupings))
    return ["overall", *[g for g in names if g != "overall"]]


def _each_grouping(infos: Sequence[RunInfo], runs: _Runs, skip_bad: bool, opts: Mapping[str, Any],
                   cache: _Cache | None = None, only: Sequence[str] | None = None,
                   ) -> Iterator[tuple[str, list[int], GroupedRuns, _Plan]]:
    """Every grouping (``overall`` first) with the runs that hold it, the rows it needs
    (:class:`_Plan`: runs of months that are written anew, and the trend window; rows of
    runs the ``cache`` holds unchanged are taken from it, not read) and its plan; the next
    grouping is read on a thread while the caller works on this one. ``only``: these
    groupings (of :func:`_grouping_names`), in that order."""
    names = list(only) if only is not None else _grouping_names(infos)
    if not names:
        return
    pool = ThreadPoolExecutor(_READ_THREADS)
    ahead = ThreadPoolExecutor(1)

    def read(name: str, plan: _Plan) -> GroupedRuns:
        reused = cache.rows(name, infos, plan.needed) if cache is not None and plan.needed else None
        fresh = [i for i in plan.needed if reused is None or i not in reused.key_types]
        return read_grouping(infos, fresh, name, skip_bad, pool, reused)

    def load(name: str) -> tuple[list[int], GroupedRuns, _Plan]:
        idx = [i for i, r in enumerate(infos) if name in r.groupings]
        plan = _plan_grouping(name, idx, runs, opts, cache)
        grouped = read(name, plan)
        types = set(grouped.key_types.values()) | plan.linked_types
        if plan.links and (grouped.bad or len(types) > 1):
            # a table left out (the window moves) or key types that differ from the months
            # kept: this grouping is written anew from every run, as a fresh read would
            plan = _plan_grouping(name, idx, runs, opts, None)
            grouped = read(name, plan)
        return idx, grouped, plan

    next_read = ahead.submit(load, names[0])
    try:
        for k, name in enumerate(names):
            idx, grouped, plan = next_read.result()
            if k + 1 < len(names):
                next_read = ahead.submit(load, names[k + 1])
            yield name, idx, grouped, plan
    finally:
        next_read.cancel()
        ahead.shutdown()
        pool.shutdown(cancel_futures=True)  # groupings decoded ahead that no one will ask for
        for r in infos:  # the grouped.parquet files kept open since their first read
            if r.grouped is not None:
                r.grouped.close()


# -- the tidy tables: one file per calendar month; a night rewrites only the months it changes


SOURCES = "sources.parquet"
_LAYOUT_KEY = b"evalkit.tidy_layout"  # in sources.parquet's schema metadata: TIDY_LAYOUT


def _tidy_dir(grouping: str) -> str:
    """The directory of a grouping's tidy table: ``overall``, ``by_region``..."""
    return _file_stem(grouping)


@dataclass
class _Plan:
    """What one grouping's tidy table needs tonight: ``months`` (month -> run positions,
    from the runs' metadata), ``links`` (month -> the earlier history's file, unchanged:
    linked, not rewritten), ``needed`` (run positions whose rows are built: the months
    written anew and the trend window) and the key types recorded for the linked months."""

    months: dict[str, list[int]]
    links: dict[str, Path]
    needed: list[int]
    linked_types: set[str]


def _plan_grouping(name: str, idx: Sequence[int], runs: _Runs, opts: Mapping[str, Any],
                   cache: _Cache | None) -> _Plan:
    """Which months of ``name``'s tidy table the earlier history (``cache``) holds exactly
    as tonight's would be (same runs, each with the same report files and run id, same
    confidence level): those are linked; every other month, and the trend window, is built."""
    months: dict[str, list[int]] = {}
    for i in idx:
        months.setdefault(runs.months[i], []).append(i)
    series = _series(list(idx), runs.segment, int(runs.segment[-1]), len(runs.infos))
    window = series[-int(opts["window"]):]
    links = cache.links(name, months, runs, float(opts["confidence"])) if cache is not None else {}
    needed = sorted({i for m, rs in months.items() if m not in links for i in rs} | set(window))
    types = cache.link_types(name, links) if cache is not None else set()
    return _Plan(months, links, needed, types)


@dataclass
class _Cache:
    """The history already in ``out``: which report files it read (``sources.parquet``:
    directory, file, size, modification time, manifest fingerprint, key types, month and
    run id per run) and its tidy tables (one file per month and grouping). A month whose
    runs are all unchanged is linked into tonight's history as it is; rows of unchanged
    runs that are needed (the trend window, a month written anew) are read from it."""

    dir: Path
    files: Mapping[str, Mapping[str, Any]]  # the history's own manifest entries
    sources: pd.DataFrame
    trusted: dict[tuple[str, str], FileStamp]
    confidence: float = math.nan
    # grouping -> report directory -> (run id, month, key types), from sources
    runs_of: dict[str, dict[str, tuple[str, str, str | None]]] = field(default_factory=dict)

    def index(self) -> None:
        """Index ``sources`` by grouping and report (one pass)."""
        src = self.sources
        for g, rep, rid, m, kt in zip(src["grouping"], src["report"], src["run_id"], src["month"],
                                      src["key_types"], strict=True):
            if isinstance(g, str):
                self.runs_of.setdefault(g, {})[rep] = (rid, m, kt if isinstance(kt, str) else None)

    def _signature(self, grouping: str, month: str) -> list[tuple[Any, ...]]:
        return sorted((rep, rid) for rep, (rid, m, _kt) in self.runs_of.get(grouping, {}).items() if m == month)

    def key_type(self, grouping: str, report: str) -> str | None:
        """The key types the earlier history recorded for ``grouping`` of the report
        ``report`` (its :attr:`~evalkit.reports.RunInfo.key`)."""
        hit = self.runs_of.get(grouping, {}).get(report)
        return hit[2] if hit else None

    def links(self, grouping: str, months: Mapping[str, list[int]], runs: _Runs,
              confidence: float) -> dict[str, Path]:
        """Months of ``grouping`` whose file tonight would equal the earlier one: the same
        runs (report directory and run id), each with its ``summary.json`` and grouped table
        unchanged (size, modification time, manifest fingerprint), at the same confidence."""
        if confidence != self.confidence:
            return {}
        out: dict[str, Path] = {}
        for month, idx in months.items():
            f = f"{_tidy_dir(grouping)}/{month}.parquet"
            if f not in self.files or not (self.dir / f).is_file():
                continue
            want: list[tuple[Any, ...]] = []
            same = True
            for i in idx:
                info = runs.infos[i]
                d = info.key
                if not info.verified or any(self.trusted.get((d, x)) != info.stamps.get(x)
                                            for x in ("summary.json", info.source(grouping))):
                    same = False
                    break
                want.append((d, runs.run_ids[i]))
            if same and sorted(want) == self._signature(grouping, month) \
                    and (self.dir / f).stat().st_size == self.files[f].get("bytes"):
                out[month] = self.dir / f
        return out

    def link_types(self, grouping: str, links: Mapping[str, Path]) -> set[str]:
        return {kt for _rid, m, kt in self.runs_of.get(grouping, {}).values() if m in links and kt is not None}

    def rows(self, grouping: str, infos: Sequence[RunInfo], idx: Sequence[int]) -> Reused | None:
        """The cached rows of ``grouping`` for the runs in ``idx`` whose grouped table and
        ``summary.json`` are unchanged since they were read (None: none), read from the
        months that hold them."""
        by_report = self.runs_of.get(grouping)
        if not by_report:
            return None
        old_to_new: dict[str, int] = {}
        key_types: dict[int, str] = {}
        months: set[str] = set()
        for i in idx:
            info = infos[i]
            if not info.verified:
                continue
            d = info.key
            hit = by_report.get(d)
            if hit is not None and all(self.trusted.get((d, x)) == info.stamps.get(x)
                                       for x in ("summary.json", info.source(grouping))):
                old_to_new[hit[0]] = i
                key_types[i] = hit[2]
                months.add(hit[1])
        if not old_to_new:
            return None
        cols = [*_key_cols(grouping), *REUSED_STATS]
        parts = []
        for month in sorted(months):
            t = self._table(f"{_tidy_dir(grouping)}/{month}.parquet", ["run_id", *cols])
            if t is None:
                return None
            parts.append(t)
        table = pa.concat_tables(parts)
        run_id = table.column("run_id").combine_chunks()
        if pa.types.is_dictionary(run_id.type):
            names = run_id.dictionary.to_pylist()
            lookup = np.array([old_to_new.get(n, -1) for n in names] + [-1], dtype=np.int64)
            new_pos = lookup[run_id.indices.fill_null(len(names)).to_numpy(zero_copy_only=False)]
        else:
            new_pos = np.array([old_to_new.get(n, -1) for n in run_id.to_pylist()], dtype=np.int64)
        keep = np.flatnonzero(new_pos >= 0)
        table = table.select(cols).rename_columns([*_grouping_columns(grouping), *REUSED_STATS])  # as read
        if len(keep) and keep[-1] - keep[0] + 1 == len(keep):  # one stretch
            table = table.slice(int(keep[0]), len(keep))
        else:
            table = table.take(pa.array(keep))
        # a weighted run's tidy `mean` is its weighted mean and its n_eff is set (NaN for an
        # unweighted run): as read from its report, its estimate is the weighted mean, with
        # n_eff - 1 degrees of freedom (_grouping_frame), never the unweighted count's
        n_eff = table.column("n_eff").to_numpy(zero_copy_only=False).astype(np.float64)
        mean = table.column("mean").to_numpy(zero_copy_only=False)
        table = table.append_column("weighted_mean", pa.array(np.where(np.isnan(n_eff), np.nan, mean)))
        got = set(np.unique(new_pos[keep]).tolist())
        return Reused(table, new_pos[keep], {i: t for i, t in key_types.items() if i in got})

    def _table(self, rel: str, columns: Sequence[str] | None = None) -> pa.Table | None:
        """One file of the cached history (``columns`` only: decoding the others costs ten
        times more), checked against its manifest entry (its whole content); None when it
        differs or lacks one."""
        from .outdir import read_checked

        entry = self.files.get(rel)
        if entry is None:
            return None
        try:
            data = read_checked(self.dir / rel, entry)
        except OSError:
            return None
        if data is None:
            return None
        try:
            return pq.read_table(pa.BufferReader(data), columns=None if columns is None else list(columns),
                                 use_threads=False)
        except (pa.ArrowException, KeyError, ValueError):
            return None


def _open_cache(out: Any, reuse: bool) -> tuple[_Cache | None, str]:
    """The history already in ``out`` when its rows may be reused: written by this evalkit
    version in this layout, with an intact manifest and ``sources.parquet``. Anything else:
    None (a cold read; the old report is replaced as usual), with why a history there is not
    reused (``""``: no history there, or reuse not asked for)."""
    if out is None or not reuse:
        return None, ""
    from .outdir import read_manifest

    d = Path(out)
    manifest, _why = read_manifest(d)
    if manifest is None or manifest.get("command") != "history":
        damaged = manifest is None and any((d / m).is_file() for m in OUT_MARKERS)
        return None, "its manifest is missing or unreadable" if damaged else ""
    if manifest.get("evalkit_version") != __version__:
        return None, f"written by evalkit {manifest.get('evalkit_version')}, this is {__version__}"
    if SOURCES not in manifest["files"] or not (d / SOURCES).is_file():
        return None, f"it has no {SOURCES}"
    cache = _Cache(d, manifest["files"], pd.DataFrame(), {})
    table = cache._table(SOURCES)
    if table is None or not {"month", "run_id", "confidence"} <= set(table.column_names):
        return None, f"its {SOURCES} is unreadable or incomplete"
    layout = (table.schema.metadata or {}).get(_LAYOUT_KEY)
    if layout != TIDY_LAYOUT:
        was = layout.decode(errors="replace") if layout else "unrecorded"
        return None, f"its monthly tables are in another layout ({was}; this evalkit writes {TIDY_LAYOUT.decode()})"
    src = table.to_pandas()
    cache.sources = src
    conf = src["confidence"].dropna().unique()
    cache.confidence = float(conf[0]) if len(conf) == 1 else math.nan
    cache.trusted = {(rep, f): FileStamp(int(b), int(m), fp if isinstance(fp, str) else None)
                     for rep, f, b, m, fp in zip(src["report"], src["file"], src["bytes"], src["mtime_ns"],
                                                 src["fingerprint"], strict=True)}
    cache.index()
    return cache, ""


def _sources_table(rows: Mapping[str, list[Any]]) -> pa.Table:
    return pa.table({
        "run": pa.array(rows["run"], pa.int64()), "report": pa.array(rows["report"], pa.string()),
        "run_id": pa.array(rows["run_id"], pa.string()), "month": pa.array(rows["month"], pa.string()),
        "grouping": pa.array(rows["grouping"], pa.string()), "file": pa.array(rows["file"], pa.string()),
        "bytes": pa.array(rows["bytes"], pa.int64()), "mtime_ns": pa.array(rows["mtime_ns"], pa.int64()),
        "fingerprint": pa.array(rows["fingerprint"], pa.string()),
        "key_types": pa.array(rows["key_types"], pa.string()),
        "confidence": pa.array(rows["confidence"], pa.float64())}).replace_schema_metadata({_LAYOUT_KEY: TIDY_LAYOUT})


@dataclass
class _Built:
    """One grouping built (:meth:`_Build.steps`): all the report needs of it besides its month
    files (written where it was built). Small and picklable: a worker process sends it to
    the parent (:func:`_run_workers`)."""

    name: str
    bad: list[tuple[int, str]]  # (run, why) of tables left out (skip_bad)
    notes: list[str]  # key columns whose kind differs between runs
    used: dict[int, str | None]  # run -> key types of the table used (sources.parquet)
    read: set[int]  # runs a table was read from
    series_runs: int
    absent: int | None  # not in the latest run: the last run holding it (1-based), else None
    trend: pd.DataFrame
    keys: pa.Table  # the trend's keys, typed
    window: tuple[pd.DataFrame, pd.DataFrame] | None  # the plot's rows and groups
    change_rows: list[dict[str, Any]]
    latest: pd.DataFrame | None  # the latest run's rows for the gates
    table: pa.Table | None  # the tidy table, kept in memory when the report is not written


@dataclass
class _Build:
    """What :func:`history` accumulates grouping by grouping (tables go to disk at once)."""

    result: HistoryResult
    runs: _Runs
    opts: Mapping[str, Any]
    gated: bool
    tmp: Path | None
    target: Path | None
    plots: bool
    cache: _Cache | None = None
    atomic: Any = None
    pool: Any = None  # plot_process.JobPool drawing the plots beside the run
    workers: list[Any] = field(default_factory=list)  # plot_process.Worker building groupings
    series_runs: dict[str, int] = field(default_factory=dict)
    change_rows: list[dict[str, Any]] = field(default_factory=list)
    latest_view: dict[str, pd.DataFrame] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)  # grouping -> last run holding it
    writer: _Writer | None = None
    _used: dict[str, dict[int, str | None]] = field(default_factory=dict)
    _read: set[int] = field(default_factory=set)  # runs at least one table was read from
    linked: int = 0  # month files kept from the earlier history
    written: int = 0  # month files written tonight
    left_out: list[tuple[str, str, str]] = field(default_factory=list)  # (path, why, grouping): tables skipped

    def __post_init__(self) -> None:
        if self.tmp is not None:
            self.writer = _Writer(self.tmp, self.atomic.known if self.atomic is not None else None)

    @property
    def reused_runs(self) -> int:
        """Runs none of whose tables had to be read (all taken from the earlier history)."""
        return len(self.runs.infos) - len(self._read)

    def steps(self, groupings: Iterable[tuple[str, list[int], GroupedRuns, _Plan]]) -> Iterator[_Built]:
        """Build each grouping of ``groupings`` (:func:`_each_grouping`) and yield it
        (:meth:`take` adds it to the result); its month files are written when the next one
        is asked for, so a plot the taker queues is drawn while they are written."""
        for name, idx, grouped, plan in groupings:
            built, frame = self._build(name, idx, grouped, plan)
            yield built
            if self.tmp is not None and self.target is not None:
                self._write_months(name, frame, plan)

    def _build(self, name: str, idx: Sequence[int], grouped: GroupedRuns, plan: _Plan) -> tuple[_Built, _Tidy]:
        """One grouping's trend, change rows, gate view and plot rows (:class:`_Built`) and its
        tidy table."""
        runs, n_runs = self.runs, len(self.runs.infos)
        bad_runs = {i for i, _e in grouped.bad}
        linked_runs = {i for m in plan.links for i in plan.months[m]}
        cache = self.cache
        used = {i: grouped.key_types[i] if i in grouped.key_types else
                cache.key_type(name, runs.infos[i].key) if cache is not None else None
                for i in idx if i not in bad_runs}
        frame = _grouping_frame(runs, grouped, name, float(self.opts["confidence"]))
        series = _series([i for i in idx if i not in bad_runs], runs.segment, int(runs.segment[-1]), n_runs)
        in_latest = bool(series) and series[-1] == n_runs - 1
        absent = None
        if not in_latest:
            held = [i for i in idx if i not in bad_runs]
            absent = int(held[-1]) + 1 if held else 0
        tidy = _window_tidy(frame, series[-int(self.opts["window"]):], name)
        trend = _trend(tidy, name, series, runs, self.opts, in_latest)
        window = None
        if self.plots or self.tmp is None:
            picks = _plot_picks(trend, name)
            window = (_plot_rows(tidy.table, picks, name), picks)
        latest = None
        if self.gated and in_latest:
            last = np.flatnonzero(tidy.run_pos == n_runs - 1)
            stats = ["count", "mean", "n_eff", "ci_low", "ci_high", "clipped_low", "accuracy"]
            view = tidy.table.take(pa.array(last)).select([*_key_cols(name), *stats]).rename_columns(
                [*_grouping_columns(name), *stats])  # the gates name keys as the user does
            # the evaluate gates read it as evaluate reads a run's table (gates._eval_detail): its
            # interval, and a weighted run's mean (``mean`` here) with its n_eff
            latest = view.to_pandas(integer_object_nulls=True).assign(
                weighted_mean=lambda d: d["mean"].where(d["n_eff"].notna()))
        built = _Built(name, list(grouped.bad), list(grouped.notes), used,
                       set(plan.needed) - set(grouped.reused) - linked_runs, len(series), absent, trend,
                       tidy.key_table, window, _change_rows(name, trend, n_runs), latest,
                       frame.table if self.tmp is None or self.target is None else None)
        return built, frame

    def take(self, built: _Built, plot: bool = True) -> None:
        """Add one grouping built by :meth:`steps` (here or in a worker process) to the result,
        and (``plot``: unless :meth:`queue_plot` did) queue its plot."""
        res, runs, name = self.result, self.runs, built.name
        for i, err in built.bad:
            res.skipped.append((str(runs.infos[i].path), f"{err} (grouping {name} left out for this run)"))
            self.left_out.append((str(runs.infos[i].path), err, name))  # warned at the end (_warn_left_out)
        if built.notes:
            import warnings

            from .errors import EvalkitWarning

            res.notes += built.notes
            for note in built.notes:
                warnings.warn(EvalkitWarning(note), stacklevel=2)
        self._used[name] = built.used
        self._read |= built.read
        self.series_runs[name] = built.series_runs
        if built.absent is not None:
            self.absent[name] = built.absent
        res.trends[name] = built.trend
        res._keys[name] = built.keys
        res._windows[name] = built.window
        self.change_rows += built.change_rows
        if built.latest is not None:
            self.latest_view[name] = built.latest
        if self.tmp is not None and self.target is not None:
            if self.plots and plot:  # queued before the month files go to the writer: drawn meanwhile
                self.queue_plot(built)
            res._tables[name] = self.target / _tidy_dir(name)
        else:
            assert built.table is not None
            res._tables[name] = built.table

    def queue_plot(self, built: _Built) -> None:
        """Queue (or draw) the plot of a grouping built, before or when it is taken (the
        order of the plots is not the report's: history.md finds each by its file name)."""
        if self.tmp is not None and self.target is not None and self.plots:
            _emit_plot(self.result, built.name, self.tmp, self.pool, built.window, len(built.trend))

    def _write_months(self, name: str, frame: _Tidy, plan: _Plan) -> None:
        """One grouping's month files: written anew, or linked from the earlier history."""
        assert self.tmp is not None
        fresh = {m: rs for m, rs in plan.months.items() if m not in plan.links}
        codes, names = self.runs.month_codes
        self.written += _emit_grouping(self.result, name, frame, self.tmp, False, fresh,
                                       (codes[frame.run_pos], names), self.writer)
        for month, old in plan.links.items():
            rel = f"{_tidy_dir(name)}/{month}.parquet"
            _link(old, self.tmp / rel)
            if self.atomic is not None and self.cache is not None:
                self.atomic.known[rel] = dict(self.cache.files[rel])
        self.linked += len(plan.links)

    def sources(self) -> pa.Table:
        """``sources.parquet``: every report file this history used, with the size,
        modification time and manifest fingerprint it had, its run id and month (what a
        later run reuses by)."""
        cols: dict[str, list[Any]] = {k: [] for k in ("run", "report", "run_id", "month", "grouping", "file",
                                                       "bytes", "mtime_ns", "fingerprint", "key_types",
                                                       "confidence")}
        names = list(self._used)
        conf = float(self.opts["confidence"])
        for i, info in enumerate(self.runs.infos):
            d = info.key
            entries = [(None, "summary.json", None)] + [
                (g, info.source(g), self._used[g][i]) for g in names if i in self._used[g]]
            for g, rel, kt in entries:
                st = info.stamps.get(rel)
                if st is None:
                    continue
                for k, v in (("run", i + 1), ("report", d), ("run_id", self.runs.run_ids[i]),
                             ("month", self.runs.months[i]), ("grouping", g), ("file", rel),
                             ("bytes", st.bytes), ("mtime_ns", st.mtime_ns), ("fingerprint", st.fingerprint),
                             ("key_types", kt), ("confidence", conf)):
                    cols[k].append(v)
        return _sources_table(cols)

    def finish_plots(self) -> None:
        """Wait for the plots drawn by the helpers (any they could not draw is drawn here)."""
        if self.pool is None:
            return
        from .plots import plots_available

        pool = self.pool
        for (done, value), fname in zip(pool.results(), self.result._pending_plots, strict=True):
            # a job no helper drew (matplotlib missing or broken there, a helper gone): here
            title = value if done else _draw_here(self.result, *value[2]) if plots_available() else ""
            if title:
                self.result._plots.append((title, fname))
        # only now: a Ctrl-C while the last plots are drawn leaves the pool to close(), which
        # ends the helpers before the half-built report is removed (rt-hist10: they went on
        # drawing into it after the command had exited, and left it behind)
        self.pool = None

    def close_workers(self) -> None:
        """End the worker processes (killed if still building) and reap them."""
        for w in self.workers:
            w.close()
        self.workers = []

    def close(self) -> None:
        self.close_workers()  # first: no worker writes into the report once this returns
        if self.pool is not None:  # an error ended the run: the helpers are not waited for
            self.pool.close()
            self.pool = None
        if self.writer is not None:
            self.writer.close()


def _link(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (a copy where links are not possible)."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _changes_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    changes = pd.DataFrame(rows, columns=["grouping", "group", "keys", "direction", "change_pct", "run",
                                          "created", "before", "after", "t", "q_value", "message"])
    if not changes.empty:
        changes = changes.reindex(changes["change_pct"].abs().sort_values(ascending=False, kind="stable").index)
    return changes.reset_index(drop=True)


def _series(idx: Sequence[int], segment: np.ndarray, latest_seg: int, n_runs: int) -> list[int]:
    """The latest unbroken stretch of the latest run's segment (runs of other segments in
    between are stepped over, not a break) that hold the grouping."""
    have = set(idx)
    out: list[int] = []
    for r in range(n_runs - 1, -1, -1):
        if segment[r] != latest_seg:
            continue
        if r not in have:
            if out:
                break
            continue
        out.append(r)
    return out[::-1]


#: Columns of the tidy table kept only in memory: the run number and segment change when the
#: oldest night leaves the history; runs.parquet maps ``run_id`` to both.
_RENUMBERED = ("run", "segment")


def _months_of(created: pa.ChunkedArray) -> np.ndarray:
    """Each row's calendar month (UTC) from its ``created`` timestamps."""
    return pd.DatetimeIndex(created.to_pandas()).strftime("%Y-%m").to_numpy(dtype=object)


def _emit_grouping(result: HistoryResult, name: str, frame: _Tidy | None, tmp: Path, plots: bool,
                   months: Mapping[str, Sequence[int]], month_of: tuple[np.ndarray, Sequence[str]] | None = None,
                   writer: _Writer | None = None, pool: Any = None) -> int:
    """Write the ``months`` of one grouping's tidy table (``frame``: its rows of those
    months, and maybe others; ``month_of``: each row's month, as codes into a list of month
    names: comparing integers, not 365,000 strings per month) into the report being built,
    one file per month without the renumbered columns, and its plot (the trend window);
    ``writer`` encodes on its thread while the caller reads the next grouping, ``pool``
    (:class:`evalkit.plot_process.JobPool`) draws the plot in a helper process. Returns the
    number of files written."""
    from .io import write_table

    if plots:  # first: the helpers draw while this thread waits for room in the writer's queue
        _emit_plot(result, name, tmp, pool)
    d = tmp / _tidy_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    n = 0
    table = None if frame is None else frame.table.drop_columns(
        [c for c in _RENUMBERED if c in frame.table.column_names])
    code_of = {m: i for i, m in enumerate(month_of[1])} if month_of is not None else {}
    # rows in run order hold each month in one stretch: found by bisection, not by a pass
    # over all rows per month
    sorted_codes = month_of is not None and bool(np.all(month_of[0][1:] >= month_of[0][:-1]))
    for month in sorted(months) if table is not None and month_of is not None else ():
        if month not in code_of:
            continue
        if sorted_codes:
            lo, hi = np.searchsorted(month_of[0], [code_of[month], code_of[month] + 1])
            rows = np.arange(lo, hi)
        else:
            rows = np.flatnonzero(month_of[0] == code_of[month])
        if not len(rows):
            continue
        part = table.slice(int(rows[0]), len(rows)) if rows[-1] - rows[0] + 1 == len(rows) \
            else table.take(pa.array(rows))
        # run ids as text: the in-memory dictionary holds every run of the history, which a
        # month's file must not depend on
        part = part.set_column(part.schema.get_field_index("run_id"), "run_id",
                               part.column("run_id").cast(pa.string()))
        path = d / f"{month}.parquet"
        if writer is not None:
            writer.write(part, path)
        else:
            write_table(part, path, large=True, compression=TIDY_CODEC, statistics=TIDY_STATISTICS)
        n += 1
    return n


def _emit_plot(result: HistoryResult, name: str, tmp: Path, pool: Any = None,
               window: tuple[pd.DataFrame, pd.DataFrame] | None = None, groups: int | None = None) -> None:
    """The plot of one grouping (its trend window): queued on ``pool``'s helpers
    (:class:`evalkit.plot_process.JobPool`), else drawn here when matplotlib is there.
    ``window`` and ``groups`` (the rows and groups to draw, the trend's number of groups):
    by default the result's."""
    window = result._windows.get(name) if window is None else window
    if window is not None:
        from .plots import note_no_plots, plots_available

        rows, picks = window
        fname = f"history_{_file_stem(name)}.png"
        # only what the plot reads goes to the helper (the runs' paths and the trend
        # columns stay here)
        picks = picks[_key_cols(name)]
        runs = result.runs[["run", "created", "note"]]
        if groups is None:  # a capped plot says of how many
            groups = len(result.trends[name]) if name in result.trends else None
        if pool is not None:  # matplotlib is imported (and checked) in the helper, not here
            pool.submit("evalkit.plots", "write_history_plot", rows, name, picks, tmp / fname, runs, groups)
            result._pending_plots.append(fname)
        elif plots_available():
            title = _draw_here(result, rows, name, picks, tmp / fname, runs, groups)
            if title:
                result._plots.append((title, fname))
        else:  # no matplotlib: the one warning evaluate gives too
            note_no_plots(result)


def _draw_here(result: HistoryResult, *args: Any) -> str:
    """:func:`evalkit.plots.write_history_plot` in this process; its note that the plot font
    lacks characters is issued once per history, not once per plot (rt-hist8 F5), as the
    drawing helpers' notes are (:meth:`evalkit.plot_process.JobPool.results`)."""
    import warnings

    from .plots import PlotFontWarning, warn_font_note, write_history_plot

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        title = write_history_plot(*args)
    for w in caught:
        if issubclass(w.category, PlotFontWarning):
            if not result._font_noted:
                result._font_noted = True
                warn_font_note(str(w.message), w.category)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return title


def _plot_rows(window: pa.Table, picks: pd.DataFrame, name: str) -> pd.DataFrame:
    """The window's rows of the groups drawn (all of them for ``overall``), as a frame."""
    cols = _key_cols(name)
    keep = ["run", *cols, "mean", "ci_low", "ci_high"]
    if not cols or not len(picks):
        return window.select(keep).to_pandas()
    import pyarrow.compute as pc

    mask = None
    try:
        for c in cols:
            values = pa.array(list(picks[c]), type=window.schema.field(c).type, from_pandas=True)
            hit = pc.is_in(window.column(c), value_set=values, skip_nulls=False)
            mask = hit if mask is None else pc.and_(mask, hit)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        mask = None  # keys that do not convert back: the plot matches them itself
    return (window if mask is None else window.filter(mask)).select(keep).to_pandas()


class _Writer:
    """One background thread encoding Parquet (the encoder releases the GIL); at most
    :data:`WRITES_QUEUED` files wait (slices of a grouping's table: memory holds about two
    groupings), so the caller goes on with the next grouping while a grouping's months are
    written. ``close()`` raises its errors.

    With ``root`` and ``known`` (the report being built and its
    :attr:`evalkit.outdir.AtomicDir.known`), each file's manifest entry is computed on that
    thread as soon as it is written (the file is still in the page cache), instead of every
    file being read and hashed again, one after the other, when the report is committed."""

    def __init__(self, root: Path | None = None, known: dict[str, dict[str, Any]] | None = None) -> None:
        self._pool = ThreadPoolExecutor(1)
        self._pending: collections.deque[Any] = collections.deque()
        self._root, self._known = root, known

    def write(self, table: pa.Table, path: Path) -> None:
        while len(self._pending) >= WRITES_QUEUED:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._write, table, path))

    def _write(self, table: pa.Table, path: Path) -> None:
        from .io import write_table

        write_table(table, path, large=True, compression=TIDY_CODEC, statistics=TIDY_STATISTICS)
        if self._root is not None and self._known is not None:
            from .outdir import manifest_entry

            rel = path.relative_to(self._root).as_posix()
            self._known[rel] = manifest_entry(path, rel)

    def wait(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown()


def _runs_frame(runs: _Runs, notes: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "run": np.arange(1, len(runs.infos) + 1, dtype=np.int64),
        "run_id": runs.run_ids,
        "run_label": runs.labels,
        "path": [str(r.path) for r in runs.infos],
        "created": runs.created,
        "eps": [r.eps if r.eps is not None else np.nan for r in runs.infos],
        "classes": [len(r.classes) if r.classes is not None else -1 for r in runs.infos],
        "groupings": [",".join(g.replace(",", "+") for g in r.groupings if g != "overall") for r in runs.infos],
        "segment": runs.segment,
        "note": list(notes),
    })


def _metadata(result: HistoryResult, runs: _Runs, opts: Mapping[str, Any], cfg: Any,
              gates: Mapping[str, Any], series_runs: Mapping[str, int], started: float,
              skipped: Sequence[tuple[str, str]]) -> dict[str, Any]:
    seg = runs.segment
    latest = int(seg[-1])
    in_latest = np.flatnonzero(seg == latest)
    blob = {"settings": dict(opts), "gates": dict(gates)}
    return {
        "evalkit_version": __version__,
        "created": _dt.datetime.fromtimestamp(started, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": 0.0,
        "runs": len(runs.infos),
        "first": runs.created[0].isoformat(),
        "last": runs.created[-1].isoformat(),
        "segments": int(seg.max()),
        "latest_segment": {"segment": latest, "first_run": int(in_latest[0]) + 1,
                           "runs": int(len(in_latest)),
                           "eps": runs.infos[-1].eps, "classes": len(runs.infos[-1].classes or ())},
        "skipped": len(skipped),
        "ignored": len(result.ignored),
        "settings": dict(opts),
        "method": ("max-t scan for one shift in level over the window (pooled two-sample t of "
                   "run means, variance floored at the runs' squared standard errors; "
                   "Bonferroni over candidates, Worsley 1979), Benjamini-Hochberg across groups"),
        "series_runs": dict(series_runs),
        "config_file": getattr(cfg, "source_file", None),
        "config_hash": hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16],
    }


# -- markdown ---------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return "" if v is None or v != v or math.isinf(v) else f"{v:+.1f}%"


def _loss(v: Any) -> str:
    from .report import fmt_number

    return "" if v is None or v != v else fmt_number(float(v))


def _trend_cells(rec: Mapping[str, Any], lookback: int) -> list[str]:
    change = ""
    if rec["changed"]:
        change = (f"**{'▲' if rec['direction'] == 'up' else '▼'} {_pct(rec['change_pct'])} since run "
                  f"{rec['change_run']}**")
    latest = _loss(rec["latest"]) if rec["latest"] == rec["latest"] else "absent"
    return [latest, _pct(rec["change_prev_pct"]), _pct(rec["drift_pct"]), _loss(rec["min"]),
            _loss(rec["max"]), f"{int(rec['runs'])}", change]


def render_markdown(res: HistoryResult) -> str:
    """``history.md``: runs, gates, changes, the overall trend and each grouping's groups
    (at most ``max_rows`` per grouping: worse first, :func:`_reading_order`)."""
    lines = _md_header(res) + _md_notes(res) + _md_gates(res) + _md_changes(res)
    plots = {f: t for t, f in res._plots}
    for name, trend in res.trends.items():
        lines += _md_grouping(res, name, trend, plots)
    return "\n".join(lines).rstrip() + "\n"


def _md_header(res: HistoryResult) -> list[str]:
    meta = res.metadata
    opts = meta["settings"]
    lb, n_runs, seg = int(opts["lookback"]), meta["runs"], meta["latest_segment"]
    return ["# evalkit history", "",
            f"{n_runs} runs from {meta['first'][:10]} to {meta['last'][:10]}, ordered by recorded "
            f"start time. Trends and change detection use the latest run's segment ({seg['runs']} "
            f"runs from run {seg['first_run']}, eps {seg['eps']:g}, {seg['classes']} classes), "
            f"the last {opts['window']} runs at most; \"Δ {lb} runs\" compares the latest run "
            f"with the run {lb} before it.", "",
            f"Change detection: {meta['method']}; flagged at q <= {opts['alpha']:g}"
            + (f" and a shift of at least {opts['min_change_pct']:g}%" if opts["min_change_pct"] else "")
            + ". ▲ = mean loss up (worse).", ""]


def _md_notes(res: HistoryResult) -> list[str]:
    """Segment boundaries, changed groupings, copies counted once, unverified and skipped
    report directories."""
    lines: list[str] = []
    if res.metadata["segments"] > 1:
        lines.append(f"> **{res.metadata['segments']} segments:** runs whose eps, class set or weight differ "
                     "are not compared; other segments are in the tables but not in the trends.")
        for rec in res.runs[res.runs["note"].str.contains("segment")].to_dict("records"):
            lines.append(f"> - run {rec['run']} ({md_code(rec['run_label'])}, {rec['created']:%Y-%m-%d}): "
                         f"{md_text(rec['note'])}")
        lines.append("")
    changed_sets = res.runs[res.runs["note"].str.contains("groupings changed")]
    if len(changed_sets):
        lines += ["> Groupings changed at run(s) " + ", ".join(
            f"{r['run']} ({md_text(r['note'].split('groupings changed: ')[-1])})"
            for r in changed_sets.to_dict("records")[:10])
            + (" ..." if len(changed_sets) > 10 else "") + "; a grouping's series starts after its last gap.", ""]
    lines += _md_listed(f"**Same run counted once ({len(res.duplicates)}):** these directories hold a run "
                        "already counted (a copied report); of the copies of a run, the first by "
                        "start time, then path, is read",
                        [f"{md_code(p)}: same run as {md_code(k)} (same {_copy_reason(res, k)})"
                         for p, k in res.duplicates])
    n_old = int(res.metadata.get("unverified_reports", 0))
    if n_old:
        lines += [f"> {n_old} report(s) written before report manifests (`evalkit-manifest.json`) were "
                  "read without checking that their files are unchanged.", ""]
    lines += [f"> Note: {md_text(n)}" for n in res.notes] + ([""] if res.notes else [])
    lines += _md_listed(f"**Not reports, left out ({len(res.ignored)}):** glob matches that are not "
                        "evaluate report directories",
                        [f"{md_code(p)}: {md_text(why)}" for p, why in res.ignored])
    lines += _md_listed(f"**Skipped ({len(res.skipped)}):**",
                        [f"{md_code(p)}: {md_text(why)}" for p, why in res.skipped])
    return lines


def _md_listed(title: str, items: Sequence[str], limit: int = 20) -> list[str]:
    if not items:
        return []
    lines = [f"> {title}", *[f"> - {item}" for item in items[:limit]]]
    if len(items) > limit:
        lines.append(f"> - ... and {len(items) - limit} more (history.json)")
    return [*lines, ""]


def _md_gates(res: HistoryResult) -> list[str]:
    from .gates import gates_markdown

    return gates_markdown(res.gates_record(), "history.json")


def _md_changes(res: HistoryResult) -> list[str]:
    ch = res.changes
    lines = [f"## Changes ({len(ch)})", ""]
    if ch.empty:
        return [*lines, "_No group's mean loss shifted beyond its run-to-run noise._", ""]
    lines += [f"- {'▲' if r['direction'] == 'up' else '▼'} {md_text(r['message'])}"
              for r in ch.head(MAX_CHANGE_LINES).to_dict("records")]
    if len(ch) > MAX_CHANGE_LINES:
        lines.append(f"- ... and {len(ch) - MAX_CHANGE_LINES} more (history.json, trends.parquet)")
    return [*lines, ""]


def _md_grouping(res: HistoryResult, name: str, trend: pd.DataFrame, plots: Mapping[str, str]) -> list[str]:
    """One grouping's trend table, bounded to ``max_rows`` groups, and its plot."""
    from .report import fmt_key

    opts = res.metadata["settings"]
    lb = int(opts["lookback"])
    cols = list(_grouping_columns(name))  # the user's names; the table's: _key_cols
    shown = trend.loc[_reading_order(trend)[: int(opts["max_rows"])]] if cols else trend
    lines = [f"## {'Overall' if not cols else 'By ' + ' × '.join(md_text(c) for c in cols)}", ""]
    absent = (res.metadata.get("absent_from_latest") or {}).get(name)
    if absent is not None:
        lines += [f"> **Absent from the latest run** (last in run {absent}): no latest value is shown, "
                  "and gates on this grouping are not checked.", ""]
    if cols:
        lines += [f"{len(trend):,} groups, {int(trend['changed'].sum())} flagged; series of "
                  f"{res.metadata['series_runs'].get(name, 0)} runs."
                  + (f" Showing {len(shown)}, worse first: flagged rises, then the largest rise over Δ {lb} runs, "
                     f"then flagged drops, then the largest drop; "
                     f"all groups in `trends.parquet`, every run in {md_code(_tidy_dir(name) + '/')}."
                     if len(shown) < len(trend) else ""), ""]
    if trend.empty:
        return [*lines, "_(no groups)_", ""]
    header = [*cols, "latest", "Δ prev", f"Δ {lb} runs", "min", "max", "runs", "change"]
    lines.append("| " + " | ".join(md_text(h) for h in header) + " |")
    lines.append("| " + " | ".join(["---"] * len(cols) + ["---:"] * 6 + ["---"]) + " |")
    for rec in shown.to_dict("records"):
        keys = [md_text(fmt_key(rec[c])) for c in _key_cols(name)]
        lines.append("| " + " | ".join(keys + _trend_cells(rec, lb)) + " |")
    lines.append("")
    fname = f"history_{_file_stem(name)}.png"
    if fname in plots:
        lines += [f"![{md_text(plots[fname])}]({md_link_target(fname)})", ""]
    return lines


__all__ = ["ChangeScan", "HistoryResult", "detect_changes", "history"]
