"""Slice search: the value combinations of some columns whose mean loss is significantly worse.

For slice columns ``C1..Cc`` and a depth ``d`` (1, 2 or 3), every combination of up to ``d``
columns is a *slice set*, and each distinct value tuple of a set is a *slice*
(``region=EU``, ``region=EU, device=ios``...). :class:`SliceStats` accumulates count, mean
and M2 per slice in one streaming pass (mergeable like every accumulator); :func:`test_slices`
then tests each slice against its complement (all other rows) with Welch's t-test from those
moments and controls the false discovery rate over all slices tested with Benjamini-Hochberg.

Sources:

* Chung, Kraska, Polyzotis, Tae, Whang, "Automated Data Slicing for Model Validation: A Big
  Data - AI Integration Approach", ICDE 2019 (SliceFinder): slices as conjunctions of
  feature values, tested against their complement; effect size
  ``phi = sqrt(2) (mean_s - mean_c) / sqrt(var_s + var_c)``.
* Sagadeeva & Boehm, "SliceLine: Fast, Linear-Algebra-based Slice Finding for ML Model
  Debugging", SIGMOD 2021: enumeration of slices by lattice level with size pruning
  (here: ``min_count`` and a cap of distinct slices per set).
* Welch, Biometrika 34 (1947); Benjamini & Hochberg, JRSS B 57 (1995).

Memory is bounded: a slice set whose number of distinct slices exceeds ``max_slices`` is
dropped (and reported as capped); the decision depends only on the total number of
distinct values, so it is the same under any batching or merge order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .keys import _KeyIndex

DEFAULT_DEPTH = 2
DEFAULT_MIN_COUNT = 30
DEFAULT_Q = 0.05
DEFAULT_MAX_SLICES = 10_000
MAX_SLICE_COLUMNS = 8


def slice_sets(columns: Sequence[str], depth: int) -> list[tuple[str, ...]]:
    """Every combination of 1..``depth`` of ``columns``, in lattice order."""
    if depth not in (1, 2, 3):
        raise ValueError(f"slice depth must be 1, 2 or 3, got {depth!r}")
    cols = list(dict.fromkeys(columns))
    return [combo for r in range(1, min(depth, len(cols)) + 1)
            for combo in itertools.combinations(cols, r)]


class _Moments:
    """Count, mean and M2 per key of one slice set (Chan et al. combination)."""

    __slots__ = ("index", "count", "mean", "m2")

    def __init__(self, key_names: Sequence[str]):
        self.index = _KeyIndex(key_names, dict_order_keys=())
        self.count = np.zeros(0, dtype=np.int64)
        self.mean = np.zeros(0, dtype=np.float64)
        self.m2 = np.zeros(0, dtype=np.float64)

    def _grow(self, g: int) -> None:
        old = len(self.count)
        if g <= old:
            return
        cap = max(g, 2 * old, 16)
        for name in ("count", "mean", "m2"):
            arr = getattr(self, name)
            new = np.zeros(cap, dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)

    def _combine(self, slots: np.ndarray, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        na = self.count[slots]
        tot = na + n
        delta = mean - self.mean[slots]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(tot > 0, n / np.maximum(tot, 1), 0.0)
        self.mean[slots] += delta * frac
        self.m2[slots] += m2 + delta * delta * na * frac
        self.count[slots] = tot

    def update(self, keys: Sequence[pa.Array], loss: np.ndarray) -> None:
        n = len(loss)
        local, slots = self.index.encode(keys, n)
        self._grow(len(self.index))
        k = len(slots)
        cnt = np.bincount(local, minlength=k)
        s = np.bincount(local, weights=loss, minlength=k)
        mean_b = np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)
        dev = loss - mean_b[local]
        m2 = np.bincount(local, weights=dev * dev, minlength=k)
        present = cnt > 0
        self._combine(slots[present], cnt[present], mean_b[present], m2[present])

    def merge(self, other: _Moments) -> _Moments:
        new = _Moments.__new__(_Moments)
        new.index = self.index.copy()
        g = len(self.index)
        new.count, new.mean, new.m2 = self.count[:g].copy(), self.mean[:g].copy(), self.m2[:g].copy()
        remap = new.index.merge_from(other.index)
        new._grow(len(new.index))
        go = len(other.index)
        present = other.count[:go] > 0
        new._combine(remap[present], other.count[:go][present], other.mean[:go][present],
                     other.m2[:go][present])
        return new

    def __getstate__(self) -> dict[str, Any]:
        g = len(self.index)
        return {"index": self.index, "count": self.count[:g].copy(), "mean": self.mean[:g].copy(),
                "m2": self.m2[:g].copy()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class SliceStats:
    """Mergeable per-slice moments of the loss for every slice set of ``columns``.

    ``update()`` takes the batch's slice columns (Arrow arrays, by name) and the per-row
    loss; each column is dictionary-encoded once per batch and shared by all its sets.
    Null is a value like any other (shown as ``(null)``). Losses are unweighted.
    """

    def __init__(self, columns: Sequence[str], depth: int = DEFAULT_DEPTH,
                 max_slices: int = DEFAULT_MAX_SLICES):
        cols = list(dict.fromkeys(columns))
        if not cols:
            raise ValueError("no slice columns given")
        if len(cols) > MAX_SLICE_COLUMNS:
            raise ValueError(f"at most {MAX_SLICE_COLUMNS} slice columns, got {len(cols)}")
        if max_slices < 1:
            raise ValueError(f"max_slices must be >= 1, got {max_slices!r}")
        self.columns = tuple(cols)
        self.depth = int(depth)
        self.max_slices = int(max_slices)
        self.sets = slice_sets(cols, depth)
        self._acc: dict[tuple[str, ...], _Moments | None] = {s: _Moments(s) for s in self.sets}
        # Distinct values seen per capped set (at least; counting stops when it is dropped).
        self.capped: dict[tuple[str, ...], int] = {}

    def update(self, columns: Mapping[str, pa.Array | pa.ChunkedArray], loss: np.ndarray) -> None:
        """Add one batch: ``columns`` maps each slice column to its row-aligned values."""
        loss = np.asarray(loss, dtype=np.float64).reshape(-1)
        if len(loss) == 0:
            return
        encoded: dict[str, pa.Array] = {}
        for c in self.columns:
            col = columns[c]
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            encoded[c] = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col)
        for s in self.sets:
            acc = self._acc[s]
            if acc is None:
                continue
            # A batch alone can show that a set is too big: no need to encode it.
            lower = max(len(encoded[c].dictionary) if len(s) == 1 else 0 for c in s)
            if lower > self.max_slices:
                self._drop(s, lower)
                continue
            acc.update([encoded[c] for c in s], loss)
            if len(acc.index) > self.max_slices:
                self._drop(s, len(acc.index))

    def _drop(self, s: tuple[str, ...], seen: int) -> None:
        self._acc[s] = None
        self.capped[s] = max(self.capped.get(s, 0), seen)

    def merge(self, other: SliceStats) -> SliceStats:
        """A new state equal to having seen both inputs' rows; inputs are not modified."""
        if (other.columns, other.depth, other.max_slices) != (self.columns, self.depth, self.max_slices):
            raise ValueError("cannot merge SliceStats with different settings")
        new = SliceStats.__new__(SliceStats)
        new.columns, new.depth, new.max_slices, new.sets = self.columns, self.depth, self.max_slices, self.sets
        new.capped = dict(self.capped)
        for s, v in other.capped.items():
            new.capped[s] = max(new.capped.get(s, 0), v)
        new._acc = {}
        for s in self.sets:
            a, b = self._acc[s], other._acc[s]
            if a is None or b is None:
                new._acc[s] = None
                new.capped.setdefault(s, max(len(a.index) if a else 0, len(b.index) if b else 0))
                continue
            merged = a.merge(b)
            if len(merged.index) > self.max_slices:
                new._acc[s] = None
                new.capped[s] = max(new.capped.get(s, 0), len(merged.index))
            else:
                new._acc[s] = merged
        return new

    def moments(self) -> pd.DataFrame:
        """One row per slice: ``columns``, ``depth``, the slice columns, ``count``, ``mean``, ``m2``."""
        frames = []
        for s in self.sets:
            acc = self._acc[s]
            if acc is None:
                continue
            g = len(acc.index)
            if g == 0:
                continue
            rank = acc.index.sort_rank()
            order = np.empty(g, dtype=np.int64)
            order[rank] = np.arange(g)
            keys = acc.index.key_frame(order)
            df = pd.DataFrame({c: keys[c].to_numpy(dtype=object) if c in keys else None
                               for c in self.columns})
            df.insert(0, "depth", len(s))
            df.insert(0, "columns", ",".join(s))
            df["count"] = acc.count[:g][order]
            df["mean"] = acc.mean[:g][order]
            df["m2"] = acc.m2[:g][order]
            frames.append(df)
        if not frames:
            cols = {"columns": pd.Series(dtype=object), "depth": pd.Series(dtype=np.int64)}
            cols.update({c: pd.Series(dtype=object) for c in self.columns})
            cols.update({"count": pd.Series(dtype=np.int64), "mean": pd.Series(dtype=np.float64),
                         "m2": pd.Series(dtype=np.float64)})
            return pd.DataFrame(cols)
        return pd.concat(frames, ignore_index=True)


