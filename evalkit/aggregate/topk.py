"""TopK: per group, the k rows with the highest loss (the hardest examples), mergeable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .keys import _KeyIndex, pandas_key_column

#: Most rows kept per group (``--top-k``): the selection lives in memory, k rows of payload
#: per group, and is written to hardest.parquet. Larger asks are refused up front; every
#: row's loss is in rows.parquet for a full sort.
MAX_TOP_K = 100_000
#: Most candidate rows a TopK collects before it re-selects, unless the selection holds
#: more: each selection sorts and copies every kept row, so selecting per batch cost 1000
#: classes x k=10 rows a batch (1M x 1000 in 4k-row batches: ~1 s); collected, the cost
#: per candidate is constant. Fewer are collected while k rows for every group seen are
#: fewer (the first selection makes the per-group thresholds that drop most rows). The
#: result is the same: the selection is a total order (loss descending, then ``row``,
#: else arrival).
PENDING_ROWS = 1 << 16


#: A payload dictionary longer than this and than 4x its rows is cut to the values its rows
#: use (:func:`_small_dictionaries`).
SMALL_DICTIONARY = 4096


def _small_dictionaries(table: pa.Table) -> pa.Table:
    """``table`` with every dictionary column whose dictionary is much longer than its rows
    (:data:`SMALL_DICTIONARY`) cut to the values its rows use, in dictionary order: the
    candidates of a batch keep a few of 200k users, not the batch's whole dictionary, which
    every selection unified across batches (one hash pass over each batch's 200k values,
    ~0.8 s per 2M rows) and hardest.parquet stored whole (690 KB for 110 rows). The values
    are the same."""
    out = table
    for i, col in enumerate(table.columns):
        if not pa.types.is_dictionary(col.type):
            continue
        chunks = [_used_dictionary(ch) for ch in col.chunks]
        if any(new is not old for new, old in zip(chunks, col.chunks, strict=True)):
            out = out.set_column(i, table.field(i), pa.chunked_array(chunks, type=col.type))
    return out


def _used_dictionary(arr: pa.DictionaryArray) -> pa.DictionaryArray:
    """``arr`` with its dictionary cut to the values it uses (in their order), when long."""
    d = arr.dictionary
    if len(d) <= max(SMALL_DICTIONARY, 4 * len(arr)):
        return arr
    ind = arr.indices
    valid = np.asarray(ind.is_valid())
    codes = pc.fill_null(ind, 0).to_numpy(zero_copy_only=False)
    used = np.unique(codes[valid])
    lut = np.zeros(len(d), dtype=codes.dtype)
    lut[used] = np.arange(len(used), dtype=codes.dtype)
    indices = pa.array(lut[codes], type=ind.type, mask=None if valid.all() else ~valid)
    return pa.DictionaryArray.from_arrays(indices, d.take(pa.array(used)))


class TopK:
    """Per group, the ``k`` rows with the highest loss ("hardest examples"), mergeable.

    Rows are ranked by loss descending; ties are broken by the payload column
    ``row`` ascending when present (otherwise by arrival order, which then makes
    the choice among exactly tied losses depend on batching).  State size is
    ``O(groups * k)``: each batch is cut down to its per-group candidates (rows at
    least as bad as their group's k-th so far), which are collected and combined with
    the running selection once there are as many as the selection holds, or as ``k`` rows
    for every group seen (at most :data:`PENDING_ROWS`) (at most twice ``groups * k`` rows plus a batch's candidates in
    memory).  Losses must not be NaN.
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
        self._pending: list[tuple[np.ndarray, np.ndarray, pa.Table]] = []
        """Candidates not selected yet: (group codes, losses, payload), in arrival order."""

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
            # Each row's threshold through its batch-local group (one gather of the rows, not
            # two; one scalar for a single group).
            rows = np.flatnonzero(loss >= (thr[slots[0]] if local is None else thr[slots][local]))
            loss_c = loss[rows]
            local_c = None if local is None else local[rows]
        else:
            loss_c, local_c = loss, local
        cand = self._candidates(local_c, len(slots), loss_c)
        if rows is not None:
            cand = rows[cand]
        codes = np.zeros(len(cand), dtype=np.int64) if local is None else slots[local[cand]]
        sub = _small_dictionaries(payload.take(pa.array(cand, type=pa.int64())))
        if self._table is None:
            self._table = sub.slice(0, 0)  # the payload schema, for finalize()
        if len(cand):
            self._pending.append((codes, loss[cand], sub))
        # Select once the candidates could fill every group seen (k each; at most
        # PENDING_ROWS) or match the selection: from then on the thresholds above drop
        # nearly every row. (A fixed PENDING_ROWS alone left 10 classes x k=10 without any
        # threshold for a whole 6M-row run: every row of every batch went through
        # _candidates, 0.2 CPU-s.)
        if (sum(len(c) for c, _, _ in self._pending)
                >= max(min(PENDING_ROWS, self.k * len(self._index)), len(self._codes))):
            self._flush()

    def _flush(self) -> None:
        """Select the top k per group from the selection and the collected candidates."""
        if not self._pending:
            return
        codes, loss, table = self._combined()
        self._pending = []
        self._select(codes, loss, table)

    def _combined(self) -> tuple[np.ndarray, np.ndarray, pa.Table]:
        """The selection followed by the pending candidates (arrival order), not selected."""
        codes = np.concatenate([self._codes] + [c for c, _, _ in self._pending])
        loss = np.concatenate([self._loss] + [v for _, v, _ in self._pending])
        table = self._table
        for _, _, t in self._pending:
            table = self._concat_tables(table, t)
        assert table is not None
        return codes, loss, table

    def merge(self, other: TopK) -> TopK:
        """New state holding the top k of both inputs; inputs are not modified."""
        if other.k != self.k or other.key_names != self.key_names:
            raise ValueError("cannot merge TopK with different k or key names")
        new = TopK.__new__(TopK)
        new.k = self.k
        new._index = self._index.copy()
        remap = new._index.merge_from(other._index)
        new._codes, new._loss, new._table = self._codes, self._loss, self._table
        new._pending = list(self._pending)
        if other._table is None:
            return new
        if new._table is None:
            new._table = other._table.slice(0, 0)
        codes, loss, table = other._combined()
        if len(codes):
            new._pending.append((remap[codes], loss, table))
        new._flush()
        return new

    def finalize(self) -> pd.DataFrame:
        """Key columns, payload columns, then ``loss``; groups in GroupStats order.

        Payload columns named like a key column are omitted (the key column
        already carries that value).
        """
        self._flush()
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
                    cols[name] = pandas_key_column(t.column(name).combine_chunks())
        cols["loss"] = self._loss[perm]
        return pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v)
                             for k, v in cols.items()})


def concat_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The hardest rows of several scopes as one frame: a categorical column stays
    categorical (its categories united, first seen first) where :func:`pd.concat` would make
    differing categories plain objects (the scopes' selections keep different dictionary
    values of a column of many, see :func:`_small_dictionaries`)."""
    frames = list(frames)
    if len(frames) > 1:
        for name in frames[0].columns:
            cols = [f[name] for f in frames if name in f.columns]
            if len(cols) < len(frames) or not all(isinstance(c.dtype, pd.CategoricalDtype) for c in cols):
                continue
            cats = [c.cat.categories for c in cols]
            if all(c.equals(cats[0]) for c in cats[1:]):
                continue
            union = pd.Index(dict.fromkeys(v for c in cats for v in c))
            frames = [f.assign(**{name: f[name].cat.set_categories(union)}) for f in frames]
    return pd.concat(frames, ignore_index=True)
