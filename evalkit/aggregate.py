"""Mergeable per-group accumulators for streaming loss aggregation.

Every accumulator here follows the same life cycle: ``update()`` once per Arrow
record batch, ``merge()`` partial states computed on different batches/workers
(associative and commutative, returns a new object), and ``finalize()`` once
into a :class:`pandas.DataFrame`.  States are plain Python objects holding numpy
arrays, lists, dicts and small Arrow tables, so they pickle cheaply (this is how
the Dask engine ships partition results around).

Per-batch work is vectorised numpy; Python-level loops only run over the
distinct group keys present in a batch, never over rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Confusion", "GroupStats", "LogHistogram", "TopK", "quantile_column_name"]

# Mixed-radix codes must stay well inside int64.
_MAX_RADIX = 1 << 62
# Sentinel for a key column whose Arrow type differed between batches.
_MIXED = "mixed"
# One shared NaN object: dict lookups match NaN keys only by identity (NaN != NaN).
_NAN = float("nan")


def _canon_key(key: tuple) -> tuple:
    if any(isinstance(v, float) and v != v for v in key):
        return tuple(_NAN if isinstance(v, float) and v != v else v for v in key)
    return key


def quantile_column_name(q: float) -> str:
    """Column name for quantile ``q``: 0.5 -> ``"p50"``, 0.999 -> ``"p99.9"``."""
    # round() hides binary noise such as 0.29 * 100 == 28.999999999999996.
    s = repr(round(q * 100.0, 10))
    if s.endswith(".0"):
        s = s[:-2]
    return "p" + s


# --------------------------------------------------------------------------- #
# Log-spaced histogram
# --------------------------------------------------------------------------- #


class LogHistogram:
    """Fixed log-spaced histogram over ``[lo, hi]`` (DDSketch-style).

    Bin ``i`` covers ``[lo * g**i, lo * g**(i+1))`` with ``g = (1+a)/(1-a)``;
    its representative value ``2 * lo * g**(i+1) / (1+g)`` is within relative
    error ``a`` of every value in the bin.  ``a`` is ``rel_err`` shrunk by a
    tiny safety margin so that floating-point rounding in the bin computation
    (a value landing in a neighbouring bin by one ulp) cannot push the error
    above ``rel_err``.

    Values outside ``[lo, hi]`` (and NaN) are clamped into the first/last bin;
    the relative-error guarantee only holds for values inside ``[lo, hi]``.
    """

    def __init__(self, lo: float, hi: float, rel_err: float = 1e-3):
        if not (0.0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"need 0 < lo < hi < inf, got lo={lo!r}, hi={hi!r}")
        if not 0.0 < rel_err < 1.0:
            raise ValueError(f"rel_err must be in (0, 1), got {rel_err!r}")
        self.lo = float(lo)
        self.hi = float(hi)
        self.rel_err = float(rel_err)
        a = self.rel_err * (1.0 - 1e-6)
        self._log_lo = math.log(self.lo)
        self._log_gamma = math.log1p(2.0 * a / (1.0 - a))
        self._inv_log_gamma = 1.0 / self._log_gamma
        # 2 g / (1 + g) == 1 + a, the representative relative to the bin's lower edge.
        self._rep_factor = 1.0 + a
        # Derive n_bins with the same arithmetic bin_index uses, so hi is in the last bin.
        self.n_bins = int(math.floor((math.log(self.hi) - self._log_lo) * self._inv_log_gamma)) + 1

    @classmethod
    def for_eps(cls, eps: float, rel_err: float = 1e-3) -> LogHistogram:
        """Histogram covering the clipped cross-entropy range for clip level ``eps``.

        ``lo = -log1p(-eps)`` (loss at p = 1 - eps), ``hi = -log(eps)`` (loss at p = eps).
        """
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
        return cls(-math.log1p(-eps), -math.log(eps), rel_err)

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """int64 bin of each value; out-of-range values are clamped into the first/last bin."""
        x = np.asarray(values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.log(x)
        f -= self._log_lo
        f *= self._inv_log_gamma
        np.floor(f, out=f)
        # fmax/fmin (not clip) so NaN and -inf from log(<=0) land in bin 0.
        np.fmax(f, 0.0, out=f)
        np.fmin(f, self.n_bins - 1, out=f)
        return f.astype(np.int64)

    def bin_value(self, idx: np.ndarray) -> np.ndarray:
        """Representative value of each bin: ``|rep - x| <= rel_err * x`` for every x in the bin."""
        i = np.asarray(idx, dtype=np.float64)
        return np.exp(self._log_lo + i * self._log_gamma) * self._rep_factor

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LogHistogram)
            and (self.lo, self.hi, self.rel_err) == (other.lo, other.hi, other.rel_err)
        )

    def __hash__(self) -> int:
        return hash((self.lo, self.hi, self.rel_err))

    def __repr__(self) -> str:
        return f"LogHistogram(lo={self.lo!r}, hi={self.hi!r}, rel_err={self.rel_err!r}, n_bins={self.n_bins})"


# --------------------------------------------------------------------------- #
# Group key index (shared by GroupStats and TopK)
# --------------------------------------------------------------------------- #


def _as_array(col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            col = col.unify_dictionaries()
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if isinstance(col, pa.Array):
        return col
    return pa.array(col)


def _densify(code: np.ndarray, radix: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map codes in ``[0, radix)`` to dense ``[0, k)`` in code order; returns (local, uniq)."""
    if radix <= max(4 * n, 1 << 12):
        present = np.flatnonzero(np.bincount(code, minlength=radix))
        lut = np.empty(radix, dtype=np.int64)
        lut[present] = np.arange(len(present))
        return lut[code], present
    uniq, local = np.unique(code, return_inverse=True)
    return local.reshape(-1), uniq


