"""Compare a candidate run against a baseline: per-group deltas of mean loss with confidence
intervals, gates, and provenance.

    >>> cmp = evalkit.compare("reports/baseline", "reports/candidate")   # doctest: +SKIP
    >>> cmp.tables["region"]                                             # doctest: +SKIP

Each run is an ``evaluate`` report directory (recognised by its ``summary.json``), an
:class:`~evalkit.api.EvalResult`, or a prediction input evaluated on the fly with ``config``.

For every grouping both runs have, each group gets the baseline and candidate counts and mean
losses, ``delta = candidate_mean - baseline_mean`` (positive = worse), ``rel_delta = delta /
baseline_mean`` and a confidence interval of the delta:

``paired``
    Both runs hold the same row keys for the group (the key columns recorded by ``evaluate``,
    e.g. ``id``; or ``pair_on``): the per-row differences ``d = loss_candidate - loss_baseline``
    give a t-interval ``mean(d) +- t * sd(d) / sqrt(n)`` (``ci_method`` ``"t"``). Pairing removes
    the example-to-example variance, so the interval is much narrower than unpaired.
``partly paired``
    The group's rows are partly the same examples (ids added or dropped between the runs):
    the delta is still of the group's means over all its rows; its t-interval treats the
    rows both runs hold as pairs and the others as independent (the partially overlapping
    samples t-test, :func:`~evalkit.inference.partly_paired_ci`); ``n_paired`` counts the
    pairs, so ``baseline_count - n_paired`` and ``candidate_count - n_paired`` rows had no
    partner (the metadata's ``pairing`` counts them over the whole run).
``unpaired``
    Otherwise (no row in common, keys absent or not unique): a percentile bootstrap of the
    difference of means (``ci_method`` ``"bootstrap"``), vectorised and deterministic for a
    seed; above ``boot_limit`` rows on a side, the Welch normal approximation (``"normal"``),
    which the bootstrap matches at that size.
``normal-from-stats``
    A run written without per-row output (``evaluate --no-rows``): Welch normal approximation
    from the grouped count / mean / std.
``missing``
    The group exists in one run only (status ``only_in_baseline`` / ``only_in_candidate``): it
    is listed, with no delta.

``status`` is ``regression`` when the whole interval is above zero, ``improvement`` when it
is below zero, ``unchanged`` otherwise (also when no interval can be computed, n < 2).

Weighted runs (``evaluate --weight COLUMN``) are compared by their weighted means, the statistic
their reports, intervals, gates and ``history`` are about: paired, the weighted mean of the
differences (rows whose weight changed between the runs are not paired) with its t-interval on
Kish's effective sample size; unpaired or without per-row output, Welch's normal interval from
each side's weighted mean and standard error. ``metadata["statistic"]`` says which mean was
compared. A weighted run against an unweighted one (or one weighted by another column) is a
mismatch.

Runs whose ``eps``, class set or weights differ are refused with :class:`~evalkit.errors.CompareError`
unless ``allow_mismatch=True`` (the differences are then recorded in the metadata).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import decimal
import hashlib
import json
import math
import os
import re
import time
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._version import __version__
from .columns import COMPARE_TABLE_COLUMNS, rows_column
from .compare_report import STATUS_ORDER, _render_markdown, _sorted_for_reading
from .config import check_compare_settings
from .errors import (
    CompareError,
    EvalkitError,
    EvalkitWarning,
    ReportError,
    UsageError,
    option,
    render_options,
)
from .escape import is_missing, key_label
from .gates import GateFailure
from .inference import (
    bootstrap_diff_ci,
    paired_ci,
    partly_paired_ci,
    t_quantile,
    weighted_mean_sem,
    weighted_paired_ci,
    welch_ci,
)
from .io import file_provenance
from .outdir import not_an_evaluate_report, report_command
from .reports import (
    _file_stem,
    _from_result,
    _grouping_columns,
    _load_report,
    _Run,
    _weight_of,
    is_report_dir,
)

TABLE_COLUMNS = list(COMPARE_TABLE_COLUMNS)
DEFAULT_BOOT_LIMIT = 100_000


# -- the two runs -------------------------------------------------------------------------


def _coerce_config(config: Any) -> Any:
    from .config import EvalConfig

    return EvalConfig.coerce(config)


@contextlib.contextmanager
def _warnings_named(side: str, role: str) -> Iterator[None]:
    """Re-issue the evalkit warnings of one side's evaluation with the side named first
    (``candidate (preds.parquet): the binary column 'prob' looks reversed ...``): a compare
    evaluates two inputs, and a warning that does not say which one is no use. Advice that
    would act on both inputs is rewritten for this side (:func:`one_side_advice`). Other
    warnings pass through unchanged; the caller's warning filters apply to both."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:  # type: ignore[assignment]
            warnings.simplefilter("always")
            yield
    finally:  # on an error too: the warnings may explain it
        for w in caught:
            msg = w.message
            if isinstance(msg, EvalkitWarning):
                text = one_side_advice(msg.message, role, recorded=False)
                warnings.warn(type(msg)(f"{side}: {text}"), stacklevel=3)
            else:
                warnings.warn_explicit(msg, w.category, w.filename, w.lineno, source=w.source)


#: How evaluate's advice for a binary column that looks reversed begins
#: (:meth:`evalkit.validate.ReversedBinary.warning`): ``If the column holds P('0'), name the
#: classes the other way round: --classes 1,0``.
_REVERSED_ADVICE = re.compile(r"If the column holds P\((?P<c0>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\), "
                              r"name the classes the other way round: .*\Z", re.S)
_READ_AS = re.compile(r"read as P\((?P<c1>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\), ")