def _label(row: Mapping[str, Any], cols: Sequence[str]) -> str:
    parts = []
    for c in cols:
        v = row[c]
        parts.append(f"{c}=" + ("(null)" if v is None or (isinstance(v, float) and math.isnan(v))
                                else str(v)))
    return ", ".join(parts)


def assess_slices(stats: SliceStats, total_count: int, total_mean: float, total_m2: float, *,
                min_count: int = DEFAULT_MIN_COUNT, q: float = DEFAULT_Q,
                confidence: float = 0.95) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Test every slice against its complement; returns (table, summary).

    The table has one row per slice: ``slice`` (``region=EU, device=ios``), ``columns``,
    ``depth``, one column per slice column (its value, or null when not part of the set),
    ``count``, ``mean``, ``complement_count``, ``complement_mean``, ``diff`` (slice minus
    complement mean loss, nats), ``ci_low`` / ``ci_high`` (Welch interval of ``diff``),
    ``t``, ``df``, ``p_value`` (two-sided Welch), ``p_adjusted`` (Benjamini-Hochberg over
    all slices tested), ``effect_size`` (SliceFinder's ``phi``), ``tested``,
    ``significant`` (``p_adjusted <= q``) and ``worse`` (significant with ``diff > 0``).
    A slice is tested when it and its complement both have at least ``min_count`` rows
    (and at least 2). ``total_*`` are the moments of all rows (the overall line).
    """
    from ..inference import benjamini_hochberg, complement_moments, welch_test

    m = stats.moments()
    n = m["count"].to_numpy(dtype=np.float64)
    mean = m["mean"].to_numpy(dtype=np.float64)
    m2 = m["m2"].to_numpy(dtype=np.float64)
    nc, mean_c, m2_c = complement_moments(n, mean, m2, float(total_count), total_mean, total_m2)
    floor = max(int(min_count), 2)
    tested = (n >= floor) & (nc >= floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 1, m2 / (n - 1), np.nan)
        var_c = np.where(nc > 1, m2_c / (nc - 1), np.nan)
    w = welch_test(n, mean, var, nc, mean_c, var_c, confidence)
    p = np.where(tested, w["p_value"], np.nan)
    adj, reject = benjamini_hochberg(p, q)
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = math.sqrt(2.0) * (mean - mean_c) / np.sqrt(var + var_c)
    effect = np.where(var + var_c > 0, effect, np.where(mean == mean_c, 0.0, np.sign(mean - mean_c) * np.inf))
    out = m.drop(columns=["m2"])
    out.insert(0, "slice", [_label(r, s.split(","))
                            for r, s in zip(m[list(stats.columns)].to_dict("records"), m["columns"], strict=True)])
    out["complement_count"] = nc.astype(np.int64)
    out["complement_mean"] = mean_c
    out["diff"] = mean - mean_c
    out["ci_low"] = np.where(tested, w["ci_low"], np.nan)
    out["ci_high"] = np.where(tested, w["ci_high"], np.nan)
    out["t"] = np.where(tested, w["t"], np.nan)
    out["df"] = np.where(tested, w["df"], np.nan)
    out["p_value"] = p
    out["p_adjusted"] = adj
    out["effect_size"] = np.where(tested, effect, np.nan)
    out["tested"] = tested
    out["significant"] = reject
    out["worse"] = reject & (out["diff"].to_numpy() > 0)
    summary = {
        "columns": list(stats.columns),
        "depth": stats.depth,
        "min_count": int(min_count),
        "q": q,
        "confidence": confidence,
        "slices": int(len(out)),
        "tested": int(tested.sum()),
        "skipped_small": int((~tested).sum()),
        "significant": int(reject.sum()),
        "significantly_worse": int(out["worse"].sum()),
        "capped": [{"columns": ",".join(s), "distinct_at_least": v, "limit": stats.max_slices}
                   for s, v in sorted(stats.capped.items())],
    }
    return out, summary


def worst_slices(table: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The significantly worse slices, largest effect size first (then larger diff, count)."""
    worse = table[table["worse"]]
    return worse.sort_values(["effect_size", "diff", "count"], ascending=[False, False, False],
                             kind="stable").head(top)