def _pandas_column(arr: pa.Array) -> pd.Series:
    t = arr.type
    if arr.null_count and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        # Default conversion turns nullable ints into float64; keep them integers.
        dtype = pd.BooleanDtype() if pa.types.is_boolean(t) else pd.api.types.pandas_dtype(
            ("UInt" if pa.types.is_unsigned_integer(t) else "Int") + str(t.bit_width)
        )
        return pd.Series(arr.to_pylist(), dtype=dtype)
    return arr.to_pandas()


class _KeyIndex:
    """Maps group keys (tuples of Python values, None for null) to dense global slots."""

    def __init__(self, key_names: Sequence[str], dict_order_keys: Sequence[str] | None = None):
        self.key_names: tuple[str, ...] = tuple(key_names)
        if len(set(self.key_names)) != len(self.key_names):
            raise ValueError(f"duplicate key names: {self.key_names}")
        # Key columns whose dictionary order is the output order (e.g. classes in class-index
        # order); other dictionary-typed keys (strings read as dictionaries) sort by value.
        self.dict_ordered = (set(range(len(self.key_names))) if dict_order_keys is None
                             else {i for i, k in enumerate(self.key_names) if k in dict_order_keys})
        self.keys: list[tuple] = []
        self.slot_of: dict[tuple, int] = {}
        ncol = len(self.key_names)
        # Value type per key column (None: unknown yet, _MIXED: differed between batches).
        self.types: list[Any] = [None] * ncol
        # For dictionary-typed key columns: value -> rank in first-seen dictionary order.
        self.dict_order: list[dict[Any, int]] = [{} for _ in range(ncol)]
        # Last dictionary registered per column; lets same-dictionary batches skip the Python walk.
        self._last_dict: list[pa.Array | None] = [None] * ncol
        if ncol == 0:
            self._add(())

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_last_dict"] = [None] * len(self.key_names)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # Unpickled NaNs are fresh objects; re-point them at the shared one.
        self.keys = [_canon_key(k) for k in self.keys]
        self.slot_of = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def _add(self, key: tuple) -> int:
        s = len(self.keys)
        self.slot_of[key] = s
        self.keys.append(key)
        return s

    def _note_type(self, i: int, t: pa.DataType) -> None:
        cur = self.types[i]
        if cur is None:
            self.types[i] = t
        elif cur is not _MIXED and cur != t:
            self.types[i] = _MIXED

    def _register_dictionary(self, i: int, d: pa.Array) -> None:
        last = self._last_dict[i]
        if last is not None and (last is d or last.equals(d)):
            return
        order = self.dict_order[i]
        for v in d.to_pylist():
            if v is not None and v not in order:
                order[v] = len(order)
        self._last_dict[i] = d

    def encode(self, keys: Sequence[Any], n: int) -> tuple[np.ndarray | None, np.ndarray]:
        """Per-row batch-local codes (None: all rows in local group 0) and local -> global slots."""
        if len(keys) != len(self.key_names):
            raise ValueError(f"expected {len(self.key_names)} key arrays, got {len(keys)}")
        if not self.key_names:
            return None, np.zeros(1, dtype=np.int64)

        idxs: list[np.ndarray] = []
        dicts: list[pa.Array] = []
        radices: list[int] = []
        all_present = True  # every code in [0, radix) is known to occur
        for i, raw in enumerate(keys):
            col = _as_array(raw)
            if len(col) != n:
                raise ValueError(f"key {self.key_names[i]!r} has length {len(col)}, expected {n}")
            if pa.types.is_dictionary(col.type):
                enc = col
                if i in self.dict_ordered:
                    self._register_dictionary(i, col.dictionary)
                all_present = False  # user dictionaries may hold unused values
            else:
                enc = pc.dictionary_encode(col)
            d = enc.dictionary
            self._note_type(i, d.type)
            m = len(d)
            ind = enc.indices
            if ind.null_count:
                ind = pc.fill_null(ind, pa.scalar(m, ind.type))
                radices.append(m + 1)
            else:
                radices.append(m)
            idxs.append(ind.to_numpy(zero_copy_only=False))
            dicts.append(d)

        if len(idxs) == 1 and all_present:
            local = idxs[0].astype(np.int64)
            digits = [np.arange(radices[0], dtype=np.int64)]
        else:
            code = idxs[0].astype(np.int64)
            radix = radices[0]
            decodable = True
            for ind, r in zip(idxs[1:], radices[1:], strict=True):
                if radix * r >= _MAX_RADIX:
                    code, uniq = _densify(code, radix, n)
                    radix = len(uniq)
                    decodable = False
                code = code * r + ind
                radix *= r
            local, uniq = _densify(code, radix, n)
            if decodable:
                digits = []
                rem = uniq
                for r in reversed(radices):
                    rem, dgt = np.divmod(rem, r)
                    digits.append(dgt)
                digits.reverse()
            else:
                # Mixed radix was re-densified on the way; decode via any row of each group.
                rep = np.empty(len(uniq), dtype=np.int64)
                rep[local] = np.arange(n)
                digits = [ind[rep].astype(np.int64) for ind in idxs]

        columns = []
        for d, dgt in zip(dicts, digits, strict=True):
            take = pa.array(dgt, mask=dgt >= len(d))
            vals = d.take(take).to_pylist()
            if pa.types.is_floating(d.type):
                vals = [_NAN if v is not None and v != v else v for v in vals]
            columns.append(vals)
        slots = np.empty(len(digits[0]), dtype=np.int64)
        slot_of = self.slot_of
        for j, key in enumerate(zip(*columns, strict=True)):
            s = slot_of.get(key)
            slots[j] = self._add(key) if s is None else s
        return local, slots

    def merge_from(self, other: _KeyIndex) -> np.ndarray:
        """Absorb ``other``'s keys; returns the map other-slot -> self-slot."""
        if other.key_names != self.key_names:
            raise ValueError(f"key names differ: {self.key_names} vs {other.key_names}")
        remap = np.empty(len(other.keys), dtype=np.int64)
        for j, key in enumerate(other.keys):
            key = _canon_key(key)
            s = self.slot_of.get(key)
            remap[j] = self._add(key) if s is None else s
        for i, t in enumerate(other.types):
            if t is not None:
                self._note_type(i, t)
            order = self.dict_order[i]
            for v in sorted(other.dict_order[i], key=other.dict_order[i].__getitem__):
                if v not in order:
                    order[v] = len(order)
        self._last_dict = [None] * len(self.key_names)
        return remap

    def copy(self) -> _KeyIndex:
        new = _KeyIndex.__new__(_KeyIndex)
        new.key_names = self.key_names
        new.dict_ordered = set(self.dict_ordered)
        new.keys = list(self.keys)
        new.slot_of = dict(self.slot_of)
        new.types = list(self.types)
        new.dict_order = [dict(o) for o in self.dict_order]
        new._last_dict = [None] * len(self.key_names)
        return new

    def _column_array(self, i: int) -> pa.Array:
        values = [k[i] for k in self.keys]
        t = self.types[i]
        if t is None or t is _MIXED:
            return pa.array(values)
        return pa.array(values, type=t)

    def sort_rank(self) -> np.ndarray:
        """rank[slot] = position of the slot in output order."""
        g = len(self.keys)
        if not self.key_names or g == 0:
            return np.arange(g, dtype=np.int64)
        cols: dict[str, pa.Array] = {}
        sort_keys = []
        for i in range(len(self.key_names)):
            arr = self._column_array(i)
            order = self.dict_order[i]
            if order:
                # Dictionary order first; values never seen in a dictionary follow, by value.
                rank = [order.get(v) if v is not None else None for k in self.keys for v in (k[i],)]
                cols[f"r{i}"] = pa.array(rank, type=pa.int64())
                sort_keys.append((f"r{i}", "ascending", "at_end"))
            cols[f"v{i}"] = arr
            sort_keys.append((f"v{i}", "ascending", "at_end"))
        perm = pc.sort_indices(pa.table(cols), sort_keys=sort_keys)
        perm = perm.to_numpy(zero_copy_only=False)
        rank = np.empty(g, dtype=np.int64)
        rank[perm] = np.arange(g)
        return rank

    def key_frame(self, slots: np.ndarray) -> dict[str, pd.Series]:
        """Key columns (plain value types) for the given per-row slots."""
        out = {}
        take = pa.array(np.asarray(slots, dtype=np.int64))
        for i, name in enumerate(self.key_names):
            out[name] = _pandas_column(self._column_array(i).take(take))
        return out