def one_side_advice(message: str, role: str, *, recorded: bool) -> str:
    """``message`` (an evaluate warning about one side of a compare) with advice that would act
    on both sides rewritten for this one. The one such advice: a binary column that looks
    reversed, which evaluate answers with ``--classes 1,0``; given to compare, that setting names
    the classes of *both* prediction inputs (and of neither report directory), so for one side
    the advice is to evaluate that side alone with the classes the other way round and compare
    that report. ``recorded``: the warning was recorded when a report directory was evaluated
    (its classes are read as recorded: evaluate that run again). Any other advice naming a
    setting (``--probs`` for a binary logit column in [0, 1]; an error's ``--classes a,b,c`` or
    ``--on-invalid skip`` when one input fails) gets the same rule appended; a message naming
    no setting is returned as it is."""
    import ast

    found = _REVERSED_ADVICE.search(message)
    read_as = _READ_AS.search(message)
    if found is None or read_as is None:
        if recorded or render_options(message, cli=True) == message:
            return message  # no setting named (a recorded warning's are spelled out already)
        # Any other advice naming a setting (a binary logit column in [0, 1]: --probs) would
        # act on both inputs as well.
        return (f"{message} (for the {role} alone: evaluate it by itself with that setting and "
                f"{option('out', meta='DIR')}, and give that report as the {role}; a setting given "
                "to compare applies to both inputs)")
    c0, c1 = ast.literal_eval(found["c0"]), ast.literal_eval(read_as["c1"])
    classes = option("classes", [c1, c0])
    if recorded:
        advice = (f"If the column holds P({c0!r}), evaluate that run again with {classes} and compare the "
                  "new report (compare reads a report's classes as they were recorded)")
    else:
        advice = (f"If the column holds P({c0!r}), name the classes the other way round for the {role} "
                  f"alone: evaluate it by itself with {classes} and {option('out', meta='DIR')}, and give "
                  f"that report as the {role}. {option('classes')} given to compare names the classes of "
                  f"both inputs: right only if both columns hold P({c0!r})")
    return message[:found.start()] + advice


def _load_run(obj: Any, role: str, config: Any) -> _Run:
    from .api import EvalResult, evaluate

    if isinstance(obj, _Run):
        return obj
    if isinstance(obj, EvalResult):
        return _from_result(obj, role, f"<{role} EvalResult>", "result")
    if is_report_dir(obj):
        return _load_report(obj, role)
    if isinstance(obj, str | os.PathLike) and (made_by := report_command(obj)) in ("compare", "history"):
        # as history says it (exit 3): not a prediction input either (evaluate refuses it too)
        raise ReportError(f"{role} {not_an_evaluate_report(obj, made_by)}; give an evaluate report "
                          "directory or prediction input")
    cfg = _coerce_config(config)
    cfg.write_rows = True
    cfg.out = None  # a shared config's evaluate output (out:) is not this comparison's to write
    # the gates are compare's to check (evaluate's on the candidate, itself) and to note, once:
    # a side's evaluation checks none (it warned "no gate that evaluate checks" per side)
    cfg.gates, cfg.gates_empty_in = {}, None
    label = os.fspath(obj) if isinstance(obj, str | os.PathLike) else (
        ", ".join(map(str, obj)) if isinstance(obj, list | tuple) else f"<{role} {type(obj).__name__}>")
    with _warnings_named(f"{role} ({label})", role):
        try:
            result = evaluate(obj, config=cfg)
        except EvalkitError as exc:  # its advice (--classes, --on-invalid...) is for this side only
            scoped = one_side_advice(exc.message, role, recorded=False)
            if scoped == exc.message:
                raise
            raise type(exc)(scoped) from None
    run = _from_result(result, role, label, "evaluated")
    run._keepalive = result  # type: ignore[attr-defined]  # rows spool lives as long as this
    return run


# -- per-group comparison ------------------------------------------------------------------


def _norm_value(v: Any, text: bool = False) -> Any:
    """The canonical typed form a group key is matched on across runs.

    Applied after both runs' key columns were brought to one type by the rule shared with
    history (:func:`_matched_keys`, :func:`evalkit.aggregate.keys.match_key_parts`).
    Missing (None, NaN, NaT, NA) is None: the one missing key. Numbers compare by value
    whatever their type (int64 7, float 7.0 and Decimal 7.00 are one key: a report read
    back from Parquet may hold a nullable integer column as floats; decimals exactly), times
    as timestamps (date and datetime), booleans as booleans, strings as themselves. With ``text``, the
    text of that form (``7``, ``0.1``, ``true``, ISO time): used when a key column has a
    different kind in the two runs (string in one, number in the other).
    """
    if is_missing(v):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return ("true" if v else "false") if text else v
    if isinstance(v, float):
        v = int(v) if v.is_integer() and abs(v) < 2**63 else v
    elif isinstance(v, decimal.Decimal):  # exact: 0.1000...01 and 0.1 are two keys
        v = int(v) if v == v.to_integral_value() and abs(v) < 2**63 else v
    elif isinstance(v, _dt.date):
        v = pd.Timestamp(v)
    if not text:
        return v
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return repr(v) if isinstance(v, float) else str(v)


def _norm_key(k: Any, text: bool = False) -> tuple[Any, ...]:
    return tuple(_norm_value(v, text) for v in (k if isinstance(k, tuple) else (k,)))


def _key_kind(values: Any) -> str | None:
    """What a key column holds (``number``, ``string``, ``time``, ``bool``...), None if only
    missing values."""
    kinds = set()
    for v in values:
        v = _norm_value(v)
        if v is None:
            continue
        kinds.add("bool" if isinstance(v, bool) else "number" if isinstance(v, int | float)
                  else "time" if isinstance(v, pd.Timestamp) else "string" if isinstance(v, str)
                  else type(v).__name__)
    return ", ".join(sorted(kinds)) or None


