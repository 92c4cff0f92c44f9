"""Slice search: the value combinations of some columns whose mean loss is significantly worse.

For slice columns ``C1..Cc`` and a depth ``d`` (1, 2 or 3), every combination of up to ``d``
columns is a *slice set*, and each distinct value tuple of a set is a *slice*
(``region=EU``, ``region=EU, device=ios``...). :class:`SliceStats` accumulates count, weight
sums, mean, M2 and M3 per slice in one streaming pass (mergeable like every accumulator);
:func:`assess_slices` then tests each slice against its complement (all other rows) with
Welch's t-test from those moments, corrected for the skewness of the loss (Johnson 1978,
Hall 1992: plain Welch is liberal on right-skewed losses), a slice below the rest being
tested at no less than the rest's variance (:func:`_claim_variance`: no false "better"
claims on heavy-tailed losses), and controls the false discovery rate over all slices
tested with Benjamini-Hochberg. Slices holding exactly the rows of an earlier slice are
not tested again (:func:`_same_rows_as`). With weights, means are weighted and
the test uses Kish's effective sample sizes.

Sources:

* Chung, Kraska, Polyzotis, Tae, Whang, "Automated Data Slicing for Model Validation: A Big
  Data - AI Integration Approach", ICDE 2019 (SliceFinder): slices as conjunctions of
  feature values, tested against their complement; effect size
  ``phi = sqrt(2) (mean_s - mean_c) / sqrt(var_s + var_c)``.
* Sagadeeva & Boehm, "SliceLine: Fast, Linear-Algebra-based Slice Finding for ML Model
  Debugging", SIGMOD 2021: enumeration of slices by lattice level with size pruning
  (here: ``min_count`` and a cap of distinct slices per set).
* Welch, Biometrika 34 (1947); Johnson, JASA 73 (1978); Hall, JRSS B 54 (1992);
  Benjamini & Hochberg, JRSS B 57 (1995); Kish, *Survey Sampling* (1965).

Memory is bounded: a slice set whose number of distinct slices exceeds ``max_slices`` is
dropped (and reported as capped); the decision depends only on the total number of
distinct values, so it is the same under any batching or merge order.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..escape import fmt_key, narrow_float_keys
from .keys import _KeyIndex, canonical_keys, pandas_key_column
from .weightscale import WeightScale, shift_sums

DEFAULT_DEPTH = 2
DEFAULT_MIN_COUNT = 30
DEFAULT_Q = 0.05
DEFAULT_MAX_SLICES = 10_000
MAX_SLICE_COLUMNS = 8
#: How the report names the test (Welch with Hall's skewness correction).
TEST_NAME = "skewness-corrected Welch t-test"


def slice_sets(columns: Sequence[str], depth: int) -> list[tuple[str, ...]]:
    """Every combination of 1..``depth`` of ``columns``, in lattice order."""
    if depth not in (1, 2, 3):
        raise ValueError(f"slice depth must be 1, 2 or 3, got {depth!r}")
    cols = list(dict.fromkeys(columns))
    return [combo for r in range(1, min(depth, len(cols)) + 1)
            for combo in itertools.combinations(cols, r)]


#: Per-slice arrays of :class:`_Moments`: row count, sums of w, w^2, w^3 (weights; all equal
#: to the count when unweighted), weighted mean and central moments M2, M3 of the loss, and
#: ``rowhash``: the sum modulo 2**64 of the slice's row fingerprints (:func:`row_fingerprints`).
_ARRAYS = ("count", "wsum", "w2sum", "w3sum", "mean", "m2", "m3", "rowhash")
#: The moments proper (what the test reads).
_MOMENTS = _ARRAYS[:-1]
_DTYPES = {"count": np.int64, "rowhash": np.uint64}
#: Bits per half of a row fingerprint: a float64 bincount of up to 2**(53 - 26) rows adds
#: 26-bit integers exactly.
_HALF_BITS = 26
_EXACT_ROWS = 1 << (53 - _HALF_BITS)


def row_fingerprints(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 52-bit pseudo-random fingerprint of each global row position (SplitMix64 finaliser,
    Steele, Lea & Flood 2014), as its low and high 26-bit halves in float64 (exact).

    The sum of a slice's fingerprints modulo 2**64 (``rowhash``) names its row set: two slices
    holding the same rows have the same sum under any batching or merge order (integer sums
    are exact), and two different row sets of the same size share it with probability about
    2**-52."""
    z = np.asarray(rows, dtype=np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = (z ^ (z >> np.uint64(31))) >> np.uint64(64 - 2 * _HALF_BITS)
    mask = np.uint64((1 << _HALF_BITS) - 1)
    return (z & mask).astype(np.float64), (z >> np.uint64(_HALF_BITS)).astype(np.float64)


class _Moments:
    """Count, weight sums, mean, M2 and M3 per key of one slice set, combined pairwise
    (Chan et al. for M2; Pebay, SAND2008-6212, for M3; with weights as the sizes)."""

    __slots__ = ("index", *_ARRAYS)

    def __init__(self, key_names: Sequence[str]):
        self.index = _KeyIndex(key_names, dict_order_keys=())
        for name in _ARRAYS:
            setattr(self, name, np.zeros(0, dtype=_DTYPES.get(name, np.float64)))

    def _grow(self, g: int) -> None:
        old = len(self.count)
        if g <= old:
            return
        cap = max(g, 2 * old, 16)
        for name in _ARRAYS:
            arr = getattr(self, name)
            new = np.zeros(cap, dtype=arr.dtype)
            new[:old] = arr
            setattr(self, name, new)

    def _combine(self, slots: np.ndarray, b: Mapping[str, np.ndarray]) -> None:
        wa, wb = self.wsum[slots], b["wsum"]
        tot = wa + wb
        delta = b["mean"] - self.mean[slots]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(tot > 0, wb / np.where(tot > 0, tot, 1.0), 0.0)
            inv = np.where(tot > 0, 1.0 / np.where(tot > 0, tot, 1.0), 0.0)
        m2a = self.m2[slots]
        self.m3[slots] += (b["m3"] + delta ** 3 * wa * frac * (wa - wb) * inv
                           + 3.0 * delta * (wa * b["m2"] - wb * m2a) * inv)
        self.m2[slots] = m2a + b["m2"] + delta * delta * wa * frac
        self.mean[slots] += delta * frac
        self.wsum[slots] = tot
        for name in ("count", "w2sum", "w3sum", "rowhash"):  # (rowhash: modulo 2**64)
            getattr(self, name)[slots] += b[name]

    def update(self, keys: Sequence[pa.Array], loss: np.ndarray, weight: np.ndarray | None,
               prints: tuple[np.ndarray, np.ndarray]) -> None:
        n = len(loss)
        local, slots = self.index.encode(keys, n)
        self._grow(len(self.index))
        k = len(slots)
        b = {"count": np.bincount(local, minlength=k), "rowhash": np.zeros(k, dtype=np.uint64)}
        for start in range(0, n, _EXACT_ROWS):
            part = slice(start, start + _EXACT_ROWS)
            lo, hi = (np.bincount(local[part], weights=h[part], minlength=k).astype(np.uint64)
                      for h in prints)
            b["rowhash"] += lo + (hi << np.uint64(_HALF_BITS))
        if weight is None:
            b["wsum"] = b["w2sum"] = b["w3sum"] = b["count"].astype(np.float64)
            s = np.bincount(local, weights=loss, minlength=k)
        else:
            b["wsum"] = np.bincount(local, weights=weight, minlength=k)
            b["w2sum"] = np.bincount(local, weights=weight * weight, minlength=k)
            b["w3sum"] = np.bincount(local, weights=weight * weight * weight, minlength=k)
            s = np.bincount(local, weights=weight * loss, minlength=k)
        w = b["wsum"]
        b["mean"] = np.where(w > 0, s / np.where(w > 0, w, 1.0), 0.0)
        dev = loss - b["mean"][local]
        wdev2 = dev * dev if weight is None else weight * dev * dev
        b["m2"] = np.bincount(local, weights=wdev2, minlength=k)
        b["m3"] = np.bincount(local, weights=wdev2 * dev, minlength=k)
        present = b["count"] > 0
        self._combine(slots[present], {name: v[present] for name, v in b.items()})

    def merge(self, other: _Moments) -> _Moments:
        new = _Moments.__new__(_Moments)
        new.index = self.index.copy()
        g = len(self.index)
        for name in _ARRAYS:
            setattr(new, name, getattr(self, name)[:g].copy())
        remap = new.index.merge_from(other.index)
        new._grow(len(new.index))
        go = len(other.index)
        present = other.count[:go] > 0
        new._combine(remap[present], {name: getattr(other, name)[:go][present] for name in _ARRAYS})
        return new

    #: Power of the weight in each array (see :mod:`evalkit.aggregate.weightscale`).
    _POWERS = {"wsum": 1, "w2sum": 2, "w3sum": 3, "m2": 1, "m3": 1}

    def rescale(self, k: int) -> None:
        """Multiply every weight by ``2**k`` (exact): sums of w and the weighted M2 / M3 by
        ``2**k``, of w^2 by ``2**2k``, of w^3 by ``2**3k``; means do not change."""
        shift_sums({name: getattr(self, name) for name in self._POWERS}, self._POWERS, k)

    def __getstate__(self) -> dict[str, Any]:
        g = len(self.index)
        return {"index": self.index, **{name: getattr(self, name)[:g].copy() for name in _ARRAYS}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


class SliceStats:
    """Mergeable per-slice moments of the loss for every slice set of ``columns``.

    ``update()`` takes the batch's slice columns (Arrow arrays, by name), the per-row loss
    and optionally per-row weights (finite, >= 0); each column is dictionary-encoded once per
    batch and shared by all its sets. Null (and NaN) is a value like any other (shown as
    ``∅``). With weights, the means and central moments are weighted and the sums of
    ``w``, ``w^2`` and ``w^3`` are kept for Kish's effective size and the skewness correction.
    """

    def __init__(self, columns: Sequence[str], depth: int = DEFAULT_DEPTH,
                 max_slices: int = DEFAULT_MAX_SLICES, *, weighted: bool = False):
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
        self.weighted = bool(weighted)
        self.sets = slice_sets(cols, depth)
        self._acc: dict[tuple[str, ...], _Moments | None] = {s: _Moments(s) for s in self.sets}
        # Distinct values seen per capped set (at least; counting stops when it is dropped).
        self.capped: dict[tuple[str, ...], int] = {}
        # Weights are stored times 2**-scale.exp (the binary exponent of the largest weight
        # seen), so sums of w^2 and w^3 neither overflow (1e308) nor underflow (1e-300)
        # whatever the weights' scale (:mod:`evalkit.aggregate.weightscale`).
        self.scale = WeightScale()

    def update(self, columns: Mapping[str, pa.Array | pa.ChunkedArray], loss: np.ndarray,
               weight: np.ndarray | None = None, *, rows: np.ndarray) -> None:
        """Add one batch: ``columns`` maps each slice column to its row-aligned values;
        ``weight`` (row-aligned, or None for unweighted) must be the same kind for every batch;
        ``rows`` are the rows' global positions in the input (distinct across all batches and
        partitions: they name each slice's row set, see :func:`row_fingerprints`)."""
        loss = np.asarray(loss, dtype=np.float64).reshape(-1)
        if len(rows) != len(loss):
            raise ValueError(f"rows has {len(rows)} positions for {len(loss)} losses")
        if (weight is not None) != self.weighted:
            raise ValueError("weights must be given for every batch of a weighted SliceStats "
                             "and for none of an unweighted one")
        if len(loss) == 0:
            return
        if weight is not None:
            weight = np.asarray(weight, dtype=np.float64).reshape(-1)
            shift = self.scale.observe(weight)
            if shift:
                for acc in self._acc.values():
                    if acc is not None:
                        acc.rescale(shift)
            weight = self.scale.scale(weight)
        live = [s for s in self.sets if self._acc[s] is not None]
        if not live:  # every set already over the limit: nothing left to encode
            return
        encoded: dict[str, pa.Array] = {}
        exact: dict[str, bool] = {}  # the dictionary holds only values present in the batch
        for c in dict.fromkeys(c for s in live for c in s):
            col = columns[c]
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            exact[c] = not pa.types.is_dictionary(col.type)
            # NaN in a float column is the same missing key as null (as in every grouped table).
            encoded[c] = pc.dictionary_encode(canonical_keys(col)) if exact[c] else col
        prints = row_fingerprints(rows)
        for s in live:
            acc = self._acc[s]
            if acc is None:  # dropped above with a subset of its columns
                continue
            # A batch alone can show that a set is too big (a combination has at least as many
            # distinct values as each of its columns): no need to encode it.
            lower = max((len(encoded[c].dictionary) for c in s if len(s) == 1 or exact[c]), default=0)
            if lower > self.max_slices:
                self._drop(s, lower)
                continue
            acc.update([encoded[c] for c in s], loss, weight, prints)
            if len(acc.index) > self.max_slices:
                self._drop(s, len(acc.index))

    def _drop(self, s: tuple[str, ...], seen: int) -> None:
        """Stop accumulating set ``s`` (over the limit with at least ``seen`` slices) and every
        set holding its columns: its combinations are at least as many."""
        for t in self.sets:
            if self._acc.get(t) is not None and set(s) <= set(t):
                self._acc[t] = None
                self.capped[t] = max(self.capped.get(t, 0), seen)

    def merge(self, other: SliceStats) -> SliceStats:
        """A new state equal to having seen both inputs' rows; inputs are not modified."""
        mine = (self.columns, self.depth, self.max_slices, self.weighted)
        if (other.columns, other.depth, other.max_slices, other.weighted) != mine:
            raise ValueError("cannot merge SliceStats with different settings")
        new = SliceStats.__new__(SliceStats)
        new.columns, new.depth, new.max_slices, new.weighted = mine
        new.sets = self.sets
        new.capped = dict(self.capped)
        for s, v in other.capped.items():
            new.capped[s] = max(new.capped.get(s, 0), v)
        new._acc = {}
        new.scale = WeightScale(max(self.scale.exp, other.scale.exp))
        for s in self.sets:
            a, b = self._acc[s], other._acc[s]
            if a is not None and b is not None:
                a, b = copy.deepcopy(a), copy.deepcopy(b)
                a.rescale(self.scale.exp - new.scale.exp)
                b.rescale(other.scale.exp - new.scale.exp)
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
        """One row per slice: ``columns``, ``depth``, the slice columns, then ``count``,
        ``wsum``, ``w2sum``, ``w3sum``, ``mean``, ``m2``, ``m3``, ``rowhash`` (see
        :class:`_Moments`). Slice columns keep their type (:func:`_key_column`): null where the
        column is not one of the slice's ``columns``, and also where the slice's value is null.
        Built column-wise: one frame for all sets (pandas per-set frames cost ~10x more)."""
        names: list[np.ndarray] = []
        depth: list[np.ndarray] = []
        keys: dict[str, list[pa.Array | int]] = {c: [] for c in self.columns}
        values: dict[str, list[np.ndarray]] = {name: [] for name in _ARRAYS}
        for s in self.sets:
            acc = self._acc[s]
            g = 0 if acc is None else len(acc.index)
            if acc is None or g == 0:
                continue
            rank = acc.index.sort_rank()
            order = np.empty(g, dtype=np.int64)
            order[rank] = np.arange(g)
            arrays = acc.index.key_arrays(order)
            for c in self.columns:
                keys[c].append(arrays.get(c, g))
            names.append(np.full(g, ",".join(s), dtype=object))
            depth.append(np.full(g, len(s), dtype=np.int64))
            for name in _ARRAYS:
                values[name].append(getattr(acc, name)[:g][order])
        cols: dict[str, Any] = {"columns": pd.Series(np.concatenate(names) if names else [], dtype=object),
                                "depth": pd.Series(np.concatenate(depth) if depth else [], dtype=np.int64)}
        cols.update({c: pandas_key_column(_key_column(parts)) for c, parts in keys.items()})
        cols.update({name: pd.Series(np.concatenate(v) if v else [], dtype=_DTYPES.get(name, np.float64))
                     for name, v in values.items()})
        return pd.DataFrame(cols)

    def total(self) -> dict[str, float] | None:
        """The moments of all rows (same keys as :meth:`moments`' columns), from any one
        uncapped single-column set: its slices partition the rows. None when every
        single-column set is capped (then every set is: pairs have at least as many values)."""
        for s in self.sets:
            acc = self._acc[s]
            if len(s) != 1 or acc is None:
                continue
            g = len(acc.index)
            arr = {name: getattr(acc, name)[:g].astype(np.float64) for name in _MOMENTS}
            w = float(arr["wsum"].sum())
            mean = float((arr["wsum"] * arr["mean"]).sum() / w) if w > 0 else 0.0
            d = arr["mean"] - mean
            return {"count": float(arr["count"].sum()), "wsum": w,
                    "w2sum": float(arr["w2sum"].sum()), "w3sum": float(arr["w3sum"].sum()),
                    "mean": mean,
                    "m2": float((arr["m2"] + arr["wsum"] * d * d).sum()),
                    "m3": float((arr["m3"] + 3.0 * d * arr["m2"] + arr["wsum"] * d ** 3).sum())}
        return None


def _key_column(parts: Sequence[pa.Array | int]) -> pa.Array:
    """One slice column over all slice sets: each set's key values (an Arrow array) or, for a
    set without the column, that many nulls (an int). The column keeps the input's type
    (int32 stays int32, as in ``by_*.parquet`` and ``trends.parquet``); should two sets hold
    it in different types (the type changed between batches), Arrow infers one from the
    values, and text is the last resort."""
    types = {p.type for p in parts if isinstance(p, pa.Array) and not pa.types.is_null(p.type)}
    if len(types) <= 1:
        ty = types.pop() if types else pa.null()
        return pa.concat_arrays([p.cast(ty) if isinstance(p, pa.Array) else pa.nulls(p, ty)
                                 for p in parts]) if parts else pa.array([], ty)
    values = [v for p in parts for v in (p.to_pylist() if isinstance(p, pa.Array) else [None] * p)]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _label(row: Mapping[str, Any], cols: Sequence[str]) -> str:
    parts = []
    for c in cols:
        v = row[c]
        parts.append(f"{c}={fmt_key(v)}")
    return ", ".join(parts)


def assess_slices(stats: SliceStats, *, min_count: int = DEFAULT_MIN_COUNT, q: float = DEFAULT_Q,
                  confidence: float = 0.95,
                  correct_skew: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Test every slice against its complement; returns (table, summary).

    The table has one row per slice: ``slice`` (``region=EU, device=ios``), ``columns``,
    ``depth``, one column per slice column (its value, or null when not part of the set),
    ``count``, ``mean``, ``complement_count``, ``complement_mean``, ``diff`` (slice minus
    complement mean loss, nats), ``ci_low`` / ``ci_high`` (interval of ``diff``), ``t``
    (Welch's statistic; for a slice below the rest, with the variance of
    :func:`_claim_variance`), ``df``, ``p_value`` (two-sided), ``p_adjusted``
    (Benjamini-Hochberg over all slices tested), ``effect_size`` (SliceFinder's ``phi``),
    ``tested``, ``significant`` (``p_adjusted <= q``), ``worse`` (significant with
    ``diff > 0``) and ``duplicate_of`` (the label of an earlier slice holding exactly the same
    rows, see :func:`_same_rows_as`; null for the rest). A slice is tested when it is no
    duplicate and it and its complement both have at least ``min_count`` rows (and at least
    2, and an effective size above 1).

    The slice columns keep their input type; a column is part of a slice exactly when its
    name is one of the slice's ``columns`` (comma-joined, like a grouping's name): null in a
    column of ``columns`` is the null value (``∅`` in ``slice``), null elsewhere means "not
    part of this slice".

    The test is Welch's t-test from the accumulated moments with Hall's (1992) skewness
    correction from the third central moments (:func:`evalkit.inference.welch_test`):
    losses are right-skewed with a long tail, and plain Welch is then liberal
    (``correct_skew=False`` gives plain Welch, for comparison). The complement's moments are
    the total's minus the slice's (exact inverse combination).

    With weights (``stats.weighted``): ``mean``, ``complement_mean`` and ``diff`` are
    weighted means, the variances are the weighted sample variances with the reliability
    correction ``n_eff / (n_eff - 1)``, and ``n_eff`` / ``complement_n_eff`` (Kish,
    ``(sum w)^2 / sum w^2``) replace the counts in the test and the Welch df (as the grouped
    tables' intervals do); ``count`` stays the number of rows (what ``min_count`` counts).
    """
    from ..inference import benjamini_hochberg, welch_test

    m = stats.moments()
    sd = _two_sides(m, stats.total())
    floor = max(int(min_count), 2)
    kept = _same_rows_as(m)
    duplicate = kept >= 0
    with np.errstate(invalid="ignore"):
        enough = (sd["n"] >= floor) & (sd["n_c"] >= floor) & ~duplicate
        tested = enough & (sd["neff"] > 1) & (sd["neff_c"] > 1)
    var, var_c = np.where(tested, sd["var"], np.nan), np.where(tested, sd["var_c"], np.nan)
    skew = ({k: sd[k] for k in ("third1", "third2", "cube1", "cube2")} if correct_skew else {})
    with np.errstate(invalid="ignore", divide="ignore"):
        w = welch_test(sd["neff"], sd["mean"], _claim_variance(sd["mean"], sd["mean_c_test"], var, var_c),
                       sd["neff_c"], sd["mean_c_test"], var_c, confidence, **skew)
    p = np.where(tested, w["p_value"], np.nan)
    adj, reject = benjamini_hochberg(p, q)
    diff = sd["mean"] - sd["mean_c_test"]
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.where(var + var_c > 0, math.sqrt(2.0) * diff / np.sqrt(var + var_c),
                          np.where(diff == 0, 0.0, np.sign(diff) * np.inf))
    names = list(stats.columns)  # (rows keep numpy float32 keys: fmt_key shows 0.1, not 0.10000000149...)
    labels = [_label(dict(zip(names, r, strict=True)), s.split(",")) for r, s in
              zip(narrow_float_keys(m[names], names).itertuples(index=False, name=None), m["columns"], strict=True)]
    cols: dict[str, Any] = {"slice": labels}
    cols.update({c: m[c] for c in ("columns", "depth", *stats.columns, "count")})
    cols.update(mean=sd["mean"], complement_count=sd["n_c"].astype(np.int64), complement_mean=sd["mean_c"])
    if stats.weighted:
        cols.update(n_eff=sd["neff"], complement_n_eff=sd["neff_c"])
    cols["diff"] = diff
    for col in ("ci_low", "ci_high", "t", "df"):
        cols[col] = np.where(tested, w[col], np.nan)
    cols.update(p_value=p, p_adjusted=adj, effect_size=np.where(tested, effect, np.nan),
                tested=tested, significant=reject, worse=reject & (diff > 0))
    cols["duplicate_of"] = pd.Series([labels[k] if k >= 0 else None for k in kept], dtype="str")
    out = pd.DataFrame(cols)
    summary = _summary(stats, out, min_count=min_count, q=q, confidence=confidence)
    summary["skipped_no_weight"] = int((enough & ~tested).sum())
    if not correct_skew:
        summary["test"] = "Welch t-test"
    return out, summary


def _claim_variance(mean: np.ndarray, mean_c: np.ndarray, var: np.ndarray,
                    var_c: np.ndarray) -> np.ndarray:
    """The slice's variance in its test: its own sample variance, except that a slice whose
    mean is below the rest's is given at least the rest's variance.

    Why: with heavy-tailed losses (an accurate model: a few confident mistakes of up to 16
    nats among near-zero losses) a slice that happens to hold few of the mistakes has both a
    low mean and a tiny sample variance, so Welch's test (even corrected for skewness) calls
    it "significantly better" far too often: 18% of null runs in bench/slice_calibration.py
    (43 slices, n = 3000). Under the null the slice is as variable as the rest, whose
    variance is estimated from many more rows; requiring a "better" claim to hold at that
    variance cuts those false alarms to 0% (2% of null runs then report any slice, all of
    them worse; lognormal 3.3%, exponential 1.3%; notes of issue 16). "Worse" claims are
    unchanged: a slice with extra mistakes already has the larger variance. The cost is
    power to call a slice better (not what the search is for), and a longer interval of
    ``diff`` for such slices (the interval stays consistent with the test)."""
    with np.errstate(invalid="ignore"):
        return np.where(mean < mean_c, np.fmax(var, var_c), var)


def _same_rows_as(m: pd.DataFrame) -> np.ndarray:
    """Per slice, the position of the first slice in ``m`` holding exactly the same rows, or
    -1 (none before it does).

    Rule: two slices hold the same rows when they have the same row ``count`` and the same
    ``rowhash`` (the sum modulo 2**64 of a 52-bit fingerprint of each row's global position,
    :func:`row_fingerprints`). Equal row sets always match; different ones of equal size
    match with probability about 2**-52. ``m`` lists shallower slices first (then columns and
    values in order), so the slice kept is the shallowest: ``region=EU, plan=pro`` on a
    constant ``plan`` is ``region=EU`` again, and of two columns that determine each other
    the first named is kept. Such duplicates test the same rows again: they are not tested
    and do not count in the Benjamini-Hochberg family."""
    n = len(m)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = np.column_stack([m["count"].to_numpy().astype(np.uint64), m["rowhash"].to_numpy(np.uint64)])
    _, first, inverse = np.unique(pairs, axis=0, return_index=True, return_inverse=True)
    kept = first[inverse.reshape(-1)]
    return np.where(kept != np.arange(n), kept, -1)


#: Relative rounding level of a complement's M2 (64 ulps of the M2s it is the difference of).
_M2_ROUNDING = 64 * float(np.finfo(np.float64).eps)


def _two_sides(m: pd.DataFrame, tot: dict[str, float] | None) -> dict[str, np.ndarray]:
    """Per slice, both sides of the test from the slice's moments and the total's: row counts
    ``n`` / ``n_c``, Kish sizes ``neff`` / ``neff_c``, means, sample variances (reliability
    weights), third central moments and ``sum w^3 / (sum w)^3`` for the skewness correction.

    A side whose weights are all 0 has no mean (NaN). Differences at the level of float
    rounding are not differences: where ``|mean - mean_c|`` is within ``1e-13`` of the scale
    of the means, ``mean_c_test`` is ``mean`` (so a constant loss never tests significant on
    rounding noise), variances below that level squared are 0, and so is a complement's
    ``M2`` within :data:`_M2_ROUNDING` of the ``M2`` it is the difference of (then ``t`` and
    the effect size are infinite, not ~1e9 from noise, when the means differ)."""
    from ..inference import complement_moments, effective_n

    if tot is None:  # every set capped: nothing to test
        tot = dict.fromkeys(_MOMENTS, 0.0)
    arr = {name: m[name].to_numpy(dtype=np.float64) for name in _MOMENTS}
    wc, mean_c, m2_c, m3_c = complement_moments(arr["wsum"], arr["mean"], arr["m2"], tot["wsum"],
                                                tot["mean"], tot["m2"], m3=arr["m3"],
                                                total_m3=tot["m3"])
    # M2_c = M2_N - M2 - d^2 n n_c / N cancels: its rounding error is a few ulps of M2_N, so
    # a complement whose variance is zero comes out at ~1e-16 M2_N, not 0 (t ~ 1e9).
    m2_c = np.where(m2_c <= _M2_ROUNDING * (abs(float(tot["m2"])) + np.abs(arr["m2"])), 0.0, m2_c)
    w2c, w3c = tot["w2sum"] - arr["w2sum"], tot["w3sum"] - arr["w3sum"]
    neff, neff_c = effective_n(arr["wsum"], arr["w2sum"]), effective_n(wc, w2c)
    mean = np.where(arr["wsum"] > 0, arr["mean"], np.nan)
    mean_c = np.where(wc > 0, mean_c, np.nan)
    noise = 1e-13 * max(abs(float(tot["mean"])), float(np.nanmax(np.abs(mean), initial=0.0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        var = arr["m2"] / arr["wsum"] * neff / (neff - 1)
        var_c = m2_c / wc * neff_c / (neff_c - 1)
        return {"n": arr["count"], "n_c": tot["count"] - arr["count"], "neff": neff, "neff_c": neff_c,
                "mean": mean, "mean_c": mean_c,
                "mean_c_test": np.where(np.abs(mean - mean_c) <= noise, mean, mean_c),
                "var": np.where(var <= noise * noise, 0.0, var),
                "var_c": np.where(var_c <= noise * noise, 0.0, var_c),
                "third1": arr["m3"] / arr["wsum"], "third2": m3_c / wc,
                "cube1": arr["w3sum"] / arr["wsum"] ** 3, "cube2": w3c / wc ** 3}


def _summary(stats: SliceStats, out: pd.DataFrame, *, min_count: int, q: float,
             confidence: float) -> dict[str, Any]:
    """The slice search's summary (``summary.json["slices"]``, the report's count line)."""
    return {
        "columns": list(stats.columns),
        # The depth searched: slice_depth 2 over one column searches single values only.
        "depth": max((len(s) for s in stats.sets), default=0),
        "depth_requested": stats.depth,
        "min_count": int(min_count),
        "q": q,
        "confidence": confidence,
        "test": TEST_NAME,
        "weighted": stats.weighted,
        "slices": int(len(out)),
        "tested": int(out["tested"].sum()),
        "skipped_small": int((~out["tested"] & out["duplicate_of"].isna()).sum()),
        "skipped_duplicate": int(out["duplicate_of"].notna().sum()),
        "significant": int(out["significant"].sum()),
        "significantly_worse": int(out["worse"].sum()),
        "capped": [{"columns": ",".join(s), "distinct_at_least": v, "limit": stats.max_slices}
                   for s, v in sorted(stats.capped.items())],
    }


def worst_slices(table: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The significantly worse slices, largest effect size first (then larger diff, count)."""
    worse = table[table["worse"]]
    return worse.sort_values(["effect_size", "diff", "count"], ascending=[False, False, False],
                             kind="stable").head(top)