# --------------------------------------------------------------------------- #
# GroupStats
# --------------------------------------------------------------------------- #

_QUANTILE_MODES = ("auto", "exact", "sketch")


class GroupStats:
    """Mergeable per-group loss statistics with exact or sketched quantiles.

    Per group it keeps count, sum, mean and M2 (combined with Chan et al.'s
    parallel formula, so variance is numerically stable under any batching or
    merge order), min, max, clipped count, correct count, and when ``weighted``
    the sums of weights and of weight * loss.  All accumulation is float64
    (counts int64).

    Quantiles
    ---------
    A per-group :class:`LogHistogram` count array is always kept.  In addition
    the raw ``(group, loss)`` values are kept while they may be needed for exact
    quantiles: mode ``"exact"`` always keeps them, ``"sketch"`` never, ``"auto"``
    keeps them while the total row count is ``<= exact_limit`` and drops them
    for good once it is exceeded.  Since the decision depends only on the total
    count, the output does not depend on how the data was batched or merged.

    * exact: ``np.quantile(x, q, method="linear")`` per group (bit-identical).
    * sketch: take the value at 0-based rank ``floor(q * (n - 1))`` of the
      group's sorted losses (numpy ``method="lower"``), report its histogram
      bin's representative value, clamped into the group's exact
      ``[min, max]``.  Guarantee: relative error ``<= rel_err`` versus
      ``np.quantile(x, q, method="lower")`` for losses inside the histogram
      range ``[-log1p(-eps), -log(eps)]``.

    Memory is ``O(groups * n_bins)`` for the histograms (``n_bins`` is about
    9.5k for the defaults) plus 12 bytes per row while raw values are kept.
    """

    _FIELDS: tuple[tuple[str, Any, float], ...] = (
        ("count", np.int64, 0),
        ("sum", np.float64, 0.0),
        ("mean", np.float64, 0.0),
        ("m2", np.float64, 0.0),
        ("min", np.float64, np.inf),
        ("max", np.float64, -np.inf),
        ("clipped", np.int64, 0),
        ("correct", np.int64, 0),
        ("weight_sum", np.float64, 0.0),
        ("wloss_sum", np.float64, 0.0),
    )

    def __init__(
        self,
        key_names: Sequence[str],
        *,
        eps: float = 1e-7,
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        quantile_mode: str = "auto",
        exact_limit: int = 1_000_000,
        rel_err: float = 1e-3,
        weighted: bool = False,
        dict_order_keys: Sequence[str] | None = None,
    ):
        if quantile_mode not in _QUANTILE_MODES:
            raise ValueError(f"quantile_mode must be one of {_QUANTILE_MODES}, got {quantile_mode!r}")
        qs = tuple(float(q) for q in quantiles)
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must be in [0, 1], got {qs}")
        names = [quantile_column_name(q) for q in qs]
        if len(set(names)) != len(names):
            raise ValueError(f"quantiles give duplicate column names: {names}")
        if exact_limit < 0:
            raise ValueError("exact_limit must be >= 0")
        self.eps = float(eps)
        self.quantiles = qs
        self.quantile_mode = quantile_mode
        self.exact_limit = int(exact_limit)
        self.rel_err = float(rel_err)
        self.weighted = bool(weighted)
        self.hist = LogHistogram.for_eps(self.eps, self.rel_err)
        self.n_rows = 0
        self._index = _KeyIndex(key_names, dict_order_keys)
        self._arrays: dict[str, np.ndarray] = {}
        self._hist_counts = np.zeros((0, self.hist.n_bins), dtype=np.int64)
        self._alloc(0)
        self._ensure(len(self._index))
        # Raw values for exact quantiles: lists of (global slot int32, loss float64) chunks.
        self._raw_codes: list[np.ndarray] | None = None if quantile_mode == "sketch" else []
        self._raw_loss: list[np.ndarray] | None = None if quantile_mode == "sketch" else []

    # -- storage ----------------------------------------------------------- #

    @property
    def key_names(self) -> tuple[str, ...]:
        """Names of the key columns."""
        return self._index.key_names

    @property
    def n_groups(self) -> int:
        """Number of distinct groups seen."""
        return len(self._index)

    def _alloc(self, cap: int) -> None:
        old = self._arrays
        used = len(old["count"]) if old else 0
        new = {}
        for name, dtype, init in self._FIELDS:
            arr = np.full(cap, init, dtype=dtype)
            if used:
                arr[:used] = old[name][:used]
            new[name] = arr
        hist = np.zeros((cap, self.hist.n_bins), dtype=np.int64)
        hist[: self._hist_counts.shape[0]] = self._hist_counts[:cap]
        self._arrays = new
        self._hist_counts = hist

    def _ensure(self, n_groups: int) -> None:
        cap = len(self._arrays["count"])
        if n_groups > cap:
            # Doubling keeps repeated growth (groups trickling in) amortised O(groups).
            self._alloc(max(n_groups, 2 * cap, 4))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        g = self.n_groups
        # Ship only used slots, and raw values as one chunk.
        state["_arrays"] = {k: v[:g].copy() for k, v in self._arrays.items()}
        state["_hist_counts"] = self._hist_counts[:g].copy()
        if self._raw_codes is not None:
            state["_raw_codes"] = [_concat(self._raw_codes, np.int32)]
            state["_raw_loss"] = [_concat(self._raw_loss, np.float64)]
        return state

    # -- public API --------------------------------------------------------- #

    @property
    def quantile_method(self) -> str:
        """``"exact"`` or ``"sketch"``: what finalize() uses for the data seen so far."""
        return "sketch" if self._raw_codes is None else "exact"

    def _check_compatible(self, other: GroupStats) -> None:
        mine = (self.key_names, self.eps, self.quantiles, self.quantile_mode,
                self.exact_limit, self.rel_err, self.weighted)
        theirs = (other.key_names, other.eps, other.quantiles, other.quantile_mode,
                  other.exact_limit, other.rel_err, other.weighted)
        if mine != theirs:
            raise ValueError(f"cannot merge GroupStats with different settings: {mine} vs {theirs}")

    def _drop_raw_if_over_limit(self) -> None:
        if self.quantile_mode == "auto" and self.n_rows > self.exact_limit:
            self._raw_codes = None
            self._raw_loss = None

    def update(
        self,
        keys: Sequence[pa.Array | pa.ChunkedArray],
        loss: np.ndarray,
        clipped: np.ndarray,
        correct: np.ndarray,
        weight: np.ndarray | None = None,
        bins: np.ndarray | None = None,
    ) -> None:
        """Add one batch.

        ``keys``: one Arrow array per key column; ``loss`` (finite, float),
        ``clipped`` and ``correct`` (bool or 0/1) and, when ``weighted``,
        ``weight`` are row-aligned numpy arrays.  ``weight`` is ignored when the
        accumulator is not weighted.  A zero-length batch is a no-op.  ``bins``
        may pass ``self.hist.bin_index(loss)`` precomputed, so that several groupings
        of one batch share that pass.
        """
        loss = np.asarray(loss, dtype=np.float64).reshape(-1)
        n = len(loss)
        clipped = np.asarray(clipped).reshape(-1)
        correct = np.asarray(correct).reshape(-1)
        if len(clipped) != n or len(correct) != n:
            raise ValueError("loss, clipped and correct must have the same length")
        if self.weighted:
            if weight is None:
                raise ValueError("weighted GroupStats needs weight")
            weight = np.asarray(weight, dtype=np.float64).reshape(-1)
            if len(weight) != n:
                raise ValueError("weight must have the same length as loss")
        if n == 0:
            return

        local, slots = self._index.encode(keys, n)
        self._ensure(len(self._index))
        k = len(slots)
        a = self._arrays

        if local is None:
            cnt = np.array([n], dtype=np.int64)
            s = np.array([loss.sum()])
            mn = np.array([loss.min()])
            mx = np.array([loss.max()])
            ncl = np.array([np.count_nonzero(clipped)], dtype=np.int64)
            ncr = np.array([np.count_nonzero(correct)], dtype=np.int64)
            mean_b = s / n
            dev = loss - mean_b[0]
            m2 = np.array([np.einsum("i,i->", dev, dev)])  # einsum: no BLAS threads
            if self.weighted:
                ws = np.array([weight.sum()])
                wl = np.array([np.einsum("i,i->", weight, loss)])
        else:
            # One integer bincount over (group, clipped, correct) gives the count and both
            # flag counts: a third of the passes of three separate (float-weighted) bincounts.
            flags = (clipped.astype(np.int64, copy=False) << 1) | correct.astype(np.int64, copy=False)
            cc = np.bincount((local << 2) | flags, minlength=4 * k).reshape(k, 4)
            cnt = cc.sum(axis=1)
            ncl = cc[:, 2] + cc[:, 3]
            ncr = cc[:, 1] + cc[:, 3]
            s = np.bincount(local, weights=loss, minlength=k)
            mn = np.full(k, np.inf)
            np.minimum.at(mn, local, loss)
            mx = np.full(k, -np.inf)
            np.maximum.at(mx, local, loss)
            # Dictionary-derived codes can name groups absent from this batch.
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_b = np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)
            dev = loss - mean_b[local]
            m2 = np.bincount(local, weights=dev * dev, minlength=k)
            if self.weighted:
                ws = np.bincount(local, weights=weight, minlength=k)
                wl = np.bincount(local, weights=weight * loss, minlength=k)
            present = cnt > 0
            if not present.all():
                slots, cnt, s, mn, mx, ncl, ncr, mean_b, m2 = (
                    v[present] for v in (slots, cnt, s, mn, mx, ncl, ncr, mean_b, m2)
                )
                if self.weighted:
                    ws, wl = ws[present], wl[present]

        # Chan et al.: combine (n_a, mean_a, M2_a) with the batch's (n_b, mean_b, M2_b).
        na = a["count"][slots]
        tot = na + cnt
        delta = mean_b - a["mean"][slots]
        a["mean"][slots] += delta * (cnt / tot)
        a["m2"][slots] += m2 + delta * delta * (na * (cnt / tot))
        a["count"][slots] = tot
        a["sum"][slots] += s
        a["min"][slots] = np.minimum(a["min"][slots], mn)
        a["max"][slots] = np.maximum(a["max"][slots], mx)
        a["clipped"][slots] += ncl
        a["correct"][slots] += ncr
        if self.weighted:
            a["weight_sum"][slots] += ws
            a["wloss_sum"][slots] += wl

        if bins is None:
            bins = self.hist.bin_index(loss)
        nb = self.hist.n_bins
        if local is None:
            self._hist_counts[0] += np.bincount(bins, minlength=nb)
        elif k * nb <= n:
            counts = np.bincount(local * nb + bins, minlength=k * nb).reshape(k, nb)
            if len(slots) != k:  # some dictionary codes absent: keep present rows only
                counts = counts[counts.any(axis=1)]
            self._hist_counts[slots] += counts
        else:
            # Few rows relative to k * n_bins: scatter straight into the used part of the table.
            glob = self._slot_per_row(local, k, slots, cnt)
            flat = self._hist_counts.reshape(-1)
            np.add.at(flat, glob * nb + bins, 1)

        self.n_rows += n
        self._drop_raw_if_over_limit()
        if self._raw_codes is not None:
            if local is None:
                codes = np.zeros(n, dtype=np.int32)
            else:
                codes = self._slot_per_row(local, k, slots, cnt).astype(np.int32)
            self._raw_codes.append(codes)
            self._raw_loss.append(loss.copy())

    @staticmethod
    def _slot_per_row(local: np.ndarray, k: int, slots: np.ndarray, cnt: np.ndarray) -> np.ndarray:
        if len(slots) == k:
            return slots[local]
        # slots were filtered to present groups; rebuild the full local -> slot table.
        full = np.zeros(k, dtype=np.int64)
        full[np.flatnonzero(np.bincount(local, minlength=k))] = slots
        return full[local]

    def merge(self, other: GroupStats) -> GroupStats:
        """New state equal to having seen both inputs' data; inputs are not modified."""
        self._check_compatible(other)
        new = GroupStats.__new__(GroupStats)
        new.__dict__.update(self.__getstate__())  # trimmed copies of the arrays
        new._index = self._index.copy()
        remap = new._index.merge_from(other._index)
        new._ensure(len(new._index))
        g = other.n_groups
        b = {k: v[:g] for k, v in other._arrays.items()}
        a = new._arrays
        nz = b["count"] > 0
        src = np.flatnonzero(nz)
        dst = remap[src]
        na = a["count"][dst]
        nb_ = b["count"][src]
        tot = na + nb_
        delta = b["mean"][src] - a["mean"][dst]
        a["mean"][dst] += delta * (nb_ / tot)
        a["m2"][dst] += b["m2"][src] + delta * delta * (na * (nb_ / tot))
        a["count"][dst] = tot
        a["min"][dst] = np.minimum(a["min"][dst], b["min"][src])
        a["max"][dst] = np.maximum(a["max"][dst], b["max"][src])
        for name in ("sum", "clipped", "correct", "weight_sum", "wloss_sum"):
            a[name][dst] += b[name][src]
        new._hist_counts[dst] += other._hist_counts[src]
        new.n_rows = self.n_rows + other.n_rows
        if new._raw_codes is not None and other._raw_codes is not None:
            new._raw_codes = list(new._raw_codes) + [
                remap[c].astype(np.int32) for c in other._raw_codes
            ]
            new._raw_loss = list(new._raw_loss) + list(other._raw_loss)
        else:
            new._raw_codes = None
            new._raw_loss = None
        new._drop_raw_if_over_limit()
        return new

    def finalize(self) -> pd.DataFrame:
        """One row per group, sorted by key (see module/class docs for columns)."""
        g = self.n_groups
        rank = self._index.sort_rank()
        order = np.empty(g, dtype=np.int64)
        order[rank] = np.arange(g)
        a = {k: v[:g][order] for k, v in self._arrays.items()}
        cnt = a["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = a["sum"] / cnt
            std = np.sqrt(np.maximum(a["m2"], 0.0) / (cnt - 1))
            accuracy = a["correct"] / cnt
        std[cnt < 2] = np.nan
        mn = np.where(cnt > 0, a["min"], np.nan)
        mx = np.where(cnt > 0, a["max"], np.nan)
        if self._raw_codes is not None:
            qv = self._exact_quantiles(g)[order]
        else:
            qv = self._sketch_quantiles(self._hist_counts[:g][order], cnt, mn, mx)

        cols: dict[str, Any] = self._index.key_frame(order)
        cols["count"] = cnt.astype(np.int64)
        cols["mean"] = mean
        cols["std"] = std
        cols["min"] = mn
        for j, q in enumerate(self.quantiles):
            cols[quantile_column_name(q)] = qv[:, j]
        cols["max"] = mx
        cols["sum"] = a["sum"]
        cols["clipped"] = a["clipped"].astype(np.int64)
        cols["accuracy"] = accuracy
        if self.weighted:
            cols["weight_sum"] = a["weight_sum"]
            with np.errstate(invalid="ignore", divide="ignore"):
                cols["weighted_mean"] = a["wloss_sum"] / a["weight_sum"]
        df = pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v)
                           for k, v in cols.items()})
        return df

    def _exact_quantiles(self, g: int) -> np.ndarray:
        codes = _concat(self._raw_codes, np.int32)
        loss = _concat(self._raw_loss, np.float64)
        cnt = np.bincount(codes, minlength=g).astype(np.int64)
        ends = np.cumsum(cnt)
        start = ends - cnt
        if g * 16 <= len(loss):
            # Radix-sorting the codes then sorting each group's slice is ~4x faster than lexsort.
            v = loss[np.argsort(codes, kind="stable")]
            for s0, e0 in zip(start.tolist(), ends.tolist(), strict=True):
                v[s0:e0].sort()
        else:
            v = loss[np.lexsort((loss, codes))]
        out = np.full((g, len(self.quantiles)), np.nan)
        has = cnt > 0
        n = cnt[has]
        st = start[has]
        nm1 = (n - 1).astype(np.float64)
        for j, q in enumerate(self.quantiles):
            # Mirrors numpy's method="linear" step by step so results are bit-identical.
            virt = nm1 * q
            prev = np.floor(virt)
            t = virt - prev
            above = virt >= nm1
            pi = np.where(above, n - 1, prev.astype(np.int64))
            ni = np.where(above, n - 1, pi + 1)
            lo_v = v[st + pi]
            hi_v = v[st + ni]
            diff = hi_v - lo_v
            res = lo_v + diff * t
            upper = t >= 0.5
            res[upper] = (hi_v - diff * (1 - t))[upper]
            out[has, j] = res
        return out

    def _sketch_quantiles(self, hist: np.ndarray, cnt: np.ndarray, mn: np.ndarray,
                          mx: np.ndarray) -> np.ndarray:
        g, nb = hist.shape
        out = np.full((g, len(self.quantiles)), np.nan)
        if g == 0:
            return out
        cum = np.cumsum(hist.reshape(-1))
        base = np.concatenate(([0], cum[nb - 1 :: nb][:-1]))
        has = cnt > 0
        rows = np.flatnonzero(has)
        for j, q in enumerate(self.quantiles):
            r = np.floor((cnt[has] - 1) * q).astype(np.int64)  # == numpy method="lower"
            pos = np.searchsorted(cum, base[has] + r + 1, side="left")
            b = pos - rows * nb
            rep = self.hist.bin_value(b)
            out[has, j] = np.minimum(np.maximum(rep, mn[has]), mx[has])
        return out