def _kind_differences(name: str, bdf: pd.DataFrame, cdf: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """Notes on key columns whose type differs between the runs (:func:`_matched_keys`)."""
    return _matched_keys(name, bdf, cdf, cols).notes


@dataclass
class _KeyMatch:
    """How the key columns of one grouping are matched: the columns brought to one Arrow type
    (``targets``: column -> type, by :func:`evalkit.aggregate.keys.match_key_parts`, the rule
    history uses too), the notes, and whether any column is matched as text the Python way
    (``text``: a column Arrow cannot type, e.g. mixed objects of an in-memory result)."""

    targets: dict[str, Any]
    notes: list[str]
    text: bool

    def apply(self, df: pd.DataFrame | None, rows: bool = False) -> pd.DataFrame | None:
        """``df`` with its key columns (``rows``: the per-row output's names of them) in the
        matched types; columns Arrow cannot read are left as they are."""
        import pyarrow as pa

        from .aggregate.keys import cast_to_match

        if df is None or not self.targets:
            return df
        new = {}
        for col, target in self.targets.items():
            name = rows_column(col) if rows else col
            arr = _arrow_keys(df[name]) if name in df.columns else None
            if arr is None:
                continue
            arr = cast_to_match(arr, target)
            if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
                # pandas' zoned values, which compare by the instant: Python datetimes of one
                # zone compare and hash by wall time, ignoring fold (01:30 EDT = 01:30 EST),
                # so the index and groupby over an object column made them one key (T27)
                new[name] = arr.to_pandas().set_axis(df.index)
            else:
                new[name] = pd.Series(arr.to_pylist(), index=df.index, dtype=object)
        return df.assign(**new) if new else df


def _arrow_keys(values: pd.Series) -> Any:
    """A key column as Arrow (its type inferred as pandas holds it), None if Arrow cannot."""
    import pyarrow as pa

    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
        return None


def _matched_keys(name: str, bdf: pd.DataFrame, cdf: pd.DataFrame, cols: Sequence[str]) -> _KeyMatch:
    """The one rule for the same key across runs (:func:`evalkit.aggregate.keys.match_key_parts`,
    history's too) applied to the key columns of both runs' tables of ``name``, with a note
    for each column whose type changed (float32 and float64, date and timestamp, a decimal and
    a float, naive and zoned timestamps, a number and text)."""
    from .aggregate.keys import key_match_note, match_key_parts

    out = _KeyMatch({}, [], False)
    for col in cols:
        ab, ac = _arrow_keys(bdf[col]), _arrow_keys(cdf[col])
        if ab is None or ac is None:  # values Arrow cannot type: their kinds, as Python sees them
            kb, kc = _key_kind(bdf[col]), _key_kind(cdf[col])
            if kb is not None and kc is not None and kb != kc:
                out.text = True
                out.notes.append(f"grouping {name!r}: key column {col!r} holds {kb} values in the baseline "
                                 f"but {kc} in the candidate; groups were matched on their text form (7 = '7')")
            continue
        match = match_key_parts([ab, ac])
        note = key_match_note(name, col, match, ("the baseline", "the candidate"))
        if note is not None:
            out.notes.append(note)
        if any(p.type != a.type for p, a in zip(match.parts, (ab, ac), strict=True)):
            typed = [p.type for p in match.parts if str(p.type) != "null"]
            if typed:
                out.targets[col] = typed[0]
    return out


def _stats_by_key(df: pd.DataFrame, cols: Sequence[str], text: bool = False, *, where: str = "",
                  weighted: bool = False) -> dict[tuple[Any, ...], tuple[int, float, float, float]]:
    """Each group's (count, mean, sd, n) by its matching key (:func:`_norm_key`), ``sd / sqrt(n)``
    being the mean's standard error: the mean and count's sd and count, or with ``weighted`` the
    weighted mean, ``sem * sqrt(n_eff)`` and Kish's ``n_eff`` (what the run's own interval is
    of). Raises CompareError when two groups of one run get one matching key (decimals that
    differ beyond a float's precision): merged, both would drop out of the comparison and
    its gates."""
    out: dict[tuple[Any, ...], tuple[int, float, float, float]] = {}
    raw: dict[tuple[Any, ...], Any] = {}
    nan = pd.Series(np.nan, index=df.index)
    if weighted:
        n_eff = df["n_eff"].astype("float64") if "n_eff" in df.columns else nan
        sem = df["sem"].astype("float64") if "sem" in df.columns else nan
        mean, std, size = df["weighted_mean"], sem * np.sqrt(n_eff), n_eff
    else:
        mean, std, size = df["mean"], df["std"] if "std" in df.columns else nan, df["count"]
    keys = df[list(cols)].itertuples(index=False, name=None) if cols else [()] * len(df)
    for key, n, m, s, k in zip(keys, df["count"], mean, std, size, strict=True):
        n = 0 if pd.isna(n) else int(n)
        if n <= 0:
            continue  # e.g. a class with no rows: not a group of this run
        nk = _norm_key(key, text)
        if nk in out:
            raise CompareError(
                f"{where}: groups {key_label(raw[nk])} and {key_label(key)} of {', '.join(cols)} are one "
                "key once matched across runs (a decimal or large integer key is matched on its float "
                "value against a float key of the other run), so compare "
                "cannot keep them apart; group by a column that tells them apart (e.g. the key as text)")
        raw[nk] = key
        out[nk] = (n, float(m), float(s) if s is not None and not pd.isna(s) else math.nan,
                   math.nan if pd.isna(k) else float(k))
    return out


def _group_indices(rows: pd.DataFrame, cols: Sequence[str], text: bool = False
                   ) -> dict[tuple[Any, ...], np.ndarray]:
    if not cols:
        return {(): np.arange(len(rows))}
    rcols = [rows_column(c) for c in cols]
    gb = rows.groupby(rcols if len(rcols) > 1 else rcols[0], observed=True, dropna=False, sort=False)
    out: dict[tuple[Any, ...], list[np.ndarray]] = {}
    for k, v in gb.indices.items():  # NaN and null rows are one missing key: gather them
        out.setdefault(_norm_key(k, text), []).append(np.asarray(v))
    return {k: v[0] if len(v) == 1 else np.sort(np.concatenate(v)) for k, v in out.items()}


def _rng(seed: int, grouping: str, key: tuple[Any, ...]) -> np.random.Generator:
    # One stream per group: a group's interval does not depend on which other groups exist.
    return np.random.default_rng([seed, zlib.crc32(grouping.encode()), zlib.crc32(repr(key).encode())])


@dataclass
class _Pairing:
    keys: tuple[str, ...]
    match: np.ndarray | None  # for each baseline row, the candidate row with its key, or -1
    reason: str
    alone: tuple[int, int] = (0, 0)  # baseline, candidate rows whose key the other run does not hold


def _pairing(b_rows: pd.DataFrame | None, c_rows: pd.DataFrame | None, keys: tuple[str, ...],
             reason: str, weight: str | None = None) -> _Pairing:
    """How the runs' rows pair (``weight``: the weight column both runs were evaluated with).
    Rows whose key is in one run only are counted, said in the reason and warned
    (:func:`_unpaired_note`)."""
    pairing = _pairing_of(b_rows, c_rows, keys, reason)
    note = _unpaired_note(pairing, b_rows, c_rows, weight)
    if note:
        pairing.reason += note
        warnings.warn(EvalkitWarning(pairing.reason), stacklevel=3)  # on stderr too: the delta's rows differ
    return pairing


def _pairing_of(b_rows: pd.DataFrame | None, c_rows: pd.DataFrame | None, keys: tuple[str, ...],
                reason: str) -> _Pairing:
    if b_rows is None or c_rows is None:
        return _Pairing((), None, "per-row output missing in a run: intervals from grouped stats")
    if not keys:
        return _Pairing((), None, reason)
    for role, rows in (("baseline", b_rows), ("candidate", c_rows)):
        missing = [k for k in keys if k not in rows.columns]
        if missing:
            return _Pairing((), None, f"{role} per-row output has no key column(s) {', '.join(missing)}")

    matched = _matched_keys("row keys", b_rows, c_rows, keys)  # the group keys' rule (7 = '7')

    def index(rows: pd.DataFrame) -> pd.Index:
        rows = matched.apply(rows)  # type: ignore[assignment]
        if len(keys) == 1:
            return pd.Index(rows[keys[0]])
        return pd.MultiIndex.from_frame(rows[list(keys)])

    def missing(rows: pd.DataFrame) -> np.ndarray:
        # A missing key (null, NaN, NaT) names no row: it is never a partner (pandas' index
        # would pair NaN with NaN), as a missing --on key is never joined (evalkit.join).
        return np.asarray(rows[list(keys)].isna().any(axis=1), dtype=bool)

    ib, ic = index(b_rows), index(c_rows)
    mb, mc = missing(b_rows), missing(c_rows)
    for role, idx, gone in (("baseline", ib, mb), ("candidate", ic, mc)):
        if not idx[~gone].is_unique:
            return _Pairing((), None, f"{role} row keys {', '.join(keys)} are not unique: unpaired")
    try:
        present = np.flatnonzero(~mc)
        found = np.asarray(ic[present].get_indexer(ib), dtype=np.int64)
    except (TypeError, ValueError):
        return _Pairing((), None, f"row keys {', '.join(keys)} have different types in the runs")
    match = np.where(found >= 0, present[np.maximum(found, 0)], -1) if len(present) else found
    match[mb] = -1
    how = "".join(f" ({n.split(': ', 1)[1]})" for n in matched.notes)  # a row key whose type changed
    if mb.any() or mc.any():
        how += (f" (rows with a missing key are never paired: {int(mb.sum())} in the baseline, "
                f"{int(mc.sum())} in the candidate)")
    paired = int((match >= 0).sum())
    alone = (len(ib) - paired, len(ic) - paired)  # rows whose key the other run does not hold
    return _Pairing(keys, match, f"paired on {', '.join(keys)} where both runs hold the same keys{how}",
                    alone)


def _unpaired_note(pairing: _Pairing, b_rows: pd.DataFrame | None, c_rows: pd.DataFrame | None,
                   weight: str | None) -> str:
    """What the pairing says of rows whose key is in one run only (ids added or dropped):
    how many, how their groups' intervals are made, and the mean loss difference over the
    rows in both (the change of the model alone, without the change of the rows)."""
    nb, nc = pairing.alone
    if pairing.match is None or not (nb or nc):
        return ""
    paired = int((pairing.match >= 0).sum())
    note = (f"; {nb:,} baseline and {nc:,} candidate row(s) have no partner (keys in one run only): a group's "
            "delta is of its means over all its rows, ")
    if weight is not None:
        return note + "its interval Welch's from each side's weighted mean (weighted runs)"
    note += "its interval pairs the rows in both (method 'partly paired'; n_paired counts them)"
    if paired and b_rows is not None and c_rows is not None:
        m = np.flatnonzero(pairing.match >= 0)
        d = c_rows["loss"].to_numpy(np.float64)[pairing.match[m]] - b_rows["loss"].to_numpy(np.float64)[m]
        note += f"; over the {paired:,} rows in both alone, the mean loss changed by {float(d.mean()):+.4g}"
    return note


def _compare_grouping(name: str, b: _Run, c: _Run, b_rows: pd.DataFrame | None,
                      c_rows: pd.DataFrame | None, pairing: _Pairing, *, seed: int, n_boot: int,
                      confidence: float, boot_limit: int, weight: str | None = None) -> pd.DataFrame:
    """One grouping's comparison table; ``weight``: the weight column both runs were
    evaluated with (their weighted means are compared), None for unweighted means."""
    cols = _grouping_columns(name)
    bdf, cdf = b.stats(name), c.stats(name)
    matched = _matched_keys(name, bdf, cdf, cols)
    text = matched.text
    bdf, cdf = matched.apply(bdf), matched.apply(cdf)
    weighted = weight is not None
    sb = _stats_by_key(bdf, cols, text, where=f"baseline {b.source}", weighted=weighted)
    sc = _stats_by_key(cdf, cols, text, where=f"candidate {c.source}", weighted=weighted)
    use_rows = b_rows is not None and c_rows is not None
    if use_rows:
        b_rows, c_rows = matched.apply(b_rows, rows=True), matched.apply(c_rows, rows=True)
    gb = _group_indices(b_rows, cols, text) if use_rows else {}
    gc = _group_indices(c_rows, cols, text) if use_rows else {}
    lb = b_rows["loss"].to_numpy(np.float64) if use_rows else None
    lc = c_rows["loss"].to_numpy(np.float64) if use_rows else None
    wcol = rows_column(weight) if weighted else None
    wb = b_rows[wcol].to_numpy(np.float64) if use_rows and wcol in b_rows.columns else None
    wc = c_rows[wcol].to_numpy(np.float64) if use_rows and wcol in c_rows.columns else None
    if weighted and (wb is None or wc is None):
        use_rows = False  # no per-row weights to resample or pair: the stats' intervals
    records: list[dict[str, Any]] = []
    for key in list(sb) + [k for k in sc if k not in sb]:
        rec: dict[str, Any] = dict(zip(cols, key, strict=True))
        bstat, cstat = sb.get(key), sc.get(key)
        rec.update(baseline_count=bstat[0] if bstat else 0, candidate_count=cstat[0] if cstat else 0,
                   baseline_mean=bstat[1] if bstat else math.nan,
                   candidate_mean=cstat[1] if cstat else math.nan,
                   delta=math.nan, rel_delta=math.nan, ci_low=math.nan, ci_high=math.nan,
                   n_paired=0, ci_method="")
        if bstat is None or cstat is None:
            rec.update(method="missing", status="only_in_candidate" if bstat is None else "only_in_baseline")
            records.append(rec)
            continue
        delta = cstat[1] - bstat[1]
        rec["delta"] = delta
        rec["rel_delta"] = delta / bstat[1] if bstat[1] != 0 else math.nan
        if not use_rows or key not in gb or key not in gc:
            # (a group the per-row output does not show, e.g. an exotic key type: use stats)
            rec.update(method="normal-from-stats", ci_method="normal")
            lo, hi = welch_ci(bstat[1], bstat[2], bstat[3], cstat[1], cstat[2], cstat[3], confidence)
        else:
            assert lb is not None and lc is not None
            lo, hi = _rows_interval(rec, lb, lc, gb[key], gc[key], pairing, confidence=confidence,
                                    boot_limit=boot_limit, n_boot=n_boot,
                                    rng=lambda k=key: _rng(seed, name, k), wb=wb, wc=wc)
        rec["ci_low"], rec["ci_high"] = lo, hi
        rec["status"] = ("regression" if lo > 0 else "improvement" if hi < 0 else "unchanged")
        records.append(rec)
    df = pd.DataFrame.from_records(records, columns=list(cols) + TABLE_COLUMNS)
    for c_ in ("baseline_count", "candidate_count", "n_paired"):
        df[c_] = df[c_].astype("int64")
    for c_ in ("baseline_mean", "candidate_mean", "delta", "rel_delta", "ci_low", "ci_high"):
        df[c_] = df[c_].astype("float64")
    return df



def _pairs_within(match: np.ndarray, ib: np.ndarray, ic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of one group: positions in ``ib`` and ``ic`` (the group's baseline and
    candidate rows) of the rows whose key both runs hold in this group (a row whose key moved
    to another group, e.g. its label changed, is not a pair here). O(group log group): many
    small groups cost what their rows do."""
    order = np.argsort(ic, kind="stable")
    sorted_ic = ic[order]
    partner = match[ib]
    at = np.minimum(np.searchsorted(sorted_ic, partner), len(ic) - 1)
    pb = np.flatnonzero((partner >= 0) & (sorted_ic[at] == partner))
    return pb, order[at[pb]]


def _rows_interval(rec: dict[str, Any], lb: np.ndarray, lc: np.ndarray, ib: np.ndarray,
                   ic: np.ndarray, pairing: _Pairing, *, confidence: float, boot_limit: int,
                   n_boot: int, rng: Callable[[], np.random.Generator],
                   wb: np.ndarray | None = None, wc: np.ndarray | None = None) -> tuple[float, float]:
    """Interval of the delta of one group from its per-row losses (rows ``ib`` of the
    baseline's ``lb``, ``ic`` of the candidate's ``lc``): paired t-interval when every row has
    its partner, else bootstrap (or Welch above ``boot_limit`` rows). With per-row weights
    ``wb`` / ``wc`` (a weighted run) the delta is of weighted means: paired when every row has
    its partner with the same weight (the weighted mean of the differences,
    :func:`~evalkit.inference.weighted_paired_ci`), else Welch from each side's weighted mean
    and its standard error. Records ``method``, ``ci_method`` and ``n_paired`` in ``rec``."""
    weighted = wb is not None and wc is not None
    if pairing.match is not None and len(ib) == len(ic) and len(ib):
        partner = pairing.match[ib]
        if (partner >= 0).all() and np.array_equal(np.sort(partner), np.sort(ic)):
            d = lc[partner] - lb[ib]
            if not weighted:
                rec.update(method="paired", ci_method="t", n_paired=len(d))
                return paired_ci(d, confidence)
            assert wb is not None and wc is not None
            if np.array_equal(wb[ib], wc[partner]):
                rec.update(method="paired", ci_method="t", n_paired=len(d))
                return weighted_paired_ci(d, wb[ib], confidence)
    xb, xc = lb[ib], lc[ic]
    if pairing.match is not None and not weighted and len(ib) and len(ic):
        # some rows in one run only (ids added or dropped): the rows both runs hold are
        # pairs, the others independent; the delta stays that of the groups' means
        pb, pc = _pairs_within(pairing.match, ib, ic)
        if len(pb) >= 2:
            rec.update(method="partly paired", ci_method="t", n_paired=len(pb))
            return partly_paired_ci(xb, xc, pb, pc, confidence)
    rec["method"] = "unpaired"
    if weighted:
        assert wb is not None and wc is not None
        rec["ci_method"] = "normal"
        mb, sb, nb = weighted_mean_sem(xb, wb[ib])
        mc, sc, nc = weighted_mean_sem(xc, wc[ic])
        return welch_ci(mb, sb * math.sqrt(nb), nb, mc, sc * math.sqrt(nc), nc, confidence)
    if max(len(xb), len(xc)) <= boot_limit:
        rec["ci_method"] = "bootstrap"
        return bootstrap_diff_ci(xb, xc, n_boot=n_boot, rng=rng(), confidence=confidence)
    rec["ci_method"] = "normal"
    return welch_ci(float(xb.mean()), float(xb.std(ddof=1)), len(xb),
                    float(xc.mean()), float(xc.std(ddof=1)), len(xc), confidence)


# -- result -----------------------------------------------------------------------------


def _group_label(row: Mapping[str, Any], cols: Sequence[str]) -> str:
    return key_label([row[c] for c in cols])


@dataclass
class CompareResult:
    """What :func:`compare` produced.

    Attributes
    ----------
    tables:
        Grouping name (``"overall"``, ``"class"``, ``"region"``, ``"split,region"``...) mapped
        to a DataFrame with one row per group: the key columns, ``baseline_count``,
        ``candidate_count`` (int), ``baseline_mean``, ``candidate_mean``, ``delta``
        (candidate - baseline), ``ci_low``, ``ci_high`` (losses in nats), ``rel_delta``
        (a fraction of the baseline mean), ``method``, ``status``, ``n_paired``, ``ci_method``.
    metadata:
        Provenance of both runs and of the comparison (settings, config hash, timings).
    gates:
        The gates that were checked (from ``config`` / ``gates``), ``{}`` if none.
    failures:
        The failed gates (empty when all passed or none were given).
    unchecked:
        Gates that could not be checked (a group in one run only, a ``min_count`` that leaves
        no group): noted, not failed, unless the gates set ``fail_unchecked: true`` (then they
        are in ``failures``); ``compare.json`` ``gates.not_checked``.
    gate_note:
        Why nothing was checked although a gates block was given (it holds no gate compare
        checks: :func:`evalkit.gates.gates_note`), else None; also in ``compare.json``
        (``gates.note``), the notes of ``compare.md`` and warned on stderr.
    """

    tables: dict[str, pd.DataFrame]
    metadata: dict[str, Any]
    gates: dict[str, Any] = field(default_factory=dict)
    failures: list[GateFailure] = field(default_factory=list)
    gate_note: str | None = None
    unchecked: list[GateFailure] = field(default_factory=list)
    _candidate: Any = field(default=None, repr=False)
    _sources: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @property
    def passed(self) -> bool:
        """No gate failed."""
        return not self.failures

    @property
    def candidate(self) -> Any:
        """The candidate's statistics (``.overall``, ``.groups``), for evaluate-style gates."""
        return self._candidate

    def table(self, name: str) -> pd.DataFrame:
        """The comparison table of one grouping."""
        if name not in self.tables:
            raise UsageError(f"no grouping {name!r}; groupings are: {', '.join(self.tables)}")
        return self.tables[name]

    @property
    def regressions(self) -> pd.DataFrame:
        """Every group whose interval lies above zero, across groupings (``grouping``,
        ``group`` label columns first), largest delta first."""
        parts = []
        for name, df in self.tables.items():
            cols = _grouping_columns(name)
            sub = df[df["status"] == "regression"]
            if sub.empty:
                continue
            labels = [_group_label(r, cols) for r in sub.to_dict("records")]
            parts.append(sub[TABLE_COLUMNS].assign(grouping=name, group=labels))
        if not parts:
            return pd.DataFrame(columns=["grouping", "group", *TABLE_COLUMNS])
        out = pd.concat(parts, ignore_index=True)
        out = out[["grouping", "group", *TABLE_COLUMNS]]
        return out.sort_values("delta", ascending=False, kind="stable").reset_index(drop=True)

    def check_gates(self, gates: Mapping[str, Any] | None) -> list[GateFailure]:
        """Check ``gates`` (see :func:`evalkit.gates.check_compare_gates`) without storing them."""
        from .gates import check_compare_gates

        return check_compare_gates(self, gates)

    def counts(self) -> dict[str, int]:
        """How many groups have each status, over all groupings."""
        out = dict.fromkeys(STATUS_ORDER, 0)
        for df in self.tables.values():
            for s, n in df["status"].value_counts().items():
                out[str(s)] = out.get(str(s), 0) + int(n)
        return out

    def gates_record(self) -> dict[str, Any]:
        """The gates as ``compare.json`` holds them (:func:`evalkit.gates.gates_record`, the
        shape of summary.json and history.json too)."""
        from .gates import gates_record

        return gates_record("compare", self.gates, self.gate_note, self.failures, self.unchecked)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (what ``compare.json`` holds)."""
        from .report import frame_records

        return {
            "metadata": self.metadata,
            "gates": self.gates_record(),
            "summary": self.counts(),
            "tables": {name: frame_records(_sorted_for_reading(df)) for name, df in self.tables.items()},
        }

    def to_markdown(self) -> str:
        """The human report (what ``compare.md`` holds): gates, regressions first."""
        return _render_markdown(self)

    def write(self, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``compare.md``, ``compare.json`` and one Parquet table per grouping
        (``overall.parquet``, ``by_region.parquet``...) into ``out_dir`` atomically."""
        import pyarrow as pa

        from .io import write_table, write_text
        from .outdir import AtomicDir, check_out_apart

        check_out_apart(out_dir, self._sources)
        atomic = AtomicDir(out_dir, overwrite=overwrite, command="compare", result=self)
        with atomic as tmp:
            for name, df in self.tables.items():
                write_table(pa.Table.from_pandas(df, preserve_index=False),
                            tmp / f"{_file_stem(name)}.parquet")
            write_text(self.to_markdown(), tmp / "compare.md")
            atomic.write_summary(self.to_dict(), "compare.json")
            return atomic.commit()


# -- entry point ------------------------------------------------------------------------


def _check_match(b: _Run, c: _Run, allow: bool) -> tuple[list[str], list[str]]:
    """Refuse runs with different eps or classes (unless allowed); note other differences."""
    mismatches: list[str] = []
    eb, ec = b.metadata.get("eps"), c.metadata.get("eps")
    if eb is not None and ec is not None and not math.isclose(float(eb), float(ec), rel_tol=1e-12, abs_tol=0.0):
        mismatches.append(f"eps differs: baseline {float(eb):g}, candidate {float(ec):g}")
    kb, kc = b.metadata.get("classes"), c.metadata.get("classes")
    if kb is not None and kc is not None and set(map(str, kb)) != set(map(str, kc)):
        only_b = sorted(set(map(str, kb)) - set(map(str, kc)))
        only_c = sorted(set(map(str, kc)) - set(map(str, kb)))
        mismatches.append(
            f"class sets differ: baseline {list(map(str, kb))}, candidate {list(map(str, kc))}"
            + (f" (only in baseline: {', '.join(only_b)})" if only_b else "")
            + (f" (only in candidate: {', '.join(only_c)})" if only_c else ""))
    wb, wc = _weight_of(b.metadata), _weight_of(c.metadata)
    if wb != wc:
        mismatches.append(
            f"weights differ: baseline {_weighing(wb)}, candidate {_weighing(wc)} (a weighted and an "
            "unweighted mean are not the same statistic; with the mismatch allowed the unweighted "
            "means are compared)")
    if mismatches and not allow:
        raise CompareError(
            f"cannot compare {b.source} with {c.source}: " + "; ".join(mismatches)
            + f". Losses on different terms are not comparable; pass {option('allow_mismatch', True)} "
              "to compare anyway")
    notes = []
    for key in ("sum_tol", "renormalize"):
        vb, vc = b.metadata.get(key), c.metadata.get(key)
        if vb is not None and vc is not None and vb != vc:
            notes.append(f"{key} differs: baseline {vb}, candidate {vc}")
    return mismatches, notes


def _weighing(weight: str | None) -> str:
    return f"weighted by column {weight!r}" if weight else "unweighted"


def compared_weight(b: _Run, c: _Run) -> str | None:
    """The weight column whose weighted means compare compares: the one both runs were
    evaluated with, else None (unweighted means)."""
    wb, wc = _weight_of(b.metadata), _weight_of(c.metadata)
    return wb if wb == wc else None


def compare(
    baseline: Any,
    candidate: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
    allow_mismatch: bool = False,
    config: Any = None,
    gates: Mapping[str, Any] | None = None,
    pair_on: Sequence[str] | str | None = None,
    boot_limit: int = DEFAULT_BOOT_LIMIT,
) -> CompareResult:
    """Compare a candidate run against a baseline, group by group.

    Parameters
    ----------
    baseline, candidate:
        ``evaluate`` report directories (holding ``summary.json``), :class:`EvalResult`
        objects, or prediction inputs (path, DataFrame...) evaluated on the fly with ``config``.
    out:
        Write the report there (``compare.md``, ``compare.json``, Parquet tables).
    seed, n_boot:
        Bootstrap seed and resample count (unpaired groups); results are deterministic.
    confidence:
        Level of the delta intervals (default 0.95).
    allow_mismatch:
        Compare runs whose eps or class set differ (refused with CompareError otherwise).
    config:
        An :class:`EvalConfig`, a config file or a mapping: evaluates prediction inputs, and
        its ``gates`` are checked (unless ``gates`` is given).
    gates:
        Gates to check (see :mod:`evalkit.gates`); failures are in ``result.failures``.
    pair_on:
        Key column(s) to pair rows on (default: the keys both runs recorded, e.g. ``id``);
        ``[]`` never pairs.
    boot_limit:
        Above this many rows on a side, an unpaired group uses the normal approximation.

    Returns
    -------
    CompareResult
        One table per grouping: each group's mean loss in both runs and ``delta`` =
        candidate - baseline (nats; ``rel_delta`` a fraction of the baseline mean) with its
        interval: a paired t-interval of the per-row loss differences when both runs hold the
        same keys (Student 1908), else the percentile interval of a seeded bootstrap of the
        difference of means (Efron and Tibshirani 1993), or Welch's normal interval above
        ``boot_limit`` rows (Welch 1947).

    Raises
    ------
    CompareError
        Runs whose eps or class set differ (unless ``allow_mismatch``), or nothing in common
        to compare (exit code 3 at the CLI).
    ReportError
        A directory that is not a readable evaluate report, or was edited since evalkit wrote
        it (exit code 3).
    UsageError / ConfigError
        Bad settings or gates (exit code 2).
    InputError and subclasses
        A prediction input evaluated on the fly fails as in :func:`evalkit.evaluate`.
    OutputError
        ``out`` cannot be written (exit code 4).
    """
    started = time.time()
    t0 = time.perf_counter()
    sources = _compare_sources(baseline, candidate, config)
    if out is not None:
        from .outdir import check_out_apart

        check_out_apart(out, sources)
    typed = check_compare_settings({"seed": seed, "n_boot": n_boot, "confidence": confidence, "pair_on": pair_on,
                                    "allow_mismatch": allow_mismatch, "boot_limit": boot_limit})
    seed, n_boot, allow_mismatch, boot_limit = (typed[k] for k in ("seed", "n_boot", "allow_mismatch",
                                                                  "boot_limit"))
    cfg = _coerce_config(config) if config is not None else None
    gates, gate_note = _resolve_gates(gates, cfg)
    with contextlib.ExitStack() as held:  # the runs' per-row files, open until rows are read
        b = _load_run(baseline, "baseline", cfg)
        if b is not baseline:  # a run the caller passed in stays the caller's to close
            held.callback(b.close)
        c = _load_run(candidate, "candidate", cfg)
        if c is not candidate:
            held.callback(c.close)
        mismatches, notes = _check_match(b, c, allow_mismatch)
        side_notes = [(r, f"{r.role} ({r.source}): "
                          f"{one_side_advice(w, r.role, recorded=r.kind != 'evaluated')}")
                      for r in (b, c) for w in r.metadata.get("warnings") or ()]
        for r, text in side_notes:  # an evaluated input warned as it ran; a report's are on file
            if r.kind != "evaluated":
                warnings.warn(EvalkitWarning(f"{text} (recorded when that run was evaluated)"), stacklevel=2)
        notes += [render_options(text, cli=None) for _, text in side_notes]
        common = [g for g in b.groupings if g in c.groupings]
        keys, reason = _pair_keys(b, c, pair_on)
        b_rows, c_rows = _load_rows(b, c, common, keys, check_keys=pair_on is not None)
    weight = compared_weight(b, c)
    pairing = _pairing(b_rows, c_rows, keys, reason, weight)
    tables = {
        name: _compare_grouping(name, b, c, b_rows, c_rows, pairing, seed=int(seed), n_boot=int(n_boot),
                                confidence=confidence, boot_limit=boot_limit, weight=weight)
        for name in common
    }
    for name in common:
        for note in _kind_differences(name, b.stats(name), c.stats(name), _grouping_columns(name)):
            warnings.warn(EvalkitWarning(note), stacklevel=2)  # on stderr too, as history says it
            notes.append(note)
    settings = {"seed": int(seed), "n_boot": int(n_boot), "confidence": confidence,
                "boot_limit": int(boot_limit), "allow_mismatch": bool(allow_mismatch),
                "pair_on": None if pair_on is None else list(keys)}
    metadata = _compare_metadata(b, c, cfg, tables, settings, gates, pairing, started)
    metadata["statistic"], metadata["weight"] = ("weighted_mean" if weight else "mean"), weight
    metadata.update(mismatches=mismatches, notes=notes + ([gate_note] if gate_note else []))
    result = CompareResult(tables=tables, metadata=metadata, gates=gates, gate_note=gate_note,
                           _candidate=_CandidateView(c.overall, c.groups), _sources=sources)
    if gates:
        from .gates import check_compare_gates

        found = check_compare_gates(result, gates)
        result.failures = [f for f in found if f.failed]
        result.unchecked = [f for f in found if not f.failed]
    metadata["duration_s"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        result.write(out, overwrite=overwrite)
    return result


def _resolve_gates(gates: Mapping[str, Any] | None, cfg: Any) -> tuple[dict[str, Any], str | None]:
    """The gates to check: ``gates`` if given (compare's gates only), else the config's
    (shared by the three commands); validated (:func:`evalkit.gates.gates_for`). With the
    note (warned) when the block given holds no gate compare checks (then no gates)."""
    from .gates import gates_for, gates_note

    if gates is not None:
        source = "compare(gates=...)"
        checked = gates_for("compare", gates, shared=False, source=source)
    else:
        source, gates = "gates", cfg.gates if cfg is not None else None
        empty_in = getattr(cfg, "gates_empty_in", None)  # an empty gates: key, noted the same way
        checked = gates_for("compare", gates, shared=True, empty_in=empty_in)
        if not gates:
            return checked, gates_note("compare", gates, source, empty_in=empty_in)
    return checked, (gates_note("compare", gates, source) if gates and not checked else None)


def _pair_keys(b: _Run, c: _Run, pair_on: Sequence[str] | str | None) -> tuple[tuple[str, ...], str]:
    """The row keys to pair on (``pair_on``, else the keys both runs recorded) and, when
    there are none, why the comparison is unpaired."""
    if pair_on is not None:
        keys = (pair_on,) if isinstance(pair_on, str) else tuple(pair_on)
        return keys, "pairing disabled: unpaired" if not keys else ""
    keys = b.row_keys if b.row_keys == c.row_keys else ()
    if keys:
        return keys, ""
    if not b.row_keys and not c.row_keys:
        return (), "no row key column recorded in the runs (e.g. id): unpaired"
    return (), (f"the runs record different row keys ({', '.join(b.row_keys) or 'none'} vs "
                f"{', '.join(c.row_keys) or 'none'}): unpaired")


def _load_rows(b: _Run, c: _Run, common: Sequence[str], keys: tuple[str, ...], *,
               check_keys: bool) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Per-row data of both runs, only the columns needed (group columns, row keys, loss);
    None for a run without per-row output. With ``check_keys`` (explicit ``pair_on``), a
    missing key column is a :class:`~evalkit.errors.UsageError`."""
    weight = compared_weight(b, c)
    need = list(dict.fromkeys([rows_column(col) for g in common for col in _grouping_columns(g)]
                              + list(keys) + ["loss"] + ([rows_column(weight)] if weight else [])))
    b_rows = b.rows_loader(need) if b.rows_loader is not None else None
    c_rows = c.rows_loader(need) if c.rows_loader is not None else None
    if check_keys and keys and b_rows is not None and c_rows is not None:
        for role, rows in (("baseline", b_rows), ("candidate", c_rows)):
            missing = [k for k in keys if k not in rows.columns]
            if missing:
                raise UsageError(f"pair_on: {role} per-row output has no column(s) {', '.join(missing)}")
    return b_rows, c_rows


def _compare_metadata(b: _Run, c: _Run, cfg: Any, tables: Mapping[str, pd.DataFrame],
                      settings: dict[str, Any], gates: dict[str, Any], pairing: _Pairing,
                      started: float) -> dict[str, Any]:
    """Provenance of both runs and of the comparison (``compare.json["metadata"]``);
    ``mismatches``, ``notes`` and the final ``duration_s`` are filled in by the caller."""
    methods: dict[str, int] = {}
    for df in tables.values():
        for m, n in df["method"].value_counts().items():
            methods[str(m)] = methods.get(str(m), 0) + int(n)
    config_blob = {"settings": settings, "gates": gates,
                   "eval_config_hash": cfg.digest() if cfg is not None else None}
    return {
        "evalkit_version": __version__,
        "created": _dt.datetime.fromtimestamp(started, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": 0.0,
        "baseline": b.provenance(),
        "candidate": c.provenance(),
        "eps": b.metadata.get("eps"),
        "classes": b.metadata.get("classes"),
        "settings": settings,
        "config_file": getattr(cfg, "source_file", None),
        "config": cfg.to_dict() if cfg is not None else None,
        "config_hash": hashlib.sha256(json.dumps(config_blob, sort_keys=True, default=str).encode()).hexdigest()[:16],
        "pairing": {"keys": list(pairing.keys), "reason": pairing.reason,
                    "unpaired_baseline_rows": pairing.alone[0], "unpaired_candidate_rows": pairing.alone[1]},
        "methods": methods,
        "groupings": [g for g in b.groupings if g in c.groupings],
        "groupings_only_in_baseline": [g for g in b.groupings if g not in c.groupings],
        "groupings_only_in_candidate": [g for g in c.groupings if g not in b.groupings],
    }


def _compare_sources(baseline: Any, candidate: Any, config: Any) -> tuple[tuple[str, Any], ...]:
    out: list[tuple[str, Any]] = [("baseline", baseline), ("candidate", candidate)]
    if isinstance(config, str | os.PathLike):
        out.append(("config file", config))
    elif getattr(config, "source_file", None):
        out.append(("config file", config.source_file))
    return tuple(out)


@dataclass
class _CandidateView:
    """The candidate's grouped statistics, shaped like an EvalResult for evaluate gates."""

    overall: pd.Series
    groups: dict[str, pd.DataFrame]

    def table(self, name: str) -> pd.DataFrame:
        if name == "overall":
            return self.overall.to_frame().T.reset_index(drop=True).infer_objects()
        return self.groups[name]


__all__ = ["CompareResult", "compare", "file_provenance", "is_report_dir", "paired_ci",
           "bootstrap_diff_ci", "welch_ci", "t_quantile"]
