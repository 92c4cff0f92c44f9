"""Streaming Poisson bootstrap of the mean loss per group (mergeable), in memory that follows
what each group holds.

Each row enters replicate ``b`` with an integer weight ``w_rb ~ Poisson(1)``, so a replicate
is a resample of the data with replacement that can be accumulated row by row and merged by
addition (Oza & Russell 2001; Chamandy et al. 2012; the form TensorFlow Model Analysis uses
for its confidence intervals). Per group the statistic is two ``(B,)`` float64 vectors:
``sum_r w_rb * x_r`` and ``sum_r w_rb`` (times the sample weight with ``--weight``); the
replicate means are their ratio, and the interval is the percentile interval of the
replicate means.

The weights are a hash of the row's global position in the input and the seed
(:func:`evalkit.inference.poisson_weights`): the result is the same for any batch size,
row-group layout, partitioning or engine. Cost: ``B`` hashes per row (once per batch,
shared by every grouping).

Memory (the distinct-groups axis): the two vectors cost ``16 B`` bytes per group (6.4 KB at
B = 400), which for 150k one-row users would be 1 GB for nothing. So a group starts *sparse*:
its rows are kept as they came (slot, the row's ``B`` uint8 weights, loss, sample weight:
``B + 24`` bytes each) and it turns *dense* (the two vectors) once holding its rows would cost
more than the vectors (:attr:`PoissonBootstrap.promote_at` rows, 13 at B = 100). Total state
is then at most ``min(rows * (B + 24), groups * 16 B)`` plus the rows of promoted groups not
yet folded (at most as many again; :meth:`PoissonBootstrap._compact` folds them). The interval
is computed in blocks of groups, never as one ``(groups, B)`` array. Sparse and dense give the
same replicate sums up to the order of float additions (about 1e-16 relative).

With sample weights the sums (and the kept rows' weights) are stored as the weights times
``2**-scale.exp`` (one :class:`~evalkit.aggregate.weightscale.WeightScale` for all groups):
weights of ``1e300`` or ``1e-300`` neither overflow nor underflow the replicate sums, and the
replicate means (ratios) do not depend on the weights' scale.
"""

from __future__ import annotations

import numpy as np

from .weightscale import WeightScale

DEFAULT_SAMPLES = 100
DEFAULT_SEED = 0
# Rows per block: the float64 (rows, B) temporaries stay near 6.5 MB at B = 100.
_BLOCK_ROWS = 8192
# Groups per block when the intervals are computed: (groups, B) float64 temporaries ~2 MB, kept rows at most promote_at times that.
_BLOCK_CELLS = 1 << 18