def _concat(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not chunks:
        return np.zeros(0, dtype=dtype)
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks)


# --------------------------------------------------------------------------- #
# TopK
# --------------------------------------------------------------------------- #


class TopK:
    """Per group, the ``k`` rows with the highest loss ("hardest examples"), mergeable.

    Rows are ranked by loss descending; ties are broken by the payload column
    ``row`` ascending when present (otherwise by arrival order, which then makes
    the choice among exactly tied losses depend on batching).  State size is
    ``O(groups * k)``: each batch is cut down to its per-group candidates before
    being combined with the running selection.  Losses must not be NaN.
    """

    def __init__(self, k: int, key_names: Sequence[str] = (),
                 dict_order_keys: Sequence[str] | None = None):
        if k < 0:
            raise ValueError("k must be >= 0")
        self.k = int(k)
        self._index = _KeyIndex(key_names, dict_order_keys)
        self._codes = np.zeros(0, dtype=np.int64)
        self._loss = np.zeros(0, dtype=np.float64)
        self._table: pa.Table | None = None

    @property
    def key_names(self) -> tuple[str, ...]:
        """Names of the key columns."""
        return self._index.key_names

    def _candidates(self, local: np.ndarray | None, k_local: int, loss: np.ndarray) -> np.ndarray:
        """Rows that can be in their group's top k (all rows tied with the k-th are kept)."""
        n = len(loss)
        k = self.k
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        if local is None or k_local == 1:
            if n <= k:
                return np.arange(n)
            thr = np.partition(loss, n - k)[n - k]
            return np.flatnonzero(loss >= thr)
        counts = np.bincount(local, minlength=k_local)
        if counts.max() <= k:
            return np.arange(n)
        small = local.astype(np.int16) if k_local < (1 << 15) else local
        order = np.argsort(small, kind="stable")  # radix sort for int16 codes
        ends = np.cumsum(counts)
        keep = []
        start = 0
        for end in ends.tolist():
            seg = order[start:end]
            if len(seg) > k:
                sl = loss[seg]
                thr = np.partition(sl, len(sl) - k)[len(sl) - k]
                seg = seg[sl >= thr]
            keep.append(seg)
            start = end
        cand = np.concatenate(keep)
        cand.sort()  # keep arrival order so ties without a `row` column are deterministic
        return cand

    def _select(self, codes: np.ndarray, loss: np.ndarray, table: pa.Table) -> None:
        """Keep the top k per group from (codes, loss, table); stores them sorted."""
        if "row" in table.column_names:
            row = table.column("row").to_numpy()
            perm = np.lexsort((row, -loss, codes))
        else:
            perm = np.lexsort((-loss, codes))
        sc = codes[perm]
        if len(sc):
            new_group = np.empty(len(sc), dtype=bool)
            new_group[0] = True
            np.not_equal(sc[1:], sc[:-1], out=new_group[1:])
            starts = np.flatnonzero(new_group)
            grp = np.cumsum(new_group) - 1
            within = np.arange(len(sc)) - starts[grp]
            perm = perm[within < self.k]
        self._codes = codes[perm]
        self._loss = loss[perm]
        self._table = table.take(pa.array(perm, type=pa.int64())).combine_chunks()

    def _thresholds(self, n_slots: int) -> np.ndarray:
        """Per group slot: the k-th highest loss kept so far (-inf while fewer than k)."""
        thr = np.full(n_slots, -np.inf)
        counts = np.bincount(self._codes, minlength=n_slots)
        mins = np.full(n_slots, np.inf)
        np.minimum.at(mins, self._codes, self._loss)
        full = counts >= self.k
        thr[full] = mins[full]
        return thr

    def _concat_tables(self, a: pa.Table | None, b: pa.Table) -> pa.Table:
        if a is None:
            return b
        return pa.concat_tables([a, b], promote_options="permissive")

    def update(self, keys: Sequence[pa.Array], loss: np.ndarray, payload: pa.Table) -> None:
        """Add one batch; ``payload`` is a row-aligned table of columns to keep."""
        loss = np.asarray(loss, dtype=np.float64).reshape(-1)
        n = len(loss)
        if payload.num_rows != n:
            raise ValueError(f"payload has {payload.num_rows} rows, loss has {n}")
        if "loss" in payload.column_names:
            raise ValueError("payload must not contain a column named 'loss'")
        if n == 0:
            if self._table is None:
                # Only remember the payload schema so finalize() has the right columns.
                self._table = payload.slice(0, 0)
            return
        local, slots = self._index.encode(keys, n)
        rows = None
        if self.k and len(self._codes):
            # Once a group holds k rows, only rows at least as bad as its k-th can enter:
            # after the first batches this drops nearly every row before any sorting.
            thr = self._thresholds(len(self._index))
            row_slot = np.zeros(n, dtype=np.int64) if local is None else slots[local]
            rows = np.flatnonzero(loss >= thr[row_slot])
            loss_c = loss[rows]
            local_c = None if local is None else local[rows]
        else:
            loss_c, local_c = loss, local
        cand = self._candidates(local_c, len(slots), loss_c)
        if rows is not None:
            cand = rows[cand]
        codes = np.zeros(len(cand), dtype=np.int64) if local is None else slots[local[cand]]
        sub = payload.take(pa.array(cand, type=pa.int64()))
        self._select(
            np.concatenate([self._codes, codes]),
            np.concatenate([self._loss, loss[cand]]),
            self._concat_tables(self._table, sub),
        )

    def merge(self, other: TopK) -> TopK:
        """New state holding the top k of both inputs; inputs are not modified."""
        if other.k != self.k or other.key_names != self.key_names:
            raise ValueError("cannot merge TopK with different k or key names")
        new = TopK.__new__(TopK)
        new.k = self.k
        new._index = self._index.copy()
        remap = new._index.merge_from(other._index)
        new._codes, new._loss, new._table = self._codes, self._loss, self._table
        if other._table is None:
            return new
        new._select(
            np.concatenate([self._codes, remap[other._codes]]),
            np.concatenate([self._loss, other._loss]),
            self._concat_tables(self._table, other._table),
        )
        return new

    def finalize(self) -> pd.DataFrame:
        """Key columns, payload columns, then ``loss``; groups in GroupStats order.

        Payload columns named like a key column are omitted (the key column
        already carries that value).
        """
        rank = self._index.sort_rank()
        codes = self._codes
        if self._table is not None and "row" in self._table.column_names:
            perm = np.lexsort((self._table.column("row").to_numpy(), -self._loss, rank[codes]))
        else:
            perm = np.lexsort((-self._loss, rank[codes]))
        cols: dict[str, Any] = self._index.key_frame(codes[perm])
        if self._table is not None:
            t = self._table.take(pa.array(perm, type=pa.int64()))
            for name in t.column_names:
                if name not in cols:
                    cols[name] = _pandas_column(t.column(name).combine_chunks())
        cols["loss"] = self._loss[perm]
        return pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v)
                             for k, v in cols.items()})


# --------------------------------------------------------------------------- #
# Confusion: count and loss sum by (true class, predicted class)
# --------------------------------------------------------------------------- #


class Confusion:
    """Dense K x K count and loss-sum matrices, mergeable by addition.

    Deliberately lighter than :class:`GroupStats` (no quantile histograms): with 1000
    classes there are up to a million cells, and a sketch per cell would cost gigabytes.
    """

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        k = len(self.classes)
        self.count = np.zeros(k * k, dtype=np.int64)
        self.loss_sum = np.zeros(k * k, dtype=np.float64)

    def update(self, true_class: np.ndarray, predicted: np.ndarray, loss: np.ndarray) -> None:
        """Add a batch of rows (class indices and their losses)."""
        k = len(self.classes)
        cell = true_class.astype(np.int64) * k + predicted
        # ufunc.at is fast in numpy >= 2 and, unlike bincount(minlength=K*K), costs
        # nothing per empty cell.
        np.add.at(self.count, cell, 1)
        np.add.at(self.loss_sum, cell, loss)

    def merge(self, other: Confusion) -> Confusion:
        """A new state holding both."""
        if other.classes != self.classes:
            raise ValueError("cannot merge confusion states over different classes")
        new = Confusion(self.classes)
        new.count = self.count + other.count
        new.loss_sum = self.loss_sum + other.loss_sum
        return new

    def finalize(self) -> pd.DataFrame:
        """Non-empty cells: ``class``, ``predicted``, ``count``, ``mean`` (class order)."""
        k = len(self.classes)
        cells = np.flatnonzero(self.count)
        names = np.array(self.classes, dtype=object)
        return pd.DataFrame({
            "class": names[cells // k] if k else [],
            "predicted": names[cells % k] if k else [],
            "count": self.count[cells],
            "mean": self.loss_sum[cells] / self.count[cells],
        })