class PoissonBootstrap:
    """Per-group replicate sums, indexed by the owning GroupStats' slots (see the module
    docstring for the sparse / dense representation)."""

    def __init__(self, n: int = DEFAULT_SAMPLES):
        if n < 2:
            raise ValueError(f"bootstrap needs at least 2 replicates, got {n!r}")
        self.n = int(n)
        #: A sparse group turns dense when it would hold more than this many rows.
        self.promote_at = max(1, (16 * self.n) // (self.n + 24))
        # Per slot: its row in the dense arrays (-1: sparse), and the rows it keeps (sparse).
        self._dense_row = np.zeros(0, dtype=np.int64)
        self._held = np.zeros(0, dtype=np.int64)
        # Dense replicate sums, one row per dense group (first _n_dense rows used).
        self.wsum = np.zeros((0, self.n), dtype=np.float64)
        self.wloss = np.zeros((0, self.n), dtype=np.float64)
        self._n_dense = 0
        # Kept rows, in chunks: slot, Poisson weights (k, B) uint8, loss, stored sample weight.
        self._rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._n_kept = 0      # rows in self._rows
        self._n_folded = 0    # of them, rows of groups that are dense now (folded by _compact)
        # Weighted: the sums hold weights times 2**-scale.exp (unweighted: exp stays unset).
        self.scale = WeightScale()

    # -- storage ------------------------------------------------------------------------ #

    @property
    def nbytes(self) -> int:
        """Bytes held by the state (dense vectors in use and kept rows)."""
        dense = 2 * self._n_dense * self.n * 8
        return dense + self._n_kept * (self.n + 24) + 16 * len(self._dense_row)

    def _rescale(self, shift: int) -> None:
        if shift == 0:
            return
        with np.errstate(under="ignore"):
            self.wsum[: self._n_dense] = np.ldexp(self.wsum[: self._n_dense], shift)
            self.wloss[: self._n_dense] = np.ldexp(self.wloss[: self._n_dense], shift)
            self._rows = [(s, b, x, np.ldexp(w, shift)) for s, b, x, w in self._rows]

    def resize(self, cap: int) -> None:
        """Grow (or trim) to ``cap`` slots, keeping the used ones (a trimmed slot must hold
        nothing)."""
        keep = min(cap, len(self._dense_row))
        dense_row = np.full(cap, -1, dtype=np.int64)
        dense_row[:keep] = self._dense_row[:keep]
        held = np.zeros(cap, dtype=np.int64)
        held[:keep] = self._held[:keep]
        self._dense_row, self._held = dense_row, held

    def _dense_rows(self, slots: np.ndarray) -> np.ndarray:
        """Make ``slots`` (distinct, sparse) dense: their new rows (zero sums; rows they keep
        are folded in by :meth:`_compact`)."""
        need = self._n_dense + len(slots)
        if need > len(self.wsum):
            cap = max(need, 2 * len(self.wsum), 4)
            for name in ("wsum", "wloss"):
                old = getattr(self, name)
                new = np.zeros((cap, self.n), dtype=np.float64)
                new[: self._n_dense] = old[: self._n_dense]
                setattr(self, name, new)
        rows = np.arange(self._n_dense, need, dtype=np.int64)
        self._dense_row[slots] = rows
        self._n_folded += int(self._held[slots].sum())
        self._held[slots] = 0
        self._n_dense = need
        return rows

    def _add_dense(self, rows: np.ndarray, boot: np.ndarray, loss: np.ndarray,
                   weight: np.ndarray | None) -> None:
        """Add rows (Poisson weights ``boot``) to dense ``rows`` of the sums (any order,
        repeats allowed)."""
        for start in range(0, len(rows), _BLOCK_ROWS):
            blk = slice(start, start + _BLOCK_ROWS)
            w = boot[blk].astype(np.float64)
            if weight is not None:
                w *= weight[blk, None]
            r = rows[blk]
            order = np.argsort(r, kind="stable")
            s = r[order]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            groups = s[starts]
            ws = w[order]
            self.wsum[groups] += np.add.reduceat(ws, starts, axis=0)
            ws *= loss[blk][order][:, None]
            self.wloss[groups] += np.add.reduceat(ws, starts, axis=0)

    def _keep(self, slots: np.ndarray, boot: np.ndarray, loss: np.ndarray,
              weight: np.ndarray) -> None:
        """Keep rows of sparse slots; slots that would then hold more than ``promote_at``
        rows turn dense first and take their rows as sums."""
        if not len(slots):
            return
        u, c = np.unique(slots, return_counts=True)
        grow = u[self._held[u] + c > self.promote_at]
        if len(grow):
            self._dense_rows(grow)
            rows = self._dense_row[slots]
            now_dense = rows >= 0
            if now_dense.all():  # the usual first batch of a few large groups: no copies
                self._add_dense(rows, boot, loss, weight)
                self._maybe_compact()
                return
            self._add_dense(rows[now_dense], boot[now_dense], loss[now_dense], weight[now_dense])
            keep = ~now_dense
            slots, boot, loss, weight = slots[keep], boot[keep], loss[keep], weight[keep]
            if not len(slots):
                self._maybe_compact()
                return
            u, c = np.unique(slots, return_counts=True)
        self._held[u] += c
        self._rows.append((slots.astype(np.int64), np.ascontiguousarray(boot, dtype=np.uint8),
                           np.asarray(loss, dtype=np.float64), np.asarray(weight, dtype=np.float64)))
        self._n_kept += len(slots)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._n_folded > max(self._n_kept - self._n_folded, 1 << 16):
            self._compact()

    def _kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The kept rows as one chunk (slot, boot, loss, weight), in arrival order."""
        if len(self._rows) != 1:
            if self._rows:
                parts = list(zip(*self._rows, strict=True))
                one = tuple(np.concatenate(p) for p in parts)
            else:
                one = (np.zeros(0, np.int64), np.zeros((0, self.n), np.uint8),
                       np.zeros(0, np.float64), np.zeros(0, np.float64))
            self._rows = [one]  # type: ignore[list-item]
        return self._rows[0]

    def _compact(self) -> None:
        """Fold the kept rows of dense groups into their sums; keep the others."""
        slots, boot, loss, weight = self._kept()
        rows = self._dense_row[slots]
        dense = rows >= 0
        if dense.any():
            self._add_dense(rows[dense], boot[dense], loss[dense], weight[dense])
            keep = ~dense
            self._rows = [(slots[keep], boot[keep], loss[keep], weight[keep])]
            self._n_kept = int(keep.sum())
        self._n_folded = 0

    # -- accumulation --------------------------------------------------------------------- #

    def add(self, slots: np.ndarray, boot: np.ndarray, loss: np.ndarray,
            weight: np.ndarray | None) -> None:
        """Add rows: their global group ``slots``, Poisson weights ``boot`` (n, B), losses and
        optional sample weights (finite, >= 0; any scale, see the module docstring)."""
        slots = np.asarray(slots, dtype=np.int64)
        loss = np.asarray(loss, dtype=np.float64)
        if weight is not None:
            self._rescale(self.scale.observe(weight))
            weight = self.scale.scale(weight)
        rows = self._dense_row[slots]
        dense = rows >= 0
        if dense.all():
            self._add_dense(rows, boot, loss, weight)
            return
        if not dense.any():  # no copies of the batch's weights
            self._keep(slots, boot, loss, np.ones(len(slots)) if weight is None else weight)
            return
        self._add_dense(rows[dense], boot[dense], loss[dense],
                        None if weight is None else weight[dense])
        sparse = ~dense
        w = np.ones(int(sparse.sum())) if weight is None else weight[sparse]
        self._keep(slots[sparse], boot[sparse], loss[sparse], w)

    def absorb(self, other: PoissonBootstrap, src: np.ndarray, dst: np.ndarray) -> None:
        """Add ``other``'s slots ``src`` into slots ``dst`` (several ``src`` may share a
        ``dst``)."""
        if other.n != self.n:
            raise ValueError("cannot merge bootstraps with different numbers of replicates")
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        exp = max(self.scale.exp, other.scale.exp)
        self._rescale(self.scale.observe_exp(exp))
        shift = other.scale.exp - exp
        to = np.full(len(other._dense_row), -1, dtype=np.int64)
        to[src] = dst
        # other's dense groups: their sums go to dense destinations.
        o_rows = other._dense_row[src]
        has = o_rows >= 0
        if has.any():
            d = dst[has]
            need = np.unique(d[self._dense_row[d] < 0])
            if len(need):
                self._dense_rows(need)
            rows = self._dense_row[d]
            with np.errstate(under="ignore"):
                ws = other.wsum[o_rows[has]]
                wl = other.wloss[o_rows[has]]
                if shift:
                    ws, wl = np.ldexp(ws, shift), np.ldexp(wl, shift)
            if len(np.unique(rows)) == len(rows):
                self.wsum[rows] += ws
                self.wloss[rows] += wl
            else:  # several source groups land in one (GroupStats.project)
                np.add.at(self.wsum, rows, ws)
                np.add.at(self.wloss, rows, wl)
        # other's kept rows of the absorbed slots (of sparse and dense groups alike).
        if other._n_kept:
            slots, boot, loss, weight = other._kept()
            new_slot = to[slots]
            mine = new_slot >= 0
            if mine.any():
                w = weight[mine]
                if shift:
                    with np.errstate(under="ignore"):
                        w = np.ldexp(w, shift)
                ns = new_slot[mine]
                rows = self._dense_row[ns]
                dense = rows >= 0
                if dense.any():
                    self._add_dense(rows[dense], boot[mine][dense], loss[mine][dense], w[dense])
                sp = ~dense
                self._keep(ns[sp], boot[mine][sp], loss[mine][sp], w[sp])

    def trimmed(self, g: int) -> PoissonBootstrap:
        """A copy holding the first ``g`` slots (and only the dense rows and kept rows in use)."""
        self._compact()
        new = PoissonBootstrap(self.n)
        new.scale = WeightScale(self.scale.exp)
        new.resize(g)
        new._held[:] = self._held[:g]
        rows = self._dense_row[:g]
        dense = np.flatnonzero(rows >= 0)
        new._dense_rows(dense)
        new._held[:] = self._held[:g]
        new._n_folded = 0
        new.wsum[: len(dense)] = self.wsum[rows[dense]]
        new.wloss[: len(dense)] = self.wloss[rows[dense]]
        slots, boot, loss, weight = self._kept()
        keep = slots < g
        if len(slots):
            new._rows = [(slots[keep].copy(), boot[keep].copy(), loss[keep].copy(), weight[keep].copy())]
            new._n_kept = int(keep.sum())
        return new

    # -- result --------------------------------------------------------------------------- #

    def interval(self, order: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the replicate means for the groups in ``order`` (NaN for
        groups with fewer than 2 finite replicate means), computed in blocks of groups."""
        self._compact()
        n_slots = int(max(order.max() + 1, 0)) if len(order) else 0
        lo_s = np.full(n_slots, np.nan)
        hi_s = np.full(n_slots, np.nan)
        slots, boot, loss, weight = self._kept()
        by_slot = np.argsort(slots, kind="stable")
        sorted_slots = slots[by_slot]
        a = (1.0 - confidence) / 2
        step = max(1, _BLOCK_CELLS // self.n)
        for start in range(0, n_slots, step):
            stop = min(start + step, n_slots)
            ws = np.zeros((stop - start, self.n))
            wl = np.zeros((stop - start, self.n))
            rows = self._dense_row[start:stop]
            dense = np.flatnonzero(rows >= 0)
            ws[dense] = self.wsum[rows[dense]]
            wl[dense] = self.wloss[rows[dense]]
            i, j = np.searchsorted(sorted_slots, [start, stop])
            if j > i:
                pick = by_slot[i:j]
                s = sorted_slots[i:j]
                starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
                at = s[starts] - start
                w = boot[pick].astype(np.float64) * weight[pick, None]
                ws[at] += np.add.reduceat(w, starts, axis=0)
                w *= loss[pick][:, None]
                wl[at] += np.add.reduceat(w, starts, axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(ws > 0, wl / np.where(ws > 0, ws, 1.0), np.nan)
            ok = np.isfinite(means).sum(axis=1) >= 2
            if ok.any():
                q = nan_row_quantiles(means[ok], (a, 1 - a))
                idx = np.flatnonzero(ok) + start
                lo_s[idx], hi_s[idx] = q[0], q[1]
        return lo_s[order], hi_s[order]


def nan_row_quantiles(values: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """``numpy.nanquantile(values, qs, axis=1)`` (method ``linear``, the same floats) for a
    2-D float array whose rows hold at least one non-NaN value and no infinities, in one
    vectorised pass: numpy's own function falls back to a Python-level loop over the rows
    as soon as one holds a NaN (40 us a row: 6 s for 146k groups). Returns ``(len(qs), rows)``.
    """
    s = np.sort(values, axis=1)  # NaNs last
    k = np.isfinite(values).sum(axis=1)
    rows = np.arange(len(values))
    out = np.empty((len(qs), len(values)))
    for j, q in enumerate(qs):
        # As numpy's _quantile / _get_indexes / _lerp for method 'linear'.
        virtual = (k - 1) * np.float64(q)
        prev = np.floor(virtual)
        above = virtual >= k - 1
        lo_i = np.where(above, k - 1, prev.astype(np.intp))
        hi_i = np.where(above, k - 1, lo_i + 1)
        gamma = virtual - np.where(above, -1.0, prev)
        a, b = s[rows, lo_i], s[rows, hi_i]
        diff = b - a
        res = a + diff * gamma
        big = gamma >= 0.5
        res[big] = (b - diff * (1 - gamma))[big]
        out[j] = res
    return out
